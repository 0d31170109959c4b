"""The CPU fast path of ``ops.hopfield_retrieve`` (``ops._hopfield_fast``) is a shortcut, never a
second semantics: where it runs, results are the general path's bit for bit; everything it does
not recognise, and every bad value, goes to the general path (same errors)."""

from __future__ import annotations

import math

import fast_paths
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemonix import ops
from mnemonix.ops import _hopfield_fast as fast
from mnemonix.ops import hopfield as op_module


def general_path_only():
    return fast_paths.general_path_only(fast, "cpu_fast_retrieve")


def counting_fast_calls():
    return fast_paths.counting_fast_calls(fast, "cpu_fast_retrieve")


def _both(q, k, v, **kwargs):
    with counting_fast_calls() as answered:
        got = ops.hopfield_retrieve(q, k, v, **kwargs)
    with general_path_only():
        want = ops.hopfield_retrieve(q, k, v, **kwargs)
    return got, want, answered


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 80) | st.integers(250, 300), n=st.integers(1, 300), d=st.integers(1, 70),
       dv=st.none() | st.integers(1, 40), beta=st.floats(0.01, 8.0) | st.integers(1, 3), transposed=st.booleans(),
       flags=st.tuples(st.booleans(), st.booleans()), seed=st.integers(0, 2**31 - 1))
def test_fast_path_equals_general_path_bitwise(b, n, d, dv, beta, transposed, flags, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, d, generator=gen)
    k = torch.randn(d, n, generator=gen).T if transposed else torch.randn(n, d, generator=gen)  # strided keys too
    v = None if dv is None else torch.randn(n, dv, generator=gen)
    got, want, answered = _both(q, k, v, beta=beta, return_lse=flags[0], return_argmax=flags[1])
    flash = op_module.cpu_forward_order(b, k)[0] == "sdpa"  # the policy's kernel (C++, GEMM or flash)
    assert answered == [not (flash and (flags[1] or (dv is not None and dv != d)))]
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert len(got) == len(want) == 1 + sum(flags)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape and torch.equal(g, w)


def _declined_cases():
    q, k = torch.randn(2, 8), torch.randn(20, 8)
    wide = torch.randn(300, 8)  # past the C++ kernel's and the GEMM path's batches: the flash kernel's
    assert op_module.cpu_forward_order(300, k)[0] == "sdpa"

    class Sub(torch.Tensor):
        pass

    return {
        "float64": dict(queries=q.double(), keys=k.double()),
        "3-D queries": dict(queries=q[None]),
        "grad": dict(keys=k.clone().requires_grad_()),
        "forced torch": dict(backend="torch"),
        "argmax above the policy's batch": dict(queries=wide, want_argmax=True),
        "dv != d above the policy's batch": dict(queries=wide, values=torch.randn(20, 3)),
        "NaN query, flash": dict(queries=torch.cat([wide[:-1], torch.full((1, 8), math.nan)])),
        "Inf key, flash": dict(queries=wide, keys=torch.cat([k[:-1], torch.full((1, 8), math.inf)])),
        "NaN query, gemm": dict(queries=torch.cat([wide[:15], torch.full((1, 8), math.nan)])),
        "Inf value, gemm": dict(queries=wide[:16], values=torch.cat([k[:-1], torch.full((1, 8), -math.inf)])),
        "tensor beta": dict(beta=torch.tensor(0.5)),
        "bool beta": dict(beta=True),
        "NaN beta": dict(beta=math.nan),
        "beta beyond float32": dict(beta=1e39),
        "subclass": dict(queries=q.as_subclass(Sub)),
        "empty batch": dict(queries=q[:0]),
        "d mismatch": dict(queries=torch.randn(2, 7)),
        "NaN query": dict(queries=torch.tensor([[math.nan] + [0.0] * 7])),
        "Inf key": dict(keys=torch.cat([k[:-1], torch.full((1, 8), math.inf)])),
        "NaN value": dict(values=torch.cat([k[:-1], torch.full((1, 8), math.nan)])),
        "logits beyond float32": dict(beta=3e38, queries=q * 1e3),
    }


@pytest.mark.parametrize("case", sorted(_declined_cases()))
def test_fast_path_declines_what_it_does_not_recognise(case):
    q, k = torch.randn(2, 8), torch.randn(20, 8)
    args = dict(queries=q, keys=k, values=None, beta=0.5, backend=None, want_argmax=False) | _declined_cases()[case]
    assert fast.cpu_fast_retrieve(args["queries"], args["keys"], args["values"], args["beta"], args["backend"],
                                  op_module.cpu_forward_order_at, True, args["want_argmax"]) is None


def test_fast_path_takes_a_forced_kernel_at_any_batch_and_grad_free_calls():
    k = torch.randn(20, 8)
    wide = torch.randn(70, 8)
    for forced in ("cpp", "sdpa", "gemm"):
        assert fast.cpu_fast_retrieve(wide, k, None, 0.5, forced, op_module.cpu_forward_order_at) is not None
        assert fast.cpu_fast_retrieve(wide[:1], k, None, 0.5, forced, op_module.cpu_forward_order_at) is not None
    with torch.no_grad():  # requires_grad but no grad wanted: the kernel's result, nothing to differentiate
        assert fast.cpu_fast_retrieve(wide[:2], k.requires_grad_(), None, 0.5, None,
                                      op_module.cpu_forward_order_at) is not None


def test_fast_path_is_off_under_the_fake_cuda_device():
    from mnemonix.testing import fake_cuda

    q, k = torch.randn(2, 8), torch.randn(20, 8)
    with fake_cuda():
        assert fast.cpu_fast_retrieve(q, k, None, 0.5, None, op_module.cpu_forward_order_at) is None


@pytest.mark.parametrize("case", ["NaN query", "Inf key", "NaN value", "logits beyond float32", "NaN beta",
                                  "NaN query, flash", "Inf key, flash", "NaN query, gemm", "Inf value, gemm"])
def test_bad_values_raise_the_general_paths_error(case):
    args = dict(queries=torch.randn(2, 8), keys=torch.randn(20, 8), values=None, beta=0.5)
    args |= _declined_cases()[case]
    with pytest.raises(ValueError) as fast_err:
        ops.hopfield_retrieve(**args)
    with general_path_only(), pytest.raises(ValueError) as general_err:
        ops.hopfield_retrieve(**args)
    assert str(fast_err.value) == str(general_err.value)


def test_retrieve_checked_matches_retrieve_and_flags_non_finite():
    core = op_module.hb._core_retrieval()
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(3, 16, generator=gen).numpy(), torch.randn(50, 16, generator=gen).numpy()
    for got, want in zip(core.retrieve_checked(q, k, beta=0.7), core.retrieve(q, k, beta=0.7)):
        assert (got == want).all()
    for bad in (math.nan, math.inf, -math.inf):
        qb, kb = q.copy(), k.copy()
        qb[2, 5] = bad
        assert core.retrieve_checked(qb, k, beta=0.7) is None
        kb[49, 0] = bad
        assert core.retrieve_checked(q, kb, beta=0.7) is None


BAD_OPERAND = dict(where=st.sampled_from(["queries", "keys", "values"]),
                   bad=st.sampled_from([math.nan, math.inf, -math.inf]), b=st.integers(1, 40),
                   n=st.integers(1, 60), d=st.integers(1, 24), seed=st.integers(0, 2**31 - 1), data=st.data())


def _with_bad_value(where, bad, b, n, d, seed, data) -> dict:
    """Queries [b, d], keys [n, d] and values (a copy of the keys) with one ``bad`` value at a
    drawn position of the operand ``where``."""
    gen = torch.Generator().manual_seed(seed)
    args = {"queries": torch.randn(b, d, generator=gen), "keys": torch.randn(n, d, generator=gen)}
    args["values"] = args["keys"].clone()
    target = args[where]
    target[data.draw(st.integers(0, target.shape[0] - 1)), data.draw(st.integers(0, d - 1))] = bad
    return args


@settings(max_examples=60, deadline=None)
@given(backend=st.sampled_from(["cpp", "gemm", "sdpa"]), **BAD_OPERAND)
def test_any_non_finite_operand_sends_every_kernel_to_the_general_path(backend, where, bad, b, n, d, seed, data):
    # the checks run after the kernels (the GEMM path reads only out and lse): every bad operand must show
    args = _with_bad_value(where, bad, b, n, d, seed, data)
    found = fast.cpu_fast_retrieve(args["queries"], args["keys"], args["values"], 0.5, backend,
                                   op_module.cpu_forward_order_at, True, False)
    assert found is None


@settings(max_examples=60, deadline=None)
@given(backend=st.sampled_from(["cpp", "gemm", "sdpa", "torch", None]), **BAD_OPERAND)
def test_any_non_finite_operand_raises_naming_it_on_both_paths(backend, where, bad, b, n, d, seed, data):
    args = _with_bad_value(where, bad, b, n, d, seed, data)
    with pytest.raises(ValueError, match=f"^{where} must be finite") as fast_err:
        ops.hopfield_retrieve(**args, beta=0.5, backend=backend)
    with general_path_only(), pytest.raises(ValueError) as general_err:
        ops.hopfield_retrieve(**args, beta=0.5, backend=backend)
    assert str(fast_err.value) == str(general_err.value)


def test_all_finite_reads_every_array_whole():
    core = op_module.hb._core_retrieval()
    a, b = torch.randn(7, 5).numpy(), torch.randn(3).numpy()
    assert core.all_finite(a, b) is True and core.all_finite() is True
    for bad in (math.nan, math.inf, -math.inf):
        for arr, idx in ((a, (6, 4)), (b, (0,))):
            saved = arr[idx]
            arr[idx] = bad
            assert core.all_finite(a, b) is False and core.all_finite(b, a) is False
            arr[idx] = saved
    assert core.all_finite(a[:, ::2], b) is True  # strided: the binding copies it contiguous
    with pytest.raises(TypeError, match="every array must be an array"):
        core.all_finite(a, None)


@settings(max_examples=40, deadline=None)
@given(size=st.integers((1 << 17) - 3, 3 << 17), where=st.floats(0.0, 1.0, exclude_max=True),
       bad=st.sampled_from([math.nan, math.inf, -math.inf, None]))
def test_all_finite_of_large_arrays_over_threads_finds_any_position(size, where, bad):
    # from 2**17 values the check is split into chunks over OpenMP's threads: a bad value in any
    # chunk, the ragged last one included, must still be found
    core = op_module.hb._core_retrieval()
    arr = torch.randn(size).numpy()
    if bad is not None:
        arr[int(where * size)] = bad
    assert core.all_finite(torch.randn(3).numpy(), arr) is (bad is None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gemm_backend_in_blocks_matches_the_reference(dtype, monkeypatch):
    from mnemonix import reference
    from mnemonix.backends import hopfield as hb

    monkeypatch.setattr(hb, "GEMM_BLOCK_SCORES", 50)  # blocks of 1-2 queries: every block boundary
    monkeypatch.setattr(hb, "GEMM_BLOCK_MAX_SCORES", 50)
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 7, 6, generator=gen, dtype=dtype), torch.randn(2, 1, 40, 6, generator=gen,
               dtype=dtype), torch.randn(2, 1, 40, 5, generator=gen, dtype=dtype))
    mask = torch.rand(2, 1, 40, generator=gen) > 0.3
    got = ops.hopfield_retrieve(q, k, v, beta=0.7, mask=mask, return_lse=True, return_argmax=True, backend="gemm")
    want = reference.hopfield_retrieve(q, k, v, beta=0.7, mask=mask, return_lse=True, return_argmax=True)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for g, w in zip(got[:2], want[:2]):
        torch.testing.assert_close(g, w.to(g.dtype), atol=tol, rtol=tol)
    assert torch.equal(got[2], want[2])
    with pytest.raises(ValueError, match="at least one stored pattern"):
        ops.hopfield_retrieve(q, k, v, beta=0.7, mask=torch.zeros(2, 1, 40, dtype=torch.bool), backend="gemm")


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4), which=st.integers(0, 3),
       where=st.floats(0.0, 1.0, exclude_max=True), bad=st.sampled_from([math.nan, math.inf, -math.inf, None]),
       strided=st.booleans())
def test_finite_check_by_address_finds_any_bad_value(sizes, which, where, bad, strided):
    # contiguous tensors go to all_finite_at by address and length; a strided one sends them all
    # through numpy views: either way every element of every tensor is read
    tensors = [torch.randn(n) for n in sizes]
    target = tensors[which % len(tensors)]
    if bad is not None:
        target[int(where * target.numel())] = bad
    if strided:
        tensors.append(torch.randn(4, 6)[:, ::2])
    assert fast._finite(*tensors, None) is (bad is None)


def test_all_finite_at_takes_address_and_count_pairs():
    core = op_module.hb._core_retrieval()
    x = torch.tensor([1.0, 2.0, math.inf, 4.0])
    assert core.all_finite_at(x.data_ptr(), 2) is True  # only the count given is read
    assert core.all_finite_at(x.data_ptr(), 3) is False and core.all_finite_at() is True
    with pytest.raises(ValueError, match="address, count"):
        core.all_finite_at(x.data_ptr())
    with pytest.raises(ValueError, match="null address"):
        core.all_finite_at(0, 3)
    assert core.all_finite_at(0, 0) is True  # an empty tensor's address may be 0


def test_finite_check_without_the_extension_uses_the_torch_check(monkeypatch):
    monkeypatch.setattr(op_module.hb, "_core_retrieval", lambda: None)
    assert fast._finite(torch.ones(3), None, torch.ones(2)) is True
    assert fast._finite(torch.ones(3), torch.tensor([1.0, -math.inf])) is False


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 40), n=st.integers(1, 300), d=st.integers(1, 40), dv=st.none() | st.integers(1, 20),
       beta=st.floats(0.01, 4.0), bad=st.sampled_from([None, "query", "key", "value"]), seed=st.integers(0, 2**31 - 1))
def test_retrieve_checked_at_is_retrieve_checked_by_address(b, n, d, dv, beta, bad, seed):
    core = op_module.hb._core_retrieval()
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, d, generator=gen), torch.randn(n, d, generator=gen)
    v = None if dv is None else torch.randn(n, dv, generator=gen)
    target = {"query": q, "key": k, "value": v}.get(bad)
    if target is not None:
        target.view(-1)[seed % target.numel()] = math.nan
    width = d if v is None else dv
    out, lse, arg = torch.empty(b, width), torch.empty(b), torch.empty(b, dtype=torch.int64)
    finite = core.retrieve_checked_at(q.data_ptr(), b, d, k.data_ptr(), n, 0 if v is None else v.data_ptr(), width,
                                      beta, out.data_ptr(), lse.data_ptr(), arg.data_ptr())
    want = core.retrieve_checked(q.numpy(), k.numpy(), None if v is None else v.numpy(), beta=beta)
    assert finite is (want is not None)
    if want is not None:  # the same kernel: the same bits
        assert torch.equal(out, torch.from_numpy(want[0])) and torch.equal(lse, torch.from_numpy(want[1]))
        assert torch.equal(arg, torch.from_numpy(want[2]))
        out_only = torch.empty(b, width)
        assert core.retrieve_checked_at(q.data_ptr(), b, d, k.data_ptr(), n, 0 if v is None else v.data_ptr(),
                                        width, beta, out_only.data_ptr(), 0, 0) is True  # lse, argmax not wanted
        assert torch.equal(out_only, out)
    else:
        assert bad is not None


def test_retrieve_checked_at_refuses_null_addresses_and_a_width_without_values():
    core = op_module.hb._core_retrieval()
    q, k, out = torch.ones(2, 3), torch.ones(4, 3), torch.empty(2, 3)
    with pytest.raises(ValueError, match="retrieve_checked_at: a null address for keys"):
        core.retrieve_checked_at(q.data_ptr(), 2, 3, 0, 4, 0, 3, 1.0, out.data_ptr(), 0, 0)
    with pytest.raises(ValueError, match="null address for out"):
        core.retrieve_checked_at(q.data_ptr(), 2, 3, k.data_ptr(), 4, 0, 3, 1.0, 0, 0, 0)
    with pytest.raises(ValueError, match="dv must equal d when the values are the keys"):
        core.retrieve_checked_at(q.data_ptr(), 2, 3, k.data_ptr(), 4, 0, 5, 1.0, out.data_ptr(), 0, 0)


def test_fast_path_outputs_are_float32_whatever_the_default_dtype():
    q, k = torch.randn(3, 8), torch.randn(50, 8)
    want = ops.hopfield_retrieve(q, k, beta=0.5, backend="cpp", return_lse=True)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with counting_fast_calls() as answered:
            got = ops.hopfield_retrieve(q, k, beta=0.5, backend="cpp", return_lse=True)
    finally:
        torch.set_default_dtype(previous)
    assert answered == [True]
    assert all(g.dtype == torch.float32 and torch.equal(g, w) for g, w in zip(got, want))
