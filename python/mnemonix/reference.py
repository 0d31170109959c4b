"""Plain, readable torch versions of every op: the ground truth of the tests
and the baseline of the benchmarks. Never optimise this file: clarity is its
only job. Inputs are upcast to float32 (float64 where stated) and the math is
written as in the papers.
"""

from __future__ import annotations

import torch

# ----------------------------------------------------------------------------
# hopfield_retrieve
# ----------------------------------------------------------------------------

def hopfield_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None = None,
    *,
    beta: float,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    update_steps: int = 0,
    eps: float = 1e-4,
    return_lse: bool = False,
    return_argmax: bool = False,
):
    """Modern Hopfield retrieval, ``out = softmax(beta * Q K^T + bias) V`` (Ramsauer et al. 2020).

    queries [..., B, d], keys [N, d], values [N, dv] (None: the keys), mask [N] bool
    (True = pattern takes part), bias [N]. With ``update_steps > 0`` (needs values = keys)
    each query iterates ``q <- out`` up to ``update_steps`` more times, and stops on its own
    once ``max|out - q| < eps``. Returns out [..., B, dv] in the queries' dtype, plus the
    log-sum-exp [..., B] (float32) of the last pass and the argmax pattern index [..., B]
    (int64) of the last pass when asked.
    """
    lead = queries.shape[:-1]
    q = queries.reshape(-1, queries.shape[-1]).float()
    k = keys.float()
    v = k if values is None else values.float()
    logit_shift = torch.zeros(k.shape[0])
    if bias is not None:
        logit_shift = logit_shift + bias.float()
    if mask is not None:
        logit_shift = logit_shift.masked_fill(~mask, float("-inf"))
    active = torch.ones(q.shape[0], dtype=torch.bool)
    for step in range(update_steps + 1):
        logits = beta * (q @ k.T) + logit_shift
        out = torch.softmax(logits, dim=-1) @ v
        if step == 0:
            final_out, lse, arg = out, torch.logsumexp(logits, -1), logits.argmax(-1)
        else:
            final_out = torch.where(active[:, None], out, final_out)
            lse = torch.where(active, torch.logsumexp(logits, -1), lse)
            arg = torch.where(active, logits.argmax(-1), arg)
        if step == update_steps:
            break
        changed = (out - q).abs().amax(-1) >= eps
        active = active & changed
        if not bool(active.any()):
            break
        q = torch.where(active[:, None], out, q)
    result = [final_out.reshape(*lead, v.shape[-1]).to(queries.dtype)]
    if return_lse:
        result.append(lse.reshape(lead))
    if return_argmax:
        result.append(arg.reshape(lead))
    return result[0] if len(result) == 1 else tuple(result)


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------

# isort: split
from typing import NamedTuple as _NamedTuple  # noqa: E402

import torch as _torch  # noqa: E402

ENGRAM_NULL, ENGRAM_WORKING, ENGRAM_SHORTTERM, ENGRAM_LONGTERM = 0, 1, 2, 3


class LifespanResult(_NamedTuple):
    """Result of one engram lifespan step (see :func:`lifespan_step`).

    lifespan : [B, M] float32 -- after deltas and decay (not yet compacted)
    types : [B, M] uint8 -- after WORKING -> SHORTTERM -> LONGTERM transitions
    age : [B, M] int32 or None -- age + 1
    keep : [B, M] bool -- lifespan > 0
    rank : [B, M] int64 -- position of the engram among the kept engrams of its row
        (exclusive prefix sum of ``keep``), -1 for dropped engrams
    num_kept : [B] int64 -- kept engrams per row
    """

    lifespan: _torch.Tensor
    types: _torch.Tensor
    age: _torch.Tensor | None
    keep: _torch.Tensor
    rank: _torch.Tensor
    num_kept: _torch.Tensor


def lifespan_step(
    lifespan: _torch.Tensor,
    types: _torch.Tensor,
    age: _torch.Tensor | None,
    reminded_indices: _torch.Tensor,
    delta: _torch.Tensor,
    stm_capacity: int,
) -> LifespanResult:
    """One Memoria lifespan step, written step by step (Park & Bak 2023, 004_0d62d127fa438a19.txt).

    1. ``lifespan[b, i] += sum of delta[b, j] over j with reminded_indices[b, j] == i``
       (negative indices are ignored, duplicates accumulate);
    2. ``lifespan -= 1``; ``age += 1``;
    3. WORKING -> SHORTTERM;
    4. in each row with ``c`` short-term engrams, the ``c - stm_capacity`` first ones
       by position (the oldest: engrams are appended) become LONGTERM;
    5. ``keep = lifespan > 0`` and the rank of each kept engram.
    """
    batch, length = lifespan.shape
    added = _torch.zeros(batch, length + 1, dtype=_torch.float32)
    for b in range(batch):
        for j in range(reminded_indices.shape[1]):
            i = int(reminded_indices[b, j])
            if i >= 0:
                added[b, i] += float(delta[b, j])
    new_lifespan = (lifespan.float().cpu() + added[:, :length]) - 1.0
    new_types = types.cpu().clone()
    new_types[new_types == ENGRAM_WORKING] = ENGRAM_SHORTTERM
    for b in range(batch):
        stm_positions = (new_types[b] == ENGRAM_SHORTTERM).nonzero().flatten()
        exceeded = len(stm_positions) - stm_capacity
        if exceeded > 0:
            new_types[b, stm_positions[:exceeded]] = ENGRAM_LONGTERM
    new_age = None if age is None else (age.cpu().to(_torch.int32) + 1)
    keep = new_lifespan > 0
    rank = _torch.full((batch, length), -1, dtype=_torch.int64)
    for b in range(batch):
        kept = keep[b].nonzero().flatten()
        rank[b, kept] = _torch.arange(len(kept))
    num_kept = keep.sum(dim=1).to(_torch.int64)
    dev = lifespan.device
    return LifespanResult(
        new_lifespan.to(dev), new_types.to(dev), None if new_age is None else new_age.to(dev),
        keep.to(dev), rank.to(dev), num_kept.to(dev),
    )


__all__ = [*globals().get("__all__", []), "LifespanResult", "lifespan_step"]
