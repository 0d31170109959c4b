"""The Triton kernel of hopfield_retrieve: small shapes everywhere (under TRITON_INTERPRET=1 on
CPU tensors without CUDA, compiled on a GPU), full sizes on a GPU (tests marked ``gpu``)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mnemonix import _triton, ops, reference

# small-shape tests run the kernel on CUDA when there is one, else interpreted on the CPU
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def kernels():
    return _triton.load_kernels("hopfield")


def compare(q, k, v, *, beta, logit_bias=None, tol=None, **launch):
    tol = TOL[q.dtype] if tol is None else tol
    dev = [None if t is None else t.to(DEVICE) for t in (q, k, v, logit_bias)]
    out, lse, arg = kernels().hopfield_retrieve(*dev[:3], beta=beta, logit_bias=dev[3], want_argmax=True, **launch)
    out, lse, arg = out.cpu(), lse.cpu(), arg.cpu()
    r_out, r_lse, r_arg = reference.hopfield_retrieve(q, k, v, beta=beta, bias=logit_bias, return_lse=True,
                                                      return_argmax=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    scale = max(1.0, float(r_out.float().abs().max()))
    torch.testing.assert_close(out, r_out.float(), atol=tol * scale, rtol=tol)
    torch.testing.assert_close(lse, r_lse, atol=tol * max(1.0, float(r_lse.abs().max())), rtol=tol)
    logits = beta * (q.float() @ k.float().T) + (0 if logit_bias is None else logit_bias)
    ours, best = logits.gather(1, arg[:, None])[:, 0], logits.gather(1, r_arg[:, None])[:, 0]
    assert ((arg == r_arg) | (ours >= best - 1e-4 * best.abs().clamp_min(1))).all()
    return out, arg


def test_interpreter_grid_fp32(rng):
    for n, d, b in itertools.product([1, 7, 300], [1, 3, 64, 130], [1, 5, 8]):
        q = torch.randn(b, d, generator=rng)
        k = torch.randn(n, d, generator=rng)
        compare(q, k, None, beta=0.7 / math.sqrt(d))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_interpreter_values_mask_bias_dtypes(dtype, rng):
    for n, d, dv, b in [(1, 3, 5, 2), (7, 64, 1, 5), (300, 130, 33, 8)]:
        q = torch.randn(b, d, generator=rng).to(dtype)
        k = torch.randn(n, d, generator=rng).to(dtype)
        v = torch.randn(n, dv, generator=rng).to(dtype)
        bias = torch.randn(n, generator=rng)
        mask = torch.rand(n, generator=rng) < 0.5
        mask[-1] = True
        logit_bias = bias.masked_fill(~mask, float("-inf"))
        compare(q, k, v, beta=0.3, logit_bias=logit_bias)
        compare(q, k, None, beta=0.3, logit_bias=logit_bias)


def test_interpreter_split_n_and_d_tiling(rng):
    q = torch.randn(5, 130, generator=rng)
    k = torch.randn(300, 130, generator=rng)
    v = torch.randn(300, 70, generator=rng)
    for splits in (1, 3, 7):  # 7 splits of 48 rows: the last split is partly empty
        compare(q, k, None, beta=0.1, splits=splits, block_n=16)
    # d = 130 > BLOCK_D = 32: scores accumulate over d-chunks, acc lives in the workspace
    compare(q, k, None, beta=0.1, max_register_d=32, splits=2)
    compare(q, k, v, beta=0.1, max_register_d=32, splits=3, block_n=16)
    # 19 splits and dv = 300: the merge walks dv in two chunks (SPLITS x BLOCK_DV <= 8192)
    compare(q, k, torch.randn(300, 300, generator=rng), beta=0.1, splits=19, block_n=16)
    # a tie of the best logit across splits goes to the lower index
    k_tie = torch.randint(-3, 4, (300, 130), generator=rng).float()  # exact integer dot products
    k_tie[280] = k_tie[20] = 5.0
    _, arg = compare(k_tie[20:21].clone(), k_tie, None, beta=0.001, splits=4, block_n=16)
    assert int(arg[0]) == 20
    # a split whose patterns are all masked must merge as weight 0, not NaN
    bias = torch.zeros(300)
    bias[:200] = float("-inf")
    out, arg = compare(q, k, None, beta=0.1, logit_bias=bias, splits=4, block_n=16)
    assert (arg >= 200).all()


def test_interpreter_extreme_beta_and_ops_path(rng):
    q = torch.randn(4, 20, generator=rng)
    k = torch.randn(100, 20, generator=rng)
    for beta in (1e-3, 1e3):
        compare(q, k, None, beta=beta, tol=5e-3)
    ours = ops.hopfield_retrieve(q.to(DEVICE), k.to(DEVICE), beta=0.5, update_steps=3, backend="triton")
    ref = reference.hopfield_retrieve(q, k, beta=0.5, update_steps=3)
    torch.testing.assert_close(ours.cpu(), ref, atol=1e-4, rtol=1e-4)
    q3 = q.reshape(2, 2, 20).to(torch.bfloat16).to(DEVICE)
    out = ops.hopfield_retrieve(q3, k.to(torch.bfloat16).to(DEVICE), beta=0.5, backend="triton")
    assert out.shape == (2, 2, 20) and out.dtype == torch.bfloat16


# -- GPU (compiled kernel) ------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_large_n_bf16_against_torch_fp32():
    gen = torch.Generator(device="cuda").manual_seed(0)
    n, d, b = 1_000_000, 128, 16
    k = torch.randn(n, d, device="cuda", generator=gen).to(torch.bfloat16)
    q = k[:b].float() + 0.1 * torch.randn(b, d, device="cuda", generator=gen)
    q = q.to(torch.bfloat16)
    out, lse, arg = ops.hopfield_retrieve(q, k, beta=0.2, return_lse=True, return_argmax=True)
    r_out, r_lse, r_arg = ops.hopfield_retrieve(q.float(), k.float(), beta=0.2, return_lse=True,
                                                return_argmax=True, backend="torch")
    torch.testing.assert_close(out.float(), r_out, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(lse, r_lse, atol=1e-2, rtol=1e-3)
    assert (arg == r_arg).float().mean() > 0.99


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 64, 1024])
def test_gpu_shapes_fp32_and_large_d(b):
    gen = torch.Generator(device="cuda").manual_seed(1)
    for n, d in [(100_003, 64), (10_000, 12_288)]:
        k = torch.randn(n, d, device="cuda", generator=gen) / math.sqrt(d)
        q = torch.randn(b, d, device="cuda", generator=gen) / math.sqrt(d)
        out = ops.hopfield_retrieve(q, k, beta=8.0, backend="triton")
        ref = ops.hopfield_retrieve(q, k, beta=8.0, backend="torch")
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-3)
        out16 = ops.hopfield_retrieve(q.half(), k.half(), beta=8.0)
        torch.testing.assert_close(out16.float(), ref, atol=5e-3, rtol=5e-3)
