"""The fused operations :class:`mnemonix.memoria.Memoria` runs on its ``Engrams`` every step.

A mixin of :class:`mnemonix.memoria.Engrams`: appending working memory in place (amortised),
one fused lifespan step (:func:`mnemonix.ops.lifespan_step`) with one compaction, and the
long-term search on the C++ graph (initial engram per short-term slot, greedy walk).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import torch

from mnemonix import ops
from mnemonix._types import ENGRAM_WORKING
from mnemonix.memoria._engram_checks import INT32_MAX, index_matrix, real_tensor
from mnemonix.memoria.utils import gather_rows

if TYPE_CHECKING:
    from mnemonix.memoria.engram import Engrams


class EngramFastPath:
    """In-place append, fused lifespan step and long-term search (what Memoria's fast path needs)."""

    def append_working(self: Engrams, data: torch.Tensor, lifespan: float, first_id: int | None) -> None:
        """Append ``data`` [B, L, H] (float32, on the engrams' device) as WORKING engrams, in place.

        ``first_id``: their ``engram_ids`` are ``first_id .. first_id + L - 1`` (None: -1).
        Amortised: the per-engram buffers keep spare columns.
        """
        batch, length, hidden = data.shape
        if (batch, hidden) != (self.batch_size, self.hidden_dim) or data.device != self.device:
            raise ValueError(f"data must have shape [{self.batch_size}, L, {self.hidden_dim}] on {self.device}, "
                             f"got {tuple(data.shape)} on {data.device}")
        if first_id is not None and first_id + length - 1 > INT32_MAX:
            raise ValueError(f"engram ids would pass the int32 maximum (next id {first_id}, {length} engrams)")
        self._detach_views()
        uids = np.repeat(np.arange(self._next_uid, self._next_uid + length, dtype=np.int64)[None], batch, axis=0)
        slots = self.graph.add_nodes(uids)  # host-side ids: no device copy
        dev = self.device
        ids = (torch.arange(first_id, first_id + length, dtype=torch.int32, device=dev).expand(batch, length)
               if first_id is not None else torch.full((batch, length), -1, dtype=torch.int32, device=dev))
        self._append_arrays({
            "data": data, "lifespan": torch.full((batch, length), float(lifespan), device=dev),
            "engrams_types": torch.full((batch, length), ENGRAM_WORKING, dtype=torch.uint8, device=dev),
            "_age": torch.zeros((batch, length), dtype=torch.int32, device=dev), "_ids": ids,
            "_uids": torch.from_numpy(uids).to(dev), "_slots": torch.from_numpy(slots).to(dev),
        })
        self._next_uid += length

    def advance(self: Engrams, indices: torch.Tensor, lifespan_delta: torch.Tensor, stm_capacity: int, *,
                validate: bool = True) -> None:
        """One fused lifespan step (Memoria's ``adjust_lifespan_and_memories`` on the engrams).

        ``lifespan[indices] += lifespan_delta`` (negative ignored, duplicates add up), every
        lifespan - 1, age + 1, WORKING -> SHORTTERM, the oldest SHORTTERM beyond
        ``stm_capacity`` -> LONGTERM, engrams whose lifespan is <= 0 dropped with their counts.
        Raises (changing nothing) on bad arguments, lifespans that would overflow to +-inf or
        ages that would pass the int32 maximum. One host sync for all the verdicts, plus the op's
        two (index range, finite deltas); ``validate=False`` skips a range check the caller made.
        """
        indices = index_matrix("indices", indices, self.batch_size, self.memory_length, check_range=validate)
        real_tensor("lifespan_delta", lifespan_delta, tuple(indices.shape))
        idx, delta = indices.to(self.device), lifespan_delta.to(self.device)
        try:  # the op checks the values (range, finite): its messages name its own arguments
            step = ops.lifespan_step(self.lifespan, self.engrams_types, self._age, idx, delta, stm_capacity)
        except ValueError as exc:
            message = re.sub(r"\breminded_indices\b", "indices", re.sub(r"\bdelta\b", "lifespan_delta", str(exc)))
            raise ValueError(message) from exc
        dropped = ~step.keep & (self._uids >= 0)
        width = step.num_kept.max() if self.batch_size else torch.zeros((), dtype=torch.int64, device=self.device)
        verdict = torch.stack([  # the one host sync of the step
            dropped.any().long(), step.keep.all().long(), (~torch.isfinite(step.lifespan).all()).long(),
            (self._age >= INT32_MAX).any().long(), width.long(),
        ]).tolist()
        any_dropped, all_kept, overflow, too_old, width = verdict
        if overflow:
            raise ValueError("lifespan_delta would make lifespans overflow float32 (reach +-inf)")
        if too_old:
            raise ValueError("engram ages would pass the int32 maximum (2**31 - 1)")
        self._detach_views()
        if any_dropped:  # one copy of the keys; the C++ graph skips the -1 entries
            self.graph.remove(self._uids.masked_fill(~dropped, -1).cpu().numpy())
        replaced = {"lifespan": step.lifespan, "engrams_types": step.types, "_age": step.age}
        if all_kept:
            for name, value in replaced.items():
                getattr(self, name).copy_(value)  # into the buffers: their spare columns stay
        else:
            self._compact_arrays(step, replaced, width)

    def initial_longterm(self: Engrams, queries: torch.Tensor, ltm_positions: torch.Tensor, seed: int) -> torch.Tensor:
        """Per query engram, the long-term engram it co-fired with most (C++; random ties from ``seed``).

        queries [B, S] positions (-1: a padding row, every engram ties at -1), ltm_positions
        [B, L] the long-term engrams in local order (-1 pads). Returns local indices [B, S]
        int64 on the CPU (-1: none). Needs a graph without overlay (see :meth:`graph`).
        """
        slots = self._slots.cpu()
        query_slots = gather_rows(slots, queries.cpu(), -1).numpy()
        ltm_slots = gather_rows(slots, ltm_positions.cpu(), -1).numpy()
        local = self.graph.core.initial_ltm(query_slots, ltm_slots, ltm_positions.cpu().numpy(),
                                            self.memory_length, seed)
        return torch.from_numpy(local)

    def walk_longterm(self: Engrams, starts: torch.Tensor, ltm_positions: torch.Tensor, depth: int,
                      alias_negative: bool, reachable: torch.Tensor | None = None) -> torch.Tensor:
        """memoria-pytorch's greedy co-fire walk over the engrams ``ltm_positions`` [B, L] (local order).

        starts [B, W] local indices (-1: a padding walker). Each step a walker moves to the
        reachable (by default: every listed engram; visited ones never) engram with the highest
        count, the lowest local index among ties; picks of one step see the visited set of the
        step before. With ``alias_negative`` (the original), -1 reads and marks local index
        L-1. ``reachable`` [B, L] bool narrows the candidates. Returns local indices
        [B, (depth + 1) W] (row-major [depth + 1, W]) on the CPU, -1 when a walk ends. C++ on
        the sparse graph; a dense O(L^2) fallback when counts sit in the overlay or
        ``reachable`` leaves out listed engrams.
        """
        positions = ltm_positions.cpu()  # the C++ graph reads host memory: one copy of each input
        listed = positions >= 0
        narrowed = reachable is not None and bool((listed & ~reachable.cpu()).any())
        reachable = listed if reachable is None else reachable.cpu() & listed
        if not self.graph.has_overlay() and not narrowed:
            ltm_slots = gather_rows(self._slots.cpu(), positions, -1).numpy()
            return torch.from_numpy(self.graph.core.walk(starts.cpu().numpy(), ltm_slots, depth,
                                                         alias_negative=alias_negative))
        from mnemonix.memoria._longterm import walk_dense

        counts = self.cofire_rows(ltm_positions).cpu()  # [B, L, M]
        counts = gather_rows(counts.transpose(1, 2), positions, -1).transpose(1, 2)  # [B, L, L]
        return walk_dense(counts, reachable, starts.cpu(), depth, alias_negative)
