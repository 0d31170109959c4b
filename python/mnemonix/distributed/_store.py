""":class:`ShardedMemoryStore`: a :class:`~mnemonix.store.MemoryStore` split over the ranks of a process group.

Each rank holds a shard (an ordinary MemoryStore); rows never move. A search scans every
shard where it lives and only partial results cross the wire: each rank's top-k with
global ids (one ``all_gather`` of ``B x k`` (score, id) pairs) or its Hopfield partition
``(out, lse)`` (``B x (dv + 1)`` floats), merged exactly (:mod:`mnemonix.distributed._merge`).
Every method is collective: every rank calls it, in the same order, and every rank gets
the same answer (or the same error: :mod:`mnemonix.distributed._comm`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from mnemonix import _checks
from mnemonix.distributed import _merge, _persist
from mnemonix.distributed._comm import CallStats, Comm, hash64
from mnemonix.store import MemoryStore, _query
from mnemonix.store import _validate as check

__all__ = ["ShardedMemoryStore"]

_F64, _I64, _F32 = torch.float64, torch.int64, torch.float32


def _float_bits(x: float) -> int:
    return int(torch.tensor([x], dtype=_F64).view(_I64))


def _bits_float(word: torch.Tensor) -> float:
    return float(word.clone().view(_F64))


class ShardedMemoryStore:
    """An exact memory store split over the ranks of a ``torch.distributed`` process group.

    Every result equals that of one :class:`~mnemonix.store.MemoryStore` holding every
    rank's rows (added in rank order): top-k ids identical (ties to the lower id), scores
    equal, Hopfield outputs and log-sum-exp equal to float32 rounding.

    Parameters
    ----------
    dim, value_dim, dtype, metric, value_dtype
        As :class:`~mnemonix.store.MemoryStore`; the same on every rank (checked).
    device : str or torch.device, optional
        Where this rank's rows live; default: this rank's CUDA device under NCCL, else the CPU.
    group : torch.distributed.ProcessGroup, optional
        The ranks that share the store (default: the default group). gloo or NCCL.

    Every method but ``len``, ``compact`` and the properties is **collective**:
    every rank of the group calls it, in the same order, from one thread. Arguments that
    select (queries, ``k``, ``filter``, ``beta``, ids of ``get``/``contains``) must be the
    same on every rank (a hash is compared: a mismatch raises ValueError on every rank),
    except queries with ``local_queries=True``. An error on one rank (bad input, a
    corrupted file) raises on every rank; a rank that dies or never calls makes the
    others raise :class:`~mnemonix.distributed.CollectiveError` within the process
    group's timeout. A failed call changes no rank's state.
    """

    def __init__(self, dim: int, *, value_dim: int | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None, metric: str = "ip",
                 value_dtype: torch.dtype | None = None, group=None):
        comm = Comm(group)
        comm.start("init")
        local, error, args = None, None, 0
        try:
            local = MemoryStore(dim, value_dim=value_dim, dtype=dtype, device=comm.device if device is None else device,
                                metric=metric, value_dtype=value_dtype)
            args = hash64(local.dim, local.value_dim, local.dtype, local.value_dtype, local.metric, local.device.type)
        except Exception as exc:  # noqa: BLE001 - agreed on below
            error = exc
        comm.agree("ShardedMemoryStore()", error, method="init", args=args,
                   args_names="dim, value_dim, dtype, value_dtype, metric and device type")
        comm.finish()
        self._setup(comm, local, length=0, next_id=0)

    def _setup(self, comm: Comm, local: MemoryStore, *, length: int, next_id: int) -> None:
        self._comm = comm
        self._local = local
        self._len = length
        self._next_id = next_id
        local._next_id = next_id

    # ------------------------------------------------------------------ properties

    @property
    def local(self) -> MemoryStore:
        """This rank's shard. Read from it freely; write through the sharded store only."""
        return self._local

    @property
    def rank(self) -> int:
        return self._comm.rank

    @property
    def world_size(self) -> int:
        return self._comm.world

    @property
    def dim(self) -> int:
        return self._local.dim

    @property
    def value_dim(self) -> int | None:
        return self._local.value_dim

    @property
    def dtype(self) -> torch.dtype:
        return self._local.dtype

    @property
    def value_dtype(self) -> torch.dtype | None:
        return self._local.value_dtype

    @property
    def metric(self) -> str:
        return self._local.metric

    @property
    def device(self) -> torch.device:
        return self._local.device

    @property
    def last_call(self) -> CallStats:
        """Time (local work vs. collectives) and bytes received of this rank's last collective call."""
        return self._comm.stats

    def __len__(self) -> int:
        """Memories held by all ranks together (no communication: kept up to date by every write)."""
        return self._len

    def __repr__(self) -> str:
        return (f"ShardedMemoryStore(dim={self.dim}, dtype={self.dtype}, metric={self.metric!r}, "
                f"rank={self.rank} of {self.world_size}, len={len(self)}, local={len(self._local)})")

    @contextlib.contextmanager
    def _call(self, method: str) -> Iterator[str]:
        self._comm.start(method)
        try:
            yield f"ShardedMemoryStore.{method}"
        finally:
            self._comm.finish()

    # ------------------------------------------------------------------ writers

    def add(self, keys, values=None, *, ids=None, r0=None, tau=None) -> torch.Tensor:
        """Add this rank's rows (collective); returns their ids [n] int64.

        Arguments as :meth:`MemoryStore.add <mnemonix.store.MemoryStore.add>`; ``keys=None``
        (with no values): this rank adds nothing. Auto ids count up from the whole store's
        next id in rank order, as one store adding every rank's rows in one call would;
        given ids must be new to every rank and distinct across ranks, and either every
        rank that adds rows gives ids or none does.
        """
        with self._call("add") as what, self._local._lock.write():
            rows, error = None, None
            try:
                rows = self._prepared(keys, values, ids, r0, tau)
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            n = 0 if rows is None else int(rows["ids"].shape[0])
            table = self._comm.agree(what, error, method="add", words=[n, int(ids is not None)])
            counts = table[:, 0].tolist()
            given = [r for r in range(self.world_size) if counts[r] and table[r, 1]]
            auto = [r for r in range(self.world_size) if counts[r] and not table[r, 1]]
            if given and auto:
                raise ValueError(f"{what}: ids must be given on every rank that adds rows or on none; ranks "
                                 f"{given} gave ids, ranks {auto} did not")
            if given:
                union = self._gathered_ids(what, rows["ids"], counts)
                next_id = max(self._next_id, int(union.max()) + 1)
            else:
                union = None
                first = self._next_id + sum(counts[: self.rank])
                rows["ids"] = torch.arange(first, first + n, dtype=_I64, device=self.device)
                next_id = self._next_id + sum(counts)

            def present() -> torch.Tensor:
                if union is None:
                    return torch.empty(0, dtype=_I64, device=self.device)
                found = self._local._index.lookup(union.to(self.device), self._local._live) >= 0
                if bool(found.any()):
                    raise ValueError(f"ids already in the store: {union[found.to(union.device)][:5].tolist()} "
                                     "(use upsert to replace them)")
                return torch.empty(0, dtype=_I64, device=self.device)

            self._write_everywhere(what, "add", rows, present)
            self._len += sum(counts)
            self._set_next_id(next_id)
            return rows["ids"].clone()

    def upsert(self, ids, keys, values=None, *, r0=None, tau=None) -> None:
        """Insert or replace memories by id (collective): this rank's rows, wherever the old ones live.

        Each rank passes its own rows (``ids=None, keys=None``: none); ids must be distinct
        across ranks. The old row of an id is removed by the rank that holds it, the new
        row stays on the rank that passed it.
        """
        with self._call("upsert") as what, self._local._lock.write():
            rows, error = None, None
            try:
                if ids is None and keys is not None:
                    raise ValueError("ids must be given to upsert (None: use add for new ids)")
                rows = self._prepared(keys, values, ids, r0, tau)
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            n = 0 if rows is None else int(rows["ids"].shape[0])
            counts = self._comm.agree(what, error, method="upsert", words=[n])[:, 0].tolist()
            union = self._gathered_ids(what, rows["ids"], counts)

            def replaced() -> torch.Tensor:
                old = self._local._index.lookup(union.to(self.device), self._local._live)
                return old[old >= 0]

            table = self._write_everywhere(what, "upsert", rows, replaced)
            self._len += sum(counts) - int(table[:, 0].sum())
            if union.numel():
                self._set_next_id(max(self._next_id, int(union.max()) + 1))

    def remove(self, ids) -> int:
        """Remove the union of every rank's ``ids`` (collective); returns how many were present, on every rank.

        Each rank removes the ids it holds; absent ids are ignored (as :meth:`MemoryStore.remove
        <mnemonix.store.MemoryStore.remove>`).
        """
        with self._call("remove") as what, self._local._lock.write():
            wanted, error = None, None
            try:
                wanted = torch.unique(check.ids("ids", ids, self._local._spec, unique=False))
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            n = 0 if wanted is None else int(wanted.numel())
            table = self._comm.agree(what, error, method="remove", words=[n, 0 if wanted is None else hash64(wanted)])
            counts = table[:, 0].tolist()
            same = bool((table[:, 1] == table[0, 1]).all())
            union = wanted if same else torch.unique(self._gathered_ids(what, wanted, counts, distinct=False))
            found, error = None, None
            try:
                rows = self._local._index.lookup(union.to(self.device), self._local._live)
                found = rows[rows >= 0]
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            table = self._comm.agree(what, error, method="remove", words=[0 if found is None else found.numel()])
            self._local._tombstone(found)
            try:
                self._local._auto_compact()
            except Exception as exc:  # noqa: BLE001 - the removal stands; compaction is only an optimisation
                warnings.warn(f"{what}: rank {self.rank} could not compact its shard ({exc})", stacklevel=3)
            removed = int(table[:, 0].sum())
            self._len -= removed
            return removed

    def compact(self) -> None:
        """Compact this rank's shard (local: no communication; see :meth:`MemoryStore.compact`)."""
        self._local.compact()

    def _prepared(self, keys, values, ids, r0, tau) -> dict:
        """This rank's checked rows (``keys=None``: none); ids as given or placeholders."""
        local = self._local
        if keys is None:
            if values is not None or ids is not None:
                raise ValueError("keys is None (this rank adds nothing), so values and ids must be None too")
            keys = torch.empty(0, self.dim, device=self.device)
            values = None if self.value_dim is None else torch.empty(0, self.value_dim, device=self.device)
        return local._prepare(keys, values, ids, r0, tau, must_be_new=False)

    def _gathered_ids(self, what: str, own: torch.Tensor, counts: list[int], *, distinct: bool = True) -> torch.Tensor:
        """Every rank's ids, concatenated; ValueError on every rank when ``distinct`` and two ranks share one."""
        parts = self._comm.gather_rows(what, own.to(self._comm.device), counts)
        union = torch.cat(parts).cpu()
        if distinct and union.numel() > 1:
            s, order = torch.sort(union)
            dup = (s[1:] == s[:-1]).nonzero().flatten()
            if dup.numel():
                value = int(s[dup[0]])
                owners = torch.repeat_interleave(torch.arange(self.world_size), torch.tensor(counts))[order]
                ranks = sorted({int(owners[dup[0]]), int(owners[dup[0] + 1])})
                raise ValueError(f"{what}: ids must be distinct across ranks, got {value} on ranks {ranks}")
        return union

    def _write_everywhere(self, what: str, method: str, rows: dict, dead_rows) -> torch.Tensor:
        """Stage this rank's rows and kill ``dead_rows()``; apply only once every rank staged.

        Returns the ranks' counts of killed rows [P, 4] (column 0).
        """
        local, staged, dead, error = self._local, None, None, None
        try:
            dead = dead_rows()
            staged = local._stage(rows, dead)
        except Exception as exc:  # noqa: BLE001 - agreed on below
            error = exc
        try:
            table = self._comm.agree(what, error, method=method, words=[0 if dead is None else dead.numel()])
        except BaseException:
            if staged is not None:
                local._unstage(staged)
            raise
        if staged is not None:
            local._apply(staged)
        elif dead.numel():  # no new rows on this rank: only the replaced ones die
            local._tombstone(dead)
        return table

    def _set_next_id(self, next_id: int) -> None:
        self._next_id = next_id
        self._local._next_id = next_id

    # ------------------------------------------------------------------ readers

    def _checked_filter(self, filter) -> tuple[torch.Tensor | None, int]:
        if filter is None:
            return None, 0
        f = check.ids("filter", filter, self._local._spec, unique=False)
        return f, hash64(f)

    def _own_queries(self, what: str, q: torch.Tensor, sizes: list[int],
                     local_queries: bool) -> tuple[torch.Tensor, slice]:
        """The queries every rank answers, and this rank's rows of them."""
        if not local_queries:
            return q, slice(0, q.shape[0])
        everyone = torch.cat(self._comm.gather_rows(what, q, sizes)).to(self.device)
        first = sum(sizes[: self.rank])
        return everyone, slice(first, first + q.shape[0])

    def search(self, queries, k: int, *, filter=None, alpha: float | None = None, now: float | None = None,
               local_queries: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k over every rank's memories (collective); every rank gets the answer.

        Arguments and results as :meth:`MemoryStore.search <mnemonix.store.MemoryStore.search>`
        (scores [B, k] float32, ids [B, k] int64; ``-inf`` / -1 padding). The same queries,
        ``k``, ``filter``, ``alpha`` and ``now`` on every rank, unless ``local_queries=True``:
        then each rank passes its own queries (any B) and gets their answers (every rank
        scans every rank's queries).
        """
        with self._call("search") as what, self._local._lock.read():
            q, error, words, qh, args = None, None, [0, 0], 0, 0
            try:
                q = check.queries(queries, self._local._spec)
                k = _checks.positive_int("k", k)
                salience = check.salience_args(alpha, now)
                if not isinstance(local_queries, bool):
                    raise TypeError(f"local_queries must be a bool, got {type(local_queries).__name__}")
                f, fh = self._checked_filter(filter)
                mask = self._local._mask(f)
                latest = _query.latest_tau(self._local._blocks, mask) if salience else None
                words = [q.shape[0], _float_bits(float("-inf") if latest is None else latest)]
                qh, args = (0 if local_queries else hash64(q)), hash64(k, salience, fh, local_queries)
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            table = self._comm.agree(what, error, method="search", queries=qh, args=args,
                                     args_names="k, filter, alpha, now and local_queries", words=words)
            q_all, own = self._own_queries(what, q, table[:, 0].tolist(), local_queries)
            if salience is None:
                scores, ids = self._metric_search(what, q_all, k, mask)
            else:
                latest = max(_bits_float(w) for w in table[:, 1])
                scores, ids = self._salience_search(what, q_all, k, mask, *salience, latest)
            return scores[own], ids[own]

    def _metric_search(self, what, q, k, mask) -> tuple[torch.Tensor, torch.Tensor]:
        local, B = self._local, q.shape[0]
        parts = self._comm.exchange(
            what, lambda: _query.search(local._blocks, mask, q, k, local.metric, local._max_norm, exact64=True),
            [((B, k), _F64), ((B, k), _I64)])
        scores, ids = _merge.merge_topk(*(torch.stack(x) for x in zip(*parts)), k)
        return scores.to(self.device), ids.to(self.device)

    def _salience_search(self, what, q, k, mask, alpha, now, latest) -> tuple[torch.Tensor, torch.Tensor]:
        blocks, B = self._local._blocks, q.shape[0]
        if latest == float("-inf"):  # no allowed memory on any rank
            return _query._pads(B, k, self.device)
        shifts = self._comm.exchange(
            what, lambda: [torch.tensor([_query.max_log_salience(blocks, mask, alpha, latest)], dtype=_F64)],
            [((1,), _F64)])
        shift = max(float(s[0]) for (s,) in shifts)

        def candidates() -> tuple[torch.Tensor, ...]:
            cand = _query.salience_candidates(blocks, mask, q, k, alpha, now, latest, shift)
            return _query.select_salience(*cand, k)

        parts = self._comm.exchange(what, candidates, [((B, k), _F64), ((B, k), _I64), ((B, k), _F64), ((B, k), _F64)])
        scores, ids = _merge.merge_salience(*(torch.stack(x) for x in zip(*parts)), k)
        return scores.to(self.device), ids.to(self.device)

    def retrieve(self, queries, *, beta: float, filter=None, update_steps: int = 0, eps: float = 1e-4,
                 return_lse: bool = False, local_queries: bool = False):
        """Hopfield retrieval ``softmax(beta q K^T) V`` over every rank's memories (collective).

        Arguments and results as :meth:`MemoryStore.retrieve <mnemonix.store.MemoryStore.retrieve>`:
        ``out`` [B, dv] float32 (and ``lse`` [B]). Each rank computes its partition's
        ``(out, lse)``; one ``all_gather`` of ``B x (dv + 1)`` floats per rank and the
        log-sum-exp merge give the whole (each of ``update_steps`` iterations once more).
        """
        with self._call("retrieve") as what, self._local._lock.read():
            local = self._local
            q, error, words, qh, args = None, None, [0, 0], 0, 0
            try:
                q = check.queries(queries, local._spec)
                beta = check.positive_number("beta", beta)
                update_steps = _checks.nonneg_int("update_steps", update_steps)
                eps = check.positive_number("eps", eps)
                if not isinstance(local_queries, bool):
                    raise TypeError(f"local_queries must be a bool, got {type(local_queries).__name__}")
                if update_steps and self.value_dim is not None:
                    raise ValueError("update_steps > 0 needs a store without values (iterating q <- out needs V = K)")
                f, fh = self._checked_filter(filter)
                mask = local._mask(f)
                words = [q.shape[0], local._n_live if mask is None else int(mask[: local._n_rows].sum())]
                qh, args = (0 if local_queries else hash64(q)), hash64(beta, update_steps, eps, fh, local_queries)
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            table = self._comm.agree(what, error, method="retrieve", queries=qh, args=args,
                                     args_names="beta, filter, update_steps, eps and local_queries", words=words)
            if int(table[:, 1].sum()) == 0:
                why = "the store is empty" if self._len == 0 else "filter allows no memory of the store"
                raise ValueError(f"retrieve needs at least one memory: {why}")
            q_all, own = self._own_queries(what, q, table[:, 0].tolist(), local_queries)
            width = self.value_dim or self.dim

            def once(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                b = state.shape[0]
                parts = self._comm.exchange(
                    what, lambda: _query.retrieve_partial(local._blocks, mask, state, beta, width),
                    [((b, width), _F32), ((b,), _F32)])
                out, lse = _merge.merge_retrieval(*(torch.stack(x) for x in zip(*parts)))
                return out.to(self.device), lse.to(self.device)

            out, lse = _query.iterate(once, q_all, update_steps, eps)
        return (out[own], lse[own]) if return_lse else out[own]

    def get(self, ids) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stored keys [n, d] and values [n, dv] (or None) of ``ids`` from whichever rank holds them (collective).

        The same ids on every rank; as :meth:`MemoryStore.get <mnemonix.store.MemoryStore.get>`
        (ValueError naming missing ids, on every rank).
        """
        with self._call("get") as what, self._local._lock.read():
            local, wanted, rows, error = self._local, None, None, None
            try:
                wanted = check.ids("ids", ids, local._spec, unique=False)
                rows = local._index.lookup(wanted, local._live)
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            n = 0 if wanted is None else int(wanted.numel())
            self._comm.agree(what, error, method="get", args=0 if wanted is None else hash64(wanted),
                             args_names="ids")
            key_dtype = _F32 if self.dtype == torch.int8 else self.dtype
            specs = [((n,), torch.bool), ((n, self.dim), key_dtype)]
            if self.value_dim is not None:
                specs.append(((n, self.value_dim), self.value_dtype))

            def held() -> list[torch.Tensor]:
                found = rows >= 0
                out = [found] + [torch.zeros(shape, dtype=dtype, device=self.device) for shape, dtype in specs[1:]]
                out[1][found] = _query.gather_keys(local._blocks, rows[found])
                if self.value_dim is not None:
                    out[2][found] = _query.gather(local._blocks, "values", rows[found])
                return out

            parts = [torch.stack(x) for x in zip(*self._comm.exchange(what, held, specs))]
            found = parts[0]
            missing = ~found.any(0)
            if bool(missing.any()):
                raise ValueError(f"ids not in the store: {wanted[missing.to(wanted.device)][:5].tolist()}"
                                 f"{' ...' if int(missing.sum()) > 5 else ''}")
            owner = found.to(torch.uint8).argmax(0)
            picked = [p[owner, torch.arange(n, device=p.device)].to(self.device) for p in parts[1:]]
            return picked[0], (picked[1] if self.value_dim is not None else None)

    def contains(self, ids) -> torch.Tensor:
        """bool [n]: which of ``ids`` (the same on every rank) any rank holds (collective)."""
        with self._call("contains") as what, self._local._lock.read():
            local, wanted, error = self._local, None, None
            try:
                wanted = check.ids("ids", ids, local._spec, unique=False)
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            self._comm.agree(what, error, method="contains", args=0 if wanted is None else hash64(wanted),
                             args_names="ids")
            parts = self._comm.exchange(what, lambda: [local._index.lookup(wanted, local._live) >= 0],
                                        [((int(wanted.numel()),), torch.bool)])
            return torch.stack([p[0] for p in parts]).any(0).to(self.device)

    def __contains__(self, id_: object) -> bool:
        """Collective, like :meth:`contains`; a non-id (not an int >= 0) is in no store."""
        valid = not isinstance(id_, bool) and isinstance(id_, (int, np.integer)) and id_ >= 0
        got = self.contains(torch.tensor([int(id_)] if valid else [], dtype=_I64, device=self.device))
        return bool(got.any())

    def ids(self) -> torch.Tensor:
        """Ids of every memory on every rank, ascending, int64 [len] (collective)."""
        with self._call("ids") as what:
            own, error = None, None
            try:
                own = self._local.ids()
            except Exception as exc:  # noqa: BLE001 - agreed on below
                error = exc
            n = 0 if own is None else int(own.numel())
            counts = self._comm.agree(what, error, method="ids", words=[n])[:, 0].tolist()
            everyone = torch.cat(self._comm.gather_rows(what, own.to(self._comm.device), counts))
            return torch.sort(everyone).values.to(self.device)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save every shard under one directory (collective; see :mod:`mnemonix.distributed._persist`).

        ``path`` must be the same on every rank and visible to every rank (a shared
        filesystem). The new generation replaces the previous one atomically.
        """
        with self._call("save"):
            _persist.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False, device: str | torch.device | None = None,
             verify: bool | str | None = None, group=None) -> ShardedMemoryStore:
        """Load a saved sharded store (or a plain MemoryStore directory) on any number of ranks (collective).

        With as many ranks as shards, rank r loads shard r; otherwise the rows are split
        into equal ranges of the shards' concatenation. ``mmap``, ``verify`` as
        :meth:`MemoryStore.load <mnemonix.store.MemoryStore.load>`; ``device`` as the constructor.
        """
        comm = Comm(group)
        comm.start("load")
        try:
            local, length, next_id = _persist.load(comm, path, mmap=mmap, device=device, verify=verify)
        finally:
            comm.finish()
        store = cls.__new__(cls)
        store._setup(comm, local, length=length, next_id=next_id)
        return store

    def verify(self) -> None:
        """Check the SHA-256 of every segment this rank maps (local; see :meth:`MemoryStore.verify`)."""
        self._local.verify()
