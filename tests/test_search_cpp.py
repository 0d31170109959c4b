"""search_topk's ``cpp`` backend (csrc/search) against the float64 reference, and its core.

Exact means equal: the same rows in the same order (ties to the lower tie id) and the same
float64 scores, for every storage dtype, both inner-loop layouts (``rows``: small batches,
``panels``: 6 x 16 register blocks), both instruction sets (AVX2 + F16C and the portable
kernel, forced), masks, k = N, k past the kept rows, exact ties, N split over threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_store_search_topk import _case, _keys  # the same stored rows, masks and tie ids

from mnemonix import ops, reference
from mnemonix.backends import search as sb
from mnemonix.ops import search as search_op

core = pytest.importorskip("mnemonix._core").search

STORAGE = [torch.float32, torch.float16, torch.bfloat16, torch.int8]
KERNELS = [("rows", False), ("panels", False), ("rows", True), ("panels", True)]  # (layout, portable)


class _Forced:
    """A stand-in for ``mnemonix._core.search`` whose scans use one layout and instruction set."""

    def __init__(self, layout: str, portable: bool, threads: int | None = None):
        self.options = {"layout": layout, "portable": portable}
        if threads is not None:
            self.options["num_threads"] = threads

    def scan(self, *args, **kwargs):
        return core.scan(*args, **{**kwargs, **self.options})


@pytest.fixture
def force_kernel(monkeypatch):
    def force(layout: str, portable: bool, threads: int | None = None) -> None:
        monkeypatch.setattr(sb, "_core_search", lambda: _Forced(layout, portable, threads))

    return force


def _check(case, k):
    ours_s, ours_r = ops.search_topk(k=k, exact_scores=True, backend="cpp", **case)
    ref_s, ref_r = reference.search_topk(k=k, **case)
    assert ours_r.shape == ref_r.shape == (case["queries"].shape[0], k)
    assert torch.equal(ours_r, ref_r), (ours_r, ref_r)
    assert torch.equal(ours_s, ref_s)


@pytest.mark.parametrize("dtype", STORAGE)
@pytest.mark.parametrize("metric", ["ip", "cos"])
@pytest.mark.parametrize("layout,portable", KERNELS)
def test_cpp_matches_reference_many_shapes(rng, dtype, metric, layout, portable, force_kernel):
    force_kernel(layout, portable)
    # N not a multiple of the 4-row block, the 16-row panel or the tile; d not a multiple of 8;
    # B over one 6-query register block (7, 13) and not a multiple of 2.
    for B, N, d in [(1, 1, 1), (3, 7, 3), (2, 100, 17), (7, 300, 64), (13, 129, 5), (1, 70, 130)]:
        for masked in (None, "random", "few", "none_kept"):
            case = _case(rng, B, N, d, dtype, masked=masked, dup=N // 3, tie=bool(N % 2), metric=metric)
            for k in sorted({1, 4, N, N + 3}):
                _check(case, k)


@pytest.mark.parametrize("dtype", STORAGE)
@pytest.mark.parametrize("layout", ["rows", "panels"])
def test_exact_ties_beyond_the_candidates(rng, dtype, layout, force_kernel):
    """Forty copies of the best row: more than k + 8 candidates tie, the rescan settles them by tie id."""
    force_kernel(layout, False)
    N, d = 500, 12
    keys, scales = _keys(rng, N, d, dtype)
    rows = torch.randperm(N, generator=rng)[:40]
    keys[rows] = keys[7].clone()
    if scales is not None:
        scales[rows] = scales[7].clone()
    q = (keys[7].float() * (1 if scales is None else scales[7]))[None].repeat(2, 1)
    q[1] = 0.0  # zero query: every row scores 0 exactly
    case = dict(queries=q, keys=keys, scales=scales, mask=None, tie_ids=torch.randperm(N, generator=rng), metric="ip")
    for k in (3, 10, 45):
        _check(case, k)


@pytest.mark.parametrize("dtype", STORAGE)
def test_split_over_threads_merges_exactly(rng, dtype, force_kernel):
    """N large enough for many parts (>= 1024 rows and ~1M multiply-adds each): same result on 1 and 2 threads."""
    N, d = 40_000, 32
    case = _case(rng, 3, N, d, dtype, masked="random", dup=200, tie=True, metric="ip")
    ref_s, ref_r = reference.search_topk(k=25, **case)
    for threads in (1, 2):
        force_kernel("rows", False, threads)
        s, r = ops.search_topk(k=25, exact_scores=True, backend="cpp", **case)
        assert torch.equal(r, ref_r) and torch.equal(s, ref_s)
    values, _, _, _ = core.scan(case["queries"].numpy(), np.zeros((N, d), np.float32), key_type="float32", n_cand=4,
                                num_threads=2)
    assert (values == 0).all()


@pytest.mark.parametrize("layout,portable", KERNELS)
def test_every_float16_and_bfloat16_value_converts_exactly(layout, portable):
    """All 2^16 bit patterns but NaN / Inf (subnormals included) as rows of d = 8 (vector path) and
    d = 1 (scalar path); query e_j: each score is the stored value itself."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    for dtype in (torch.float16, torch.bfloat16):
        values = bits.view(dtype)
        finite = values[torch.isfinite(values)]
        finite = torch.cat([finite, finite[: (-finite.numel()) % 8]])  # a multiple of 8
        for d in (8, 1):
            rows = finite.reshape(-1, d).contiguous()
            for j in range(d):
                q = np.zeros((1, d), np.float32)
                q[0, j] = 1.0
                got, idx, _, bad = core.scan(q, rows.view(torch.int16).numpy(), key_type=str(dtype).split(".")[1],
                                             n_cand=rows.shape[0], layout=layout, portable=portable)
                assert bad == 0
                assert torch.equal(torch.from_numpy(got[0]), rows[:, j].float()[torch.from_numpy(idx[0])])
                assert sorted(idx[0].tolist()) == list(range(rows.shape[0]))


@pytest.mark.parametrize("layout,portable", KERNELS)
def test_nonfinite_keys_are_refused_unless_masked(rng, layout, portable, force_kernel):
    force_kernel(layout, portable)
    q = torch.randn(2, 9, generator=rng)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        keys = torch.randn(50, 9, generator=rng).to(dtype)
        keys[31, 4] = float("nan") if dtype != torch.float16 else float("inf")
        with pytest.raises(ValueError, match="keys must be finite"):
            ops.search_topk(q, keys, 3, backend="cpp")
        masked = torch.ones(50, dtype=torch.bool)
        masked[31] = False  # a masked-out row may hold anything: it is never scored into a list
        _, r = ops.search_topk(q, keys, 50, mask=masked, backend="cpp")
        assert (r[:, :49] != 31).all() and (r[:, 49] == -1).all()


def test_policy_prefers_cpp_on_cpu_up_to_the_measured_batch(rng):
    keys = torch.randn(10, 4, generator=rng)
    for B, first in ((1, "cpp"), (search_op.CPP_MAX_BATCH, "cpp"), (search_op.CPP_MAX_BATCH + 1, "torch")):
        inputs = search_op.SearchInputs(torch.zeros(B, 4), keys, None, None, None, "ip", 3, 3)
        assert search_op.speed_policy(inputs, sb.BACKENDS)[0] == first
    capable = [b.name for b in sb.BACKENDS if not b.not_supported_reasons(inputs)]
    assert "cpp" in capable and "torch" in capable


def test_core_refuses_bad_arguments_naming_them():
    q = np.zeros((2, 4), np.float32)
    keys = np.zeros((10, 4), np.float32)
    with pytest.raises(TypeError, match="keys must be a numpy array holding float16"):
        core.scan(q, keys, key_type="float16", n_cand=3)  # never cast: the rows are read as stored
    with pytest.raises(TypeError, match="holding int8"):
        core.scan(q, keys.astype(np.uint8), key_type="int8", scales=np.ones(10, np.float32), n_cand=3)
    with pytest.raises(ValueError, match="key_type must be one of"):
        core.scan(q, keys, key_type="float64", n_cand=3)
    with pytest.raises(ValueError, match="scales must be given with int8 keys"):
        core.scan(q, keys.astype(np.int8), key_type="int8", n_cand=3)
    with pytest.raises(ValueError, match="scales must be None"):
        core.scan(q, keys, key_type="float32", scales=np.ones(10, np.float32), n_cand=3)
    with pytest.raises(ValueError, match="keys must have d = 4"):
        core.scan(q, keys[:, :3], key_type="float32", n_cand=3)
    with pytest.raises(TypeError, match="mask must be a numpy bool array"):
        core.scan(q, keys, key_type="float32", mask=np.ones(10, np.uint8), n_cand=3)
    with pytest.raises(ValueError, match="mask must have shape"):
        core.scan(q, keys, key_type="float32", mask=np.ones(9, bool), n_cand=3)
    with pytest.raises(ValueError, match="n_cand must be"):
        core.scan(q, keys, key_type="float32", n_cand=-1)
    with pytest.raises(ValueError, match="layout must be one of"):
        core.scan(q, keys, key_type="float32", n_cand=3, layout="columns")
    with pytest.raises(TypeError, match="cosine must be a bool"):
        core.scan(q, keys, key_type="float32", n_cand=3, cosine="yes")
    values, rows, _, _ = core.scan(q, keys, key_type="float32", n_cand=12)  # past N: padded
    assert (rows[:, 10:] == -1).all() and np.isneginf(values[:, 10:]).all()
    assert core.isa() in ("avx2", "portable") and core.panels_min_batch() >= 1
