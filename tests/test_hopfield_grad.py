"""Gradients of hopfield_retrieve: the streaming backward against autograd of the reference.

The ``torch`` backend's backward recomputes each chunk's probabilities from the saved
log-sum-exp (FlashAttention-2 style) and runs on whatever device the inputs live on.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemonix import ops, reference
from mnemonix.backends import hopfield_grad
from mnemonix.hopfield import HopfieldRetrieval


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def _grads(fn, q, k, v, bias, mask, beta, d_out, d_lse):
    q, k, v, bias = _leaves(q, k, v, bias)
    out, lse = fn(q, k, v, beta=beta, bias=bias, mask=mask, return_lse=True)
    (out * d_out).sum().add((lse * d_lse).sum()).backward()
    return [None if t is None else t.grad for t in (q, k, v, bias)]


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 9), n=st.integers(1, 700), d=st.integers(1, 40), dv=st.one_of(st.none(), st.integers(1, 24)),
    beta=st.floats(0.05, 4.0), with_bias=st.booleans(), with_mask=st.booleans(),
    chunk=st.sampled_from([7, 64, 1 << 20]),
    seed=st.integers(0, 2**31 - 1),
)
def test_streaming_backward_matches_reference_autograd(b, n, d, dv, beta, with_bias, with_mask, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, d, generator=g)
    k = torch.randn(n, d, generator=g)
    v = None if dv is None else torch.randn(n, dv, generator=g)
    bias = torch.randn(n, generator=g) if with_bias else None
    mask = None
    if with_mask:
        mask = torch.rand(n, generator=g) < 0.7
        mask[int(torch.randint(n, (1,), generator=g))] = True
    width = d if dv is None else dv
    d_out, d_lse = torch.randn(b, width, generator=g), torch.randn(b, generator=g)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hopfield_grad, "CHUNK_ELEMENTS", chunk)  # force many chunks on small shapes
        got = _grads(lambda *a, **kw: ops.hopfield_retrieve(*a, backend="torch", **kw), q, k, v, bias, mask, beta,
                     d_out, d_lse)
    want = _grads(reference.hopfield_retrieve, q, k, v, bias, mask, beta, d_out, d_lse)
    for name, x, y in zip(("queries", "keys", "values", "bias"), got, want):
        if y is None:
            assert x is None, name
            continue
        scale = max(1.0, float(y.abs().max()))
        torch.testing.assert_close(x, y, atol=2e-4 * scale, rtol=2e-4, msg=name)


def test_update_steps_stay_differentiable(rng):
    k = torch.nn.functional.normalize(torch.randn(300, 16, generator=rng), dim=1) * 3
    q = (k[:5] + 0.3 * torch.randn(5, 16, generator=rng)).requires_grad_(True)
    q2 = q.detach().clone().requires_grad_(True)
    ops.hopfield_retrieve(q, k, beta=2.0, update_steps=3).sum().backward()
    reference.hopfield_retrieve(q2, k, beta=2.0, update_steps=3).sum().backward()
    torch.testing.assert_close(q.grad, q2.grad, atol=1e-4, rtol=1e-4)


def test_forward_only_backends_refuse_grad_with_the_reason(rng):
    q = torch.randn(3, 8, generator=rng, requires_grad=True)
    k = torch.randn(40, 8, generator=rng)
    with pytest.raises(ValueError, match="forward only"):
        ops.hopfield_retrieve(q, k, beta=1.0, backend="cpp")
    with torch.no_grad():
        ops.hopfield_retrieve(q, k, beta=1.0, backend="cpp")  # no graph: the fused kernel is fine


BACKWARD_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, torch
    from mnemonix import ops
    torch.manual_seed(0)
    n, d, b = 1_000_000, 32, 64
    keys = (torch.rand(n, d) * 2 - 1).requires_grad_(True)
    queries = (torch.rand(b, d) * 2 - 1).requires_grad_(True)
    ops.hopfield_retrieve(queries[:1], keys[:1000], beta=1.0).sum().backward()  # warm up
    keys.grad = None
    queries.grad = None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ops.hopfield_retrieve(queries, keys, beta=1.0).sum().backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert torch.isfinite(keys.grad).all()
    print((after - before) * 1024)
    """
)


def test_backward_memory_is_o_b_times_chunk_plus_the_gradients():
    """64 queries x 1,000,000 x 32 keys: [B, N] would be 256 MB; dK itself is 128 MB."""
    proc = subprocess.run([sys.executable, "-c", BACKWARD_MEMORY_SCRIPT], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    growth = int(proc.stdout.strip().splitlines()[-1])
    grad_bytes = 1_000_000 * 32 * 4
    assert growth < grad_bytes + 96 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.gpu
def test_hopfield_retrieval_trains_on_cuda():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    layer = HopfieldRetrieval(beta=0.5, learn_beta=True).to(dev)
    proj = torch.nn.Linear(16, 16).to(dev)
    keys = torch.randn(500, 16, device=dev)
    target = keys[:32]
    cues = target + 0.5 * torch.randn_like(target)
    opt = torch.optim.Adam([*proj.parameters(), *layer.parameters()], lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = (layer(proj(cues), keys) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(p.grad.device.type == "cuda" for p in proj.parameters())
    assert losses[-1] < losses[0]
