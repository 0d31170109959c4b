"""hopfield_retrieve: every CPU backend against the reference, argument errors, memory bound."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import platform
import subprocess
import sys
import textwrap

import kernel_classes
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemonix import _triton, calibration, ops, reference
from mnemonix.backends import hopfield as hb
from mnemonix.ops import hopfield as hops

TOL = {torch.float32: 2e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}
CPU_BACKENDS = ["torch", "cpp"]


def draw(rng, b, n, d, dtype=torch.float32, dv=None, scale=1.0):
    q = (torch.randn(b, d, generator=rng) * scale).to(dtype)
    k = (torch.randn(n, d, generator=rng) * scale).to(dtype)
    v = None if dv is None else torch.randn(n, dv, generator=rng).to(dtype)
    return q, k, v


def check_against_reference(q, k, v, *, beta, backend, mask=None, bias=None, update_steps=0, tol=None):
    tol = TOL[q.dtype] if tol is None else tol
    out, lse, arg = ops.hopfield_retrieve(q, k, v, beta=beta, mask=mask, bias=bias, update_steps=update_steps,
                                          return_lse=True, return_argmax=True, backend=backend)
    r_out, r_lse, r_arg = reference.hopfield_retrieve(q, k, v, beta=beta, mask=mask, bias=bias,
                                                      update_steps=update_steps, return_lse=True,
                                                      return_argmax=True)
    assert out.dtype == q.dtype and out.shape == r_out.shape
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    scale = max(1.0, float(r_out.float().abs().max()))
    torch.testing.assert_close(out.float(), r_out.float(), atol=tol * scale, rtol=tol)
    torch.testing.assert_close(lse, r_lse, atol=tol * max(1.0, float(r_lse.abs().max())), rtol=tol)
    # argmax: identical up to near-ties of the logits (which rounding may order either way)
    if update_steps == 0:
        logits = beta * (q.float() @ k.float().T)
        if bias is not None:
            logits = logits + bias.float()
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        ours = logits.gather(1, arg.reshape(-1, 1))[:, 0]
        best = logits.gather(1, r_arg.reshape(-1, 1))[:, 0]
        assert (ours >= best - 1e-4 * best.abs().clamp_min(1)).all()
        assert ((arg == r_arg) | (ours >= best - 1e-4 * best.abs().clamp_min(1))).all()
        if mask is not None:
            assert mask[arg].all()
    return out


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backends_match_reference_fp32_grid(backend, rng):
    for n, d, b in itertools.product([1, 7, 1000, 4097], [1, 3, 64, 130], [1, 5, 64]):
        q, k, _ = draw(rng, b, n, d)
        beta = float(torch.empty(1).uniform_(0.05, 2.0, generator=rng)) / math.sqrt(d)
        check_against_reference(q, k, None, beta=beta, backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_values_mask_bias(backend, rng):
    for n, d, dv, b in [(1, 3, 5, 2), (7, 64, 1, 5), (1000, 130, 33, 16), (4097, 3, 64, 64)]:
        q, k, v = draw(rng, b, n, d, dv=dv)
        mask = torch.rand(n, generator=rng) < 0.5
        mask[int(torch.randint(n, (1,), generator=rng))] = True
        bias = torch.randn(n, generator=rng)
        for m, bi in [(mask, None), (None, bias), (mask, bias)]:
            check_against_reference(q, k, v, beta=0.3, backend=backend, mask=m, bias=bi)
            check_against_reference(q, k, None, beta=0.3, backend=backend, mask=m, bias=bi)


def test_mask_keeping_only_last_pattern(rng):
    q, k, _ = draw(rng, 5, 4097, 64)
    mask = torch.zeros(4097, dtype=torch.bool)
    mask[-1] = True
    for backend in CPU_BACKENDS + ["reference"]:
        out, arg = ops.hopfield_retrieve(q, k, beta=1.0, mask=mask, return_argmax=True, backend=backend)
        torch.testing.assert_close(out, k[-1].expand(5, -1))
        assert (arg == 4096).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["reference"])
def test_argmax_ties_go_to_the_lower_index_across_splits(backend, rng):
    # 300,000 rows: the C++ kernel splits N into several parts; the best pattern appears twice
    # (integer values: every dot product is exact, so the tie is exact in any summation order)
    k = torch.randint(-3, 4, (300_000, 16), generator=rng).float()
    k[250_000] = k[150] = torch.randint(4, 6, (16,), generator=rng).float()
    q = k[150].expand(4, -1).clone()
    _, arg = ops.hopfield_retrieve(q, k, beta=0.01, return_argmax=True, backend=backend)
    assert (arg == 150).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype, rng):
    for n, d, b in [(1, 1, 1), (7, 3, 5), (1000, 64, 64), (4097, 130, 5)]:
        q, k, _ = draw(rng, b, n, d, dtype=dtype)
        for backend in (None, "cpp"):  # 16-bit rows in the C++ kernel (the argmax is asked for)
            out = check_against_reference(q, k, None, beta=1.0 / math.sqrt(d), backend=backend)
            assert out.dtype == dtype
        flash = ops.hopfield_retrieve(q, k, beta=1.0 / math.sqrt(d), backend="sdpa")  # 16-bit GEMMs
        want = reference.hopfield_retrieve(q.double(), k.double(), beta=1.0 / math.sqrt(d))
        assert flash.dtype == dtype and float((flash.double() - want).abs().max()) <= TOL[dtype] * max(
            1.0, float(want.abs().max()))
        with pytest.raises(ValueError, match="gemm"):  # no float32 logits from torch's 16-bit CPU matmul
            ops.hopfield_retrieve(q, k, beta=1.0, backend="gemm")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("beta", [1e-3, 1e3])
def test_extreme_beta_is_finite(backend, beta, rng):
    for n, d, b in [(7, 3, 5), (4097, 64, 16)]:
        q, k, _ = draw(rng, b, n, d)
        out = check_against_reference(q, k, None, beta=beta, backend=backend, tol=5e-3)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_update_steps(backend, rng):
    for n, d, b in [(7, 3, 5), (1000, 64, 16), (4097, 130, 5)]:
        k = torch.nn.functional.normalize(torch.randn(n, d, generator=rng), dim=1) * 3
        q = k[torch.randint(n, (b,), generator=rng)] + 0.3 * torch.randn(b, d, generator=rng)
        check_against_reference(q, k, None, beta=2.0, backend=backend, update_steps=4, tol=1e-3)


def test_leading_dimensions_and_auto_dispatch(rng):
    q, k, _ = draw(rng, 2 * 3 * 4, 300, 16)
    q = q.reshape(2, 3, 4, 16)
    out, lse, arg = ops.hopfield_retrieve(q, k, beta=0.5, return_lse=True, return_argmax=True)
    assert out.shape == (2, 3, 4, 16) and lse.shape == (2, 3, 4) and arg.shape == (2, 3, 4)
    ref = reference.hopfield_retrieve(q, k, beta=0.5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # automatic choice (speed policy): cpp for small float32 batches (when built), then the
    # flash kernel, or the blocked GEMM path for very wide keys; never interpreted Triton on CPU
    small = q.reshape(-1, 16)[:4]
    if hb._core_retrieval() is not None:
        limits = calibration.DEFAULTS["cpu"]["hopfield_retrieve"]
        assert hops.choose_backend(small, k) == "cpp"
        assert hops.choose_backend(torch.zeros(257, 16), k, want_argmax=True) == "gemm"  # no argmax in flash
        # narrow keys (d <= 48) keep the kernel up to cpp_max_batch_narrow on stores of many rows
        narrow_max = limits["cpp_max_batch_narrow"]
        for narrow_keys in (torch.empty(limits["cpp_few_rows"], 16),
                            torch.empty(hops.CPP_LARGE_STORE_BYTES // (4 * 16), 16)):
            assert hops.cpp_max_batch(narrow_keys) == narrow_max
            assert hops.choose_backend(torch.zeros(narrow_max, 16), narrow_keys) == "cpp"
            assert hops.choose_backend(torch.zeros(narrow_max + 1, 16), narrow_keys) == "sdpa"
        # under cpp_few_rows rows the kernel splits the queries: cpp_max_batch_few_rows while
        # B x d <= cpp_small_store_max_dims, narrow keys too (k: 300 x 16)
        few_max = limits["cpp_max_batch_few_rows"]
        assert few_max > narrow_max and few_max * 16 <= limits["cpp_small_store_max_dims"]
        assert hops.choose_backend(torch.zeros(few_max, 16), k) == "cpp"
        assert hops.choose_backend(torch.zeros(few_max + 1, 16), k) == "sdpa"
        assert hops.cpp_max_batch(torch.empty(300, 64)) == limits["cpp_small_store_max_dims"] // 64 > hops.CPP_MAX_BATCH
        assert hops.cpp_max_batch(torch.empty(300, 4)) == narrow_max  # below cpp_few_rows_min_dim
        # wider keys: cpp_max_batch (capped by B x d) on a store the caches hold,
        # cpp_max_batch_large_store once it streams from memory
        wide_small = torch.empty(limits["cpp_few_rows"], 64)
        assert hops.cpp_max_batch(wide_small) == hops.CPP_MAX_BATCH < limits["cpp_small_store_max_dims"] // 64
        cap = limits["cpp_small_store_max_dims"] // 256  # the B x d cap, between the two batches below
        assert hops.CPP_MAX_BATCH > cap > limits["cpp_small_store_min_batch"]
        assert hops.cpp_max_batch(torch.empty(limits["cpp_few_rows"], 256)) == cap
        # ... which always allows cpp_small_store_min_batch (1.6 MB: a cache-sized store)
        assert hops.cpp_max_batch(torch.empty(100, 4000)) == limits["cpp_small_store_min_batch"]
        assert hops.choose_backend(torch.zeros(hops.CPP_MAX_BATCH, 64), wide_small) == "cpp"
        assert hops.choose_backend(torch.zeros(hops.CPP_MAX_BATCH + 1, 64), wide_small) == "sdpa"
        large_keys = torch.empty(hops.CPP_LARGE_STORE_BYTES // (4 * 64), 64)
        assert hops.cpp_max_batch(large_keys) == hops.CPP_MAX_BATCH_LARGE_STORE
        assert hops.choose_backend(torch.zeros(hops.CPP_MAX_BATCH_LARGE_STORE, 64), large_keys) == "cpp"
        assert hops.choose_backend(torch.zeros(hops.CPP_MAX_BATCH_LARGE_STORE + 1, 64), large_keys) == "sdpa"
        wide_keys = torch.empty(10, 4096)  # GEMM-bound at every batch past the C++ kernel's
        assert hops.choose_backend(torch.zeros(500, 4096), wide_keys) == "gemm"
    # 16-bit operands: the C++ kernel (16-bit rows) for narrow keys at small batches, else the flash kernel
    assert hops.choose_backend(small.half(), k.half()) == ("cpp" if hb._core_retrieval() is not None else "sdpa")
    assert hops.choose_backend(torch.zeros(300, 16).bfloat16(), k.bfloat16()) == "sdpa"


@pytest.mark.parametrize("width", [8, 16])
def test_policy_sends_mid_batches_to_the_lane_scan(width):
    # cpp_lane_max_batch (the Xeon profile's): the C++ kernel from lane_min_batch to that batch
    # while d and dv fit the lanes, at either lane width (how far the lanes lead is the CPU's
    # threshold: 8-lane AVX2 EPYCs have a profile of their own)
    core = hb._core_retrieval()
    assert core is not None, "mnemonix._core.retrieval must be built"
    xeon = dict(calibration.CPU_PROFILES[0][1]["hopfield_retrieve"])
    limits = {**calibration.DEFAULTS["cpu"]["hopfield_retrieve"], **xeon}
    top, first = limits["cpp_lane_max_batch"], core.lane_min_batch
    assert top >= first

    def first_choice(b, d=128, dv=None, lanes=top, dims=limits["cpp_lane_max_dims"], large_store_dims=0,
                     first_batch_bytes=0):
        previous = core.set_max_lane_width(width)
        try:
            wanted = {**limits, "cpp_lane_max_batch": lanes, "cpp_lane_max_dims": dims,
                      "cpp_lane_max_dims_large_store": large_store_dims,
                      "cpp_lane_first_batch_min_bytes_large_store": first_batch_bytes}
            return hops._cpu_forward_order(b, 100_000, d, 4, wanted, dv)[0]
        finally:
            core.set_max_lane_width(previous)

    assert first_choice(first - 1) != "cpp"  # the row scan: the flash kernel's batches (B x d > 256)
    assert first_choice(first) == first_choice(top) == "cpp"
    assert first_choice(top + 1) == "sdpa"
    dims = limits["cpp_lane_max_dims"]
    assert dims <= core.lane_max_dims
    assert first_choice(first, d=dims) == "cpp"
    assert first_choice(first, d=dims + 1) != "cpp"  # keys wider than measured for the lanes
    assert first_choice(first, dv=dims + 1) != "cpp"  # values too wide
    # ... except on a store that streams (this one: 100k rows), to the Xeon's wider limit while
    # cpp_lane_min_batch_large_store <= B <= cpp_max_batch_large_store
    wide, least = xeon["cpp_lane_max_dims_large_store"], limits["cpp_lane_min_batch_large_store"]
    assert first_choice(least, d=wide, large_store_dims=wide) == "cpp"
    assert first_choice(least - 1, d=wide, large_store_dims=wide) != "cpp"
    assert first_choice(limits["cpp_max_batch_large_store"] + 1, d=wide, large_store_dims=wide) != "cpp"
    # ... from the first lane batch on keys of the profile's bytes or more (these: 1.6 GB)
    big = xeon["cpp_lane_first_batch_min_bytes_large_store"]
    assert 0 < big <= 100_000 * wide * 4
    assert first_choice(first, d=wide, large_store_dims=wide, first_batch_bytes=big) == "cpp"
    assert first_choice(first - 1, d=wide, large_store_dims=wide, first_batch_bytes=big) != "cpp"
    # up to the kernel's own limit where a CPU's thresholds allow it (the Zen 5 profile)
    deeper = core.lane_max_dims
    assert first_choice(first, d=deeper, dims=deeper) == "cpp"
    assert first_choice(first, d=deeper + 1, dims=deeper) != "cpp"
    assert first_choice(first, lanes=0) != "cpp"  # the shipped default: off
    # 16-bit operands: cpp_lane_max_batch_<dtype> (the profile: float16 only, B <= 192)
    half_top = limits["cpp_lane_max_batch_float16"]
    assert half_top >= first and limits["cpp_lane_max_batch_bfloat16"] == 0
    for b, dtype, dv, want in ((first, "float16", None, True), (half_top, "float16", None, True),
                               (half_top + 1, "float16", None, False), (first, "bfloat16", None, False),
                               (first, "float16", dims + 1, False)):
        # (the defaults' B x d rule for 16-bit rows, so that only the lanes can take these batches)
        row_rule = {f"cpp_max_dims_{t}": calibration.DEFAULTS["cpu"]["hopfield_retrieve"][f"cpp_max_dims_{t}"]
                    for t in ("float16", "bfloat16")}
        got = hops._cpu_half_order(b, 10_000, 128, dtype, {**limits, **row_rule}, dv)[0]
        assert got == "cpp" if want else got in ("sdpa", "amx"), (b, dtype, dv)  # (amx: the AMX tiles' bands)


def test_gradients_come_from_torch_backend(rng):
    q, k, v = draw(rng, 4, 50, 8, dv=6)
    q.requires_grad_(True)
    k.requires_grad_(True)
    out = ops.hopfield_retrieve(q, k, v, beta=0.7)
    out.square().sum().backward()
    q2, k2 = q.detach().clone().requires_grad_(True), k.detach().clone().requires_grad_(True)
    reference.hopfield_retrieve(q2, k2, v, beta=0.7).square().sum().backward()
    torch.testing.assert_close(q.grad, q2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(k.grad, k2.grad, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="forward only"):
        ops.hopfield_retrieve(q, k, v, beta=0.7, backend="cpp")


def test_cpp_thread_count_does_not_change_results(rng):
    core = hb._core_retrieval()
    assert core is not None, "mnemonix._core.retrieval must be built"
    q, k, _ = draw(rng, 3, 5000, 20)
    one = core.retrieve(q.numpy(), k.numpy(), beta=0.5, num_threads=1)
    two = core.retrieve(q.numpy(), k.numpy(), beta=0.5, num_threads=2)
    torch.testing.assert_close(torch.from_numpy(one[0]), torch.from_numpy(two[0]), atol=1e-5, rtol=1e-5)
    assert (one[2] == two[2]).all()
    with pytest.raises(ValueError, match="keys"):
        core.retrieve(q.numpy(), k[:, :5].numpy(), beta=0.5)
    with pytest.raises(ValueError, match="beta"):
        core.retrieve(q.numpy(), k.numpy(), beta=-1.0)



def _assert_core_matches_reference(got, q, k, v, beta, mask=None):
    """out and lse of a raw ``_core.retrieval.retrieve`` call against the float64 reference."""
    want, lse = reference.hopfield_retrieve(q.double(), k.double(), None if v is None else v.double(), beta=beta,
                                            mask=mask, return_lse=True)
    torch.testing.assert_close(torch.from_numpy(got[0]).double(), want, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(got[1]).double(), lse, atol=1e-4, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(300, 2047), d=st.integers(400, 1100),
       dv=st.sampled_from([None, 3]), masked=st.booleans(), threads=st.integers(2, 4))
def test_cpp_one_query_over_few_wide_rows_splits_the_rows(seed, n, d, dv, masked, threads):
    # a single query over a store under 2048 rows cannot split queries: from 400k multiply-adds
    # the rows are cut into an even number of parts fixed by the shape (128 rows and 128k each,
    # merged states) that the threads share; against the float64 reference
    core = hb._core_retrieval()
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, d, generator=gen), torch.randn(n, d, generator=gen) / 4
    v = None if dv is None else torch.randn(n, dv, generator=gen)
    bias = torch.where(torch.rand(n, generator=gen) < 0.3, -math.inf, 0.0) if masked else None
    bias_np = None if bias is None else bias.numpy()
    got = core.retrieve(q.numpy(), k.numpy(), None if v is None else v.numpy(), beta=0.7, bias=bias_np,
                        num_threads=threads)
    one = core.retrieve(q.numpy(), k.numpy(), None if v is None else v.numpy(), beta=0.7, bias=bias_np,
                        num_threads=1)
    _assert_core_matches_reference(got, q, k, v, 0.7, None if bias is None else bias == 0)
    torch.testing.assert_close(torch.from_numpy(got[0]), torch.from_numpy(one[0]), atol=2e-5, rtol=1e-4)
    assert (got[2] == one[2]).all()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(2, 48), n=st.integers(700, 2047),
       d=st.sampled_from([7, 64, 130, 512]), dv=st.sampled_from([None, 9, 72]), masked=st.booleans(),
       threads=st.integers(2, 5))
def test_cpp_small_stores_split_queries_over_threads_bit_for_bit(seed, b, n, d, dv, masked, threads):
    # Under 2048 rows the threads split the queries (from ~128k multiply-adds: most draws here)
    # and the rows into parts fixed by the shape (d = 512: up to 14; one query alone takes them
    # on several threads): every query's out, lse and argmax must be the single thread's, bit for
    # bit, whatever the thread count and batch.
    core = hb._core_retrieval()
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, d, generator=gen), torch.randn(n, d, generator=gen)
    v = None if dv is None else torch.randn(n, dv, generator=gen).numpy()
    bias = torch.where(torch.rand(n, generator=gen) < 0.3, -math.inf, 0.0).numpy() if masked else None
    one = core.retrieve(q.numpy(), k.numpy(), v, beta=0.7, bias=bias, num_threads=1)
    many = core.retrieve(q.numpy(), k.numpy(), v, beta=0.7, bias=bias, num_threads=threads)
    # ... and the queries beside it within its batch class (the row scan, one lane group with
    # row parts, lane groups in one part: three summation orders), so the last queries of the
    # class's smallest batch stand for the batch
    tail = kernel_classes.smallest_batch_of_class(core, b)
    alone = core.retrieve(q[-tail:].numpy(), k.numpy(), v, beta=0.7, bias=bias, num_threads=threads)
    for x, y in zip(one, many):
        assert x.tobytes() == y.tobytes()
    for x, y in zip(one, alone):
        assert x[-tail:].tobytes() == y.tobytes()


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_cpp_a_few_very_wide_rows_take_at_least_two_parts(n):
    # 310,000-wide keys: one query is worth two threads even on 1-5 rows, so the rows go in two
    # parts (one of them empty when N = 1), against the float64 reference, the same bits on one
    # thread or three and alone or in a batch
    core = hb._core_retrieval()
    gen = torch.Generator().manual_seed(n)
    q, k = torch.randn(3, 310_000, generator=gen) / 600, torch.randn(n, 310_000, generator=gen)
    got = core.retrieve(q.numpy(), k.numpy(), None, beta=1.0, num_threads=3)
    _assert_core_matches_reference(got, q, k, None, 1.0)
    one = core.retrieve(q.numpy(), k.numpy(), None, beta=1.0, num_threads=1)
    alone = core.retrieve(q[-1:].numpy(), k.numpy(), None, beta=1.0, num_threads=2)
    for x, y, z in zip(got, one, alone):
        assert x.tobytes() == y.tobytes()
        assert x[-1:].tobytes() == z.tobytes()


def test_cpp_small_store_parts_are_capped_by_their_states_and_stay_exact():
    # 300 queries of dv = 4,097 (past the lanes) on 2,000 rows would take 14 parts of softmax
    # state (~17M floats): the parts are capped at ~16M floats (13 here), and the result still
    # matches the float64 reference
    core = hb._core_retrieval()
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(300, 1, generator=gen), torch.randn(2000, 1, generator=gen)
    v = torch.randn(2000, 4097, generator=gen)
    got = core.retrieve(q.numpy(), k.numpy(), v.numpy(), beta=1.0, num_threads=2)
    _assert_core_matches_reference(got, q, k, v, 1.0)


# Key and value widths of the lane scan: any up to 256, and wider ones to its limit (4,096), with
# ragged column tails
LANE_DIMS = st.one_of(st.integers(1, 256), st.sampled_from([257, 300, 512, 777, 1024, 2048, 4095, 4096]))


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(16, 70), n=st.integers(1, 300), d=LANE_DIMS,
       dv=st.one_of(st.none(), LANE_DIMS), masked=st.sampled_from(["none", "some", "prefix"]),
       threads=st.integers(1, 3))
def test_cpp_query_lane_scan_matches_the_reference(seed, b, n, d, dv, masked, threads):
    # from 16 queries (d, dv <= 4,096) the kernel scans with the queries across the lanes: ragged
    # batches, tiles and columns, masked keys, and a first tile with every key masked
    core = hb._core_retrieval()
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, d, generator=gen, dtype=torch.float64), torch.randn(n, d, generator=gen, dtype=torch.float64)
    v = None if dv is None else torch.randn(n, dv, generator=gen, dtype=torch.float64)
    bias = torch.zeros(n, dtype=torch.float64)
    if masked == "some":
        bias[torch.rand(n, generator=gen) < 0.4] = -math.inf
    elif masked == "prefix":
        bias[: min(n - 1, 64)] = -math.inf  # the first tile (64 rows) holds no live key
    beta = 0.5 / math.sqrt(d)
    out, lse, arg = core.retrieve(q.float().numpy(), k.float().numpy(), None if v is None else v.float().numpy(),
                                  beta=beta, bias=bias.float().numpy(), num_threads=threads)
    logits = beta * q @ k.T + bias
    want = torch.softmax(logits, dim=-1) @ (k if v is None else v)
    live = torch.isfinite(logits).any(dim=1)  # a query with every key masked has no defined output
    torch.testing.assert_close(torch.from_numpy(out).double()[live], want[live], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(lse).double()[live], torch.logsumexp(logits, -1)[live],
                               atol=2e-5, rtol=1e-5)
    top2 = logits.topk(min(2, n), dim=-1).values
    clear = live & ((top2[:, 0] - top2[:, -1]) > 1e-4) if n > 1 else live
    assert (torch.from_numpy(arg)[clear] == logits.argmax(dim=-1)[clear]).all()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(16, 90), n=st.integers(1, 2500), d=LANE_DIMS,
       dv=st.one_of(st.none(), LANE_DIMS), masked=st.booleans(), element=st.sampled_from([0, 1, 2]))
def test_cpp_query_lane_widths_give_the_same_bits(seed, b, n, d, dv, masked, element):
    # the lane scan runs 16 queries per vector with AVX-512 and 8 without: every lane does the
    # same operations in the same order, so out, lse and argmax must not depend on the width
    core = hb._core_retrieval()
    gen = torch.Generator().manual_seed(seed)
    dtype = (torch.float32, torch.float16, torch.bfloat16)[element]  # the kernel's element codes
    q, k = torch.randn(b, d, generator=gen).to(dtype), torch.randn(n, d, generator=gen).to(dtype)
    v = None if dv is None else torch.randn(n, dv, generator=gen).to(dtype)
    bias = torch.where(torch.rand(n, generator=gen) < 0.3, -math.inf, 0.0) if masked else torch.zeros(n)
    found = []
    previous = core.set_max_lane_width(8)
    try:
        for width in (8, 16):
            core.set_max_lane_width(width)
            out = torch.empty(b, d if dv is None else dv)
            lse, arg = torch.empty(b), torch.empty(b, dtype=torch.int64)
            core.retrieve_at(q.data_ptr(), b, d, k.data_ptr(), n, 0 if v is None else v.data_ptr(), out.shape[1],
                             0.7, bias.data_ptr(), out.data_ptr(), lse.data_ptr(), arg.data_ptr(), element)
            found.append((out, lse, arg))
    finally:
        core.set_max_lane_width(previous)
    for x, y in zip(*found):
        assert x.numpy().tobytes() == y.numpy().tobytes()


def test_cpp_query_lane_width_follows_the_cpu():
    # 16 lanes exactly where the CPU reports AVX-512 (F, VL, BW, DQ), capped by set_max_lane_width
    core = hb._core_retrieval()
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wide = platform.machine() == "x86_64" and {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags
    assert core.lane_width() == (16 if wide else 8)
    previous = core.set_max_lane_width(8)
    try:
        assert core.lane_width() == 8
        with pytest.raises(ValueError, match="width must be 8 or 16, got 12"):
            core.set_max_lane_width(12)
        assert core.lane_width() == 8  # a refused setting changes nothing
    finally:
        core.set_max_lane_width(previous)

# -- argument errors --------------------------------------------------------------------------

def _base():
    return torch.randn(3, 4), torch.randn(10, 4)


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(queries=torch.randn(4)), ValueError, "queries"),
        (dict(keys=torch.randn(2, 10, 4)), ValueError, "keys"),
        (dict(keys=torch.randn(10, 5)), ValueError, "queries"),
        (dict(values=torch.randn(9, 4)), ValueError, "values"),
        (dict(values=torch.randn(10)), ValueError, "values"),
        (dict(mask=torch.ones(9, dtype=torch.bool)), ValueError, "mask"),
        (dict(mask=torch.ones(10)), TypeError, "mask"),
        (dict(mask=torch.zeros(10, dtype=torch.bool)), ValueError, "mask"),
        (dict(bias=torch.zeros(11)), ValueError, "bias"),
        (dict(bias=torch.full((10,), float("nan"))), ValueError, "bias"),
        (dict(beta=0.0), ValueError, "beta"),
        (dict(beta=-1.0), ValueError, "beta"),
        (dict(beta=float("nan")), ValueError, "beta"),
        (dict(beta="1"), TypeError, "beta"),
        (dict(keys=torch.randn(0, 4)), ValueError, "keys"),
        (dict(queries=torch.tensor([[float("nan")] * 4])), ValueError, "queries"),
        (dict(keys=torch.full((10, 4), float("inf"))), ValueError, "keys"),
        (dict(keys=torch.randn(10, 4).index_fill(0, torch.tensor([3]), float("nan"))), ValueError, "keys"),
        (dict(values=torch.randn(10, 4).index_fill(0, torch.tensor([9]), float("inf"))), ValueError, "values"),
        (dict(keys=torch.randn(10, 4, dtype=torch.float64)), TypeError, "keys"),
        (dict(keys=torch.randn(10, 4).half()), TypeError, "keys"),
        (dict(keys=torch.randn(10, 4, device="meta")), ValueError, "keys"),
        (dict(mask=torch.ones(10, dtype=torch.bool, device="meta")), ValueError, "mask"),
        (dict(values=torch.randn(10, 4), update_steps=2), ValueError, "update_steps"),
        (dict(update_steps=-1), ValueError, "update_steps"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(backend="cuda-magic"), ValueError, "backend"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, exc, name):
    q, k = _base()
    args = dict(queries=q, keys=k, values=None, beta=1.0)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        ops.hopfield_retrieve(args.pop("queries"), args.pop("keys"), args.pop("values"), **args)


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["reference"])
def test_nonfinite_keys_are_caught_even_when_masked(backend):
    q, k = _base()
    k[2, 1] = float("nan")
    mask = torch.ones(10, dtype=torch.bool)
    mask[2] = False
    with pytest.raises(ValueError, match="keys must be finite"):
        ops.hopfield_retrieve(q, k, beta=1.0, mask=mask, backend=backend)
    k[2, 1] = float("inf")
    with pytest.raises(ValueError, match="keys must be finite"):
        ops.hopfield_retrieve(q, k, beta=1.0, mask=mask, backend=backend)
    with pytest.raises(ValueError, match="overflow"):
        ops.hopfield_retrieve(q * 1e30, q * 1e30, beta=1e30, backend=backend)


def test_forced_triton_without_interpreter_explains(monkeypatch):
    # Triton reads TRITON_INTERPRET when its modules are first imported: import them first
    _triton.load_kernels("hopfield")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k = _base()
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        ops.hopfield_retrieve(q, k, beta=1.0, backend="triton")


# -- memory bound ---------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from mnemonix import ops
    torch.manual_seed(0)
    n, d, b = 2_000_000, 64, int(sys.argv[1])
    dtype = getattr(torch, sys.argv[3])
    keys = (torch.rand(n, d) * 2 - 1).to(dtype)
    queries = (torch.rand(b, d) * 2 - 1).to(dtype)
    if sys.argv[4] == "grouped":  # [2, B/2, d]: the general path, one call per group
        queries = queries.reshape(2, b // 2, d)
    ops.hopfield_retrieve(queries[:1], keys[:1000], beta=1.0)  # import and warm up lazily loaded code
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = ops.hopfield_retrieve(queries, keys, beta=1.0, backend=sys.argv[2])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert torch.isfinite(out).all()
    print((after - before) * 1024)
    """
)


@pytest.mark.parametrize("batch, backend, dtype, layout", [
    (64, "torch", "float32", "plain"), (8, "cpp", "float32", "plain"),
    (8, "cpp", "bfloat16", "plain"), (8, "cpp", "float16", "grouped"),  # no float32 copy of 16-bit keys (512 MB)
])
def test_cpu_memory_stays_o_b_times_chunk(batch, backend, dtype, layout):
    """64 queries x 2,000,000 x 64 patterns: a [B, N] float32 matrix would be 512 MB."""
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(batch), backend, dtype, layout],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    growth = int(proc.stdout.strip().splitlines()[-1])
    full_scores = batch * 2_000_000 * 4
    assert growth < 64 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB (a [B, N] matrix is "
    f"{full_scores / 2**20:.0f} MiB)"


def check_sdpa(q, k, v, *, beta, mask=None, bias=None, update_steps=0, tol=None):
    """The sdpa backend returns no argmax: compare out and lse only."""
    tol = TOL[q.dtype] if tol is None else tol
    out, lse = ops.hopfield_retrieve(q, k, v, beta=beta, mask=mask, bias=bias, update_steps=update_steps,
                                     return_lse=True, backend="sdpa")
    r_out, r_lse = reference.hopfield_retrieve(q, k, v, beta=beta, mask=mask, bias=bias,
                                               update_steps=update_steps, return_lse=True)
    assert out.dtype == q.dtype and torch.isfinite(out).all() and torch.isfinite(lse).all()
    scale = max(1.0, float(r_out.abs().max()))
    torch.testing.assert_close(out, r_out, atol=tol * scale, rtol=tol)
    torch.testing.assert_close(lse, r_lse, atol=tol * max(1.0, float(r_lse.abs().max())), rtol=tol)


def test_sdpa_backend_matches_reference(rng):
    for n, d, b in itertools.product([1, 7, 1000, 4097], [1, 3, 64, 130], [1, 5, 64]):
        q, k, _ = draw(rng, b, n, d)
        check_sdpa(q, k, None, beta=float(torch.empty(1).uniform_(0.05, 2.0, generator=rng)) / math.sqrt(d))
    for n, d, b in [(1, 3, 2), (1000, 130, 16), (4097, 3, 64)]:
        q, k, v = draw(rng, b, n, d, dv=d)
        mask = torch.rand(n, generator=rng) < 0.5
        mask[0] = True
        bias = torch.randn(n, generator=rng)
        check_sdpa(q, k, v, beta=0.3, mask=mask, bias=bias)
        check_sdpa(q, k, None, beta=0.3, mask=mask)
    for beta in (1e-3, 1e3):
        q, k, _ = draw(rng, 16, 4097, 64)
        check_sdpa(q, k, None, beta=beta, tol=5e-3)
    k = torch.nn.functional.normalize(torch.randn(1000, 64, generator=rng), dim=1) * 3
    q = k[:16] + 0.3 * torch.randn(16, 64, generator=rng)
    check_sdpa(q, k, None, beta=2.0, update_steps=4, tol=1e-3)
    with pytest.raises(ValueError, match="argmax"):
        ops.hopfield_retrieve(q, k, beta=1.0, return_argmax=True, backend="sdpa")
    with pytest.raises(ValueError, match="dv == d"):
        ops.hopfield_retrieve(q, k, torch.randn(1000, 5), beta=1.0, backend="sdpa")


def test_sdpa_capability_reasons():
    k = torch.randn(500, 16)
    q = torch.zeros(hops.CPP_MAX_BATCH + 1, 16)
    plain = hops.HopfieldInputs(q, k, None, None, 1.0, False, False)
    assert not hb.SDPA.not_supported_reasons(plain)
    assert any("argmax" in r for r in hb.SDPA.not_supported_reasons(dataclasses.replace(plain, want_argmax=True)))
    narrow = dataclasses.replace(plain, values=torch.randn(500, 5))
    assert any("dv == d" in r for r in hb.SDPA.not_supported_reasons(narrow))
    assert any("grad" in r for r in hb.SDPA.not_supported_reasons(dataclasses.replace(plain, needs_grad=True)))


@pytest.mark.parametrize("backend", [None, "torch", "cpp", "reference", "sdpa", "gemm"])
@pytest.mark.parametrize("grouped", [False, True])
def test_an_empty_batch_of_queries_gives_empty_results(backend, grouped, rng):
    # a rank of a sharded store can hold no queries; aten's flash CPU kernel dies of SIGFPE on
    # B = 0, so `sdpa` refuses it by name and the policy picks another backend
    q = torch.randn(2, 3, 0, 4, generator=rng) if grouped else torch.randn(0, 4, generator=rng)
    k = torch.randn(2, 3, 7, 4, generator=rng) if grouped else torch.randn(7, 4, generator=rng)
    for values in (None, torch.randn(*k.shape[:-1], 4, generator=rng)):
        if backend == "sdpa":
            with pytest.raises(ValueError, match="empty batch of queries"):
                ops.hopfield_retrieve(q, k, values, beta=1.0, backend=backend)
            continue
        out, lse = ops.hopfield_retrieve(q, k, values, beta=1.0, backend=backend, return_lse=True)
        assert out.shape == (*q.shape[:-1], 4) and lse.shape == q.shape[:-1]
