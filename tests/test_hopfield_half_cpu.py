"""float16 / bfloat16 ``hopfield_retrieve`` on the CPU: the C++ kernel reads 16-bit rows in place
(exactly converted, computed in float32: its float32 result on the widened operands, bit for
bit on the lane scan, to float32 rounding on the row scan, whose online softmax folds smaller
chunks), torch's flash kernel runs them as they are, and the fast path takes both with the
general path's results and errors."""

from __future__ import annotations

import math

import fast_paths
import kernel_classes
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemonix import calibration, ops, reference
from mnemonix.backends import hopfield as hb
from mnemonix.ops import _hopfield_fast as fast
from mnemonix.ops import hopfield as op_module

HALVES = {torch.float16: 1, torch.bfloat16: 2}
TOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2}
core = op_module.hb._core_retrieval()


def _run_at(q, k, v, beta, code):
    """retrieve_checked_at on contiguous tensors: (finite, out in q's dtype, lse, argmax)."""
    b, d = q.shape
    n, dv = k.shape[0], d if v is None else v.shape[1]
    out, lse, arg = q.new_empty(b, dv), torch.empty(b), torch.empty(b, dtype=torch.int64)
    finite = core.retrieve_checked_at(q.data_ptr(), b, d, k.data_ptr(), n, 0 if v is None else v.data_ptr(), dv,
                                      beta, out.data_ptr(), lse.data_ptr(), arg.data_ptr(), code)
    return finite, out, lse, arg


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(list(HALVES)), b=st.integers(1, 40), n=st.integers(1, 5000),
       d=st.integers(1, 300) | st.sampled_from([1000, 4097]),  # the lanes reach 4,096; 4,097 is the row scan's
       dv=st.none() | st.integers(1, 70), beta=st.floats(0.01, 4.0), seed=st.integers(0, 2**31 - 1))
def test_cpp_kernel_on_16_bit_rows_is_its_float32_result_on_the_widened_rows(dtype, b, n, d, dv, beta, seed):
    # every 16-bit value is a float32 number: the lane scan (B >= 16, d <= 4,096) converts whole
    # tiles at a time and must change no bit (N past the chunks and the thread parts, d of both
    # scans); the row scan folds its online softmax per converted chunk (32 kB, smaller than
    # float32's tiles), so out and lse round differently there, the logits and argmax not at all.
    # out is that float32 result rounded as torch rounds
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, d, generator=gen).to(dtype), torch.randn(n, d, generator=gen).to(dtype)
    v = None if dv is None else torch.randn(n, dv, generator=gen).to(dtype)
    got = _run_at(q, k, v, beta, HALVES[dtype])
    want = _run_at(q.float(), k.float(), None if v is None else v.float(), beta, 0)
    assert got[0] is want[0] is True
    assert got[1].dtype == dtype and torch.equal(got[3], want[3])
    if b >= 16 and d <= 4096:  # the lanes
        assert torch.equal(got[1], want[1].to(dtype)) and torch.equal(got[2], want[2])
        return
    # float32 results a few ulps apart, rounded to 16 bits: at most one 16-bit ulp apart
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1].float(), want[1].to(dtype).float(), rtol=torch.finfo(dtype).eps, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(list(HALVES)), b=st.integers(1, 15), n=st.integers(300, 2047),
       d=st.sampled_from([7, 64, 130, 512]), dv=st.none() | st.sampled_from([9, 72]), threads=st.integers(2, 4),
       seed=st.integers(0, 2**31 - 1))
def test_16_bit_row_scan_gives_a_query_the_same_bits_at_any_thread_count_and_batch(dtype, b, n, d, dv, threads,
                                                                                  seed):
    # Under 2048 rows the row parts are fixed by the shape and the element type (16-bit values
    # count twice towards the row scan's split: their conversion), never by the threads or the
    # batch within its class (from lane_min_batch the lanes: another summation order)
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, d, generator=gen).to(dtype), torch.randn(n, d, generator=gen).to(dtype)
    v = None if dv is None else torch.randn(n, dv, generator=gen).to(dtype)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the kernel takes OpenMP's thread count, which this sets
        one = _run_at(q, k, v, 0.7, HALVES[dtype])
        torch.set_num_threads(threads)
        tail = kernel_classes.smallest_batch_of_class(hb._core_retrieval(), b)
        many, alone = _run_at(q, k, v, 0.7, HALVES[dtype]), _run_at(q[-tail:], k, v, 0.7, HALVES[dtype])
    finally:
        torch.set_num_threads(before)
    for x, y, z in zip(one[1:], many[1:], alone[1:]):  # out, lse, argmax (finite: equal values, equal bits)
        assert torch.equal(x, y) and torch.equal(x[-tail:], z)


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(list(HALVES)), where=st.sampled_from(["queries", "keys", "values"]),
       bad=st.sampled_from([math.nan, math.inf, -math.inf]), b=st.integers(1, 24), n=st.integers(1, 400),
       d=st.integers(1, 40), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_cpp_kernel_on_16_bit_rows_flags_any_non_finite_operand(dtype, where, bad, b, n, d, seed, data):
    gen = torch.Generator().manual_seed(seed)
    ops_ = {"queries": torch.randn(b, d, generator=gen).to(dtype), "keys": torch.randn(n, d, generator=gen).to(dtype)}
    ops_["values"] = ops_["keys"].clone()
    target = ops_[where]
    target[data.draw(st.integers(0, target.shape[0] - 1)), data.draw(st.integers(0, d - 1))] = bad
    assert _run_at(ops_["queries"], ops_["keys"], ops_["values"], 0.5, HALVES[dtype])[0] is False


def test_element_type_outside_the_kernels_types_is_refused_by_name():
    q, k = torch.randn(2, 4), torch.randn(5, 4)
    for code in (-1, 3, 7):
        with pytest.raises(ValueError, match="element_type must be 0 .*, got " + str(code)):
            _run_at(q, k, None, 1.0, code)
    with pytest.raises(ValueError, match="all_finite_typed_at: element_type"):
        core.all_finite_typed_at(5, q.data_ptr(), 8)
    with pytest.raises(ValueError, match="triples"):
        core.all_finite_typed_at(0, q.data_ptr())


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([torch.float32, *HALVES]), size=st.integers(1, 300_000),
       bad=st.none() | st.sampled_from([math.nan, -math.nan, math.inf, -math.inf]), data=st.data())
def test_all_finite_typed_at_finds_a_special_value_anywhere(dtype, size, bad, data):
    # large sizes take the parallel float32 check; 16-bit exponents differ (float16 0x7c00, bfloat16 0x7f80)
    x = torch.full((size,), 65504.0 if dtype == torch.float16 else 3e38).to(dtype)  # the largest finite values
    if bad is not None:
        x[data.draw(st.integers(0, size - 1))] = bad
    code = {torch.float32: 0, **HALVES}[dtype]
    assert core.all_finite_typed_at(code, x.data_ptr(), size) is (bad is None)
    assert core.all_finite_typed_at(code, x.data_ptr(), size, 0, 0, 0) is (bad is None)  # an empty span


def _both(q, k, v, **kwargs):
    with fast_paths.counting_fast_calls(fast, "cpu_fast_retrieve") as answered:
        got = ops.hopfield_retrieve(q, k, v, **kwargs)
    with fast_paths.general_path_only(fast, "cpu_fast_retrieve"):
        want = ops.hopfield_retrieve(q, k, v, **kwargs)
    return got, want, answered


@settings(max_examples=50, deadline=None)
@given(dtype=st.sampled_from(list(HALVES)), backend=st.sampled_from([None, "cpp", "sdpa"]), b=st.integers(1, 70),
       n=st.integers(1, 300), d=st.integers(1, 70), separate=st.booleans(), beta=st.floats(0.05, 4.0),
       seed=st.integers(0, 2**31 - 1))
def test_fast_path_on_16_bit_operands_equals_the_general_path_and_the_reference(dtype, backend, b, n, d, separate,
                                                                                 beta, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, d, generator=gen).to(dtype), torch.randn(n, d, generator=gen).to(dtype)
    v = torch.randn(n, d, generator=gen).to(dtype) if separate else None
    (out, lse), (want_out, want_lse), answered = _both(q, k, v, beta=beta, return_lse=True, backend=backend)
    assert answered == [True]
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert torch.equal(out, want_out) and torch.equal(lse, want_lse)
    ref, ref_lse = reference.hopfield_retrieve(q.double(), k.double(), None if v is None else v.double(), beta=beta,
                                               return_lse=True)
    scale = max(1.0, float(ref.abs().max()))
    assert float((out.double() - ref).abs().max()) <= TOL[dtype] * scale
    assert float((lse.double() - ref_lse).abs().max()) <= 1e-3 * max(1.0, float(ref_lse.abs().max()))


@pytest.mark.parametrize("dtype", list(HALVES))
@pytest.mark.parametrize("where", ["queries", "keys", "values"])
@pytest.mark.parametrize("backend", [None, "cpp", "sdpa"])
def test_non_finite_16_bit_operand_raises_the_general_paths_error(dtype, where, backend):
    args = {"queries": torch.randn(3, 8).to(dtype), "keys": torch.randn(20, 8).to(dtype)}
    args["values"] = args["keys"].clone()
    args[where][-1, 2] = math.nan
    with pytest.raises(ValueError, match=f"^{where} must be finite") as fast_err:
        ops.hopfield_retrieve(**args, beta=0.5, backend=backend)
    with fast_paths.general_path_only(fast, "cpu_fast_retrieve"), pytest.raises(ValueError) as general_err:
        ops.hopfield_retrieve(**args, beta=0.5, backend=backend)
    assert str(fast_err.value) == str(general_err.value)


def test_16_bit_operands_have_no_gemm_path_and_the_fast_path_declines_what_it_cannot_run():
    q, k = torch.randn(2, 8).bfloat16(), torch.randn(20, 8).bfloat16()
    with pytest.raises(ValueError, match="gemm"):
        ops.hopfield_retrieve(q, k, beta=0.5, backend="gemm")
    half_order = op_module.cpu_half_order_at
    call = lambda *a, **kw: fast.cpu_fast_retrieve(*a, op_module.cpu_forward_order_at, True, False,  # noqa: E731
                                                   half_order, **kw)
    assert call(q, k, None, 0.5, "gemm") is None
    assert call(q, k.half(), None, 0.5, None) is None  # mixed dtypes: the general path's TypeError
    assert call(q, k.T.contiguous().T, None, 0.5, "cpp") is None  # strided 16-bit rows: float32 copies there
    assert call(q, k, torch.randn(20, 3).bfloat16(), 0.5, "sdpa") is None  # dv != d
    assert fast.cpu_fast_retrieve(q, k, None, 0.5, None, op_module.cpu_forward_order_at) is None  # no half order
    assert call(q, k, None, 0.5, None) is not None


def test_half_policy_follows_its_thresholds(monkeypatch):
    # narrow keys: cpp while B <= cpp_max_batch_narrow_<dtype>; wider ones on keys of at least
    # cpp_min_bytes_<dtype> while B x d <= cpp_max_dims_<dtype> or B <= cpp_min_batch_<dtype>
    limits = dict(calibration.thresholds("hopfield_retrieve", "cpu"))
    limits.update(narrow_dim=48, cpp_max_batch_narrow_float16=8, cpp_max_dims_float16=512, cpp_min_batch_float16=1,
                  cpp_min_bytes_float16=0, cpp_max_batch_narrow_bfloat16=2, cpp_max_dims_bfloat16=256,
                  cpp_min_batch_bfloat16=0, cpp_min_bytes_bfloat16=1 << 20)
    monkeypatch.setattr(calibration, "thresholds", lambda op, device: limits)
    calibration.reload()
    try:
        half = op_module.cpu_half_order_at
        assert half(8, 100, 48, 1) == ("cpp", "sdpa", "torch")
        assert half(9, 100, 48, 1) == ("sdpa", "cpp", "torch")
        assert half(4, 100, 128, 1)[0] == "cpp" and half(5, 100, 128, 1)[0] == "sdpa"  # 512 // 128
        assert half(1, 100, 1024, 1)[0] == "cpp" and half(2, 100, 1024, 1)[0] == "sdpa"  # the minimum batch
        assert half(2, 10, 32, 2)[0] == "cpp" and half(3, 10, 32, 2)[0] == "sdpa"  # narrow: any store
        assert half(2, 1 << 12, 128, 2)[0] == "cpp"  # 1 MB of rows, B x d = 256
        assert half(2, (1 << 12) - 1, 128, 2)[0] == "sdpa"  # under the store size
        assert half(3, 1 << 12, 128, 2)[0] == "sdpa"
        assert half(1, 1 << 12, 1024, 2)[0] == "sdpa"  # no minimum batch for bfloat16 here
        keys = torch.zeros(1 << 12, 128, dtype=torch.bfloat16)
        assert op_module.choose_backend(torch.zeros(2, 128, dtype=torch.bfloat16), keys) == "cpp"
        assert op_module.choose_backend(torch.zeros(3, 128, dtype=torch.bfloat16), keys) == "sdpa"
    finally:
        calibration.reload()


@pytest.mark.parametrize("dtype", list(HALVES))
def test_grouped_16_bit_call_runs_the_general_cpp_path_on_the_16_bit_rows(dtype):
    # groups (3-D) are the general path's: one retrieve_at call per group on the rows as they are
    # (the memory test shows no float32 copy), the fast path's kernel bit for bit
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(3, 4, 16, generator=gen).to(dtype), torch.randn(3, 50, 16, generator=gen).to(dtype)
    got, lse = ops.hopfield_retrieve(q, k, beta=0.7, backend="cpp", return_lse=True)
    for g in range(3):
        want = _run_at(q[g].contiguous(), k[g].contiguous(), None, 0.7, HALVES[dtype])
        assert torch.equal(got[g], want[1]) and torch.equal(lse[g], want[2])


@settings(max_examples=30, deadline=None)
@given(dtype=st.sampled_from([torch.float32, *HALVES]), b=st.integers(1, 20), n=st.integers(1, 300),
       d=st.integers(1, 40), dv=st.none() | st.integers(1, 20), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_general_cpp_path_with_a_mask_matches_the_reference(dtype, b, n, d, dv, seed, data):
    # a mask becomes the kernel's -inf bias (float32, by address)
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, d, generator=gen).to(dtype), torch.randn(n, d, generator=gen).to(dtype)
    v = None if dv is None else torch.randn(n, dv, generator=gen).to(dtype)
    mask = torch.rand(n, generator=gen) < 0.7
    mask[data.draw(st.integers(0, n - 1))] = True
    out, lse, arg = ops.hopfield_retrieve(q, k, v, beta=0.5, mask=mask, backend="cpp", return_lse=True,
                                          return_argmax=True)
    ref, ref_lse, ref_arg = reference.hopfield_retrieve(q.double(), k.double(), None if v is None else v.double(),
                                                        beta=0.5, mask=mask, return_lse=True, return_argmax=True)
    tol = {torch.float32: 1e-5, **TOL}[dtype]
    assert out.dtype == dtype and float((out.double() - ref).abs().max()) <= tol * max(1.0, float(ref.abs().max()))
    assert float((lse.double() - ref_lse).abs().max()) <= 1e-4 * max(1.0, float(ref_lse.abs().max()))
    assert bool(mask[arg].all())  # never a masked pattern


def test_retrieve_at_refuses_null_addresses_and_unknown_element_types():
    q, k = torch.randn(2, 4), torch.randn(5, 4)
    out, lse, arg = torch.empty(2, 4), torch.empty(2), torch.empty(2, dtype=torch.int64)
    ptrs = dict(out=out.data_ptr(), lse=lse.data_ptr(), argmax=arg.data_ptr())
    with pytest.raises(ValueError, match="retrieve_at: a null address for keys"):
        core.retrieve_at(q.data_ptr(), 2, 4, 0, 5, 0, 4, 1.0, 0, **ptrs)
    with pytest.raises(ValueError, match="retrieve_at: a null address for lse"):
        core.retrieve_at(q.data_ptr(), 2, 4, k.data_ptr(), 5, 0, 4, 1.0, 0, out.data_ptr(), 0, arg.data_ptr())
    with pytest.raises(ValueError, match="retrieve_at: element_type"):
        core.retrieve_at(q.data_ptr(), 2, 4, k.data_ptr(), 5, 0, 4, 1.0, 0, **ptrs, element_type=4)
    with pytest.raises(ValueError, match="dv must equal d"):
        core.retrieve_at(q.data_ptr(), 2, 4, k.data_ptr(), 5, 0, 3, 1.0, 0, **ptrs)


@pytest.mark.parametrize("dtype", list(HALVES))
def test_16_bit_gradients_through_the_flash_backward_match_the_reference(dtype):
    # values apart from the keys: the policy's first backend with a gradient is the flash kernel's
    gen = torch.Generator().manual_seed(11)
    q = torch.randn(6, 16, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(40, 16, generator=gen).to(dtype).requires_grad_()
    v = torch.randn(40, 16, generator=gen).to(dtype).requires_grad_()
    out = ops.hopfield_retrieve(q, k, v, beta=0.5)
    assert out.dtype == dtype
    out.float().square().sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    reference.hopfield_retrieve(q64, k64, v64, beta=0.5).square().sum().backward()
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert got.dtype == dtype
        assert float((got.double() - want).abs().max()) <= 4 * TOL[dtype] * max(1.0, float(want.abs().max()))


@settings(max_examples=30, deadline=None)
@given(dtype=st.sampled_from(list(HALVES)), seed=st.integers(0, 2**31 - 1))
def test_16_bit_rounding_of_out_is_torchs_bit_for_bit(dtype, seed):
    # any float32 bit pattern (subnormal halves, the overflow edge at 65,520, NaN), plus the edges
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-2**31, 2**31 - 1, (50_000,), generator=gen, dtype=torch.int64).to(torch.int32)
    x = torch.cat([x.view(torch.float32), torch.tensor([0.0, -0.0, 65504, 65519.996, 65520, -65520, 2**-14,
                                                        2**-24, 2**-25, 2**-25 * 1.0000001, math.inf, -math.inf])])
    out = torch.empty(x.numel(), dtype=dtype)
    core.to_16_bit(HALVES[dtype], x.data_ptr(), x.numel(), out.data_ptr())
    want = x.to(dtype)
    same = (out.view(torch.int16) == want.view(torch.int16)) | (torch.isnan(x) & torch.isnan(out))
    assert bool(same.all())
