"""Memoria's long-term search: initial long-term engram per short-term slot, then the co-fire walk.

Used by both paths of :meth:`Memoria.remind` (the fused one and the step-by-step one a
subclass gets when it overrides a step), so that they consume the random stream alike.

Ties between long-term engrams with the same co-fire count are broken at random:

- ``tie_break="original"`` (default): memoria-pytorch's own draw, an fp16 uniform per
  (slot, engram) from the generator, ``argmax(noise * is_max)`` over the dense co-fire rows
  of the slots: O(S M) per step, bit for bit the original's stream.
- ``tie_break="random"``: one 62-bit seed per step from the generator, one draw per tie
  in C++ (uniform over the tied engrams).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mnemonix.memoria.engram import Engrams
from mnemonix.memoria.utils import gather_rows

Noise = Callable[[tuple[int, ...]], torch.Tensor]


def initial_positions_original(engrams: Engrams, queries: torch.Tensor, ltm_mask: torch.Tensor,
                               noise: Noise) -> torch.Tensor:
    """Positions [B, S] of the long-term engram each query position co-fired with most (-1: not long-term).

    ``queries`` [B, S] are positions (negative: a padding row of -1 counts). Exactly the
    original's ``_find_initial_longterm_memory`` before its ``super_unique``.
    """
    counts = engrams.cofire_rows(queries)  # [B, S, M], O(S M)
    counts.masked_fill_(~ltm_mask.unsqueeze(1), -1)
    best = counts == counts.max(dim=2, keepdim=True).values
    chosen = (noise(tuple(best.shape)) * best).argmax(dim=2)
    return chosen.masked_fill(~ltm_mask.gather(1, chosen), -1)


def local_from_positions(positions: torch.Tensor, ltm_mask: torch.Tensor) -> torch.Tensor:
    """Index of each position [B, S] among the long-term engrams of its row (front-padded), -1 if none."""
    counts = ltm_mask.sum(dim=1, keepdim=True)
    local = ltm_mask.long().cumsum(dim=1) - 1 + (counts.max() - counts if ltm_mask.numel() else 0)
    local = local.masked_fill(~ltm_mask, -1)
    return gather_rows(local, positions, -1)


def walk_dense(counts: torch.Tensor, reachable: torch.Tensor, starts: torch.Tensor, depth: int,
               alias_negative: bool) -> torch.Tensor:
    """memoria-pytorch's walk on dense counts [B, L, L] (the fallback of :meth:`Engrams.walk_longterm`).

    Returns local indices [B, (depth + 1) W], row-major [depth + 1, W], -1 when a walk ends.
    """
    batch, length = reachable.shape
    width = starts.shape[1]
    found = torch.full((batch, depth + 1, width), -1, dtype=torch.long)
    if length == 0:
        return found.view(batch, -1)
    rows = torch.arange(batch).unsqueeze(1)
    blocked = ~reachable.clone()

    def alias(index: torch.Tensor) -> torch.Tensor:  # Python's negative indexing, or "none"
        return torch.where(index < 0, length - 1, index) if alias_negative else index

    def mark(index: torch.Tensor) -> None:
        index = alias(index)
        blocked[rows.expand_as(index)[index >= 0], index[index >= 0]] = True

    found[:, 0] = starts
    mark(starts)
    for d in range(depth):
        last = alias(found[:, d])
        masked = counts.masked_fill(blocked.unsqueeze(1), -1)
        current = masked[rows, last.clamp(min=0)].argmax(dim=2)  # first maximum: lowest local index
        current = current.masked_fill(blocked[rows, current] | (last < 0), -1)
        found[:, d + 1] = current
        mark(current)
    return found.view(batch, -1)
