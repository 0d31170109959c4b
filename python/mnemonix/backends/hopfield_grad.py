"""Streaming Hopfield retrieval in torch: forward and a memory-bounded backward, any device.

Forward (online softmax over chunks of N, Milakov & Gimelshein 2018; Dao et al. 2022)::

    s = beta * q k^T + bias            per chunk of stored patterns
    m_i, l_i, acc                       running max, sum and weighted values
    out = acc / l_i,  lse = m_i + log l_i

Backward (Dao 2023, FlashAttention-2, section 3.1), recomputing each chunk's probabilities
from the saved log-sum-exp instead of keeping [B, N]::

    p   = exp(s - lse)                  [B, chunk]
    dv  = p^T d_out                     (values; added to dk when values are the keys)
    dp  = d_out v^T
    ds  = p * (dp - delta) + p * d_lse  delta = rowsum(d_out * out)
    dq += beta * ds k,   dk = beta * ds^T q,   d_bias = colsum(ds)

Saved for backward: queries, keys, values, bias, out, lse. Extra memory O(B x chunk) plus
the gradients themselves, on whatever device the inputs live.
"""

from __future__ import annotations

import torch

# Extra memory target of the streaming path: about this many float32 logits at a time.
CHUNK_ELEMENTS = 1 << 20


def chunk_size(batch: int, n: int) -> int:
    """Patterns per chunk: ~1M logits in flight, at least 256, at most N."""
    return max(1, min(n, max(256, CHUNK_ELEMENTS // max(batch, 1))))


@torch.no_grad()
def stream_forward(queries, keys, values, *, beta, logit_bias, want_argmax):
    """One streaming pass: (out [B, dv] f32, lse [B] f32, argmax [B] int64 | None); no autograd.

    One logits buffer is reused for every chunk: ``addmm`` for logits + bias and for
    ``acc * alpha + P V``, in-place ``exp``.
    """
    q = queries.float() * beta
    b, n = q.shape[0], keys.shape[0]
    d = keys.shape[1]
    dv = d if values is None else values.shape[1]
    step = chunk_size(b, n)
    if keys.dtype != torch.float32:  # a converted fp32 tile costs step * d floats: bound it too
        step = max(1, min(step, max(256, (4 * CHUNK_ELEMENTS) // max(d, dv))))
    m_i = torch.full((b,), float("-inf"), device=q.device)
    l_i = torch.zeros(b, device=q.device)
    acc = torch.zeros(b, dv, device=q.device)
    best = torch.zeros(b, dtype=torch.long, device=q.device) if want_argmax else None
    buffer = torch.empty(b * step, device=q.device)
    for start in range(0, n, step):
        k_tile = keys[start : start + step].float()
        v_tile = k_tile if values is None else values[start : start + step].float()
        s = buffer[: b * k_tile.shape[0]].view(b, k_tile.shape[0])
        if logit_bias is None:
            torch.mm(q, k_tile.T, out=s)
        else:
            torch.addmm(logit_bias[start : start + step][None, :].float(), q, k_tile.T, out=s)
        if best is not None:
            tile_max, tile_arg = s.max(dim=1)
            best = torch.where(tile_max > m_i, tile_arg + start, best)
        else:
            tile_max = s.amax(dim=1)
        m_new = torch.maximum(m_i, tile_max)
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        alpha = torch.exp(m_i - m_safe)
        p = s.sub_(m_safe[:, None]).exp_()
        l_i.mul_(alpha).add_(p.sum(dim=1))
        acc.mul_(alpha[:, None]).addmm_(p, v_tile)
        m_i = m_new
    out = acc.div_(l_i[:, None])
    lse = m_i + torch.log(l_i)
    return out, lse, best


class StreamingRetrieval(torch.autograd.Function):
    """``(out, lse) = retrieval(q, k, v, bias; beta)`` with a chunked, recomputing backward."""

    @staticmethod
    def forward(ctx, queries, keys, values, logit_bias, beta):
        out, lse, _ = stream_forward(queries, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=False)
        ctx.save_for_backward(queries, keys, values, logit_bias, out, lse)
        ctx.beta = beta
        return out, lse

    @staticmethod
    @torch.no_grad()
    def backward(ctx, d_out, d_lse):
        queries, keys, values, logit_bias, out, lse = ctx.saved_tensors
        beta = ctx.beta
        q = queries.float()
        d_out = torch.zeros_like(out) if d_out is None else d_out.float()
        d_lse = torch.zeros_like(lse) if d_lse is None else d_lse.float()
        delta = (d_out * out).sum(dim=1)
        want_q, want_k, want_v, want_b = ctx.needs_input_grad[:4]
        dq = torch.zeros_like(q) if want_q else None
        dk = torch.zeros(keys.shape, dtype=torch.float32, device=keys.device) if want_k else None
        dv = torch.zeros(values.shape, dtype=torch.float32, device=values.device) if want_v else None
        dbias = torch.zeros(keys.shape[0], dtype=torch.float32, device=keys.device) if want_b else None
        n = keys.shape[0]
        step = chunk_size(q.shape[0], n)
        finite_lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        for start in range(0, n, step):
            stop = min(start + step, n)
            k_c = keys[start:stop].float()
            v_c = k_c if values is None else values[start:stop].float()
            s = torch.mm(q, k_c.T).mul_(beta)
            if logit_bias is not None:
                s.add_(logit_bias[start:stop].float()[None, :])
            p = s.sub_(finite_lse[:, None]).exp_()  # s is not needed after this
            dv_c = p.T @ d_out  # [chunk, dv]
            ds = (d_out @ v_c.T).sub_(delta[:, None]).add_(d_lse[:, None]).mul_(p)
            if dq is not None:
                dq.addmm_(ds, k_c, alpha=beta)
            if dk is not None:
                dk[start:stop] = ds.T @ q * beta
                if values is None:
                    dk[start:stop] += dv_c
            if dv is not None:
                dv[start:stop] = dv_c
            if dbias is not None:
                dbias[start:stop] = ds.sum(dim=0)
        return (
            None if dq is None else dq.to(queries.dtype),
            None if dk is None else dk.to(keys.dtype),
            None if dv is None else dv.to(values.dtype),
            None if dbias is None else dbias.to(logit_bias.dtype),
            None,
        )
