"""The Triton backward of hopfield_retrieve (FlashAttention-2 dK/dV and dQ kernels) and the grouped
forward: small shapes against autograd of the reference (under TRITON_INTERPRET=1 on CPU tensors
without CUDA, compiled on a GPU), determinism, and GPU training / bf16 checks (marked ``gpu``)."""

from __future__ import annotations

import pytest
import torch

from mnemonix import _triton, ops, reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def problem(g, *, lead, key_lead, b, n, d, dv, dtype, bias=True, mask=True, assoc=True):
    q = torch.randn(*lead, b, d, generator=g)
    k = torch.randn(*key_lead, n, d, generator=g)
    v = None if dv is None else torch.randn(*key_lead, n, dv, generator=g)
    beta = torch.rand(lead[-1], generator=g) + 0.2
    key_bias = torch.randn(*key_lead, n, generator=g) if bias else None
    keep = None
    if mask:
        keep = torch.rand(*lead[:-1], 1, n, generator=g) < 0.8
        keep[..., 0] = True
    allowed = None
    if assoc:
        allowed = torch.rand(b, n, generator=g) < 0.85
        allowed[:, 0] = True
    return [q.to(dtype), k.to(dtype), None if v is None else v.to(dtype), beta, key_bias], keep, allowed


def grads(fn, tensors, keep, allowed, g_out_seed=3, **kw):
    leaves = [None if t is None else t.detach().clone().to(DEVICE if fn is not reference.hopfield_retrieve
                                                          else "cpu").requires_grad_(True) for t in tensors]
    dev = leaves[0].device
    out, lse = fn(*leaves[:3], beta=leaves[3], bias=leaves[4], mask=None if keep is None else keep.to(dev),
                  association_mask=None if allowed is None else allowed.to(dev), return_lse=True, **kw)
    g = torch.Generator().manual_seed(g_out_seed)
    d_out = torch.randn(out.shape, generator=g).to(dev)
    d_lse = torch.randn(lse.shape, generator=g).to(dev)
    ((out.float() * d_out).sum() + (lse * d_lse).sum()).backward()
    return [out.detach().float().cpu()] + [None if t is None else t.grad.float().cpu() for t in leaves]


def check(tensors, keep, allowed, dtype):
    got = grads(lambda *a, **kw: ops.hopfield_retrieve(*a, backend="triton", **kw), tensors, keep, allowed)
    ref_inputs = [None if t is None else t.float() for t in tensors]
    want = grads(reference.hopfield_retrieve, ref_inputs, keep, allowed)
    tol = TOL[dtype]
    for name, x, y in zip(("out", "queries", "keys", "values", "beta", "bias"), got, want):
        if y is None:
            assert x is None, name
            continue
        scale = max(1.0, float(y.abs().max()))
        torch.testing.assert_close(x, y, atol=tol * scale, rtol=tol, msg=name)


@pytest.mark.parametrize("case", [
    dict(lead=(1,), key_lead=(), b=5, n=70, d=8, dv=None),           # one shared store, K = V
    dict(lead=(2, 3), key_lead=(2, 3), b=5, n=70, d=20, dv=12),      # per sample and head
    dict(lead=(2, 3), key_lead=(2, 1), b=17, n=33, d=16, dv=None),   # shared by the heads of a sample
    dict(lead=(4,), key_lead=(), b=3, n=50, d=130, dv=None),         # d above 128, shared by 4 groups
    dict(lead=(2, 2), key_lead=(2, 2), b=1, n=300, d=64, dv=64),
])
def test_triton_forward_and_backward_match_reference_autograd(case, rng):
    tensors, keep, allowed = problem(rng, dtype=torch.float32, **case)
    check(tensors, keep, allowed, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_backward_half_precision(dtype, rng):
    tensors, keep, allowed = problem(rng, lead=(2, 2), key_lead=(2, 1), b=6, n=90, d=16, dv=8, dtype=dtype,
                                     assoc=False)
    check(tensors, keep, allowed, dtype)


def test_triton_backward_is_deterministic_and_runs_without_optional_grads(rng):
    tensors, keep, allowed = problem(rng, lead=(3,), key_lead=(), b=9, n=200, d=16, dv=None, dtype=torch.float32)
    first = grads(lambda *a, **kw: ops.hopfield_retrieve(*a, backend="triton", **kw), tensors, keep, allowed)
    second = grads(lambda *a, **kw: ops.hopfield_retrieve(*a, backend="triton", **kw), tensors, keep, allowed)
    for x, y in zip(first, second):
        assert x is None and y is None or torch.equal(x, y)  # no atomics: bit-identical
    # only the queries want a gradient: the dK/dV kernel is skipped
    q = tensors[0].detach().clone().to(DEVICE).requires_grad_(True)
    ops.hopfield_retrieve(q, tensors[1].to(DEVICE), beta=0.5, backend="triton").sum().backward()
    q2 = tensors[0].clone().requires_grad_(True)
    reference.hopfield_retrieve(q2, tensors[1], beta=0.5).sum().backward()
    torch.testing.assert_close(q.grad.cpu(), q2.grad, atol=2e-4, rtol=2e-4)


def test_backward_kernel_launcher_directly(rng):
    """The launcher on canonical operands: d(bias) reduced over the groups that share it."""
    kb = _triton.load_kernels("hopfield_bwd")
    q = torch.randn(2, 3, 4, 16, generator=rng, requires_grad=True)
    k = torch.randn(1, 1, 40, 16, generator=rng, requires_grad=True)
    bias = torch.randn(1, 3, 40, generator=rng, requires_grad=True)
    logits = 0.7 * q @ k.transpose(-1, -2) + bias[..., None, :]
    out = torch.softmax(logits, -1) @ k
    lse = torch.logsumexp(logits, -1)
    d_out = torch.randn(out.shape, generator=rng)
    want = torch.autograd.grad((out * d_out).sum(), (q, k, bias))
    dev = [t.detach().to(DEVICE) for t in (q, k, bias, out, lse, d_out)]
    dq, dk, dv, db = kb.hopfield_backward(dev[5], None, dev[0], dev[1], None, dev[2], None, dev[3], dev[4], beta=0.7)
    assert dv is None
    for x, y in zip((dq, dk, db), want):
        torch.testing.assert_close(x.cpu(), y, atol=2e-4, rtol=2e-4)


@pytest.mark.gpu
def test_gpu_training_bf16_against_fp32():
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(4, 8, 64, 64, device="cuda", generator=gen)
    k = torch.randn(4, 8, 16384, 64, device="cuda", generator=gen)
    v = torch.randn(4, 8, 16384, 64, device="cuda", generator=gen)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        leaves = [t.to(dtype).requires_grad_(True) for t in (q, k, v)]
        out = ops.hopfield_retrieve(*leaves, beta=0.125)
        out.float().square().sum().backward()
        results.append([out.float()] + [t.grad.float() for t in leaves])
    for x, y in zip(results[1], results[0]):
        torch.testing.assert_close(x, y, atol=5e-2 * float(y.abs().max()), rtol=5e-2)
