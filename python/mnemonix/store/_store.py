""":class:`MemoryStore`: millions of memories with ids, updates, filters, salience and Hopfield retrieval.

Layout (see :mod:`mnemonix.store._blocks`, :mod:`mnemonix.store._index`): rows live in
blocks (memory-mapped frozen segments of a loaded store, then a growable tail); a live
mask marks the rows that are not removed; an id index maps ids to live rows. Removal
clears live bits (tombstones, O(removed)); an upsert tombstones the old row and appends
the new one, so rows never move between compactions and saved segments stay immutable.
Every mutating method checks all its arguments and prepares its rows before it changes
anything, under the writer side of a reader-writer lock.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mnemonix import _checks
from mnemonix.store import _persist, _query
from mnemonix.store import _validate as check
from mnemonix.store._blocks import Block, empty_columns, grown_tail, quantize_int8, row_bytes
from mnemonix.store._index import IdIndex, make_run
from mnemonix.store._lock import ReadWriteLock

__all__ = ["MemoryStore"]

AUTO_COMPACT_MIN_DEAD = 1024
"""An in-memory store compacts itself once its dead rows exceed both this and its live rows."""


@dataclass
class _Staged:
    """Rows written past the end of a store, not yet visible (see :meth:`MemoryStore._stage`)."""

    rows: dict[str, torch.Tensor | None]
    tail: Block
    live: torch.Tensor
    dead: torch.Tensor | None
    index: IdIndex


class MemoryStore:
    """Exact vector memory with int64 ids: add, upsert, remove, get, search, retrieve, save, load.

    Parameters
    ----------
    dim : int
        Key width d.
    value_dim : int, optional
        Width dv of the values stored beside the keys; None: no values (retrieval returns
        keys: auto-association).
    dtype : torch.float32, float16, bfloat16 or int8
        Storage dtype of the keys; int8 is symmetric per-row quantisation with a float32
        scale (``scale = max|x| / 127``).
    device : str or torch.device
        Where the rows live ("cpu" or a CUDA device).
    metric : {"ip", "cos"}
        Search metric: inner product or cosine.
    value_dtype : torch dtype, optional
        Storage dtype of values (default: ``dtype``, float32 for int8 stores).

    Thread safety: any number of concurrent readers (``search``, ``retrieve``, ``get``,
    ``contains``, ``ids``, ``save``) with one writer at a time (``add``, ``upsert``,
    ``remove``, ``compact``); a reader never sees a half-applied write. The heavy work runs
    in torch ops, which release the GIL.
    """

    def __init__(self, dim: int, *, value_dim: int | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", metric: str = "ip", value_dtype: torch.dtype | None = None):
        self._spec = check.spec_of(dim, value_dim, dtype, value_dtype, metric, device)
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()
        self._blocks: list[Block] = [Block(0, 0, empty_columns(0, self._spec, self._spec.device))]
        self._live = torch.zeros(0, dtype=torch.bool, device=self._spec.device)
        self._n_rows = 0
        self._n_live = 0
        self._index = IdIndex()
        self._next_id = 0
        self._max_norm = 0.0
        self._persisted: _persist.Persisted | None = None

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return self._spec.dim

    @property
    def value_dim(self) -> int | None:
        return self._spec.value_dim

    @property
    def dtype(self) -> torch.dtype:
        return self._spec.dtype

    @property
    def value_dtype(self) -> torch.dtype | None:
        return self._spec.value_dtype

    @property
    def metric(self) -> str:
        return self._spec.metric

    @property
    def device(self) -> torch.device:
        return self._spec.device

    @property
    def num_rows(self) -> int:
        """Rows held, removed ones included (they go at the next :meth:`compact`)."""
        return self._n_rows

    @property
    def nbytes(self) -> int:
        """Bytes of the stored rows (every column, removed rows included; spare capacity not)."""
        return row_bytes(self._spec) * self._n_rows

    def __len__(self) -> int:
        return self._n_live

    def __repr__(self) -> str:
        vals = "" if self.value_dim is None else f", value_dim={self.value_dim}"
        return (f"MemoryStore(dim={self.dim}{vals}, dtype={self.dtype}, metric={self.metric!r}, "
                f"device={str(self.device)!r}, len={len(self)})")

    # ------------------------------------------------------------------ writers

    def add(self, keys, values=None, *, ids=None, r0=None, tau=None) -> torch.Tensor:
        """Add new memories; returns their ids [n] int64.

        Parameters
        ----------
        keys : Tensor or ndarray [n, d] (or [d]), float, finite
        values : Tensor or ndarray [n, dv], required when the store has ``value_dim``
        ids : int64 [n], optional
            Distinct ids >= 0 not in the store (use :meth:`upsert` to replace); None: the
            next free ids (one more than the largest id ever added, counting up).
        r0 : float or Tensor [n], > 0, default 1;  tau : float or Tensor [n], default 0
            Initial salience and store time of each memory (for ``search(alpha=, now=)``).
        """
        with self._lock.write():
            rows = self._prepare(keys, values, ids, r0, tau, must_be_new=True)
            self._commit(rows, replaced=None)
            return rows["ids"].clone()

    def upsert(self, ids, keys, values=None, *, r0=None, tau=None) -> None:
        """Insert or replace memories by id (a replaced memory gets the new row; arguments as :meth:`add`)."""
        with self._lock.write():
            if ids is None:
                raise ValueError("ids must be given to upsert (None: use add for new ids)")
            rows = self._prepare(keys, values, ids, r0, tau, must_be_new=False)
            old = self._index.lookup(rows["ids"], self._live)
            self._commit(rows, replaced=old[old >= 0])

    def remove(self, ids) -> int:
        """Remove memories by id; returns how many of the (distinct) ids were present. O(removed).

        Absent ids are ignored. The rows become tombstones, reclaimed by :meth:`compact`
        (automatic for in-memory stores once dead rows outnumber live ones).
        """
        with self._lock.write():
            wanted = torch.unique(check.ids("ids", ids, self._spec, unique=False))
            found = self._index.lookup(wanted, self._live)
            found = found[found >= 0]
            self._tombstone(found)
            self._auto_compact()
            return int(found.numel())

    def compact(self) -> None:
        """Drop removed rows: rewrite the live rows into one in-memory block (O(N)).

        A memory-mapped store is read into memory; the next :meth:`save` writes a full
        generation.
        """
        with self._lock.write():
            self._compact()

    # ------------------------------------------------------------------ readers

    def get(self, ids) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stored keys [n, d] and values [n, dv] (or None) of ``ids``, in their order.

        Keys come back in the storage dtype (int8 stores: dequantised float32, exactly the
        rows that search scores). Raises ValueError naming missing ids.
        """
        with self._lock.read():
            wanted = check.ids("ids", ids, self._spec, unique=False)
            rows = self._index.lookup(wanted, self._live)
            if bool((rows < 0).any()):
                missing = wanted[rows < 0][:5].tolist()
                raise ValueError(f"ids not in the store: {missing}{' ...' if int((rows < 0).sum()) > 5 else ''}")
            keys = _query.gather_keys(self._blocks, rows)
            values = None if self.value_dim is None else _query.gather(self._blocks, "values", rows)
            return keys, values

    def contains(self, ids) -> torch.Tensor:
        """bool [n]: which of ``ids`` are in the store."""
        with self._lock.read():
            wanted = check.ids("ids", ids, self._spec, unique=False)
            return self._index.lookup(wanted, self._live) >= 0

    def __contains__(self, id_: object) -> bool:
        if isinstance(id_, bool) or not isinstance(id_, (int, np.integer)) or id_ < 0:
            return False
        return bool(self.contains(torch.tensor([int(id_)], device=self.device))[0])

    def ids(self) -> torch.Tensor:
        """Ids of every memory, ascending, int64 [len]."""
        with self._lock.read():
            parts = [b.col("ids")[self._live[b.start:b.stop]] for b in self._blocks if b.n]
            if not parts:
                return torch.empty(0, dtype=torch.int64, device=self.device)
            return torch.sort(torch.cat(parts)).values

    def search(self, queries, k: int, *, filter=None, alpha: float | None = None,
               now: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k memories per query.

        Parameters
        ----------
        queries : Tensor or ndarray [B, d] (or [d]), float, finite
        k : int >= 1, no upper limit (results past the matching memories are padded)
        filter : int64 ids, optional
            Allowed ids, applied inside the scan (other rows never enter the top-k); ids
            that are not in the store match nothing.
        alpha, now : float, optional (both or neither)
            Rank by EpiNet's salience rule ``cos(q, c) * r0 * exp(-alpha (now - tau))`` in
            log space (:func:`mnemonix.ops.salience_topk`) instead of the store's metric.

        Returns
        -------
        scores : Tensor [B, k] float32, best first; ``-inf`` padding. The metric's exact score
            (with respect to the stored rows), or for salience ``cos * s / max s`` (relative
            to the most salient allowed memory).
        ids : Tensor [B, k] int64; -1 padding. Equal scores go to the lower id.
        """
        q = check.queries(queries, self._spec)
        k = _checks.positive_int("k", k)
        salience = check.salience_args(alpha, now)
        with self._lock.read():
            mask = self._mask(filter)
            if salience is not None:
                return _query.salience_search(self._blocks, mask, q, k, *salience)
            return _query.search(self._blocks, mask, q, k, self.metric, self._max_norm)

    def retrieve(self, queries, *, beta: float, filter=None, update_steps: int = 0, eps: float = 1e-4,
                 return_lse: bool = False):
        """Modern Hopfield retrieval ``softmax(beta q K^T) V`` over the (allowed) memories.

        V is the values, or the keys when the store has none; ``update_steps`` iterates
        ``q <- out`` (keys-only stores), each query stopping once ``max|out - q| < eps``
        (:func:`mnemonix.ops.hopfield_retrieve`). Returns ``out`` [B, dv] float32, and
        ``lse`` [B] float32 (log-sum-exp of the logits) when ``return_lse``. Raises
        ValueError when no memory is allowed.
        """
        q = check.queries(queries, self._spec)
        beta = check.positive_number("beta", beta)
        update_steps = _checks.nonneg_int("update_steps", update_steps)
        eps = check.positive_number("eps", eps)
        if update_steps and self.value_dim is not None:
            raise ValueError("update_steps > 0 needs a store without values (iterating q <- out needs V = K)")
        with self._lock.read():
            mask = self._mask(filter)
            n_allowed = self._n_live if mask is None else int(mask[: self._n_rows].sum())
            if n_allowed == 0:
                what = "the store is empty" if self._n_live == 0 else "filter allows no memory of the store"
                raise ValueError(f"retrieve needs at least one memory: {what}")
            out, lse = _query.retrieve(self._blocks, mask, q, beta, update_steps, eps)
        return (out, lse) if return_lse else out

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to the directory ``path`` (a manifest and immutable safetensors segments).

        Saving again to the same path writes only the rows added since, the tombstone
        bitmap and a new manifest, swapped in atomically: a crash at any moment leaves the
        previous generation loadable. Concurrent readers may run; writers wait.
        """
        with self._save_lock, self._lock.read():
            self._persisted = _persist.save(self, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False, device: str | torch.device | None = None,
             verify: bool | str | None = None) -> MemoryStore:
        """Load a store saved by :meth:`save`.

        ``mmap=True`` maps the segments read-only and reads nothing up front but the
        manifest, the tombstones and the segment headers (CPU only); the store still
        accepts every write (new rows go to memory; see docs/store.md). ``verify``: True
        checks the SHA-256 of every file now (one read of every byte), ``"lazy"`` checks
        each segment before its rows are first used, False checks sizes and headers only
        (the manifest's own checksum is always checked). Default: True when copying,
        ``"lazy"`` with ``mmap``. Raises :class:`mnemonix._io.FormatError` naming the file
        and field for anything that is not a valid store. A directory saved by
        :class:`~mnemonix.distributed.ShardedMemoryStore` loads as one store holding every
        shard's rows.
        """
        return _persist.load(cls, Path(path), mmap=mmap, device=device, verify=verify)

    def verify(self) -> None:
        """Check the SHA-256 of every segment this store maps (FormatError on a mismatch)."""
        with self._lock.read():
            for block in self._blocks:
                if block.checker is not None:
                    block.checker()

    # ------------------------------------------------------------------ internals (lock held)

    def _mask(self, filter) -> torch.Tensor | None:
        """Rows that may be selected (live and allowed) [>= n_rows] bool, or None: every row."""
        if filter is None:
            return None if self._n_live == self._n_rows else self._live
        wanted = check.ids("filter", filter, self._spec, unique=False)
        rows = self._index.lookup(wanted, self._live)
        mask = torch.zeros(self._n_rows, dtype=torch.bool, device=self.device)
        mask[rows[rows >= 0]] = True
        return mask

    def _prepare(self, keys, values, ids, r0, tau, *, must_be_new: bool) -> dict[str, torch.Tensor | None]:
        """Checked rows in storage form (every column) plus their max norm; changes nothing."""
        spec = self._spec
        k = check.rows("keys", keys, spec.dim, spec)
        n = k.shape[0]
        if spec.value_dim is None and values is not None:
            raise ValueError("values must be None: this store keeps no values (create it with value_dim)")
        if spec.value_dim is not None and values is None:
            raise ValueError(f"values must be given: this store keeps values of width {spec.value_dim}")
        v = None if values is None else check.rows("values", values, spec.value_dim, spec, n=n)
        if ids is None:
            new_ids = torch.arange(self._next_id, self._next_id + n, dtype=torch.int64, device=spec.device)
        else:
            new_ids = check.ids("ids", ids, spec, unique=True)
            if new_ids.shape[0] != n:
                raise ValueError(f"ids must have {n} entries (one per key row), got {new_ids.shape[0]}")
            if must_be_new:
                present = self._index.lookup(new_ids, self._live) >= 0
                if bool(present.any()):
                    raise ValueError(f"ids already in the store: {new_ids[present][:5].tolist()} "
                                     "(use upsert to replace them)")
        rows: dict[str, torch.Tensor | None] = {
            "ids": new_ids,
            "r0": check.per_row("r0", r0, n, 1.0, spec, positive=True),
            "tau": check.per_row("tau", tau, n, 0.0, spec, positive=False),
            "values": None if v is None else check.to_storage("values", v, spec.value_dtype),
            "scales": None,
        }
        if spec.dtype == torch.int8:
            rows["keys"], rows["scales"] = quantize_int8(k)
            stored = rows["keys"].float() * rows["scales"][:, None]
        else:
            rows["keys"] = check.to_storage("keys", k, spec.dtype)
            stored = rows["keys"].float()
        norm = torch.linalg.vector_norm(stored, dim=1)
        if not bool(torch.isfinite(norm).all()):
            raise ValueError("keys must have norms that fit in float32, got a row whose norm overflows")
        rows["_max_norm"] = norm.max() if n else None
        return rows

    def _commit(self, rows: dict[str, torch.Tensor | None], replaced: torch.Tensor | None) -> None:
        """Append prepared rows (and tombstone ``replaced`` rows); everything that can fail runs first."""
        staged = self._stage(rows, replaced)
        if staged is not None:
            self._apply(staged)

    def _stage(self, rows: dict[str, torch.Tensor | None], replaced: torch.Tensor | None) -> _Staged | None:
        """Everything of :meth:`_commit` that can fail; None when there is nothing to add.

        Rows go past ``n_rows`` (invisible). The only visible change is ``replaced`` rows
        marked dead: :meth:`_unstage` revives them, :meth:`_apply` makes the rest visible
        and cannot fail. A :class:`~mnemonix.distributed.ShardedMemoryStore` stages on
        every rank and applies only once every rank staged.
        """
        n = int(rows["ids"].shape[0])
        if n == 0:
            return None
        start = self._n_rows
        tail = grown_tail(self._blocks[-1], n, self._spec, self.device)
        live = self._live
        if live.shape[0] < start + n:
            live = torch.zeros(max(start + n, 2 * live.shape[0], 64), dtype=torch.bool, device=self.device)
            live[:start] = self._live[:start]
        for name, t in tail.columns.items():
            if t is not None:
                t[tail.n: tail.n + n] = rows[name]
        live[start: start + n] = True  # past n_rows: not visible yet
        # Replaced rows die before the index merge, which drops dead entries (one live row per id);
        # if the merge fails (out of memory) they come back to life.
        dead = replaced if replaced is not None and replaced.numel() else None
        if dead is not None:
            live[dead] = False
        staged = _Staged(rows, tail, live, dead, self._index)
        try:
            run = make_run(rows["ids"], torch.arange(start, start + n, device=self.device))
            staged.index = self._index.with_run(run, live)
        except BaseException:
            self._unstage(staged)
            raise
        return staged

    def _unstage(self, staged: _Staged) -> None:
        """Undo the visible part of :meth:`_stage` (the replaced rows live again)."""
        if staged.dead is not None:
            staged.live[staged.dead] = True

    def _apply(self, staged: _Staged) -> None:
        """Make staged rows visible. Nothing here can fail."""
        rows, n = staged.rows, int(staged.rows["ids"].shape[0])
        self._blocks[-1] = replace(staged.tail, n=staged.tail.n + n)
        self._live = staged.live
        self._n_rows += n
        self._n_live += n - (0 if staged.dead is None else int(staged.dead.numel()))
        self._index = staged.index
        self._next_id = max(self._next_id, int(rows["ids"].max()) + 1)
        self._max_norm = max(self._max_norm, 1.01 * float(rows["_max_norm"]))

    def _tombstone(self, rows: torch.Tensor) -> None:
        """Mark live ``rows`` (distinct) dead. Cannot fail."""
        self._live[rows] = False
        self._n_live -= int(rows.numel())

    def _auto_compact(self) -> None:
        """Compact an in-memory store whose dead rows outnumber its live ones (amortised O(1) per removal)."""
        dead = self._n_rows - self._n_live
        if dead > max(self._n_live, AUTO_COMPACT_MIN_DEAD) and len(self._blocks) == 1:
            self._compact()

    def _compact(self) -> None:
        rows = self._live[: self._n_rows].nonzero().flatten()
        n = int(rows.numel())
        columns = empty_columns(n, self._spec, self.device)
        for name, t in columns.items():
            if t is not None and n:
                t[:] = _query.gather(self._blocks, name, rows)
        self._blocks = [Block(0, n, columns)]
        self._live = torch.ones(n, dtype=torch.bool, device=self.device)
        self._n_rows = self._n_live = n
        self._index = IdIndex([make_run(columns["ids"], torch.arange(n, device=self.device))])
        self._persisted = None
