"""Bad input to every mutating method of Memoria / Engrams: a clear error naming the argument, state unchanged.

Also: the refusals of issue 10 (NaN lifespans, engram type 7, ages at the int32 maximum,
lifespans reaching +inf, initial_lifespan <= 0, a generator that is not one) and the semantic
checks of ``Memoria.load``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix import _io
from mnemonix.memoria import Engrams, HistoryManager, Memoria

CFG = dict(num_reminded_stm=3, stm_capacity=4, ltm_search_depth=2, initial_lifespan=5, num_final_ltms=2)
B, H = 2, 4


def grown() -> Memoria:
    m = Memoria(**CFG, track_age=True, track_id=True, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        m.add_working_memory(torch.rand(B, 3, H, generator=gen))
        _, idx = m.remind()
        m.adjust_lifespan_and_memories(idx, torch.ones_like(idx, dtype=torch.float32))
    m.add_working_memory(torch.rand(B, 2, H, generator=gen))
    m.engrams.induce_counts[0, 0, 1] = 9  # an overlay entry: it must survive failed calls too
    m.engrams.fire_count  # noqa: B018 - syncs the write above
    return m


def snapshot(m: Memoria) -> dict:
    e = m.engrams
    state = {name: getattr(e, name).clone() for name in ("data", "lifespan", "engrams_types", "_age", "_ids",
                                                             "_uids", "_slots")}
    state["graph"] = [(sorted(zip(*(a.tolist() for a in e.graph.edges(b)))),
                       sorted(zip(*(a.tolist() for a in e.graph.fires(b)))), dict(e.graph.overlay[b]))
                      for b in range(e.batch_size)]
    state["counters"] = (m.next_engram_id, m.timestep, e.next_uid, id(e))
    return state


def assert_unchanged(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


def bad_tensors(shape: tuple[int, ...], *, index_bound: int | None) -> list:
    """Values that must be refused where a tensor of ``shape`` (integer positions < bound, or reals) is due."""
    out = [None, "x", 3, 2.5, torch.rand(*shape, 2), torch.rand(shape[1:] or (1,)),
           torch.ones(shape, dtype=torch.bool), torch.rand(shape).to(torch.complex64),
           torch.empty(shape, device="meta"), torch.ones((shape[0] + 1, *shape[1:]))]
    if index_bound is None:
        out += [torch.full(shape, float("nan")), torch.full(shape, float("inf")), torch.ones((*shape[:-1], 9))]
    else:
        out += [torch.ones(shape), torch.full(shape, index_bound, dtype=torch.long), [[0.5] * shape[1]] * shape[0],
                [[0], [0, 1]]]
    return out


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])


def check_refused(m: Memoria, call, names: tuple[str, ...]) -> None:
    before = snapshot(m)
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert any(name in str(info.value) for name in names), str(info.value)
    assert_unchanged(before, snapshot(m))


@SETTINGS
@given(pick=st.integers(0, 100), which=st.sampled_from(["indices", "lifespan_delta"]))
def test_adjust_refuses_bad_arguments_and_changes_nothing(pick: int, which: str) -> None:
    m = grown()
    idx = torch.zeros((B, 3), dtype=torch.long)
    delta = torch.ones((B, 3))
    bad = bad_tensors((B, 3), index_bound=m.engrams.memory_length if which == "indices" else None)
    value = bad[pick % len(bad)]
    args = (value, delta) if which == "indices" else (idx, value)
    check_refused(m, lambda: m.adjust_lifespan_and_memories(*args), (which,))


@SETTINGS
@given(pick=st.integers(0, 100))
def test_add_working_memory_refuses_bad_data_and_changes_nothing(pick: int) -> None:
    m = grown()
    bad = bad_tensors((B, 3, H), index_bound=None) + [torch.rand(B, 3, H + 1), torch.rand(B + 1, 3, H)]
    check_refused(m, lambda: m.add_working_memory(bad[pick % len(bad)]), ("data",))


ENGRAM_CALLS = {
    "fire_together_wire_together": ("indices", lambda e, v: e.fire_together_wire_together(v), True),
    "delete": ("indices", lambda e, v: e.delete(v), True),
    "extend_lifespan": ("indices", lambda e, v: e.extend_lifespan(v, torch.ones(B, 3)), True),
    "extend_lifespan delta": ("lifespan_delta", lambda e, v: e.extend_lifespan(torch.zeros(B, 3, dtype=torch.long),
                                                                                v), False),
    "retain": ("mask", lambda e, v: e.retain(v), False),
    "fire_count": ("fire_count", lambda e, v: setattr(e, "fire_count", v), False),
    "induce_counts": ("induce_counts", lambda e, v: setattr(e, "induce_counts", v), False),
    "lifespan": ("lifespan", lambda e, v: setattr(e, "lifespan", v), False),
    "engrams_types": ("engrams_types", lambda e, v: setattr(e, "engrams_types", v), False),
    "age": ("age", lambda e, v: setattr(e, "age", v), False),
    "advance": ("indices", lambda e, v: e.advance(v, torch.ones(B, 3), 4), True),
}


@SETTINGS
@given(pick=st.integers(0, 100), method=st.sampled_from(sorted(ENGRAM_CALLS)))
def test_engram_methods_refuse_bad_arguments_and_change_nothing(pick: int, method: str) -> None:
    m = grown()
    name, call, is_index = ENGRAM_CALLS[method]
    shape = (B, 3) if method != "induce_counts" else (B, m.engrams.memory_length, m.engrams.memory_length)
    bad = bad_tensors(shape, index_bound=m.engrams.memory_length if is_index else None)
    value = bad[pick % len(bad)]
    if method == "age" and value is None:
        value = "x"  # age = None is valid: it stops tracking ages
    if method in ("retain", "fire_count", "induce_counts", "lifespan", "engrams_types", "age") and isinstance(
            value, torch.Tensor) and value.dtype in (torch.float32, torch.int64) and value.shape == shape:
        value = torch.full(shape, float("nan"))  # a right-shaped number tensor may be valid: make it bad
    if method == "fire_count" and isinstance(value, torch.Tensor) and value.ndim == 2 and \
            value.shape[1] <= m.engrams.memory_length and value.shape[0] == B:
        value = torch.ones(B, m.engrams.memory_length + 1)  # [B, n <= M] sets the first n counts: valid
    if method == "engrams_types" and pick % 3 == 0:
        value = torch.full((B, m.engrams.memory_length), 7, dtype=torch.uint8)  # engram type 7
    check_refused(m, lambda: call(m.engrams, value), (name,))


def test_refusals_of_issue_10() -> None:
    with pytest.raises(ValueError, match="initial_lifespan"):
        Memoria(**dict(CFG, initial_lifespan=-5))
    with pytest.raises(ValueError, match="initial_lifespan"):
        Memoria(**dict(CFG, initial_lifespan=float("nan")))
    with pytest.raises(TypeError, match="generator"):
        Memoria(**CFG, generator="seed")
    with pytest.raises(ValueError, match="lifespan"):
        Engrams(torch.rand(1, 2, 3), lifespan=torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="engrams_types"):
        Engrams(torch.rand(1, 2, 3), engrams_types=torch.tensor([[1, 7]]))
    with pytest.raises(ValueError, match="engrams_types"):
        Engrams(torch.rand(1, 2, 3), engrams_types=7)
    with pytest.raises(TypeError, match="summary"):
        HistoryManager().add_summary({"engrams": {}})
    with pytest.raises(ValueError, match="device"):
        Memoria(**CFG, device="meta")
    with pytest.raises(ValueError, match="device"):
        Memoria(**CFG, device="potato")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Memoria(**CFG, device="cuda")


def test_age_at_the_int32_maximum_is_refused() -> None:
    m = Memoria(**CFG, track_age=True)
    m.add_working_memory(torch.rand(1, 2, 3))
    m.engrams.age = torch.tensor([[2**31 - 1, 0]], dtype=torch.int32)
    before = snapshot(m)
    _, idx = m.remind()
    before = snapshot(m)
    with pytest.raises(ValueError, match="int32 maximum"):
        m.adjust_lifespan_and_memories(idx, torch.zeros_like(idx))
    assert_unchanged(before, snapshot(m))
    with pytest.raises(ValueError, match="int32 maximum"):
        m.engrams.increase_age()


def test_lifespans_reaching_inf_are_refused() -> None:
    m = Memoria(**dict(CFG, initial_lifespan=3e38, stm_capacity=10))
    m.add_working_memory(torch.rand(1, 3, 3))
    _, idx = m.remind()
    m.adjust_lifespan_and_memories(idx, torch.zeros_like(idx))
    m.add_working_memory(torch.rand(1, 3, 3))
    _, idx = m.remind()
    assert (idx >= 0).any()
    before = snapshot(m)
    with pytest.raises(ValueError, match="overflow"):
        m.adjust_lifespan_and_memories(idx, torch.full(idx.shape, 3e38))
    assert_unchanged(before, snapshot(m))
    with pytest.raises(ValueError, match="overflow"):
        m.engrams.extend_lifespan(idx, torch.full(idx.shape, 3e38))


# ------------------------------------------------------------------------ load
def saved(tmp_path):
    m = grown()
    path = tmp_path / "m.npz"
    m.save(path)
    arrays, meta, version = _io.load_arrays(path, format="mnemonix.memoria", max_version=2)
    return path, arrays, meta, version


def breakages(arrays: dict, meta: dict) -> list[tuple[str, dict, dict]]:
    """(field the error must name, arrays, meta) for each semantic corruption."""
    out = []

    def edit(field, change, target="arrays"):
        a, m = {k: v.copy() for k, v in arrays.items()}, dict(meta)
        change(a if target == "arrays" else m)
        out.append((field, a, m))

    edit("types", lambda a: a["types"].__setitem__((0, 0), 7))
    edit("lifespan", lambda a: a["lifespan"].__setitem__((0, 0), np.nan))
    edit("data", lambda a: a["data"].__setitem__((0, 0, 0), np.inf))
    edit("uids", lambda a: a["uids"].__setitem__((0, 1), a["uids"][0, 2]))
    edit("uids", lambda a: a["uids"].__setitem__((0, 1), 10**9))
    edit("edge_count", lambda a: a["edge_count"].__setitem__(0, a["edge_count"][0] + 1))  # asymmetric
    edit("edge_src", lambda a: a["edge_src"].__setitem__(0, 10**6))
    edit("fire_row", lambda a: a["fire_row"].__setitem__(0, 5))
    edit("age", lambda a: a.__setitem__("age", a["age"].astype(np.int64)))
    edit("next_uid", lambda m: m.__setitem__("next_uid", -1), "meta")
    edit("timestep", lambda m: m.__setitem__("timestep", "3"), "meta")
    edit("config", lambda m: m.__setitem__("config", {**m["config"], "initial_lifespan": -5}), "meta")
    edit("config", lambda m: m.__setitem__("config", {**m["config"], "tie_break": "coin"}), "meta")
    edit("overlay_src", lambda a: a["overlay_src"].__setitem__(0, 10**6))
    return out


def test_load_validates_what_it_reads(tmp_path) -> None:
    path, arrays, meta, version = saved(tmp_path)
    assert version == 2  # the overlay entry needs version 2
    loaded = Memoria.load(path)
    assert loaded.engrams == grown().engrams
    for field, a, m in breakages(arrays, meta):
        broken = tmp_path / "broken.npz"
        _io.save_arrays(broken, a, format="mnemonix.memoria", version=version, meta=m)
        with pytest.raises(_io.FormatError, match=field):
            Memoria.load(broken)


def test_version_1_files_load_and_stay_version_1(tmp_path) -> None:
    m = Memoria(**CFG, track_id=True, generator=torch.Generator().manual_seed(0))
    m.add_working_memory(torch.rand(1, 3, 2))
    m.remind()
    path = tmp_path / "v1.npz"
    m.save(path)
    _, _, version = _io.load_arrays(path, format="mnemonix.memoria", max_version=2)
    assert version == 1
    assert Memoria.load(path).engrams == m.engrams
