"""ops.nearest_keys: every backend against reference.nearest_keys (sets), near-ties on purpose, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix import ops, reference

EXACT_BACKENDS = ["certified", "exact"]


def as_sets(indices: torch.Tensor) -> list[list[int]]:
    return [sorted(row) for row in indices.tolist()]


def make_case(seed: int, batch: int, width: int, num_keys: int, hidden: int, ties: str):
    """Queries [B, W, H] and keys [B, K, H] with near-ties built on purpose."""
    gen = torch.Generator().manual_seed(seed)
    if ties == "integers":  # small integer grid: many exact ties of the float32 arithmetic
        queries = torch.randint(0, 3, (batch, width, hidden), generator=gen).float()
        keys = torch.randint(0, 3, (batch, num_keys, hidden), generator=gen).float()
        return queries, keys
    queries = torch.rand(batch, width, hidden, generator=gen)
    keys = torch.rand(batch, num_keys, hidden, generator=gen)
    if ties == "near" and num_keys >= 6:
        keys[:, 1] = keys[:, 0]  # exact duplicate
        keys[:, 3] = torch.nextafter(keys[:, 2], torch.full_like(keys[:, 2], 2.0))  # one ulp apart
        if width:  # the mirror image of a key through the queries' mean: (almost) equidistant
            keys[:, 5] = 2 * queries.mean(dim=1) - keys[:, 4]
    return queries, keys


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3),
    width=st.integers(0, 9),
    num_keys=st.integers(1, 70),
    hidden=st.integers(1, 37),
    k_frac=st.floats(0.0, 1.0),
    reduce=st.sampled_from(["mean", "sum"]),
    ties=st.sampled_from(["none", "near", "integers"]),
    masked=st.booleans(),
    backend=st.sampled_from(EXACT_BACKENDS),
)
def test_exact_backends_pick_the_reference_set(seed, batch, width, num_keys, hidden, k_frac, reduce, ties,
                                               masked, backend) -> None:
    queries, keys = make_case(seed, batch, width, num_keys, hidden, ties)
    k = round(k_frac * num_keys)
    invalid = None
    if masked:
        invalid = torch.rand(batch, num_keys, generator=torch.Generator().manual_seed(seed + 1)) < 0.3
    want = reference.nearest_keys(queries, keys, k, reduce=reduce, invalid=invalid)
    got = ops.nearest_keys(queries, keys, k, reduce=reduce, invalid=invalid, backend=backend)
    assert got.shape == (batch, k) and got.dtype == torch.int64
    assert as_sets(got) == as_sets(want)


@pytest.mark.parametrize("matmul_precision", ["highest", "medium"])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_certified_under_reduced_matmul_precision(reduce: str, matmul_precision: str, rng) -> None:
    """With TF32/bf16 float32 matmuls allowed, the float64 stage still certifies the exact set."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(matmul_precision)
    try:
        for _ in range(5):
            batch, width, hidden = (int(torch.randint(1, n, (1,), generator=rng)) for n in (3, 20, 70))
            num_keys = int(torch.randint(6, 300, (1,), generator=rng))
            queries, keys = make_case(int(torch.randint(0, 2**31, (1,), generator=rng)), batch, width, num_keys,
                                      hidden, "near")
            invalid = torch.rand(batch, num_keys, generator=rng) < 0.1
            for k in (1, 5, num_keys):
                for mask in (None, invalid):
                    want = reference.nearest_keys(queries, keys, k, reduce=reduce, invalid=mask)
                    got = ops.nearest_keys(queries, keys, k, reduce=reduce, invalid=mask)
                    assert as_sets(got) == as_sets(want)
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_are_ranked_in_float32(dtype: torch.dtype, rng) -> None:
    queries = torch.rand(2, 4, 12, generator=rng).to(dtype)
    keys = torch.rand(2, 40, 12, generator=rng).to(dtype)
    want = reference.nearest_keys(queries, keys, 7, reduce="sum")
    for backend in EXACT_BACKENDS:
        assert as_sets(ops.nearest_keys(queries, keys, 7, reduce="sum", backend=backend)) == as_sets(want)


def test_gemm_backend_is_valid_and_agrees_when_separated(rng) -> None:
    queries = torch.rand(2, 3, 8, generator=rng)
    keys = torch.arange(30, dtype=torch.float32).view(1, 30, 1).expand(2, 30, 8) * 0.5  # well separated
    got = ops.nearest_keys(queries, keys.contiguous(), 4, backend="gemm")
    assert as_sets(got) == as_sets(reference.nearest_keys(queries, keys, 4))
    keys = torch.rand(2, 50, 8, generator=rng)
    got = ops.nearest_keys(queries, keys, 10, reduce="sum", backend="gemm")
    assert all(len(set(row)) == 10 and min(row) >= 0 and max(row) < 50 for row in got.tolist())


def test_invalid_picks_become_minus_one_and_k_equals_K() -> None:
    queries = torch.zeros(1, 1, 2)
    keys = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.5, 0.0]]])
    invalid = torch.tensor([[False, True, False, True]])
    for backend in ("certified", "exact", "gemm"):
        got = ops.nearest_keys(queries, keys, 4, invalid=invalid, backend=backend)
        assert sorted(got[0].tolist()) == [-1, -1, 0, 2]
        assert ops.nearest_keys(queries, keys, 1, invalid=invalid, backend=backend).tolist() == [[0]]
        assert ops.nearest_keys(queries, keys, 0, backend=backend).shape == (1, 0)


def test_bad_input() -> None:
    q, key = torch.rand(2, 3, 4), torch.rand(2, 5, 4)
    with pytest.raises(TypeError, match="queries"):
        ops.nearest_keys(q.tolist(), key, 1)
    with pytest.raises(ValueError, match="queries must have 3 dimensions"):
        ops.nearest_keys(q[0], key, 1)
    with pytest.raises(ValueError, match="keys must have shape"):
        ops.nearest_keys(q, torch.rand(2, 5, 3), 1)
    with pytest.raises(ValueError, match="k must be <= K"):
        ops.nearest_keys(q, key, 6)
    with pytest.raises(TypeError, match="k must be an int"):
        ops.nearest_keys(q, key, 1.5)
    with pytest.raises(ValueError, match="reduce"):
        ops.nearest_keys(q, key, 1, reduce="max")
    with pytest.raises(TypeError, match="invalid"):
        ops.nearest_keys(q, key, 1, invalid=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="invalid must have shape"):
        ops.nearest_keys(q, key, 1, invalid=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.nearest_keys(q, key, 1, backend="fast")
    with pytest.raises(TypeError, match="keys must have dtype"):
        ops.nearest_keys(q, key.int(), 1)
    bad = key.clone()
    bad[1, 2, 0] = float("nan")
    for backend in ("certified", "exact", "gemm"):
        with pytest.raises(ValueError, match="finite"):
            ops.nearest_keys(q, bad, 2, backend=backend)
    # a NaN in an invalid (padding) key does not matter
    invalid = torch.zeros(2, 5, dtype=torch.bool)
    invalid[1, 2] = True
    assert ops.nearest_keys(q, bad, 2, invalid=invalid).shape == (2, 2)
