"""EpiNet reliability: every bad argument of a mutating call raises a named TypeError/ValueError and changes nothing.

Covers ``EpisodicMemory.add``, ``EpiNet.memorize``, ``EpiNet.replay_batch`` (the generator is not advanced
either), ``SalienceClock.tick`` / ``set_time`` and the constructors, with hypothesis-drawn bad arguments of
every class: wrong type, dtype, rank, shape, meta device, NaN/Inf, values overflowing the stored dtype,
r0 <= 0, labels beyond int64. Also: labels of every integer dtype, and salience that depends only on time
differences (times ~1e15).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix.epinet import EpiNet, EpisodicMemory, RecallEngine, SalienceClock

FIELDS = ("_c", "_c_norm", "_z", "_x", "_r0", "_tau", "_y", "_seq")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def snapshot(mem: EpisodicMemory) -> dict[str, object]:
    """Every bit of a memory's state: whole buffers (scratch row included) as bytes, counters, clock."""
    state: dict[str, object] = {
        name: None if getattr(mem, name) is None else getattr(mem, name).clone().view(torch.uint8)
        for name in FIELDS
    }
    state.update(count=mem._count, next_seq=mem._next_seq, device=mem.device, time=mem.clock._time,
                 alpha=mem.clock.alpha, source=mem.clock.source)
    return state


def assert_same(before: dict[str, object], mem: EpisodicMemory) -> None:
    after = snapshot(mem)
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


def filled_memory(seed: int, capacity: int, fill: int, *, input_shape=(1, 2, 2)) -> EpisodicMemory:
    g = torch.Generator().manual_seed(seed)
    mem = EpisodicMemory(capacity, 3, payload_dim=4, input_shape=input_shape,
                         clock=SalienceClock(0.1, source="timestamps"))
    if fill:
        mem.add(torch.randn(fill, 4, generator=g), torch.randn(fill, 3, generator=g),
                torch.rand(fill, generator=g) + 0.1, torch.arange(fill),
                x=None if input_shape is None else torch.randn(fill, *input_shape, generator=g), now=0.0)
    return mem


def _with_bad_entry(t: torch.Tensor, value: float, pos: int) -> torch.Tensor:
    out = t.clone()
    out.view(-1)[pos % out.numel()] = value
    return out


# Each bad case: (argument name as the user passed it, builder(args, pos) -> the bad value).
# `args` holds a valid batch of n = 3 items; `pos` picks an element.
BAD_TENSOR = {
    "not a tensor": lambda t, pos: t.tolist(),
    "numpy": lambda t, pos: t.numpy(),
    "None": lambda t, pos: None,
    "str": lambda t, pos: "tensor",
    "int dtype": lambda t, pos: t.long(),
    "bool dtype": lambda t, pos: t > 0,
    "complex dtype": lambda t, pos: t.to(torch.complex64),
    "0-dim": lambda t, pos: t.reshape(-1)[0],
    "extra dim": lambda t, pos: t.unsqueeze(0).unsqueeze(0),
    "wrong rows": lambda t, pos: torch.cat([t, t[:1]]),
    "wrong cols": lambda t, pos: t[..., :1],
    "meta": lambda t, pos: t.to("meta"),
    "nan": lambda t, pos: _with_bad_entry(t, float("nan"), pos),
    "inf": lambda t, pos: _with_bad_entry(t, float("-inf"), pos),
    "overflows float32": lambda t, pos: _with_bad_entry(t.double(), 1e300, pos),
}
BAD_R0 = {
    "zero": lambda t, pos: _with_bad_entry(t, 0.0, pos),
    "negative": lambda t, pos: _with_bad_entry(t, -1.0, pos),
    "nan": lambda t, pos: _with_bad_entry(t, float("nan"), pos),
    "inf": lambda t, pos: _with_bad_entry(t, float("inf"), pos),
    "wrong length": lambda t, pos: t[:2],
    "int dtype": lambda t, pos: torch.ones(3, dtype=torch.int32),
    "list": lambda t, pos: t.tolist(),
    "str": lambda t, pos: "1.0",
    "bool": lambda t, pos: True,
    "zero scalar": lambda t, pos: 0.0,
    "huge int": lambda t, pos: 10**400,
    "meta": lambda t, pos: t.to("meta"),
    "complex": lambda t, pos: t.to(torch.complex128),
}
BAD_Y = {
    "float": lambda t, pos: t.float(),
    "complex": lambda t, pos: t.to(torch.complex64),
    "bool": lambda t, pos: t > 0,
    "wrong length": lambda t, pos: t[:2],
    "2-dim": lambda t, pos: t.reshape(1, 3, 1).expand(2, 3, 1),
    "str": lambda t, pos: "abc",
    "None": lambda t, pos: None,
    "float list": lambda t, pos: [1.5, 2.0, 3.0],
    "uint64 beyond int64": lambda t, pos: torch.from_numpy(np.array([1, 2**63 + pos, 2], dtype=np.uint64)),
    "meta": lambda t, pos: t.to("meta"),
}
BAD_NOW = {
    "nan": float("nan"), "inf": float("inf"), "str": "later", "bool": True, "complex": 1j,
    "vector": torch.ones(2), "huge int": 10**400,
}
ADD_CASES = ([("z", k) for k in BAD_TENSOR] + [("c", k) for k in BAD_TENSOR]
             + [("x", k) for k in BAD_TENSOR] + [("r0", k) for k in BAD_R0]
             + [("y", k) for k in BAD_Y] + [("now", k) for k in BAD_NOW]
             + [("c", "norm overflows float32"), ("x", "missing")])


def bad_add_args(case: tuple[str, str], pos: int, g: torch.Generator) -> dict[str, object]:
    args: dict[str, object] = dict(z=torch.randn(3, 4, generator=g), c=torch.randn(3, 3, generator=g),
                                   r0=torch.rand(3, generator=g) + 0.1, y=torch.arange(3),
                                   x=torch.randn(3, 1, 2, 2, generator=g), now=1.0)
    name, kind = case
    if name == "now":
        args["now"] = BAD_NOW[kind]
    elif kind == "missing":
        args[name] = None
    elif kind == "norm overflows float32":
        args["c"] = _with_bad_entry(args["c"], 3e19, pos)
    else:
        table = {"r0": BAD_R0, "y": BAD_Y}.get(name, BAD_TENSOR)
        args[name] = table[kind](args[name], pos)
    return args


@SETTINGS
@given(case=st.sampled_from(ADD_CASES), pos=st.integers(0, 11), fill=st.sampled_from([0, 2, 5, 6]),
       seed=st.integers(0, 2**16))
def test_add_with_a_bad_argument_raises_named_error_and_changes_nothing(case, pos, fill, seed):
    mem = filled_memory(seed, 6, fill)
    g = torch.Generator().manual_seed(seed + 1)
    args = bad_add_args(case, pos, g)
    before = snapshot(mem)
    with pytest.raises((TypeError, ValueError)) as info:
        mem.add(args["z"], args["c"], args["r0"], args["y"], x=args["x"], now=args["now"])
    assert case[0] in str(info.value), (case, str(info.value))
    assert_same(before, mem)
    # The memory still works after the failure.
    good = bad_add_args(("now", "nan"), pos, g) | {"now": 2.0}
    mem.add(good["z"], good["c"], good["r0"], good["y"], x=good["x"], now=2.0)
    assert len(mem) == min(6, fill + 3)


MEMORIZE_CASES = ([("z", k) for k in BAD_TENSOR] + [("x", k) for k in BAD_TENSOR]
                  + [("salience", k) for k in BAD_R0] + [("y", k) for k in BAD_Y])


@SETTINGS
@given(case=st.sampled_from(MEMORIZE_CASES), pos=st.integers(0, 11), fill=st.sampled_from([0, 4, 8]),
       seed=st.integers(0, 2**16))
def test_memorize_with_a_bad_argument_names_it_and_changes_nothing(case, pos, fill, seed):
    torch.manual_seed(seed)
    model = EpiNet(latent_dim=4, image_size=4, hidden_dim=8, num_experts=2, memory_capacity=8, top_k=2)
    g = torch.Generator().manual_seed(seed)
    if fill:
        x = torch.randn(fill, 1, 4, 4, generator=g)
        model.memorize(x, torch.randn(fill, 4, generator=g), torch.arange(fill), torch.rand(fill, generator=g) + 0.1)
    args: dict[str, object] = dict(x=torch.randn(3, 1, 4, 4, generator=g), z=torch.randn(3, 4, generator=g),
                                   y=torch.arange(3), salience=torch.rand(3, generator=g) + 0.1)
    name, kind = case
    table = {"salience": BAD_R0, "y": BAD_Y}.get(name, BAD_TENSOR)
    args[name] = table[kind](args[name], pos)
    before = snapshot(model.memory)
    with pytest.raises((TypeError, ValueError)) as info:
        model.memorize(**args)
    assert name in str(info.value), (case, str(info.value))
    assert "r0" not in str(info.value) and "c must" not in str(info.value)  # no internal names
    assert_same(before, model.memory)


@SETTINGS
@given(n=st.sampled_from([-1, 0, 2.5, "3", None, True, 10**30 * 1.0, 2]),
       generator=st.sampled_from(["seed", 3, torch.float32]), fill=st.sampled_from([0, 5]))
def test_replay_batch_refuses_bad_arguments_without_drawing(n, generator, fill):
    model = EpiNet(latent_dim=4, image_size=4, hidden_dim=8, num_experts=2, memory_capacity=8, top_k=2)
    if fill:
        model.memorize(torch.randn(fill, 1, 4, 4), torch.randn(fill, 4), torch.arange(fill), torch.ones(fill))
    g = torch.Generator().manual_seed(0)
    rng_state = g.get_state()
    before = snapshot(model.memory)
    name = "generator" if n == 2 and not isinstance(n, bool) else "n"
    with pytest.raises((TypeError, ValueError), match=rf"^{name} must"):
        model.replay_batch(n, generator=generator)
    if name == "n":  # a bad n with a good generator: refused before drawing
        with pytest.raises((TypeError, ValueError), match=r"^n must"):
            model.replay_batch(n, generator=g)
    assert torch.equal(g.get_state(), rng_state)
    assert_same(before, model.memory)


@SETTINGS
@given(steps=st.sampled_from([-1, 1.5, "1", None, True, 10**400, 2**1023 * 2**30]),
       t=st.sampled_from([float("nan"), float("inf"), "soon", None, True, 1j, torch.ones(2), 4.0, 10**400]))
def test_clock_tick_and_set_time_refuse_bad_arguments_unchanged(steps, t):
    steps_clock = SalienceClock(0.5, start=5.0)
    with pytest.raises((TypeError, ValueError), match="steps"):
        steps_clock.tick(steps)
    assert steps_clock.now() == 5.0
    stamps = SalienceClock(0.5, source="timestamps", start=5.0)
    with pytest.raises((TypeError, ValueError), match=r"\bt\b"):
        stamps.set_time(t)  # 4.0 goes backwards
    assert stamps.now() == 5.0
    with pytest.raises(ValueError, match=r"needs source"):
        stamps.tick()
    with pytest.raises(ValueError, match=r"needs source"):
        steps_clock.set_time(6.0)
    assert stamps.now() == 5.0 and steps_clock.now() == 5.0


@pytest.mark.parametrize(("kwargs", "exc", "name"), [
    (dict(alpha="fast"), TypeError, "alpha"), (dict(alpha=-1.0), ValueError, "alpha"),
    (dict(alpha=float("nan")), ValueError, "alpha"), (dict(alpha=True), TypeError, "alpha"),
    (dict(source=3), TypeError, "source"), (dict(source="sundial"), ValueError, "source"),
    (dict(start="0"), TypeError, "start"), (dict(start=float("inf")), ValueError, "start"),
])
def test_clock_constructor_errors_name_the_argument(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        SalienceClock(**kwargs)


@pytest.mark.parametrize(("kwargs", "exc", "name"), [
    (dict(capacity=0), ValueError, "capacity"), (dict(capacity=2.0), TypeError, "capacity"),
    (dict(key_dim=-3), ValueError, "key_dim"), (dict(payload_dim="4"), TypeError, "payload_dim"),
    (dict(input_shape=(2.7,)), TypeError, r"input_shape\[0\]"), (dict(input_shape=(2, 0)), ValueError, "input_shape"),
    (dict(input_shape="12"), TypeError, "input_shape"), (dict(dtype=torch.int32), TypeError, "dtype"),
    (dict(dtype="float32"), TypeError, "dtype"), (dict(clock=0.1), TypeError, "clock"),
    (dict(device="meta"), ValueError, "device"), (dict(device="nowhere"), ValueError, "device"),
    (dict(device=0.5), TypeError, "device"),
])
def test_memory_constructor_errors_name_the_argument(kwargs, exc, name):
    args = dict(capacity=4, key_dim=3) | kwargs
    with pytest.raises(exc, match=name):
        EpisodicMemory(args.pop("capacity"), args.pop("key_dim"), **args)


@pytest.mark.parametrize(("kwargs", "exc", "name"), [
    (dict(memory_capacity=0), ValueError, "memory_capacity"), (dict(top_k=0), ValueError, "top_k"),
    (dict(use_memory="yes"), TypeError, "use_memory"), (dict(recall_backend=1), TypeError, "recall_backend"),
    (dict(latent_dim=0), ValueError, "latent_dim"), (dict(clock="steps"), TypeError, "clock"),
])
def test_epinet_constructor_errors_name_the_argument(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        EpiNet(**(dict(image_size=4) | kwargs))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16,
                                   torch.uint32, torch.uint64])
def test_labels_of_every_integer_dtype_are_stored_as_int64(dtype, rng):
    mem = EpisodicMemory(4, 2, clock=SalienceClock(0.0, source="timestamps"))
    v = torch.randn(3, 2, generator=rng)
    mem.add(v, v, 1.0, torch.tensor([0, 7, 100], dtype=dtype), now=0.0)
    assert mem.y.dtype == torch.int64 and mem.y.tolist() == [0, 7, 100]
    mem.add(v[:1], v[:1], 2.0, np.array([5], dtype=np.int16), now=0.0)  # numpy and lists are accepted
    mem.add(v[:1], v[:1], 2.0, [9], now=0.0)  # full: evicts the newest of the lowest (label 100)
    assert mem.y.tolist() == [0, 7, 9, 5]


def _aged_memory(t0: float, alpha: float, g: torch.Generator) -> tuple[EpisodicMemory, torch.Tensor]:
    """A memory filled over 8 store times t0 + 0.25 k (exact in float64 even at t0 ~ 1e15), overflowing."""
    mem = EpisodicMemory(12, 6, clock=SalienceClock(alpha, source="timestamps", start=t0))
    keys = torch.randn(40, 6, generator=g)
    r0 = torch.rand(40, generator=g, dtype=torch.float64) * 3 + 0.05
    for k in range(8):
        sl = slice(5 * k, 5 * k + 5)
        mem.add(keys[sl], keys[sl], r0[sl], torch.arange(5 * k, 5 * k + 5), now=t0 + 0.25 * k)
    return mem, keys


@pytest.mark.parametrize("alpha", [1e-3, 0.7])
def test_salience_depends_only_on_time_differences(alpha):
    g = torch.Generator().manual_seed(3)
    small, keys = _aged_memory(0.0, alpha, g)
    g = torch.Generator().manual_seed(3)
    huge, _ = _aged_memory(1e15, alpha, g)  # alpha * now ~ 1e12 .. 7e14
    assert torch.equal(small.y, huge.y)  # admission made the same choices
    queries = keys[:5] + 0.1
    engine = RecallEngine(top_k=4, backend="torch")
    ref = engine.recall(queries, small, details=True)
    for mem, now in ((huge, 1e15 + 2.0), (huge, 1e15 + 1e6), (small, 2.0), (small, 1e15)):
        out = engine.recall(queries, mem, now=now, details=True)
        for a, b in zip(ref, out):
            assert torch.equal(a, b), (now, a, b)
    torch.testing.assert_close(huge.log_salience(1e15 + 10.0), small.log_salience(10.0), rtol=0, atol=0)


@pytest.mark.parametrize(("x", "exc", "match"), [
    (torch.zeros(2, 1, 8, 8, device="meta"), ValueError, "x is on the meta device"),
    (torch.zeros(2, 1, 6, 6), ValueError, r"x must have shape \[B, 1, 8, 8\]"),
    (torch.zeros(2, 8, 8), ValueError, "x must have 4 dimensions"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.int64), TypeError, "x must have dtype"),
    ([[0.0]], TypeError, "x must be a torch.Tensor"),
])
def test_forward_names_a_bad_input(x, exc, match):
    model = EpiNet(latent_dim=4, image_size=8, hidden_dim=8, num_experts=2, memory_capacity=4)
    with pytest.raises(exc, match=match):
        model(x)
