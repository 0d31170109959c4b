"""The ``amx`` backend (``_core.retrieval_amx``, csrc/retrieval_amx/amx.cpp): bfloat16 retrieval on
AMX tiles equals the float64 reference within float32-level error, through the kernel, the
general path and the fast path alike; NaN / Inf operands are refused like on every other path.

On a CPU without AMX-BF16 tiles the same tests check the refusal instead (the kernel raises,
the backend names the reason, the policy never picks it): nothing here skips.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix import _checks, calibration, ops, reference
from mnemonix.backends import core_engine, hopfield_amx
from mnemonix.ops import hopfield as hop
from mnemonix.ops._hopfield_fast import cpu_fast_retrieve

engine = core_engine("retrieval_amx")
HAS_AMX = hopfield_amx.available()


def _operands(b, n, d, dv, scale, seed):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, d, generator=g) * scale).bfloat16()
    k = torch.randn(n, d, generator=g).bfloat16()
    v = None if dv is None else torch.randn(n, dv, generator=g).bfloat16()
    return q, k, v


def _kernel(q, k, v, beta, threads=0, out_dtype=torch.float32):
    out = torch.empty(q.shape[0], k.shape[1] if v is None else v.shape[1], dtype=out_dtype)
    lse = torch.empty(q.shape[0])
    hopfield_amx.retrieve_at(q, k, v, beta, out, lse, threads)
    return out, lse


def _refused() -> None:
    """Without AMX tiles: the kernel refuses, naming why (what an AMX-only test checks there)."""
    q, k, _ = _operands(2, 3, 4, None, 1.0, 0)
    with pytest.raises(RuntimeError, match="no AMX bfloat16 tiles"):
        _kernel(q, k, None, 1.0)
    assert not hopfield_amx.available()


def _bounds(q, k, v, beta):
    """Float32-level error bounds of out and lse per query: the logits' float32 sums (d terms),
    the weights' two bfloat16 terms (2^-17 each), the float32 sums of the weighted rows."""
    qd, kd = q.double(), k.double()
    vd = kd if v is None else v.double()
    logit_err = beta * (qd.abs() @ kd.abs().T).amax(-1) * (q.shape[1] + 2) * 2.0 ** -24  # [B]
    n = k.shape[0]
    weight_err = 2 * logit_err + 2.0 ** -16 + (n + 2) * 2.0 ** -24
    lse_ref = reference.hopfield_retrieve(qd, kd, vd, beta=beta, return_lse=True)[1]
    return vd.abs().amax() * weight_err[:, None] * 4, (logit_err + 2.0 ** -16 + lse_ref.abs() * 2.0 ** -23) * 4


@pytest.mark.skipif(engine is None, reason="the C++ extension is always built in CI")
@settings(max_examples=80 if HAS_AMX else 5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 40), n=st.integers(1, 400), d=st.integers(1, 80), dv=st.none() | st.integers(1, 50),
       beta=st.floats(0.01, 3.0), scale=st.sampled_from([0.1, 1.0, 3.0]), threads=st.integers(0, 3),
       seed=st.integers(0, 2**31 - 1))
def test_the_kernel_equals_the_reference_at_float32_accuracy(b, n, d, dv, beta, scale, threads, seed):
    q, k, v = _operands(b, n, d, dv, scale, seed)
    if not HAS_AMX:
        with pytest.raises(RuntimeError, match="no AMX bfloat16 tiles"):
            _kernel(q, k, v, beta, threads)
        return
    out, lse = _kernel(q, k, v, beta, threads)
    ref_out, ref_lse = reference.hopfield_retrieve(q.double(), k.double(), None if v is None else v.double(),
                                                   beta=beta, return_lse=True)
    out_bound, lse_bound = _bounds(q, k, v, beta)
    assert ((out.double() - ref_out).abs() <= out_bound).all()
    assert ((lse.double() - ref_lse).abs() <= lse_bound).all()
    out16, lse16 = _kernel(q, k, v, beta, threads, torch.bfloat16)  # out rounded once, to nearest even
    assert torch.equal(out16, out.bfloat16()) and torch.equal(lse16, lse)


@pytest.mark.parametrize(("b", "n", "d", "dv"), [
    (33, 300, 1100, None),   # d in three slices of the logits' pass, a partial last block
    (100, 50, 96, 20000),    # dv so wide that the query tiles go in two groups
    (17, 1, 32, 16),         # one key
    (4, 5000, 64, None),     # more blocks than threads; an odd query tile alone
])
def test_the_kernel_at_slices_groups_and_edges(b, n, d, dv):
    if not HAS_AMX:
        return _refused()
    q, k, v = _operands(b, n, d, dv, 1.0, 7)
    beta = 1.0 / math.sqrt(d)
    out, lse = _kernel(q, k, v, beta)
    ref_out, ref_lse = reference.hopfield_retrieve(q.double(), k.double(), None if v is None else v.double(),
                                                   beta=beta, return_lse=True)
    out_bound, lse_bound = _bounds(q, k, v, beta)
    assert ((out.double() - ref_out).abs() <= out_bound).all()
    assert ((lse.double() - ref_lse).abs() <= lse_bound).all()
    again, _ = _kernel(q, k, v, beta)  # the same bits call after call (parts merge in thread order)
    assert torch.equal(again, out)


@settings(max_examples=40 if HAS_AMX else 3, deadline=None)
@given(steps=st.lists(st.floats(-30.0, 30.0), min_size=2, max_size=6), b=st.integers(1, 40),
       dv=st.none() | st.integers(1, 40), threads=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_a_max_that_climbs_or_falls_block_by_block(steps, b, dv, threads, seed):
    """Each 128-key block's logits sit at their own level, moving by ``steps`` from block to
    block: by less than the kernel's slack (the reference max stays, weights above 1) and by
    more (it moves and the running out is rescaled), both ways."""
    if not HAS_AMX:
        return _refused()
    q, k, v = _operands(b, 128 * len(steps), 16, dv, 0.3, seed)
    levels = torch.tensor(steps).cumsum(0).repeat_interleave(128)
    k[:, 0] = (levels + torch.rand(levels.shape[0], generator=torch.Generator().manual_seed(seed))).bfloat16()
    q[:, 0] = 1.0
    out, lse = _kernel(q, k, v, 1.0, threads)
    ref_out, ref_lse = reference.hopfield_retrieve(q.double(), k.double(), None if v is None else v.double(),
                                                   beta=1.0, return_lse=True)
    out_bound, lse_bound = _bounds(q, k, v, 1.0)
    assert ((out.double() - ref_out).abs() <= out_bound).all()
    assert ((lse.double() - ref_lse).abs() <= lse_bound).all()


@settings(max_examples=30 if HAS_AMX else 3, deadline=None)
@given(steps=st.lists(st.floats(0.0, 7.0), min_size=2, max_size=6), exponent=st.integers(20, 35),
       b=st.integers(1, 20), seed=st.integers(0, 2**31 - 1))
def test_huge_values_keep_the_range_they_had_before_the_slack(steps, exponent, b, seed):
    """Values up to 1e35 with logits that climb by less than the slack: weights of up to e^8 a
    key would take the running out past float32 (sum p |v| up to N e^8 |v|), so the kernel
    moves the reference max there as it did before (p <= 1) and out stays finite and right."""
    if not HAS_AMX:
        return _refused()
    q, k, v = _operands(b, 128 * len(steps), 16, 8, 0.3, seed)
    v = (v.float() * 10.0 ** exponent).bfloat16()
    levels = torch.tensor(steps).cumsum(0).repeat_interleave(128)
    k[:, 0] = levels.bfloat16()
    q[:, 0] = 1.0
    out, lse = _kernel(q, k, v, 1.0, 1)
    ref_out, ref_lse = reference.hopfield_retrieve(q.double(), k.double(), v.double(), beta=1.0, return_lse=True)
    out_bound, lse_bound = _bounds(q, k, v, 1.0)
    assert torch.isfinite(out).all()
    assert ((out.double() - ref_out).abs() <= out_bound).all()
    assert ((lse.double() - ref_lse).abs() <= lse_bound).all()


@settings(max_examples=15, deadline=None)
@given(b=st.integers(2, 40), n=st.integers(1, 300), d=st.integers(1, 70), seed=st.integers(0, 2**31 - 1))
def test_each_querys_bits_do_not_depend_on_the_batch(b, n, d, seed):
    if not HAS_AMX:
        return _refused()
    q, k, _ = _operands(b, n, d, None, 1.0, seed)
    out, lse = _kernel(q, k, None, 0.4)
    for i in (0, b // 2, b - 1):
        alone, alone_lse = _kernel(q[i:i + 1].contiguous(), k, None, 0.4)
        assert torch.equal(alone[0], out[i]) and torch.equal(alone_lse[0], lse[i])


@pytest.mark.skipif(engine is None, reason="the C++ extension is always built in CI")
@settings(max_examples=40 if HAS_AMX else 5, deadline=None)
@given(b=st.integers(1, 20), n=st.integers(1, 200), d=st.integers(1, 40), values_apart=st.booleans(),
       where=st.sampled_from(["queries", "keys", "values"]), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       seed=st.integers(0, 2**31 - 1))
def test_a_nan_or_inf_operand_is_refused_with_its_name(b, n, d, values_apart, where, bad, seed):
    q, k, v = _operands(b, n, d, d + 1 if values_apart else None, 1.0, seed)
    if where == "values" and v is None:
        where = "keys"
    target = {"queries": q, "keys": k, "values": v}[where]
    g = torch.Generator().manual_seed(seed)
    target.view(-1)[torch.randint(target.numel(), (1,), generator=g)] = bad
    if not HAS_AMX:  # the eager query check, or the refusal before the kernel would have shown the rest
        with pytest.raises(ValueError, match=f"{where} must be finite|no AMX bfloat16 tiles"):
            ops.hopfield_retrieve(q, k, v, beta=0.5, backend="amx")
        return
    with pytest.raises(_checks.NonFiniteError, match=where):
        ops.hopfield_retrieve(q, k, v, beta=0.5, backend="amx")


def test_logits_past_float32_are_refused_not_returned():
    if not HAS_AMX:
        return _refused()
    q = torch.full((3, 8), 1e19).bfloat16()
    k = torch.full((5, 8), 1e19).bfloat16()
    out, lse = _kernel(q, k, None, 1.0)
    assert out.isnan().all() and lse.isnan().all()
    with pytest.raises(ValueError, match="logits overflow float32"):
        ops.hopfield_retrieve(q, k, beta=1.0, backend="amx")


@pytest.mark.skipif(engine is None, reason="the C++ extension is always built in CI")
@settings(max_examples=30 if HAS_AMX else 3, deadline=None)
@given(b=st.integers(1, 40), n=st.integers(1, 300), d=st.integers(1, 64), dv=st.none() | st.integers(1, 40),
       want_lse=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_the_fast_path_gives_the_general_paths_bits(b, n, d, dv, want_lse, seed):
    q, k, v = _operands(b, n, d, dv, 1.0, seed)
    fast = cpu_fast_retrieve(q, k, v, 0.7, "amx", hop.cpu_forward_order_at, want_lse, False,
                             hop.cpu_half_order_at)
    if not HAS_AMX:
        assert fast is None  # the general path then names the reason
        return
    general = ops.hopfield_retrieve(q, k, v, beta=0.7, backend="amx", return_lse=True)
    assert torch.equal(fast[0], general[0]) and fast[0].dtype == torch.bfloat16
    assert fast[1] is None if not want_lse else torch.equal(fast[1], general[1])
    assert cpu_fast_retrieve(q, k, v, 0.7, "amx", hop.cpu_forward_order_at, want_lse, True,
                             hop.cpu_half_order_at) is None  # an argmax: not this kernel's


def test_the_backend_names_what_it_cannot_run():
    q, k, _ = _operands(4, 50, 16, None, 1.0, 0)
    with pytest.raises(ValueError, match="does not return the argmax" if HAS_AMX else "no AMX"):
        ops.hopfield_retrieve(q, k, beta=1.0, backend="amx", return_argmax=True)
    with pytest.raises(ValueError, match="takes no bias" if HAS_AMX else "no AMX"):
        ops.hopfield_retrieve(q, k, beta=1.0, backend="amx", bias=torch.zeros(50))
    with pytest.raises(ValueError, match="dtype torch.float32 not in"):
        ops.hopfield_retrieve(q.float(), k.float(), beta=1.0, backend="amx")
    with pytest.raises(ValueError, match="forward only"):
        ops.hopfield_retrieve(q.requires_grad_(), k, beta=1.0, backend="amx")


@pytest.mark.skipif(engine is None, reason="the C++ extension is always built in CI")
def test_the_kernel_refuses_empty_and_mismatched_calls():
    if not HAS_AMX:
        assert not engine.available()
        return
    q, k, _ = _operands(2, 3, 4, None, 1.0, 0)
    out = torch.empty(2, 4)
    with pytest.raises(ValueError, match="batch, n, d and dv must be >= 1"):
        engine.retrieve_at(q.data_ptr(), 0, 4, k.data_ptr(), 3, 0, 4, 1.0, out.data_ptr())
    with pytest.raises(ValueError, match="needs dv == d"):
        engine.retrieve_at(q.data_ptr(), 2, 4, k.data_ptr(), 3, 0, 5, 1.0, out.data_ptr())
    with pytest.raises(ValueError, match="null address for out"):
        engine.retrieve_at(q.data_ptr(), 2, 4, k.data_ptr(), 3, 0, 4, 1.0, 0)


def test_the_policy_takes_amx_only_where_it_runs_and_its_limits_say():
    limits = dict(calibration.thresholds("hopfield_retrieve", "cpu"))
    limits.update(amx_min_batch_bfloat16=32, amx_max_batch_bfloat16=64, amx_wide_dim_bfloat16=1024,
                  amx_wide_min_batch_bfloat16=64, amx_wide_max_batch_bfloat16=256,
                  amx_min_batch_large_bfloat16=8, amx_large_min_bytes_bfloat16=128 << 20,
                  amx_min_batch_small_bfloat16=4, amx_small_max_bytes_bfloat16=1 << 20,
                  amx_stream_max_batch_bfloat16=512, amx_stream_min_bytes_bfloat16=16 << 20)
    first = {(b, n, d): hop._cpu_half_order(b, n, d, "bfloat16", limits)[0] == "amx"
             for b in (2, 4, 8, 16, 32, 64, 100, 256, 512, 1024) for d in (128, 1024)
             for n in (1_000, 10_000, 1_000_000)}

    def low(n, d):
        size = n * d * 2
        return 8 if size >= 128 << 20 else 4 if size < 1 << 20 else 32 if d < 1024 else 64

    def high(n, d):
        return 512 if n * d * 2 >= 16 << 20 else 64 if d < 1024 else 256

    expected = {(b, n, d): HAS_AMX and low(n, d) <= b <= high(n, d) for b, n, d in first}
    assert first == expected
    assert hop._cpu_half_order(64, 10_000, 1024, "float16", limits)[0] != "amx"  # bfloat16 only
    limits.update(amx_min_batch_bfloat16=0, amx_wide_min_batch_bfloat16=0)   # 0: never, on any store
    assert all(hop._cpu_half_order(b, n, d, "bfloat16", limits)[0] != "amx" for b, n, d in first)


def test_the_refusal_checks_run_here_too_with_amx_turned_off():
    """MNEMONIX_AMX=0 makes available() False: this module's other branch, in a fresh process."""
    if not HAS_AMX:
        return _refused()
    env = {**os.environ, "MNEMONIX_AMX": "0"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                           "-k", "not refusal_checks_run_here"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout  # there each test checks the refusal


def test_concurrent_calls_from_python_threads_give_the_sequential_bits():
    """Each OpenMP thread keeps its workspace between calls (thread_local): callers on several
    Python threads (each its own OpenMP team) must not share one."""
    if not HAS_AMX:
        return _refused()
    import threading

    problems = [_operands(b, n, d, None, 1.0, seed) for seed, (b, n, d) in
                enumerate([(40, 900, 96), (7, 3000, 40), (64, 500, 200), (17, 1200, 33)])]
    expected = [_kernel(q, k, v, 0.3) for q, k, v in problems]
    failures: list[str] = []

    def hammer(i: int) -> None:
        q, k, v = problems[i]
        for _ in range(25):
            out, lse = _kernel(q, k, v, 0.3)
            if not (torch.equal(out, expected[i][0]) and torch.equal(lse, expected[i][1])):
                failures.append(f"problem {i}: bits differ from the sequential call")
                return

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures and not any(t.is_alive() for t in threads)
