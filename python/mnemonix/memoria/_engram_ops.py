"""memoria-pytorch's ``Engrams`` operations (selection, masks, lifespans, co-firing) on the sparse store.

A mixin of :class:`mnemonix.memoria.Engrams`: the methods keep the original's names,
arguments and results (padded layouts, -1 for null), never build a dense [B, M, M] and
copy only the co-fire counts among the engrams they keep.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from mnemonix import _checks
from mnemonix.memoria._engram_checks import INT32_MAX, bool_mask, index_matrix, real_tensor
from mnemonix.memoria._graph import CofireGraph
from mnemonix.memoria.utils import gather_rows, indices_with_mask

if TYPE_CHECKING:
    from mnemonix.memoria.engram import Engrams

_PUBLIC_FIELDS = ("data", "lifespan", "engrams_types", "_age", "_ids")


class EngramOps:
    """Selection, masks, lifespan and co-fire operations with memoria-pytorch's semantics."""

    # ------------------------------------------------------------ index helpers
    def get_indices_with_mask(self: Engrams, mask: torch.Tensor) -> torch.Tensor:
        """Positions where ``mask`` [B, M] is True [B, K] (ascending; shorter rows -1 at the front)."""
        return indices_with_mask(bool_mask("mask", mask, (self.batch_size, self.memory_length)))

    def get_mask_with_indices(self: Engrams, indices: torch.Tensor) -> torch.Tensor:
        """Bool mask [B, M] of the positions ``indices`` [B, N] (negative entries ignored; ``indices`` untouched)."""
        idx = index_matrix("indices", indices, self.batch_size, self.memory_length).to(self.device)
        length = self.memory_length
        mask = torch.zeros((self.batch_size, length + 1), dtype=torch.bool, device=self.device)
        mask.scatter_(1, torch.where(idx < 0, length, idx), True)
        return mask[:, :length]

    def get_working_memory(self: Engrams) -> tuple[Engrams, torch.Tensor]:
        """(working-memory engrams, their positions [B, K] with -1 pads)."""
        mask = self.working_memory_mask
        return self.mask_select(mask), indices_with_mask(mask)

    def get_shortterm_memory(self: Engrams) -> tuple[Engrams, torch.Tensor]:
        """(short-term engrams, their positions [B, K] with -1 pads)."""
        mask = self.shortterm_memory_mask
        return self.mask_select(mask), indices_with_mask(mask)

    def get_longterm_memory(self: Engrams) -> tuple[Engrams, torch.Tensor]:
        """(long-term engrams, their positions [B, K] with -1 pads)."""
        mask = self.longterm_memory_mask
        return self.mask_select(mask), indices_with_mask(mask)

    def get_local_indices_from_global_indices(self: Engrams, partial_mask: torch.Tensor,
                                              global_indices: torch.Tensor | list) -> torch.Tensor:
        """Indices into ``mask_select(partial_mask)`` of the positions ``global_indices`` [B, N] it holds.

        Ascending per row, -1 at the front of shorter rows; negative or unselected positions are ignored.
        """
        partial = indices_with_mask(bool_mask("partial_mask", partial_mask, (self.batch_size, self.memory_length)))
        targets = index_matrix("global_indices", global_indices, self.batch_size, self.memory_length)
        length = self.memory_length
        hit = torch.zeros((self.batch_size, length + 1), dtype=torch.bool, device=self.device)
        hit.scatter_(1, torch.where(targets < 0, length, targets).to(self.device), True)
        hit[:, length] = False
        return indices_with_mask(hit.gather(1, torch.where(partial < 0, length, partial)))

    # --------------------------------------------------------------- co-firing
    def fire_together_wire_together(self: Engrams, indices: torch.Tensor, *, validate: bool = True) -> None:
        """Every pair of the engrams at ``indices`` [B, N] co-fires once; each fires once.

        Negative entries are ignored and a position listed twice fires once. O(N^2) graph
        updates per row (the original adds a dense [B, M, M] outer product). ``validate=False``
        skips the argument checks (and their host sync) for positions known to be valid.
        The graph is on the host: indices on the CPU cost no device copy (the keys are there).
        """
        idx = index_matrix("indices", indices, self.batch_size, self.memory_length) if validate else indices
        idx = idx.cpu().long()
        self._flush()
        self.graph.fire_together(gather_rows(torch.from_numpy(self.host_keys()[0]), idx, -1).numpy())
        self._refresh_views()

    # ---------------------------------------------------------------- selection
    def select(self: Engrams, indices: torch.Tensor) -> Engrams:
        """New engrams [B, K] at ``indices``: 1-D [K] (the same positions in every row; negative
        count from the end) or 2-D [B, K] (negative: a NULL padding engram). Counts are copied."""
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
        if indices.ndim == 1:
            idx = index_matrix("indices", indices.unsqueeze(0), 1, self.memory_length)[0]
            if idx.numel() and int(idx.min()) < -self.memory_length:
                raise ValueError(f"indices must be >= -{self.memory_length}, got {int(idx.min())}")
            idx = torch.where(idx < 0, idx + self.memory_length, idx).expand(self.batch_size, -1)
        elif indices.ndim == 2:
            idx = index_matrix("indices", indices, self.batch_size, self.memory_length)
        else:
            raise ValueError(f"indices must be a 1-D or 2-D tensor, got shape {tuple(indices.shape)}")
        self._flush()
        fields = self._gathered(idx.to(self.device))
        graph, uids = self.graph.restricted(fields["_uids"].cpu().numpy())
        return type(self)._assembled({k: fields[k] for k in _PUBLIC_FIELDS}, graph, uids,
                                     self.track_age, self.track_engram_id)

    def mask_select(self: Engrams, mask: torch.Tensor) -> Engrams:
        """New engrams: those where ``mask`` [B, M] is True (shorter rows padded at the front)."""
        return self.select(self.get_indices_with_mask(mask))

    def retain(self: Engrams, mask: torch.Tensor) -> None:
        """In place, ``self = self.mask_select(mask)``: drop the engrams where ``mask`` is False."""
        mask = bool_mask("mask", mask, (self.batch_size, self.memory_length)).to(self.device)
        self._detach_views()
        dropped = gather_rows(self._uids, indices_with_mask(~mask & (self._uids >= 0)), -1)
        self.graph.remove(dropped.cpu().numpy())
        self._set_arrays(self._gathered(indices_with_mask(mask)))

    def delete(self: Engrams, indices: torch.Tensor) -> None:
        """Drop the engrams at ``indices`` [B, N] (negative ignored) with their counts, in place."""
        self.retain(~self.get_mask_with_indices(indices))

    # ---------------------------------------------------------------- lifespans
    def extend_lifespan(self: Engrams, indices: torch.Tensor, lifespan_delta: torch.Tensor) -> None:
        """``lifespan[b, indices[b, j]] += lifespan_delta[b, j]`` (negative indices ignored).

        As in the original, a position listed twice in a row receives one of its deltas.
        Raises (changing nothing) on NaN/Inf deltas or lifespans that would overflow.
        """
        idx = index_matrix("indices", indices, self.batch_size, self.memory_length).to(self.device)
        delta = real_tensor("lifespan_delta", lifespan_delta, tuple(idx.shape)).to(self.device, torch.float32)
        _checks.finite("lifespan_delta", delta)
        length = self.memory_length
        added = torch.zeros((self.batch_size, length + 1), dtype=torch.float32, device=self.device)
        rows = torch.arange(self.batch_size, device=self.device).unsqueeze(1)
        added[rows, torch.where(idx < 0, length, idx)] += delta
        new = self.lifespan + added[:, :length]
        if not bool(torch.isfinite(new).all()):
            raise ValueError("lifespan_delta would make lifespans overflow float32 (reach +-inf)")
        self.lifespan.copy_(new)

    def decrease_lifespan(self: Engrams) -> None:
        """Every lifespan - 1."""
        self.lifespan.sub_(1.0)

    def increase_age(self: Engrams) -> None:
        """Every age + 1 when ages are tracked; refuses (changing nothing) to pass the int32 maximum."""
        if self.track_age:
            if self.memory_length and int(self._age.max()) >= INT32_MAX:
                raise ValueError("engram ages would pass the int32 maximum (2**31 - 1)")
            self._age.add_(1)

    # ------------------------------------------------------------ comparison
    def __eq__(self: Engrams, other: object) -> bool:
        """Same data, counts, types, lifespans, tracked ages / ids and tracking flags."""
        if not isinstance(other, EngramOps):
            return NotImplemented
        if self.data.shape != other.data.shape or (self.track_age, self.track_engram_id) != (
                other.track_age, other.track_engram_id):
            return False
        names = ["data", "engrams_types", "lifespan"] + ["_age"] * self.track_age + ["_ids"] * self.track_engram_id
        if not all(torch.equal(getattr(self, n).cpu(), getattr(other, n).cpu()) for n in names):
            return False
        self._flush()
        other._flush()
        return all(_same_counts(self._count_signature(b), other._count_signature(b)) for b in range(self.batch_size))

    def _count_signature(self: Engrams, row: int) -> tuple[np.ndarray, ...]:
        real, fires, src, dst, cnt = self.graph.entries(row, self._uids[row].cpu().numpy())
        order = np.lexsort((dst, src))
        return real, np.asarray(fires), src[order], dst[order], cnt[order]

    def __add__(self: Engrams, other: Engrams) -> Engrams:
        """Concatenation along the engrams (counts between the two parts are 0).

        An empty operand returns the other one itself, as the original does.
        """
        if not isinstance(other, EngramOps):
            return NotImplemented
        if len(self) == 0:
            return other
        if len(other) == 0:
            return self
        if (other.batch_size, other.hidden_dim) != (self.batch_size, self.hidden_dim) or other.device != self.device:
            raise ValueError(f"engrams to add must share batch size, hidden size and device: "
                             f"{(self.batch_size, self.hidden_dim, str(self.device))} vs "
                             f"{(other.batch_size, other.hidden_dim, str(other.device))}")
        for flag in ("track_age", "track_engram_id"):
            if getattr(self, flag) != getattr(other, flag):
                warnings.warn(f"{flag} is disabled due to inconsistency", stacklevel=2)
        self._flush()
        other._flush()
        fields = {name: torch.cat([getattr(self, name), getattr(other, name)], dim=1) for name in _PUBLIC_FIELDS}
        graph, uids = CofireGraph.assemble([(self.graph, self._uids.cpu().numpy()),
                                            (other.graph, other._uids.cpu().numpy())])
        return type(self)._assembled(fields, graph, uids, self.track_age and other.track_age,
                                     self.track_engram_id and other.track_engram_id)

    def __iter__(self: Engrams) -> Iterator[Engrams]:
        """One single-row Engrams per batch row (copies)."""
        self._flush()
        uids = self._uids.cpu().numpy()
        for row in range(self.batch_size):
            graph, new_uids = self.graph.row_graph(row, uids[row])
            fields = {name: getattr(self, name)[row:row + 1].clone() for name in _PUBLIC_FIELDS}
            yield type(self)._assembled(fields, graph, new_uids, self.track_age, self.track_engram_id)


def _same_counts(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))

