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

from collections.abc import Callable, Iterator

import torch

from mnemonix.memoria.engram import Engrams
from mnemonix.memoria.utils import gather_rows

NoiseChunks = Callable[[int, int, int], Iterator[tuple[int, int, int, torch.Tensor]]]
"""``chunks(batch, slots, length)`` yields ``(b, s0, s1, noise)`` in the original's stream order:
``noise`` [s1 - s0, length] fp16 holds the draws of ``torch.rand([batch, slots, length])`` at
``[b, s0:s1]``, on the generator's device (see :meth:`Memoria._tie_noise_chunks`)."""


def unique_queries(queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct entries per row of ``queries`` [B, S]: (values [B, U] padded by repetition, inverse [B, S]).

    One ``unique`` per row: call it on the host (on CUDA each would be a host sync).
    """
    parts = [torch.unique(row, return_inverse=True) for row in queries]
    width = max(len(values) for values, _ in parts)
    values = torch.stack([torch.cat([v, v[:1].expand(width - len(v))]) for v, _ in parts])
    return values, torch.stack([inverse for _, inverse in parts])


def initial_positions_original(engrams: Engrams, queries: torch.Tensor, ltm_mask: torch.Tensor,
                               noise_chunks: NoiseChunks, noise_device: torch.device) -> torch.Tensor:
    """Positions [B, S] of the long-term engram each query position co-fired with most (-1: not long-term).

    ``queries`` [B, S] are positions (negative: a padding row of -1 counts). Exactly the
    original's ``argmax(rand_like(is_max) * is_max)`` over the dense co-fire rows, computed
    from the rows of the *distinct* queries (a step has few: the non-reminded slots all read
    the same row) and the noise chunk by chunk: O(S M) for the draws, never [B, S, M] at once.

    Where it runs: the co-fire rows come from the graph on the host, the noise from the
    generator on ``noise_device``; the argmax runs where the noise is (with a CPU generator:
    all on the host, no device copy). The result is on ``queries``' device.
    """
    out_device = queries.device
    queries, host_mask = queries.cpu(), ltm_mask.cpu()
    batch, num_slots = queries.shape
    distinct, inverse = unique_queries(queries)
    counts = engrams.cofire_rows_host(distinct)  # [B, U, M]
    counts.masked_fill_(~host_mask.unsqueeze(1), -1)
    best = counts == counts.max(dim=2, keepdim=True).values  # the tie set of each distinct query
    spans = _spans(best)
    best_there, inverse_there = (t.to(noise_device, non_blocking=True) for t in (best, inverse))
    chosen = torch.empty((batch, num_slots), dtype=torch.long, device=noise_device)
    for b, s0, s1, noise in noise_chunks(batch, num_slots, host_mask.shape[1]):
        chosen[b, s0:s1] = _noisy_argmax(noise, best_there[b], spans[b], inverse[b, s0:s1],
                                         inverse_there[b, s0:s1])
    chosen = chosen.to(out_device)
    return chosen.masked_fill(~ltm_mask.to(out_device).gather(1, chosen), -1)


def _spans(best: torch.Tensor) -> list[list[tuple[int, int] | None]]:
    """Per (row, distinct query): ``(first, stop)`` when its tie set is one contiguous range, else None.

    In Memoria's own runs the long-term engrams are the oldest, so "every long-term engram
    ties" (the common case: no co-fire yet) is one range of positions. ``best`` on the host.
    """
    size = best.shape[2]
    number = best.sum(dim=2)
    first = best.long().argmax(dim=2)
    last = size - 1 - best.flip(2).long().argmax(dim=2)
    first, last, contiguous = torch.stack([first, last, (last - first + 1 == number).long()]).tolist()
    return [[(f, stop + 1) if c else None for f, stop, c in zip(*row)] for row in zip(first, last, contiguous)]


def _noisy_argmax(noise: torch.Tensor, best: torch.Tensor, spans: list, inverse: torch.Tensor,
                  inverse_there: torch.Tensor) -> torch.Tensor:
    """``argmax(noise[r] * best[inverse[r]])`` per row r of a noise chunk [C, M] (first maximum).

    ``best`` [U, M] and ``inverse_there`` [C] live on the noise's device, ``inverse`` [C] (the
    same values) on the host: which rows to redo is decided there, without a device read.
    The noise lies in [0, 1], so its fp16 bit patterns order like its values (and integer
    ops are fast on the CPU). The most frequent tie set is applied to the whole chunk, as a
    slice when it is a range (one pass over the noise); the few other rows are redone.
    """
    bits = noise.view(torch.int16)
    common = int(torch.bincount(inverse).argmax())
    span = spans[common]
    if span is not None:  # outside the range the product is 0: the first maximum lies inside, unless all are 0
        values, where = bits[:, span[0]:span[1]].max(dim=1)
        out = torch.where(values > 0, where + span[0], torch.zeros_like(where))
    else:
        out = torch.where(best[common], bits, torch.zeros_like(bits)).argmax(dim=1)
    others = (inverse != common).nonzero().flatten()
    if others.numel():
        others = others.to(noise.device, non_blocking=True)
        rows = bits[others]
        out[others] = torch.where(best[inverse_there[others]], rows, torch.zeros_like(rows)).argmax(dim=1)
    return out


def local_from_positions(positions: torch.Tensor, ltm_mask: torch.Tensor) -> torch.Tensor:
    """Index of each position [B, S] among the long-term engrams of its row (front-padded), -1 if none."""
    counts = ltm_mask.sum(dim=1, keepdim=True)
    local = ltm_mask.long().cumsum(dim=1) - 1 + (counts.max() - counts if ltm_mask.numel() else 0)
    local = local.masked_fill(~ltm_mask, -1)
    return gather_rows(local, positions, -1)


def useful_depth(depth: int, length: int) -> int:
    """The steps of a co-fire walk over ``length`` listed engrams whose distinct picks are those of ``depth``.

    A step either marks a new engram visited (any pick but -1 is unvisited, and then marked) or
    picks -1 everywhere; after two such steps in a row nothing changes any more (all later picks
    are -1). So at most ``length`` marking steps and ``length + 2`` others precede that fixed
    point: ``min(depth, 2 length + 3)`` steps give every engram and the -1 of the full walk, and
    ``super_unique`` of the result is the same, without [B, (depth + 1) W] for a huge depth.
    """
    return min(depth, 2 * length + 3)


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
