"""``Engrams``: Memoria's engram store, memoria-pytorch's ``memoria.engram`` with a sparse co-fire graph.

Per-engram arrays are padded [B, M, ...] tensors (:mod:`mnemonix.memoria._store`); co-fire
counts live in :class:`mnemonix.memoria._graph.CofireGraph` (C++, 8 bytes per directed
edge) instead of the original's dense int32 [B, M, M]. The dense ``induce_counts`` and
``fire_count`` are views with write-back (:mod:`mnemonix.memoria._views`): reading
``induce_counts`` costs O(M^2) time and memory, as the original's tensor does.
"""

from __future__ import annotations

import numpy as np
import torch

from mnemonix._types import ENGRAM_LONGTERM, ENGRAM_SHORTTERM, ENGRAM_WORKING, EngramType
from mnemonix.memoria import _persist, _summary
from mnemonix.memoria._engram_checks import check_constructor, int32_values
from mnemonix.memoria._engram_fast import EngramFastPath
from mnemonix.memoria._engram_ops import EngramOps
from mnemonix.memoria._graph import CofireGraph
from mnemonix.memoria._store import EngramArrays
from mnemonix.memoria._views import WriteBack
from mnemonix.memoria.types import EngramsInfo
from mnemonix.memoria.utils import gather_rows

__all__ = ["Engrams", "EngramType"]

class Engrams(EngramOps, EngramFastPath, EngramArrays):
    """Engrams of a batch: data, lifespans, types, ages, ids and co-fire counts (memoria-pytorch's API).

    Parameters
    ----------
    data : Tensor [B, M, H], real (stored as float32)
    induce_counts : Tensor [B, M, M] of integers, optional
        Co-fire counts (diagonal: fire counts); zeros when None. Any int32 matrix is held
        exactly (asymmetric or negative entries in the graph's overlay).
    engrams_types : EngramType, int code 0-3, or uint8 Tensor [B, M]; default WORKING
    lifespan : number or Tensor [B, M], finite (default 0)
    age : Tensor [B, M] of int32 values, optional (zeros when None); kept when ``track_age``
    engram_ids : int (first id: ids ``start .. start + M - 1`` in every row) or Tensor [B, M]
        of int32 values; kept when ``track_engram_id``
    track_age, track_engram_id : bool

    ``Engrams(batch_size, hidden_dim)`` (two ints, keyword ``device``) builds an empty store
    of that batch and hidden size (mnemonix's older constructor).

    Attributes
    ----------
    data [B, M, H] float32, lifespan [B, M] float32, engrams_types [B, M] uint8,
    age [B, M] int32 or None, engram_ids [B, M] int32 or None,
    fire_count [B, M] int32 (settable; -1 for padding), induce_counts [B, M, M] int32
    (settable; densified on access: O(M^2)), batch_size, memory_length, hidden_dim.

    Writes into ``induce_counts`` / ``fire_count`` reach the graph; a view held across an
    operation that adds, drops or reorders engrams (add, adjust, select in place, delete)
    stops writing back: read the attribute again. Padding (NULL engrams created by
    selections with -1 or by compaction) has data 0, lifespan -1, age -1, id -1 and counts -1.

    Threads: the co-fire graph underneath is safe to share (concurrent readers, exclusive
    writers, see ``mnemonix._core.hebbian``); an ``Engrams`` object as a whole (its tensors)
    is meant for one thread at a time.
    """

    def __init__(self, data: torch.Tensor | int, induce_counts: torch.Tensor | int | None = None,
                 engrams_types: torch.Tensor | EngramType | int | None = None, lifespan: torch.Tensor | float = 0,
                 age: torch.Tensor | int | None = None, engram_ids: torch.Tensor | int | None = None,
                 track_age: bool = False, track_engram_id: bool = False, *,
                 device: torch.device | str | None = None) -> None:
        if isinstance(data, int) and not isinstance(data, bool):  # Engrams(batch_size, hidden_dim)
            hidden = induce_counts if isinstance(induce_counts, int) else 0
            data = torch.zeros((data, 0, hidden), device=device)
            induce_counts = None
        fields = check_constructor(data, induce_counts, engrams_types, lifespan, age, engram_ids,
                                   track_age, track_engram_id)
        self.track_age = bool(track_age)
        self.track_engram_id = bool(track_engram_id)
        batch, length = fields["lifespan"].shape
        uids = torch.arange(length, dtype=torch.int64, device=data.device).expand(batch, length).contiguous()
        graph = CofireGraph(batch)
        counts = fields.pop("induce_counts")
        if counts is not None:
            counts_np, uids_np = counts.cpu().numpy(), uids.cpu().numpy()
            for row in range(batch):
                graph.load_row_dense(row, uids_np[row], counts_np[row])
        self._attach(fields, graph, uids, length)

    def _attach(self, fields: dict[str, torch.Tensor], graph: CofireGraph, uids: torch.Tensor, next_uid: int,
                host_uids: np.ndarray | None = None) -> None:
        """Install arrays and graph (``uids``: the engrams' keys in ``graph``; ``host_uids``: the same, host)."""
        self.graph = graph
        self._next_uid = next_uid
        self._views: dict[str, WriteBack] = {}
        host_uids = uids.cpu().numpy() if host_uids is None else host_uids
        host_slots = graph.add_nodes(host_uids)
        slots = torch.from_numpy(host_slots).to(uids.device, non_blocking=True)
        self._set_arrays({**fields, "_uids": uids, "_slots": slots})
        self._set_host_keys(host_uids, host_slots)

    @classmethod
    def _assembled(cls, fields: dict[str, torch.Tensor], graph: CofireGraph, uids: np.ndarray,
                   track_age: bool, track_engram_id: bool) -> Engrams:
        out = cls.__new__(cls)
        out.track_age, out.track_engram_id = track_age, track_engram_id
        device = fields["lifespan"].device
        out._attach(fields, graph, torch.from_numpy(uids).to(device, non_blocking=True), int(uids.shape[1]), uids)
        return out

    @classmethod
    def empty(cls, track_age: bool = False, track_engram_id: bool = False) -> Engrams:
        """No engrams (batch 0); adding engrams of any batch size to it is allowed."""
        return cls(torch.zeros((0, 0, 0)), track_age=track_age, track_engram_id=track_engram_id)

    def __len__(self) -> int:
        return self.batch_size * self.memory_length

    def __repr__(self) -> str:
        return (f"Engrams(batch_size={self.batch_size}, memory_length={self.memory_length}, "
                f"hidden_dim={self.hidden_dim}, edges={self.num_edges()}, track_age={self.track_age}, "
                f"track_engram_id={self.track_engram_id})")

    # ------------------------------------------------------------ attributes
    @property
    def age(self) -> torch.Tensor | None:
        """[B, M] int32 ages when ``track_age``, else None."""
        return self._age if self.track_age else None

    @age.setter
    def age(self, value: torch.Tensor | None) -> None:
        if value is None:
            self.track_age = False
            return
        self._replace_field("_age", int32_values("age", value), checked=True)
        self.track_age = True

    @property
    def engram_ids(self) -> torch.Tensor | None:
        """[B, M] int32 engram ids when ``track_engram_id``, else None."""
        return self._ids if self.track_engram_id else None

    @engram_ids.setter
    def engram_ids(self, value: torch.Tensor | None) -> None:
        if value is None:
            self.track_engram_id = False
            return
        self._replace_field("_ids", int32_values("engram_ids", value), checked=True)
        self.track_engram_id = True

    @property
    def working_memory_mask(self) -> torch.Tensor:
        return self.engrams_types == ENGRAM_WORKING

    @property
    def shortterm_memory_mask(self) -> torch.Tensor:
        return self.engrams_types == ENGRAM_SHORTTERM

    @property
    def longterm_memory_mask(self) -> torch.Tensor:
        return self.engrams_types == ENGRAM_LONGTERM

    # ------------------------------------------------------ views with write-back
    @property
    def fire_count(self) -> torch.Tensor:
        """[B, M] int32 fire counts (-1 for padding); writes into it persist. O(M)."""
        self._flush()
        uids = self._uids.cpu().numpy()
        counts = np.stack([self.graph.core.fire_count(b, uids[b]) for b in range(self.batch_size)]) \
            if self.batch_size else np.zeros(uids.shape, dtype=np.int32)
        view = torch.from_numpy(np.where(uids < 0, -1, counts).astype(np.int32)).to(self.device)
        self._views["fire"] = WriteBack(view, uids)
        return view

    @fire_count.setter
    def fire_count(self, value: torch.Tensor) -> None:
        held = self._views.get("fire")
        if held is not None and value is not None and held.tensor is value:  # ``+= x``: already written
            self._flush()
            return
        self._flush()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"fire_count must be a torch.Tensor, got {type(value).__name__}")
        if value.ndim != 2 or value.shape[0] not in (1, self.batch_size) or value.shape[1] > self.memory_length:
            raise ValueError(f"fire_count must have shape [{self.batch_size} or 1, n] with n <= {self.memory_length},"
                             f" got {tuple(value.shape)}")
        counts = int32_values("fire_count", value).expand(self.batch_size, value.shape[1]).cpu().numpy()
        uids = self._uids[:, :value.shape[1]].cpu().numpy()
        for b in range(self.batch_size):
            real = uids[b] >= 0
            self.graph.set_fires(b, uids[b][real], counts[b][real])
        self._refresh_views()

    @property
    def induce_counts(self) -> torch.Tensor:
        """[B, M, M] int32 co-fire counts (diagonal: fire counts; padding: -1); writes persist.

        Densified from the graph on every access: O(M^2) time and memory (400 MB per row
        at 10k engrams), as the original's tensor. Use :meth:`cofire_rows` for a few rows.
        """
        self._flush()
        view = self._dense(self._uids.cpu().numpy())
        self._views["dense"] = WriteBack(view, self._uids.cpu().numpy())
        return view

    @induce_counts.setter
    def induce_counts(self, value: torch.Tensor) -> None:
        held = self._views.get("dense")
        if held is not None and value is not None and held.tensor is value:  # ``+= x``: already written
            self._flush()
            return
        self._flush()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"induce_counts must be a torch.Tensor, got {type(value).__name__}")
        shape = (self.batch_size, self.memory_length, self.memory_length)
        if tuple(value.shape) != shape:
            raise ValueError(f"induce_counts must have shape {shape}, got {tuple(value.shape)}")
        counts = int32_values("induce_counts", value).cpu().numpy()
        uids = self._uids.cpu().numpy()
        for b in range(self.batch_size):
            self.graph.clear_row(b, uids[b][uids[b] >= 0])
            self.graph.load_row_dense(b, uids[b], counts[b])
        self._resync_slots()
        self._refresh_views()

    def _dense(self, uids: np.ndarray) -> torch.Tensor:
        length = uids.shape[1]
        out = np.empty((self.batch_size, length, length), dtype=np.int32)
        for b in range(self.batch_size):
            out[b] = self.graph.dense(b, uids[b], uids[b])
        return torch.from_numpy(out).to(self.device)

    def _flush(self) -> None:
        """Write the entries changed in handed-out views into the graph (see :mod:`._views`)."""
        for kind in list(self._views):
            view = self._views[kind]
            changed = view.changes()
            if changed is not None:
                if kind == "fire":
                    self._write_fires(view.tensor, changed, view.uids)
                else:
                    self._write_dense(view.tensor, changed, view.uids)
            if not view.settle():
                del self._views[kind]

    def _write_fires(self, tensor: torch.Tensor, changed: torch.Tensor, uids: np.ndarray) -> None:
        values, changed = tensor.cpu().numpy(), changed.cpu().numpy() & (uids >= 0)
        for b in np.flatnonzero(changed.any(axis=1)):
            self.graph.set_fires(int(b), uids[b][changed[b]], values[b][changed[b]])

    def _write_dense(self, tensor: torch.Tensor, changed: torch.Tensor, uids: np.ndarray) -> None:
        values, changed = tensor.cpu().numpy(), changed.cpu().numpy()
        for b in np.flatnonzero(changed.reshape(changed.shape[0], -1).any(axis=1)):
            current = self.graph.dense(int(b), uids[b], uids[b])
            current[changed[b]] = values[b][changed[b]]
            self.graph.clear_row(int(b), uids[b][uids[b] >= 0])
            self.graph.load_row_dense(int(b), uids[b], current)
        self._resync_slots()

    def _resync_slots(self) -> None:
        """Node slots after rows of the graph were rebuilt (slots of re-added engrams change)."""
        uids = self.host_keys()[0]
        slots = self.graph.add_nodes(uids)
        self._replace_field("_slots", torch.from_numpy(slots).to(self.device), checked=False)
        self._set_host_keys(uids, slots)

    def _refresh_views(self) -> None:
        """Counts changed in place (no engram added, dropped or moved): update live views."""
        for kind, view in list(self._views.items()):
            if view.tensor is None:
                del self._views[kind]
                continue
            view.refresh(self._dense(view.uids) if kind == "dense" else self.fire_count_values(view.uids))

    def _detach_views(self) -> None:
        """Engrams are about to move: write back, then stop tracking the handed-out views."""
        self._flush()
        self._views.clear()

    def fire_count_values(self, uids: np.ndarray) -> torch.Tensor:
        """Fire counts [B, K] int32 of the engrams with graph keys ``uids`` (-1 gives -1), no view."""
        counts = np.stack([self.graph.core.fire_count(b, uids[b]) for b in range(self.batch_size)]) \
            if self.batch_size else np.zeros(uids.shape, dtype=np.int32)
        return torch.from_numpy(np.where(uids < 0, -1, counts).astype(np.int32)).to(self.device)

    def cofire_rows(self, indices: torch.Tensor) -> torch.Tensor:
        """``induce_counts[b, indices[b]]`` [B, S, M] int32 without building [B, M, M] (O(S M)).

        ``indices`` [B, S] are positions (a negative position gives a row of -1, a padding row).
        """
        return self.cofire_rows_host(indices.cpu()).to(self.device)

    def cofire_rows_host(self, indices: torch.Tensor) -> torch.Tensor:
        """:meth:`cofire_rows` of CPU ``indices`` [B, S], on the host: no device copy (the graph is there)."""
        self._flush()
        uids = self.host_keys()[0]
        rows = gather_rows(torch.from_numpy(uids), indices, -1).numpy()
        out = np.stack([self.graph.dense(b, rows[b], uids[b]) for b in range(self.batch_size)]) \
            if self.batch_size else np.zeros((0, indices.shape[1], self.memory_length), dtype=np.int32)
        return torch.from_numpy(out)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def status_summary(self) -> list[EngramsInfo]:
        """One :class:`EngramsInfo` per batch row (needs ``track_engram_id``), from the sparse graph.

        Edge weight ``i -> j`` is ``count(i, j) / fire_count(i)`` in float32, kept when > 0, as
        in memoria-pytorch (whose incoming edges report ``count(j, i)`` as co-fire count).
        """
        if not self.track_engram_id:
            raise ValueError("status_summary needs track_engram_id=True (Memoria(track_id=True))")
        self._flush()
        return _summary.status_summary(self)

    # ------------------------------------------------------------ persistence
    @property
    def next_uid(self) -> int:
        """The graph key the next appended engram gets (keys are never reused)."""
        return self._next_uid

    def to_arrays(self) -> tuple[dict[str, np.ndarray], int]:
        """Every array of the store (numpy, host) and the lowest ``mnemonix.memoria`` format version holding them."""
        self._flush()
        return _persist.engram_arrays(self)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], next_uid: int, *, track_age: bool, track_engram_id: bool,
                    device: torch.device | str = "cpu") -> Engrams:
        """Engrams from the arrays of :meth:`to_arrays` (validate them with ``_persist.check_arrays`` first)."""
        return _persist.engrams_from_arrays(cls, arrays, next_uid, track_age, track_engram_id, torch.device(device))

    # ------------------------------------------------------------------ sizes
    def num_edges(self) -> int:
        """Undirected co-fire edges of the symmetric graph over all rows."""
        return sum(self.graph.num_edges(b) for b in range(self.batch_size)) // 2

    def nbytes(self) -> int:
        """Approximate bytes held: per-engram arrays + graph (8 bytes per directed edge + ~64 per node)."""
        arrays = sum(t.numel() * t.element_size() for t in
                     (self.data, self.lifespan, self.engrams_types, self._age, self._ids, self._uids, self._slots))
        graph = sum(8 * self.graph.num_edges(b) + 64 * self.graph.num_nodes(b) for b in range(self.batch_size))
        return arrays + graph
