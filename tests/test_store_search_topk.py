"""search_topk: every backend against the float64 reference on fresh random inputs.

Exact means equal: the same rows in the same order (ties to the lower tie id) and the
same float64 scores, for every storage dtype, masks, k = N, k past the kept rows, exact
ties (duplicated rows) and multi-chunk scans.
"""

from __future__ import annotations

import pytest
import torch

from mnemonix import ops, reference
from mnemonix.backends import search as sb
from mnemonix.store._blocks import quantize_int8

STORAGE = [torch.float32, torch.float16, torch.bfloat16, torch.int8]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _keys(rng, N, d, dtype, *, dup: int = 0):
    x = torch.randn(N, d, generator=rng)
    if dup and N > 1:  # exact ties: copy some rows over others
        src = torch.randint(N, (dup,), generator=rng)
        dst = torch.randint(N, (dup,), generator=rng)
        x[dst] = x[src]
    if dtype == torch.int8:
        return quantize_int8(x)
    return x.to(dtype), None


def _case(rng, B, N, d, dtype, *, masked, dup, tie, metric):
    keys, scales = _keys(rng, N, d, dtype, dup=dup)
    q = torch.randn(B, d, generator=rng)
    if N:
        stored = keys[int(torch.randint(N, (1,), generator=rng))].float()
        q[0] = stored if scales is None else stored * 0.01  # a stored row (int8: a multiple) as a query
    mask = None
    if masked == "random":
        mask = torch.rand(N, generator=rng) > 0.4
    elif masked == "few":
        mask = torch.zeros(N, dtype=torch.bool)
        mask[torch.randint(N, (2,), generator=rng)] = True
    elif masked == "none_kept":
        mask = torch.zeros(N, dtype=torch.bool)
    tie_ids = torch.randperm(N, generator=rng) * 3 + 5 if tie else None
    return dict(queries=q, keys=keys, scales=scales, mask=mask, tie_ids=tie_ids, metric=metric)


def _check(case, k, backend):
    ours_s, ours_r = ops.search_topk(k=k, exact_scores=True, backend=backend, **case)
    ref_s, ref_r = reference.search_topk(k=k, **case)
    assert ours_r.dtype == torch.int64 and ours_r.shape == ref_r.shape == (case["queries"].shape[0], k)
    assert torch.equal(ours_r.cpu(), ref_r), (ours_r, ref_r)
    assert torch.equal(ours_s.cpu(), ref_s)
    f32_s, f32_r = ops.search_topk(k=k, backend=backend, **case)
    assert f32_s.dtype == torch.float32 and torch.equal(f32_s.cpu(), ref_s.float()) and torch.equal(f32_r, ours_r)


@pytest.mark.parametrize("dtype", STORAGE)
@pytest.mark.parametrize("metric", ["ip", "cos"])
def test_torch_matches_reference_many_shapes(rng, dtype, metric, monkeypatch):
    monkeypatch.setattr(sb, "chunk_rows", lambda B, d, N, size: 37)  # many chunks, N not a multiple
    for B, N, d in [(1, 1, 1), (3, 7, 3), (2, 100, 17), (5, 300, 64), (1, 129, 5)]:
        for masked in (None, "random", "few", "none_kept"):
            case = _case(rng, B, N, d, dtype, masked=masked, dup=N // 3, tie=bool(N % 2), metric=metric)
            for k in sorted({1, 4, N, N + 3}):
                _check(case, k, "torch")


@pytest.mark.parametrize("dtype", STORAGE)
def test_exact_ties_go_to_lower_tie_id_beyond_the_candidates(rng, dtype):
    """Forty copies of the best row: more than k + 8 candidates tie, the rescan settles them by tie id."""
    N, d = 500, 12
    keys, scales = _keys(rng, N, d, dtype)
    best = keys[7].clone()
    rows = torch.randperm(N, generator=rng)[:40]
    keys[rows] = best
    if scales is not None:
        scales[rows] = scales[7].clone()
    tie_ids = torch.randperm(N, generator=rng)
    q = (best.float() * (1 if scales is None else scales[7]))[None].repeat(2, 1)
    q[1] = 0.0  # zero query: every row scores 0 exactly
    case = dict(queries=q, keys=keys, scales=scales, mask=None, tie_ids=tie_ids, metric="ip")
    for k in (3, 10, 45):
        _check(case, k, "torch")


def test_large_k_and_empty_keys(rng):
    keys = torch.randn(20, 4, generator=rng)
    s, r = ops.search_topk(torch.randn(2, 4, generator=rng), keys, 1000)
    assert s.shape == (2, 1000) and (r[:, 20:] == -1).all() and torch.isneginf(s[:, 20:]).all()
    assert sorted(r[0, :20].tolist()) == list(range(20))
    s, r = ops.search_topk(torch.randn(2, 4), torch.empty(0, 4), 3)
    assert (r == -1).all() and torch.isneginf(s).all()


def test_bad_arguments_name_the_argument(rng):
    q, keys = torch.randn(2, 4), torch.randn(10, 4)
    with pytest.raises(ValueError, match="k must be >= 1"):
        ops.search_topk(q, keys, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        ops.search_topk(q, keys, 2.0)
    with pytest.raises(ValueError, match="metric"):
        ops.search_topk(q, keys, 2, metric="l2")
    with pytest.raises(ValueError, match="queries must have shape"):
        ops.search_topk(torch.randn(2, 5), keys, 2)
    with pytest.raises(ValueError, match="scales must be given"):
        ops.search_topk(q, keys.to(torch.int8), 2)
    with pytest.raises(ValueError, match="scales must be None"):
        ops.search_topk(q, keys, 2, scales=torch.ones(10))
    with pytest.raises(TypeError, match="mask"):
        ops.search_topk(q, keys, 2, mask=torch.ones(10))
    with pytest.raises(ValueError, match="tie_ids must have shape"):
        ops.search_topk(q, keys, 2, tie_ids=torch.arange(9))
    with pytest.raises(ValueError, match="queries must be finite"):
        ops.search_topk(torch.full((1, 4), float("nan")), keys, 2)
    bad = keys.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="keys must be finite"):
        ops.search_topk(q, bad, 2)
    masked = torch.ones(10, dtype=torch.bool)
    masked[3] = False  # a masked-out row may hold anything: it never enters the scan's result
    assert (ops.search_topk(q, bad, 2, mask=masked)[1] != 3).all()


@pytest.mark.parametrize("metric", ["ip", "cos"])
def test_cpu_half_gemv_path_is_exact(rng, metric, monkeypatch):
    """float16 keys at small B go through torch's fp16 GEMV (coarser scores), then the exact re-rank."""
    monkeypatch.setattr(sb, "HALF_GEMV_CHUNK_ROWS", 101)
    for B, N, d in [(1, 1, 3), (2, 700, 16), (4, 333, 7)]:
        case = _case(rng, B, N, d, torch.float16, masked="random", dup=N // 4, tie=True, metric=metric)
        case["keys"] = case["keys"] * 300.0  # large rows: the scaled GEMV must not overflow half
        norm = float(torch.linalg.vector_norm(case["keys"].float(), dim=1).max())
        assert sb.uses_half_gemv(case["keys"], B, norm)
        for k in sorted({1, 5, N + 2}):
            ours_s, ours_r = ops.search_topk(k=k, exact_scores=True, max_norm=norm * 1.01, **case)
            ref_s, ref_r = reference.search_topk(k=k, **case)
            assert torch.equal(ours_r, ref_r) and torch.equal(ours_s, ref_s)


try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover - triton is in the test extra
    triton = None
needs_triton = pytest.mark.skipif(triton is None, reason="Triton is not installed")


@needs_triton
@pytest.mark.parametrize("dtype,metric", [(torch.float32, "ip"), (torch.float16, "cos"), (torch.bfloat16, "ip"),
                                          (torch.int8, "ip"), (torch.int8, "cos")])
def test_triton_matches_reference(rng, dtype, metric):
    """The Triton candidate kernel (interpreted on CPU) made exact: same rows and scores as the reference."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Small shapes: the interpreter runs the merge loop in Python (N not a multiple of the tile,
    # B over two query blocks, k = 1 and k past N).
    for (B, N, d), masked in (((1, 1, 3), None), ((2, 37, 5), "random"), ((17, 20, 3), None)):
        case = _case(rng, B, N, d, dtype, masked=masked, dup=N // 3, tie=True, metric=metric)
        case = {key: (v.to(device) if isinstance(v, torch.Tensor) else v) for key, v in case.items()}
        for k in sorted({1, N + 1}):
            _check(case, k, "triton")


@needs_triton
def test_triton_refuses_long_lists_and_finds_bad_keys(rng):
    q, keys = torch.randn(2, 4), torch.randn(300, 4)
    with pytest.raises(ValueError, match="running top-k lives in registers"):
        ops.search_topk(q, keys, 200, backend="triton")
    keys[7, 2] = float("nan")
    with pytest.raises(ValueError, match="keys must be finite"):
        ops.search_topk(q, keys, 3, backend="triton")


_COMPILE_SEARCH = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mnemonix.kernels import search as kernel

names = ["Q", "K", "Scales", "Mask", "OutVal", "OutIdx", "NormSq", "NonFinite", "B", "N", "D", "n_per_split",
         "stride_qb", "stride_kn", "stride_os", "stride_ob"]
for key, dot_fp32, scales, mask, cosine, topk, block_b in [("fp32", True, False, True, True, 18, 16),
                                                          ("i8", False, True, True, False, 128, 64)]:
    types = ["*fp32", "*" + key, "*fp32", "*i8", "*fp32", "*i32", "*fp32", "*i32"] + ["i32"] * 8
    consts = {"HAS_SCALES": scales, "HAS_MASK": mask, "COSINE": cosine, "TOPK": topk,
              "K_PAD": triton.next_power_of_2(topk), "BLOCK_B": block_b, "BLOCK_N": 64 if block_b == 64 else 128,
              "BLOCK_D": 128, "DOT_FP32": dot_fp32}
    sig = dict(zip(names, types))
    sig.update({name: "constexpr" for name in consts})
    triton.compile(ASTSource(fn=kernel._search_kernel, signature=sig, constexprs=consts),
                   target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
print("compiled")
"""


@needs_triton
@pytest.mark.slow
def test_search_kernel_compiles_for_sm90_without_a_gpu():
    """The interpreter does not type-check: compile the real kernel for an H100/H200 (Triton ships ptxas)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SEARCH], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]
