"""The fused operations :class:`mnemonix.memoria.Memoria` runs on its ``Engrams`` every step.

A mixin of :class:`mnemonix.memoria.Engrams`: appending working memory in place (amortised),
one fused lifespan step (:func:`mnemonix.ops.lifespan_step`) with one compaction, and the
long-term search on the C++ graph (initial engram per short-term slot, greedy walk).

The graph lives on the host; the engrams' keys in it are kept there too
(:meth:`~mnemonix.memoria._store.EngramArrays.host_keys`), so an append copies its new keys
to the device once (no sync) and a lifespan step reads its verdicts and keep-mask back in
one copy (its one host sync); the long-term search reads nothing else from the device.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import torch

from mnemonix import _checks, ops
from mnemonix._types import ENGRAM_WORKING
from mnemonix.memoria._engram_checks import INT32_MAX, index_matrix, real_tensor
from mnemonix.memoria._store import compact_host
from mnemonix.memoria.utils import gather_rows, to_device

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
        host = self._host  # the keys held on the host before the append (None: stale)
        uids = np.repeat(np.arange(self._next_uid, self._next_uid + length, dtype=np.int64)[None], batch, axis=0)
        slots = self.graph.add_nodes(uids)  # made on the host: one host-to-device copy, no sync
        keys = torch.from_numpy(np.stack([uids, slots])).to(self.device, non_blocking=True)
        dev = self.device
        ids = (torch.arange(first_id, first_id + length, dtype=torch.int32, device=dev).expand(batch, length)
               if first_id is not None else torch.full((batch, length), -1, dtype=torch.int32, device=dev))
        self._append_arrays({
            "data": data, "lifespan": torch.full((batch, length), float(lifespan), device=dev),
            "engrams_types": torch.full((batch, length), ENGRAM_WORKING, dtype=torch.uint8, device=dev),
            "_age": torch.zeros((batch, length), dtype=torch.int32, device=dev), "_ids": ids,
            "_uids": keys[0], "_slots": keys[1],
        })
        if host is not None:
            self._set_host_keys(np.concatenate([host[0], uids], axis=1), np.concatenate([host[1], slots], axis=1))
        self._next_uid += length

    def advance(self: Engrams, indices: torch.Tensor, lifespan_delta: torch.Tensor, stm_capacity: int, *,
                validate: bool = True) -> None:
        """One fused lifespan step (Memoria's ``adjust_lifespan_and_memories`` on the engrams).

        ``lifespan[indices] += lifespan_delta`` (negative ignored, duplicates add up), every
        lifespan - 1, age + 1, WORKING -> SHORTTERM, the oldest SHORTTERM beyond
        ``stm_capacity`` -> LONGTERM, engrams whose lifespan is <= 0 dropped with their counts.
        Raises (changing nothing) on bad arguments, indices >= M, NaN/Inf deltas, lifespans that
        would overflow to +-inf or ages that would pass the int32 maximum. One host sync: the
        value checks, the verdicts and the keep-mask (the graph drops the dead engrams on the
        host) come back in one device-to-host copy. ``validate=False`` skips an early range
        check (its own host sync) that the copy repeats anyway.
        """
        indices = index_matrix("indices", indices, self.batch_size, self.memory_length, check_range=validate)
        real_tensor("lifespan_delta", lifespan_delta, tuple(indices.shape))
        idx = to_device(indices, self.device)
        delta = to_device(lifespan_delta, self.device).to(torch.float32)
        try:  # the shape/dtype checks of the op name its own arguments; the values are checked below
            step = ops.lifespan_step(self.lifespan, self.engrams_types, self._age, idx, delta, stm_capacity,
                                     check_inputs=False)
        except ValueError as exc:
            message = re.sub(r"\breminded_indices\b", "indices", re.sub(r"\bdelta\b", "lifespan_delta", str(exc)))
            raise ValueError(message) from exc
        flags, keep = self._step_verdict(idx, delta, step)
        nonfinite, top, all_kept, overflow, too_old, width = flags
        if nonfinite:
            raise ValueError("lifespan_delta must be finite, got NaN or Inf values")
        if top >= self.memory_length:
            raise ValueError(f"indices must be < {self.memory_length} (the number of engrams per row), got {top}")
        if overflow:
            raise ValueError("lifespan_delta would make lifespans overflow float32 (reach +-inf)")
        if too_old:
            raise ValueError("engram ages would pass the int32 maximum (2**31 - 1)")
        self._detach_views()
        uids, slots = self.host_keys()
        dropped = ~keep & (uids >= 0)
        if dropped.any():  # the C++ graph skips the -1 entries
            self.graph.remove(np.where(dropped, uids, -1))
        replaced = {"lifespan": step.lifespan, "engrams_types": step.types, "_age": step.age}
        if all_kept:
            for name, value in replaced.items():
                getattr(self, name).copy_(value)  # into the buffers: their spare columns stay
        else:
            self._compact_arrays(step, replaced, width)
            self._set_host_keys(compact_host(uids, keep, width), compact_host(slots, keep, width))

    def _step_verdict(self: Engrams, idx: torch.Tensor, delta: torch.Tensor, step) -> tuple[list[int], np.ndarray]:
        """The host's view of a lifespan step, in one device-to-host copy (the one host sync of the step).

        Returns ``[nonfinite delta, largest index (-1: none), all kept, lifespan overflow, age
        overflow, largest kept count]`` and the keep-mask [B, M] bool.
        """
        dev = self.device
        none = torch.full((), -1, dtype=torch.long, device=dev)
        flags = torch.stack([
            _checks.nonfinite_flag(delta).long(), idx.max() if idx.numel() else none, step.keep.all().long(),
            (~torch.isfinite(step.lifespan).all()).long(), (self._age >= INT32_MAX).any().long(),
            step.num_kept.max().long() if self.batch_size else none + 1,
        ])
        packet = torch.cat([flags, step.keep.reshape(-1).long()]).cpu().numpy()
        return [int(v) for v in packet[:6]], packet[6:].reshape(step.keep.shape).astype(bool)

    def initial_longterm(self: Engrams, queries: torch.Tensor, ltm_positions: torch.Tensor, seed: int) -> torch.Tensor:
        """Per query engram, the long-term engram it co-fired with most (C++; random ties from ``seed``).

        queries [B, S] positions (-1: a padding row, every engram ties at -1), ltm_positions
        [B, L] the long-term engrams in local order (-1 pads). Returns local indices [B, S]
        int64 on the CPU (-1: none). Needs a graph without overlay (see :meth:`graph`).
        Arguments on the CPU cost no device copy.
        """
        slots = torch.from_numpy(self.host_keys()[1])
        positions = ltm_positions.cpu()
        query_slots = gather_rows(slots, queries.cpu(), -1).numpy()
        ltm_slots = gather_rows(slots, positions, -1).numpy()
        local = self.graph.core.initial_ltm(query_slots, ltm_slots, positions.numpy(), self.memory_length, seed)
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
        ``reachable`` leaves out listed engrams. Arguments on the CPU cost no device copy.
        """
        positions = ltm_positions.cpu()  # the C++ graph reads host memory
        listed = positions >= 0
        if reachable is not None:
            reachable = reachable.cpu()
        narrowed = reachable is not None and bool((listed & ~reachable).any())
        reachable = listed if reachable is None else reachable & listed
        if not self.graph.has_overlay() and not narrowed:
            ltm_slots = gather_rows(torch.from_numpy(self.host_keys()[1]), positions, -1).numpy()
            return torch.from_numpy(self.graph.core.walk(starts.cpu().numpy(), ltm_slots, depth,
                                                         alias_negative=alias_negative))
        from mnemonix.memoria._longterm import walk_dense

        counts = self.cofire_rows_host(positions)  # [B, L, M]
        counts = gather_rows(counts.transpose(1, 2), positions, -1).transpose(1, 2)  # [B, L, L]
        return walk_dense(counts, reachable, starts.cpu(), depth, alias_negative)
