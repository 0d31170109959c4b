"""Streaming Hopfield retrieval in torch: forward and a memory-bounded backward, any device.

Every function here takes the *canonical layout* of :mod:`mnemonix.ops.hopfield`:

- queries ``q [G1, G2, B, d]`` (groups: samples x heads; any strides, last one 1),
- keys ``k [K1, K2, N, d]`` and values ``v [K1, K2, N, dv]`` or None (= keys), with
  ``K1 in {1, G1}`` and ``K2 in {1, G2}`` (1: shared by those groups),
- ``key_bias [C1, C2, N]`` (additive, ``-inf`` = masked; ``C1 in {1, G1}``, ``C2 in {1, G2}``),
- ``assoc [A1, A2, B, N]`` (additive association bias per query row; ``A1``, ``A2`` as above),
- ``beta`` a float (a tensor beta is folded into the queries by the op).

Forward (online softmax over chunks of N, Milakov & Gimelshein 2018; Dao et al. 2022)::

    s = beta * q k^T + bias            per chunk of stored patterns
    m_i, l_i, acc                       running max, sum and weighted values
    out = acc / l_i,  lse = m_i + log l_i

Backward (Dao 2023, FlashAttention-2, section 3.1), recomputing each chunk's probabilities
from the saved log-sum-exp instead of keeping [B, N]::

    p   = exp(s - lse)                  [G, B, chunk]
    dv  = p^T d_out                     (values; added to dk when values are the keys)
    dp  = d_out v^T
    ds  = p * (dp - delta),             delta = rowsum(d_out * out) - d_lse
    dq += beta * ds k,   dk = beta * ds^T q,   d_bias = colsum(ds)

Gradients of operands shared by several groups are summed over those groups chunk by chunk.
Extra memory O(G x B x chunk) plus the gradients themselves, on whatever device the inputs
live; float64 inputs are computed in float64 (gradcheck), everything else in float32.
"""

from __future__ import annotations

import torch

# Extra memory target of the streaming path: about this many logits at a time.
CHUNK_ELEMENTS = 1 << 20


def chunk_size(batch: int, n: int) -> int:
    """Patterns per chunk: ~1M logits in flight, at least 256, at most N."""
    return max(1, min(n, max(256, CHUNK_ELEMENTS // max(batch, 1))))


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pick(t, i: int, j: int):
    """Group (i, j) of a grouped operand in the canonical layout whose group dimensions may be
    shared (size 1); None stays None."""
    return None if t is None else t[min(i, t.shape[0] - 1), min(j, t.shape[1] - 1)]


def lift(queries, keys, values, logit_bias):
    """Legacy 2-D operands (q [B, d], k [N, d], v [N, dv], bias [N]) in the canonical layout."""
    if queries.ndim == 2:
        queries = queries[None, None]
    if keys.ndim == 2:
        keys = keys[None, None]
    if values is not None and values.ndim == 2:
        values = values[None, None]
    if logit_bias is not None and logit_bias.ndim == 1:
        logit_bias = logit_bias[None, None]
    return queries, keys, values, logit_bias


def _chunk3(t: torch.Tensor | None, g1: int, g2: int, start: int, stop: int, dtype,
            axis: int = 2) -> torch.Tensor | None:
    """Patterns ``start:stop`` (along ``axis``) of a grouped [X1, X2, ...] operand as [G1 * G2, ...].

    Broadcast group dimensions become stride-0 views; only a mixed broadcast (shared over
    one group dimension but not the other) copies, and then only this chunk.
    """
    if t is None:
        return None
    part = t.narrow(axis, start, stop - start)
    part = part.expand(g1, g2, *part.shape[2:])
    return part.reshape(g1 * g2, *part.shape[2:]).to(dtype)


def _logits(qs, k_c, bias_c, assoc_c):
    """``qs k^T + key bias + association bias`` of one chunk, [G, B, c]."""
    if bias_c is None:
        s = torch.bmm(qs, k_c.transpose(1, 2))
    else:
        s = torch.baddbmm(bias_c[:, None, :], qs, k_c.transpose(1, 2))
    if assoc_c is not None:
        s.add_(assoc_c)
    return s


def _step(n: int, rows: int, widths: int, low_precision: bool) -> int:
    step = chunk_size(rows, n)
    if low_precision:  # a converted fp32 tile costs step * width floats: bound it too
        step = max(1, min(step, max(256, (4 * CHUNK_ELEMENTS) // widths)))
    return step


@torch.no_grad()
def stream_forward(queries, keys, values, *, beta, logit_bias, want_argmax, assoc=None):
    """One streaming pass in the canonical layout (2-D legacy operands are lifted).

    Returns ``(out [G1, G2, B, dv], lse [G1, G2, B], argmax [G1, G2, B] int64 | None)`` in the
    work dtype (float32, or float64 for float64 inputs); no autograd.
    """
    queries, keys, values, logit_bias = lift(queries, keys, values, logit_bias)
    g1, g2, b, d = queries.shape
    g, n = g1 * g2, keys.shape[-2]
    dv = d if values is None else values.shape[-1]
    work = work_dtype(queries.dtype)
    qs = queries.to(work).reshape(g, b, d) * beta
    step = _step(n, g * b, max(d, dv) * max(1, g), keys.dtype not in (torch.float32, torch.float64))
    m_i = torch.full((g, b), float("-inf"), device=qs.device, dtype=work)
    l_i = torch.zeros(g, b, device=qs.device, dtype=work)
    acc = torch.zeros(g, b, dv, device=qs.device, dtype=work)
    best = torch.zeros(g, b, dtype=torch.long, device=qs.device) if want_argmax else None
    for start in range(0, n, step):
        stop = min(start + step, n)
        k_c = _chunk3(keys, g1, g2, start, stop, work)
        v_c = k_c if values is None else _chunk3(values, g1, g2, start, stop, work)
        s = _logits(qs, k_c, _chunk3(logit_bias, g1, g2, start, stop, work),
                    _chunk3(assoc, g1, g2, start, stop, work, axis=3))
        if best is not None:
            tile_max, tile_arg = s.max(dim=-1)
            best = torch.where(tile_max > m_i, tile_arg + start, best)
        else:
            tile_max = s.amax(dim=-1)
        m_new = torch.maximum(m_i, tile_max)
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        alpha = torch.exp(m_i - m_safe)
        p = s.sub_(m_safe[..., None]).exp_()
        l_i.mul_(alpha).add_(p.sum(dim=-1))
        acc.mul_(alpha[..., None]).baddbmm_(p, v_c)
        m_i = m_new
    out = acc.div_(l_i[..., None]).reshape(g1, g2, b, dv)
    lse = (m_i + torch.log(l_i)).reshape(g1, g2, b)
    return out, lse, (None if best is None else best.reshape(g1, g2, b))


def _reduce_to(grad: torch.Tensor, g1: int, g2: int, shape) -> torch.Tensor:
    """Sum a per-group gradient [G1 * G2, ...] over the groups that share the operand."""
    return grad.reshape(g1, g2, *grad.shape[1:]).sum_to_size(shape)


@torch.no_grad()
def stream_backward(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, *, beta,
                    needs=(True, True, True, True)):
    """Chunked, recomputing backward in the canonical layout.

    ``d_out [G1, G2, B, dv]`` and ``d_lse [G1, G2, B]`` (either may be None), the forward's
    inputs and its ``out`` / ``lse``. ``needs`` says which of (queries, keys, values,
    key_bias) want a gradient. Returns ``(dq, dk, dv, d_key_bias)`` shaped like the inputs
    (None where not needed; ``dv`` is None for values = keys, whose share is in ``dk``).
    """
    g1, g2, b, d = queries.shape
    g, n = g1 * g2, keys.shape[-2]
    work = work_dtype(queries.dtype)
    want_q, want_k, want_v, want_b = needs
    want_v = want_v and values is not None
    want_b = want_b and key_bias is not None
    qs = queries.to(work).reshape(g, b, d) * beta
    out3 = out.to(work).reshape(g, b, -1)
    d_out3 = torch.zeros_like(out3) if d_out is None else d_out.to(work).reshape(g, b, -1)
    delta = (d_out3 * out3).sum(dim=-1)
    if d_lse is not None:
        delta = delta - d_lse.to(work).reshape(g, b)
    lse3 = lse.to(work).reshape(g, b)
    lse3 = torch.where(torch.isfinite(lse3), lse3, torch.zeros_like(lse3))
    dq = torch.zeros_like(qs) if want_q else None
    dk = torch.zeros(keys.shape, dtype=work, device=keys.device) if want_k else None
    dv = torch.zeros(values.shape, dtype=work, device=values.device) if want_v else None
    db = torch.zeros(key_bias.shape, dtype=work, device=key_bias.device) if want_b else None
    width = max(d, out3.shape[-1]) * max(1, g)
    step = _step(n, g * b, width, keys.dtype not in (torch.float32, torch.float64))
    for start in range(0, n, step):
        stop = min(start + step, n)
        k_c = _chunk3(keys, g1, g2, start, stop, work)
        v_c = k_c if values is None else _chunk3(values, g1, g2, start, stop, work)
        s = _logits(qs, k_c, _chunk3(key_bias, g1, g2, start, stop, work),
                    _chunk3(assoc, g1, g2, start, stop, work, axis=3))
        p = s.sub_(lse3[..., None]).exp_()  # s is not needed after this
        dv_c = torch.bmm(p.transpose(1, 2), d_out3) if (want_k and values is None) or want_v else None
        ds = torch.bmm(d_out3, v_c.transpose(1, 2)).sub_(delta[..., None]).mul_(p)
        if dq is not None:
            dq.baddbmm_(ds, k_c)
        if dk is not None:
            dk_c = torch.bmm(ds.transpose(1, 2), qs)
            if values is None:
                dk_c += dv_c
            dk[..., start:stop, :] = _reduce_to(dk_c, g1, g2, (*keys.shape[:2], stop - start, d))
        if dv is not None:
            dv[..., start:stop, :] = _reduce_to(dv_c, g1, g2, (*values.shape[:2], stop - start, values.shape[-1]))
        if db is not None:
            db[..., start:stop] = _reduce_to(ds.sum(dim=1), g1, g2, (*key_bias.shape[:2], stop - start))
    if dq is not None:
        dq = (dq * beta).reshape(queries.shape)
    return dq, dk, dv, db
