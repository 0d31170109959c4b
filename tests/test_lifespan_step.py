"""ops.lifespan_step: every backend against reference.lifespan_step, edge cases, bad input."""

from __future__ import annotations

import pytest
import torch

from mnemonix import ops, reference

BACKENDS = ["torch", "cpp", "triton"]


@pytest.fixture
def dev(request, triton_device):
    """Inputs of a forced Triton backend live on ``triton_device`` (CUDA when present)."""
    return triton_device if request.getfixturevalue("backend") == "triton" else torch.device("cpu")


def on(dev, *tensors):
    return tuple(None if t is None else t.to(dev) for t in tensors)


def random_state(gen: torch.Generator, batch: int, length: int, num_reminded: int, *, integer_delta: bool = True):
    lifespan = torch.randint(-2, 5, (batch, length), generator=gen).float()
    types = torch.randint(0, 4, (batch, length), generator=gen).to(torch.uint8)
    age = torch.randint(-1, 20, (batch, length), generator=gen).int()
    indices = torch.randint(-1, max(length, 1), (batch, num_reminded), generator=gen)
    if length == 0:
        indices.fill_(-1)
    if integer_delta:
        delta = torch.randint(-1, 6, (batch, num_reminded), generator=gen).float()
    else:
        delta = torch.rand((batch, num_reminded), generator=gen) * 4
    return lifespan, types, age, indices, delta


def assert_same(expected: reference.LifespanResult, got: reference.LifespanResult, exact: bool = True) -> None:
    for name, want, have in zip(expected._fields, expected, got):
        if want is None:
            assert have is None, name
            continue
        assert have.shape == want.shape and have.dtype == want.dtype, (name, have.shape, want.shape)
        if exact or name != "lifespan":
            assert torch.equal(have.cpu(), want.cpu()), (name, want, have)
        else:
            torch.testing.assert_close(have.cpu(), want.cpu(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "batch,length,num_reminded",
    [(1, 1, 0), (1, 1, 3), (2, 17, 5), (3, 64, 20), (1, 130, 70), (4, 33, 1), (2, 0, 4)],
)
def test_backends_match_reference(backend: str, dev, batch: int, length: int, num_reminded: int, rng) -> None:
    for _ in range(3):
        state = random_state(rng, batch, length, num_reminded)
        cap = int(torch.randint(0, length + 2, (1,), generator=rng))
        expected = reference.lifespan_step(*state, cap)
        assert_same(expected, ops.lifespan_step(*on(dev, *state), cap, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_accumulate_and_negative_ignored(backend: str, dev) -> None:
    lifespan = torch.tensor([[1.0, 1.0, 1.0]])
    types = torch.tensor([[1, 2, 3]], dtype=torch.uint8)
    indices = torch.tensor([[0, 0, 2, -1, -5, 0]])
    delta = torch.tensor([[1.0, 2.0, 0.5, 100.0, 100.0, 3.0]])
    out = ops.lifespan_step(*on(dev, lifespan, types, None, indices, delta), 10, backend=backend)
    assert out.lifespan.tolist() == [[6.0, 0.0, 0.5]]
    assert out.keep.tolist() == [[True, False, True]]
    assert out.rank.tolist() == [[0, -1, 1]]
    assert out.age is None
    assert out.types.tolist() == [[2, 2, 3]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_duplicates_close(backend: str, dev, rng) -> None:
    state = random_state(rng, 2, 20, 40, integer_delta=False)
    got = ops.lifespan_step(*on(dev, *state), 3, backend=backend)
    assert_same(reference.lifespan_step(*state, 3), got, exact=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_dead_none_dead_capacity_zero(backend: str, dev) -> None:
    types = torch.tensor([[1, 2, 2, 1], [2, 2, 0, 3]], dtype=torch.uint8, device=dev)
    none = torch.zeros((2, 0), dtype=torch.long, device=dev)
    dead = ops.lifespan_step(torch.ones(2, 4, device=dev), types, None, none, none.float(), 0, backend=backend)
    assert not dead.keep.any() and dead.num_kept.tolist() == [0, 0]
    assert (dead.rank == -1).all()
    assert dead.types.tolist() == [[3, 3, 3, 3], [3, 3, 0, 3]]  # capacity 0: every short-term engram ages out
    alive = ops.lifespan_step(torch.full((2, 4), 9.0, device=dev), types, None, none, none.float(), 2, backend=backend)
    assert alive.keep.all() and alive.num_kept.tolist() == [4, 4]
    assert alive.rank.tolist() == [[0, 1, 2, 3]] * 2
    # oldest (first by position) short-term engrams beyond capacity become long-term
    assert alive.types.tolist() == [[3, 3, 2, 2], [2, 2, 0, 3]]


def test_compaction_keeps_order_and_pads_front() -> None:
    lifespan = torch.tensor([[1.0, 3.0, 3.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    types = torch.ones(2, 4, dtype=torch.uint8)
    none = torch.zeros((2, 0), dtype=torch.long)
    step = ops.lifespan_step(lifespan, types, None, none, none.float(), 8)
    values = torch.arange(8.0).view(2, 4)
    assert ops.compact_engrams(values, step, pad_value=-1).tolist() == [[-1, -1, 1, 2], [4, 5, 6, 7]]
    assert ops.compact_engrams(values, step, pad_value=-1, pad_front=False).tolist() == [[1, 2, -1, -1], [4, 5, 6, 7]]
    data = torch.arange(24.0).view(2, 4, 3)
    compacted = ops.compact_engrams(data, step)
    assert compacted.shape == (2, 4, 3) and compacted[0, 2].tolist() == [3.0, 4.0, 5.0]


def test_inputs_not_modified(rng) -> None:
    state = random_state(rng, 2, 10, 5)
    copies = [t.clone() for t in state]
    ops.lifespan_step(*state, 2)
    for a, b in zip(state, copies):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda s: s.update(lifespan=s["lifespan"][0]), ValueError, "lifespan must have 2"),
        (lambda s: s.update(types=s["types"][:, :3]), ValueError, "types must have the shape"),
        (lambda s: s.update(delta=s["delta"][:, :2]), ValueError, "delta must have the shape"),
        (lambda s: s.update(reminded_indices=s["reminded_indices"] + 100), ValueError, "reminded_indices must be <"),
        (lambda s: s.update(delta=s["delta"].index_fill(1, torch.tensor([0]), float("nan"))), ValueError, "finite"),
        (lambda s: s.update(lifespan=s["lifespan"].double()), TypeError, "lifespan must have dtype"),
        (lambda s: s.update(types=s["types"].long()), TypeError, "types must have dtype"),
        (lambda s: s.update(stm_capacity=-1), ValueError, "stm_capacity"),
        (lambda s: s.update(age=s["age"][:1]), ValueError, "age must have the shape"),
    ],
)
def test_bad_input_raises(change, error, match, rng) -> None:
    names = ["lifespan", "types", "age", "reminded_indices", "delta"]
    state = dict(zip(names, random_state(rng, 2, 6, 3)), stm_capacity=2)
    change(state)
    with pytest.raises(error, match=match):
        ops.lifespan_step(**state)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.lifespan_step(torch.ones(1, 2), torch.ones(1, 2, dtype=torch.uint8), None,
                          torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0), 1, backend="cuda-magic")


@pytest.mark.gpu
def test_triton_on_cuda_matches_reference(rng) -> None:
    for batch, length, num_reminded in [(1, 1, 1), (2, 5000, 48), (1, 100_003, 100)]:
        state = random_state(rng, batch, length, num_reminded)
        expected = reference.lifespan_step(*state, 512) if length < 10_000 else ops.lifespan_step(*state, 512,
                                                                                                   backend="torch")
        got = ops.lifespan_step(*(t.cuda() for t in state), 512)
        assert_same(expected, got)


def test_compaction_into_buffer_with_spare_columns() -> None:
    lifespan = torch.tensor([[1.0, 3.0, 3.0], [3.0, 1.0, 3.0]])
    none = torch.zeros((2, 0), dtype=torch.long)
    step = ops.lifespan_step(lifespan, torch.ones(2, 3, dtype=torch.uint8), None, none, none.float(), 8)
    out = torch.full((2, 5), 99.0)
    view = ops.compact_engrams(torch.arange(6.0).view(2, 3), step, pad_value=-1, out=out)
    assert view.tolist() == [[1.0, 2.0], [3.0, 5.0]] and view.data_ptr() == out.data_ptr()
    assert out[:, 2:].eq(99.0).all()
    with pytest.raises(ValueError, match="out must be"):
        ops.compact_engrams(torch.arange(6.0).view(2, 3), step, out=torch.zeros(2, 1))
