"""The exact C++ recall of ``ops.salience_topk`` and its CPU fast path (``ops._salience_fast``).

The fast path is a shortcut, never a second semantics: where it runs, results are the general
path's (forced to the same C++ recall) bit for bit; everything it does not recognise, and every
bad value, goes to the general path (same errors). The C++ recall itself is exact (float64
scores in one fixed order) and batch-invariant, and so is its GEMM-fed form: the CPU speed
policy picks one of the two."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext

import fast_paths
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_salience_topk import assert_matches_reference

from mnemonix import calibration, ops, reference
from mnemonix.backends import salience_cpp as sc
from mnemonix.ops import _salience_fast as fast
from mnemonix.ops import salience as op_module


def general_path_only():
    return fast_paths.general_path_only(fast, "cpu_fast_recall")


def counting_fast_calls():
    return fast_paths.counting_fast_calls(fast, "cpu_fast_recall")


def _problem(seed, b, n, d, dz, time_form, masked):
    gen = torch.Generator().manual_seed(seed)
    q, c = torch.randn(b, d, generator=gen), torch.randn(n, d, generator=gen)
    c[torch.rand(n, generator=gen) < 0.1] = c[0].clone()  # equal keys: exact ties
    z = None if dz is None else torch.randn(n, dz, generator=gen)
    valid = (torch.rand(n, generator=gen) > 0.3) if masked else None
    if valid is not None:
        valid[-1] = True  # the reference needs one valid memory (none valid: test_fewer_valid_than_k_pads)
    if time_form:
        sal = dict(r0=torch.rand(n, generator=gen) + 0.05, tau=torch.rand(n, generator=gen, dtype=torch.float64) * 50,
                   alpha=0.1, now=60.0)
    else:
        sal = dict(log_salience=torch.randn(n, generator=gen, dtype=torch.float64) * 3)
    return q, c, z, valid, sal


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 12), n=st.integers(1, 200), d=st.integers(1, 40), dz=st.none() | st.integers(1, 6),
       k_frac=st.floats(0.0, 1.0), time_form=st.booleans(), masked=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fast_path_equals_general_path_bitwise(b, n, d, dz, k_frac, time_form, masked, seed):
    q, c, z, valid, sal = _problem(seed, b, n, d, dz, time_form, masked)
    k = max(1, round(k_frac * n))
    with counting_fast_calls() as answered:
        got = ops.salience_topk(q, c, z, k=k, valid=valid, **sal)
    with general_path_only():
        want = ops.salience_topk(q, c, z, k=k, valid=valid, backend="cpp", **sal)
    assert answered == [True]  # the policy picks cpp or gemm on the CPU: both are the fast path's
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            assert g.dtype == w.dtype and g.shape == w.shape and torch.equal(g, w)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 9), n=st.integers(1, 120), d=st.integers(1, 33), k_frac=st.floats(0.0, 1.0),
       masked=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_cpp_recall_is_the_definition(b, n, d, k_frac, masked, seed):
    """Indices exactly the float64 reference's (ties to the lower index); weights, scores, recall close."""
    q, c, z, valid, sal = _problem(seed, b, n, d, 4, False, masked)
    k = max(1, round(k_frac * n))
    out = ops.salience_topk(q, c, z, k=k, valid=valid, backend="cpp", **sal)
    ref = reference.salience_topk(q, c, z, k=k, valid=valid, **sal)
    assert torch.equal(out[1], ref[1])
    assert_matches_reference(out, ref, q, c, z, sal["log_salience"], valid, k, tol=1e-9)


def test_cpp_recall_is_batch_invariant_and_thread_independent():
    q, c, z, valid, sal = _problem(11, 37, 500, 24, 5, False, True)
    whole = ops.salience_topk(q, c, z, k=7, valid=valid, backend="cpp", batch_invariant=True, **sal)
    for i in (0, 17, 36):
        alone = ops.salience_topk(q[i:i + 1], c, z, k=7, valid=valid, backend="cpp", **sal)
        for w, a in zip(whole, alone):
            assert torch.equal(w[i:i + 1], a)
    # past the kernel's threading threshold (B x N x d > 4e6): OpenMP over queries, same bits
    big_q = q.repeat(12, 1)[:400]
    threaded = ops.salience_topk(big_q, c, z, k=7, valid=valid, backend="cpp", **sal)
    for w, t in zip(whole, threaded):
        assert torch.equal(w, t[:37])


def test_policy_picks_cpp_for_small_calls_and_gemm_for_large_ones():
    limits = calibration.thresholds("salience_topk", torch.device("cpu"))
    batch, work = limits["cpp_max_batch"], limits["cpp_max_work"]
    assert op_module.cpu_order(1, 64, 16)[0] == "cpp"
    assert op_module.cpu_order(batch, 10**7, 128)[0] == "cpp"  # few queries: cpp at any size
    wide = limits["narrow_dim"] + 1  # narrower keys keep cpp up to cpp_max_batch_narrow
    assert op_module.cpu_order(batch + 1, work // ((batch + 1) * wide), wide) == ["cpp", "gemm", "torch"]
    assert op_module.cpu_order(batch + 1, work, wide) == ["gemm", "cpp", "torch"]
    narrow = limits["cpp_max_batch_narrow"]
    assert op_module.cpu_order(narrow, 10**6, limits["narrow_dim"])[0] == "cpp"
    assert op_module.cpu_order(narrow + 1, 10**6, limits["narrow_dim"])[0] == "gemm"


def test_gemm_chunks_grow_for_narrow_keys_and_few_keys_go_in_one():
    base, n = sc.GEMM_CHUNK_SCORES, 10**7
    assert [sc.gemm_chunk(256, d, n) for d in (768, 128, 64, 32, 8)] == [base // 256, base // 256, 2 * base // 256,
                                                                        4 * base // 256, 4 * base // 256]
    assert sc.gemm_chunk(10**9, 32, n) == sc.GEMM_MIN_CHUNK
    whole = sc.GEMM_WHOLE_CHUNKS * (base // 1024)
    assert sc.gemm_chunk(1024, 128, whole) == whole
    assert sc.gemm_chunk(1024, 128, whole + 1) == base // 1024
    # a larger base (a CPU profile's gemm_chunk_scores): narrow keys grow no further than the cap
    big = sc.GEMM_CHUNK_MAX_SCORES
    assert [sc.gemm_chunk(256, d, n, big) for d in (768, 128, 32)] == [big // 256] * 3
    assert sc.gemm_chunk(256, 32, n, 2 * big) == 2 * big // 256


def test_gemm_chunk_scores_come_from_the_calibration(monkeypatch, tmp_path):
    from mnemonix import calibration

    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"format": calibration.FORMAT, "version": calibration.VERSION, "device": "cpu",
                                "thresholds": {"salience_topk": {"gemm_chunk_scores": 12345}}}))
    monkeypatch.setenv(calibration.ENV, str(path))
    calibration.reload()
    try:
        assert sc.chunk_scores() == 12345
        monkeypatch.setenv(calibration.ENV, "default")
        assert sc.chunk_scores() == sc.GEMM_CHUNK_SCORES
    finally:
        calibration.reload()


@pytest.mark.parametrize("b,n,d,chunk_scores", [(1, 3000, 40, None), (70, 2500, 33, None), (5, 40_000, 16, None),
                                                (70, 2500, 33, 70 * 300), (3, 1000, 9, 1)])
def test_gemm_and_cpp_recalls_return_the_same_bits(b, n, d, chunk_scores, monkeypatch):
    """Both exact: the screen's dot products (SIMD here, BLAS there, in chunks) only decide which
    keys are scored in float64, never the result (also over many chunks and a ragged last one)."""
    if chunk_scores is not None:
        monkeypatch.setattr(sc, "chunk_scores", lambda: chunk_scores)
    q, c, z, valid, sal = _problem(b + n + d, b, n, d, 6, False, True)
    got = ops.salience_topk(q, c, z, k=9, valid=valid, backend="gemm", **sal)
    want = ops.salience_topk(q, c, z, k=9, valid=valid, backend="cpp", **sal)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert torch.equal(got[1], reference.salience_topk(q, c, z, k=9, valid=valid, **sal)[1])


def _declined_cases():
    q, c = torch.randn(2, 8), torch.randn(20, 8)
    log_s = torch.randn(20, dtype=torch.float64)

    class Sub(torch.Tensor):
        pass

    return {
        "float64 queries": dict(queries=q.double()),
        "bf16 keys": dict(keys=c.bfloat16()),
        "float64 payloads": dict(payloads=torch.randn(20, 3, dtype=torch.float64)),
        "3-D queries": dict(queries=q[None]),
        "grad": dict(keys=c.clone().requires_grad_()),
        "forced torch": dict(backend="torch"),
        "forced triton": dict(backend="triton"),
        "not a backend name": dict(backend=["cpp"]),
        "k = 0": dict(k=0),
        "k > N": dict(k=21),
        "float k": dict(k=2.0),
        "both salience forms": dict(r0=torch.ones(20)),
        "time form without now": dict(log_salience=None, r0=torch.ones(20), tau=torch.zeros(20), alpha=1.0),
        "bool alpha": dict(log_salience=None, r0=torch.ones(20), tau=torch.zeros(20), alpha=True, now=0.0),
        "NaN alpha": dict(log_salience=None, r0=torch.ones(20), tau=torch.zeros(20), alpha=math.nan, now=0.0),
        "-inf now": dict(log_salience=None, r0=torch.ones(20), tau=torch.zeros(20), alpha=1.0, now=-math.inf),
        "huge int now": dict(log_salience=None, r0=torch.ones(20), tau=torch.zeros(20), alpha=1.0, now=10**400),
        "negative alpha": dict(log_salience=None, r0=torch.ones(20), tau=torch.zeros(20), alpha=-1.0, now=0.0),
        "int valid": dict(valid=torch.ones(20, dtype=torch.int64)),
        "short valid": dict(valid=torch.ones(19, dtype=torch.bool)),
        "subclass": dict(queries=q.as_subclass(Sub)),
        "empty batch": dict(queries=q[:0]),
        "d mismatch": dict(queries=torch.randn(2, 7)),
        "int check_inputs": dict(check_inputs=1),
        "NaN query": dict(queries=torch.tensor([[math.nan] + [0.0] * 7])),
        "Inf key": dict(keys=torch.cat([c[:-1], torch.full((1, 8), math.inf)])),
        "key norm beyond float32": dict(keys=torch.cat([c[:-1], torch.full((1, 8), 1e20)])),
        "NaN log-salience": dict(log_salience=torch.cat([log_s[:-1], torch.tensor([math.nan], dtype=torch.float64)])),
        "r0 = 0": dict(log_salience=None, r0=torch.zeros(20), tau=torch.zeros(20), alpha=1.0, now=0.0),
        "Inf tau": dict(log_salience=None, r0=torch.ones(20), tau=torch.full((20,), math.inf), alpha=1.0, now=0.0),
        "negative key norm": dict(key_norms=-torch.ones(20)),
        "NaN payload": dict(payloads=torch.full((20, 3), math.nan)),
    }


def _args(case):
    q, c = torch.randn(2, 8), torch.randn(20, 8)
    args = dict(queries=q, keys=c, payloads=None, k=3, log_salience=torch.randn(20, dtype=torch.float64), r0=None,
                tau=None, alpha=None, now=None, valid=None, key_norms=None, backend=None, check_inputs=None,
                exact=True, batch_invariant=False)
    return args | _declined_cases()[case]


@pytest.mark.parametrize("case", sorted(_declined_cases()))
def test_fast_path_declines_what_it_does_not_recognise(case):
    assert fast.cpu_fast_recall(*_args(case).values(), op_module.cpu_order) is None


def test_fast_path_is_off_under_the_fake_cuda_device():
    from mnemonix.testing import fake_cuda

    args = _args("forced torch") | dict(backend=None)
    assert fast.cpu_fast_recall(*args.values(), op_module.cpu_order) is not None
    with fake_cuda():
        assert fast.cpu_fast_recall(*args.values(), op_module.cpu_order) is None


BAD_VALUES = ["NaN query", "Inf key", "key norm beyond float32", "NaN log-salience", "r0 = 0", "Inf tau",
              "negative key norm", "NaN payload"]


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_raise_the_general_paths_error(case):
    args = _args(case)
    call = dict(args)
    q, c, z = call.pop("queries"), call.pop("keys"), call.pop("payloads")
    call = {k: v for k, v in call.items() if v is not None}
    errors = []
    for backend in (None, "cpp", "torch"):
        with general_path_only() if backend else nullcontext(), pytest.raises(ValueError) as err:
            ops.salience_topk(q, c, z, **(call | {"backend": backend}))
        errors.append(str(err.value))
    assert errors[0] == errors[1] == errors[2]


def test_unchecked_bad_values_do_not_crash():
    args = _args("Inf key")
    q, c = args["queries"], args["keys"]
    c[3] = math.nan
    out = ops.salience_topk(q, c, None, k=20, log_salience=args["log_salience"], check_inputs=False)
    assert out[1].shape == (2, 20) and set(out[1].flatten().tolist()) <= set(range(20))


def test_core_recall_refuses_bad_buffers_with_named_errors():
    core = sc.core_salience()
    q, c = torch.randn(2, 8).numpy(), torch.randn(20, 8).numpy()
    log_s = torch.zeros(20, dtype=torch.float64).numpy()
    with pytest.raises(ValueError, match="k must be in 1..N"):
        core.recall(q, c, None, log_s, None, None, None, None, None, 21, True)
    with pytest.raises(ValueError, match="log_salience must have 20 rows"):
        core.recall(q, c, None, log_s[:5], None, None, None, None, None, 2, True)
    with pytest.raises(ValueError, match="keys must have d = 8 columns"):
        core.recall(q, c[:, :4], None, log_s, None, None, None, None, None, 2, True)
    with pytest.raises(TypeError, match="r0 must be an array"):
        core.recall(q, c, None, None, None, log_s, 1.0, None, None, 2, True)


@pytest.mark.parametrize("b", [1, 3])
def test_cpp_screen_is_exact_on_adversarial_keys(b):
    """Near-duplicate keys whose scores differ by less than the float32 screen's error, tiny and
    huge norms (scored exactly, never screened), saliences spread over 1e3 in log: the C++ recall's
    indices are still the float64 definition's. N x d past the threading threshold: with B = 1 the
    keys are split over threads and the lists merged."""
    gen = torch.Generator().manual_seed(7 + b)
    n, d = 70_000, 64
    base = torch.randn(d, generator=gen)
    keys = base + 1e-6 * torch.randn(n, d, generator=gen)  # every cosine within ~1e-6 of the others
    keys[::7] = torch.randn(n // 7 + 1, d, generator=gen)[: len(range(0, n, 7))]
    keys[5::97] *= 1e-20  # squared norms far below float32's normal range: exact only
    keys[11::89] *= 1e18
    log_s = torch.randn(n, generator=gen, dtype=torch.float64) * 1e-7  # near-equal saliences
    log_s[::13] -= torch.rand(len(range(0, n, 13)), generator=gen, dtype=torch.float64) * 1e3
    q = torch.cat([base[None], torch.randn(b - 1, d, generator=gen)])
    for k in (1, 10, 50):
        out = ops.salience_topk(q, keys, None, k=k, log_salience=log_s, backend="cpp")
        ref = reference.salience_topk(q, keys, None, k=k, log_salience=log_s)
        assert torch.equal(out[1], ref[1]), k
        torch.testing.assert_close(out[3], ref[3], rtol=1e-6, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 9), n=st.integers(1, 150), d=st.integers(1, 33), dz=st.none() | st.integers(1, 6),
       k_frac=st.floats(0.0, 1.0), masked=st.booleans(), norms=st.booleans(),
       bad=st.sampled_from([None, "query", "key", "log_salience"]), seed=st.integers(0, 2**31 - 1))
def test_recall_at_is_recall_by_address(b, n, d, dz, k_frac, masked, norms, bad, seed):
    core = sc.core_salience()
    q, c, z, valid, sal = _problem(seed, b, n, d, dz, False, masked)
    log_s = sal["log_salience"]
    key_norms = c.double().norm(dim=1) if norms else None
    target = {"query": q, "key": c, "log_salience": log_s}.get(bad)
    if target is not None:
        target.view(-1)[seed % target.numel()] = math.nan
    k = max(1, round(k_frac * n))
    got = core.recall_at(q.data_ptr(), b, d, c.data_ptr(), n, 0 if z is None else z.data_ptr(),
                         0 if z is None else z.shape[1], log_s.data_ptr(), 0 if valid is None else valid.data_ptr(),
                         0 if key_norms is None else key_norms.data_ptr(), k, True)
    want = core.recall(q.numpy(), c.numpy(), None if z is None else z.numpy(), log_s.numpy(), None, None, None,
                       None if valid is None else valid.numpy(), None if key_norms is None else key_norms.numpy(),
                       k, True)
    assert got[0] == want[0]  # the same fault code (0: none)
    for g, w in zip(got[1:], want[1:]):
        assert (g is None) == (w is None) and (g is None or (g.dtype == w.dtype and (g == w).all()))


def test_recall_at_refuses_null_buffers_and_bad_sizes():
    core = sc.core_salience()
    q, c, log_s = torch.randn(2, 8), torch.randn(20, 8), torch.zeros(20, dtype=torch.float64)
    with pytest.raises(ValueError, match="recall_at: a null address for keys"):
        core.recall_at(q.data_ptr(), 2, 8, 0, 20, 0, 0, log_s.data_ptr(), 0, 0, 3, True)
    with pytest.raises(ValueError, match="recall_at: a null address for log_salience"):
        core.recall_at(q.data_ptr(), 2, 8, c.data_ptr(), 20, 0, 0, 0, 0, 0, 3, True)
    with pytest.raises(ValueError, match="1 <= k <= N"):
        core.recall_at(q.data_ptr(), 2, 8, c.data_ptr(), 20, 0, 0, log_s.data_ptr(), 0, 0, 21, True)


def test_fast_path_takes_strided_or_float32_saliences_through_numpy_views():
    q, c, z, valid, sal = _problem(3, 4, 60, 8, 3, False, True)
    assert fast._by_address((q, c, z, sal["log_salience"], None, None, valid, None))  # the common call
    cases = {"float32 log_salience": dict(log_salience=sal["log_salience"].float()),
             "strided keys": dict(keys=torch.randn(8, 60).T), "strided log_salience":
             dict(log_salience=torch.randn(120, dtype=torch.float64)[::2])}
    for name, change in cases.items():
        args = dict(queries=q, keys=c, payloads=z, valid=valid, log_salience=sal["log_salience"]) | change
        assert not fast._by_address((args["queries"], args["keys"], z, args["log_salience"], None, None, valid,
                                     None)), name
        with counting_fast_calls() as answered:
            got = ops.salience_topk(args.pop("queries"), args.pop("keys"), args.pop("payloads"), k=5, **args)
        assert answered == [True], name
        assert got[1].shape == (4, 5)
