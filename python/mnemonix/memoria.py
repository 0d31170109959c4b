"""Memoria-compatible engram memory with a sparse Hebbian graph.

Memoria (Park & Bak 2023, "Memoria: Hebbian Memory Architecture for Human-Like
Sequential Processing", arXiv:2310.03052; seeds/004_0d62d127fa438a19.txt) keeps
engrams in working, short-term and long-term memory, reminds short-term engrams
by distance to the working memory, walks long-term engrams along co-fire
("fire together, wire together") counts, and ages engrams by a lifespan.
``from mnemonix.memoria import Memoria, EngramType`` runs code written for
memoria-pytorch 1.1.0 unchanged.

What differs from memoria-pytorch, and why:

* Co-fire counts are a sparse graph in C++ (``mnemonix._core.hebbian``):
  per batch row, engram id -> sorted (neighbour slot, count) vector, 8 bytes per
  directed edge. Chosen by measurement over a torch sorted-COO/CSR store: a step
  fires ~110 engrams together (~12k directed pair updates) into millions of
  edges. Measured on one (shared) core with 3.5M directed entries (10k engrams):
  the C++ fire-together takes 0.34 ms; the torch store needs a re-sort or
  re-insert over all edges, 320 ms (searchsorted + insert + argsort) or 480 ms
  (cat + unique + scatter_add). The greedy long-term walk is sequential (each
  pick depends on the visited set of the step before), which suits neither
  torch ops nor a GPU; in C++ it takes < 1 ms for ~500 walks at 10k engrams.
  The original keeps a dense int32 [B, M, M] tensor (400 MB per row at 10k
  engrams). ``engrams.induce_counts`` still densifies on demand (slow: O(M^2)).
* The per-engram scalars go through the fused :func:`mnemonix.ops.lifespan_step`
  (scatter-add, decay, age, type transitions, keep-mask, prefix sum), then one
  compaction of every per-engram array.
* Distances never build [B, W, M, H]: a float64 GEMM ranks the engrams and an
  error bound certifies that its top-k equals the top-k of the original's
  float32 arithmetic (which runs, chunked, only at near-ties).
* Random tie-breaking takes a ``generator``. ``tie_break="random"`` (default)
  draws one number per tie from it; ``tie_break="original"`` consumes the random
  stream exactly like memoria-pytorch (an fp16 uniform per (slot, engram): O(S M)
  per step) so that runs with ties reproduce bit for bit.
* Quirks of the original are kept by default (see ``docs/memoria.md``); each has a
  ``fix_*`` option, ``fix_quirks=True`` turns all of them off.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mnemonix import _checks, _io, ops

__all__ = [
    "EngramConnection",
    "EngramHistory",
    "EngramInfo",
    "EngramType",
    "Engrams",
    "EngramsInfo",
    "Firing",
    "HistoryManager",
    "Memoria",
]

FORMAT = "mnemonix.memoria"
FORMAT_VERSION = 1
_CHUNK_ELEMENTS = 1 << 18  # bound of one [B, W, chunk, H] distance temporary (1 MB in float32)


class EngramType(Enum):
    NULL = 0
    WORKING = 1
    SHORTTERM = 2
    LONGTERM = 3


def _core():
    from mnemonix._core import hebbian

    return hebbian


# ----------------------------------------------------------------------------
# summaries (same fields as memoria-pytorch's types)
# ----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class EngramConnection:
    source_id: int
    target_id: int
    weight: float  #: co-fire count / fire count of the source
    cofire_count: int


@dataclass(slots=True, frozen=True)
class EngramInfo:
    id: int
    type: Literal["WORKING", "SHORTTERM", "LONGTERM"]
    lifespan: float
    age: int | None
    fire_count: int
    outgoings: tuple[EngramConnection, ...]
    incoming: tuple[EngramConnection, ...]

    @property
    def cofire_counts(self) -> dict[int, int]:
        return {edge.target_id: edge.cofire_count for edge in self.outgoings}


@dataclass(slots=True, frozen=True)
class EngramsInfo:
    engrams: dict[int, EngramInfo]
    edges: dict[tuple[int, int], EngramConnection]
    working: tuple[int, ...]
    shortterm: tuple[int, ...]
    longterm: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class Firing:
    timestep: int
    engram_id: int
    lifespan_gain: float


@dataclass(slots=True, frozen=True)
class EngramHistory:
    id: int
    creation_timestep: int
    deletion_timestep: int | None
    duration: int | None
    firing_times: list[int]
    firings: list[Firing]
    summaries: list[EngramsInfo]


class HistoryManager:
    """History of one batch row's engram summaries (creation, deletion, firings)."""

    def __init__(self) -> None:
        self.summaries: list[EngramsInfo] = []
        self.engram_creation_times: dict[int, int] = {}
        self.engram_deletion_times: dict[int, int] = {}
        self.engram_durations: dict[int, int] = {}
        self.engram_firing_times: dict[int, list[int]] = defaultdict(list)
        self.engram_firings: dict[int, list[Firing]] = defaultdict(list)
        self.firings_per_time: list[list[Firing]] = []
        self.alive_engram_ids: list[int] = []
        self.deleted_engram_ids: list[int] = []

    def __len__(self) -> int:
        return len(self.summaries)

    def __getitem__(self, index: int) -> EngramsInfo:
        return self.summaries[index]

    @property
    def timestep(self) -> int:
        return len(self)

    @property
    def engram_ids(self) -> list[int]:
        return list(self.engram_creation_times)

    @property
    def engram_fire_counts(self) -> dict[int, int]:
        return {engram_id: len(firings) for engram_id, firings in self.engram_firings.items()}

    def add_summary(self, summary: EngramsInfo) -> None:
        """Record one step: new engrams, engrams whose fire count grew, deleted engrams."""
        now = self.timestep
        previous = self.summaries[-1].engrams if self.summaries else {}
        alive_before = set(self.alive_engram_ids)
        firings = []
        for engram_id, info in summary.engrams.items():
            if engram_id not in alive_before:
                self.engram_creation_times[engram_id] = now
            elif engram_id in previous and info.fire_count > previous[engram_id].fire_count:
                firing = Firing(now, engram_id, info.lifespan - previous[engram_id].lifespan + 1.0)
                self.engram_firing_times[engram_id].append(now)
                self.engram_firings[engram_id].append(firing)
                firings.append(firing)
        self.firings_per_time.append(firings)
        for engram_id in self.alive_engram_ids:
            if engram_id not in summary.engrams:
                self.engram_deletion_times[engram_id] = now
                self.deleted_engram_ids.append(engram_id)
        self.alive_engram_ids = list(summary.engrams)
        for engram_id in self.alive_engram_ids:
            self.engram_durations[engram_id] = now - self.engram_creation_times[engram_id] + 1
        self.summaries.append(summary)

    def inspect(self, engram_id: int) -> EngramHistory:
        created = self.engram_creation_times[engram_id]
        deleted = self.engram_deletion_times.get(engram_id)
        return EngramHistory(
            id=engram_id,
            creation_timestep=created,
            deletion_timestep=deleted,
            duration=self.engram_durations.get(engram_id),
            firing_times=self.engram_firing_times.get(engram_id, []),
            firings=self.engram_firings.get(engram_id, []),
            summaries=self.summaries[created:deleted],
        )


# ----------------------------------------------------------------------------
# helpers on padded [B, M] layouts
# ----------------------------------------------------------------------------


def _indices_with_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions where ``mask`` [B, M] is True, ascending, [B, K] with K = max count.

    Shorter rows are padded with -1 at the front (memoria-pytorch's layout).
    """
    batch, length = mask.shape
    counts = mask.sum(dim=1)
    width = int(counts.max()) if batch and length else 0
    out = torch.full((batch, width), -1, dtype=torch.long, device=mask.device)
    if width == 0:
        return out
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: ascending positions within each row
    row_start = counts.cumsum(0) - counts
    rank = torch.arange(rows.numel(), device=mask.device) - row_start[rows]
    out[rows, width - counts[rows] + rank] = cols
    return out


def _gather_rows(values: torch.Tensor, index: torch.Tensor, fill: float | int) -> torch.Tensor:
    """``values[b, index[b, k]]`` for [B, M, ...] values; -1 (or any negative) gives ``fill``."""
    missing = index < 0
    safe = index.clamp(min=0)
    if values.ndim == 2:
        out = values.gather(1, safe) if values.shape[1] else torch.full_like(index, fill, dtype=values.dtype)
        return out.masked_fill(missing, fill)
    if values.shape[1] == 0:
        return torch.full((*index.shape, *values.shape[2:]), fill, dtype=values.dtype, device=values.device)
    expanded = safe.view(*safe.shape, *([1] * (values.ndim - 2))).expand(*safe.shape, *values.shape[2:])
    out = values.gather(1, expanded)
    return out.masked_fill(missing.view(*missing.shape, *([1] * (values.ndim - 2))), fill)


def _unique_rows(values: torch.Tensor) -> torch.Tensor:
    """Unique entries of each row of ``values`` [B, N] (ints, -1 included as a value).

    The order is the one memoria-pytorch returns (its ``super_unique``): the
    order in which ``torch.topk`` lists the set bits of a presence mask over
    ``[min, max]``; shorter rows are filled with -1. Kept for bit parity of the
    reminded indices.
    """
    if values.numel() == 0:
        return values
    low = values.min()
    shifted = values - low
    presence = torch.zeros((values.shape[0], int(shifted.max()) + 1), dtype=torch.int32, device=values.device)
    presence.scatter_(1, shifted.long(), 1)
    width = min(values.shape[1], int(presence.sum(dim=1).max()))
    valid, order = presence.topk(width, dim=1)
    return (order + low).masked_fill(valid == 0, -1)


def _sorted_unique_front_padded(local: torch.Tensor) -> torch.Tensor:
    """Distinct non-negative entries of each row, ascending, padded with -1 at the front."""
    batch = local.shape[0]
    rows = []
    for b in range(batch):
        row = local[b]
        rows.append(torch.unique(row[row >= 0]))
    width = max((len(r) for r in rows), default=0)
    out = torch.full((batch, width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        if len(row):
            out[b, width - len(row):] = row
    return out


def _neg_sq_l2_exact(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """-||q - k||^2 [B, W, K] for queries [B, W, H] and keys [B, K, H], in the original's float32
    arithmetic (difference, square, sum over H), in chunks over K: no temporary exceeds ~1 MB.
    """
    batch, width, hidden = queries.shape
    num_keys = keys.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, batch * width * hidden))
    parts = []
    for start in range(0, num_keys, chunk):
        diff = queries.unsqueeze(2) - keys[:, start:start + chunk].unsqueeze(1)
        parts.append(diff.pow_(2).sum(dim=3).neg_())
    if not parts:
        return queries.new_zeros((batch, width, 0))
    return torch.cat(parts, dim=2)


def _nearest_keys(queries: torch.Tensor, keys: torch.Tensor, k: int, *, reduce: str, mode: str,
                  invalid: torch.Tensor | None = None) -> torch.Tensor:
    """The ``k`` keys with the highest ``reduce`` (mean or sum) over queries of -||q - key||^2.

    queries [B, W, H], keys [B, K, H] -> indices [B, k] (a set: the order is not meaningful).
    ``invalid`` [B, K] keys never win (score -inf).

    mode "exact": the original's float32 arithmetic (chunked), then top-k.
    mode "certified": float64 GEMM scores ``2 q.k - |q|^2 - |k|^2`` plus a rigorous bound
    on how far the original's float32 result can lie from them: relative error
    <= (H + W + 8) u for sums of non-negative terms (u = 2^-24), plus the float64
    cancellation error. When the bound separates the top-k from the rest, the set
    is the one the exact arithmetic gives; otherwise (near-ties) the exact path runs.
    mode "gemm": float32 GEMM, no guarantee at near-ties (fastest).
    """
    batch, width, hidden = queries.shape
    num_keys = keys.shape[1]
    k = min(k, num_keys)
    if k == 0:
        return torch.zeros((batch, 0), dtype=torch.long, device=keys.device)
    if mode == "exact" or width == 0:
        dist = _neg_sq_l2_exact(queries, keys)
        score = dist.mean(dim=1) if reduce == "mean" else dist.sum(dim=1)
        if invalid is not None:
            score = score.masked_fill(invalid, float("-inf"))
        return score.topk(k, dim=1).indices
    if mode == "gemm":
        score, _ = _gemm_scores(queries, keys, reduce, torch.float32, invalid)
        return score.topk(k, dim=1).indices
    exact_error = (hidden + width + 8) * 1.05 * 2.0**-24  # relative, of the original's float32 arithmetic
    # The float32 bound assumes IEEE float32 products: skip that stage when float32 matmuls
    # may run in TF32 / bf16 (torch.set_float32_matmul_precision other than "highest").
    exact_fp32 = torch.get_float32_matmul_precision() == "highest"
    for precision in (torch.float32, torch.float64) if exact_fp32 else (torch.float64,):
        score, margin = _gemm_scores(queries, keys, reduce, precision, invalid)
        top = score.topk(k, dim=1).indices
        if k == num_keys:
            return top
        margin = margin + exact_error * score.abs()
        finite = torch.isfinite(score)
        lower = torch.where(finite, score - margin, torch.full_like(score, float("inf"))).gather(1, top).amin(dim=1)
        rest = torch.ones_like(score, dtype=torch.bool).scatter_(1, top, False) & finite
        upper = torch.where(rest, score + margin, torch.full_like(score, float("-inf"))).amax(dim=1)
        if bool((lower > upper).all()):
            return top
    return _nearest_keys(queries, keys, k, reduce=reduce, mode="exact", invalid=invalid)


def _gemm_scores(queries: torch.Tensor, keys: torch.Tensor, reduce: str, precision: torch.dtype,
                 invalid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``reduce_w -(|q|^2 - 2 q.k + |k|^2)`` [B, K] in ``precision`` and a bound on their error.

    Error of a dot product of H terms: <= gamma_H * sum |terms| (gamma_n ~ n u); with
    |q.k| <= (|q|^2 + |k|^2) / 2 every distance is off by at most
    ~2 (H + 6) u (|q|^2 + |k|^2), and the reduction over W adds (W + 2) u |score|.
    """
    width, hidden = queries.shape[1], queries.shape[2]
    unit = 2.0**-24 if precision == torch.float32 else 2.0**-53
    q, key = queries.to(precision), keys.to(precision)
    q_norm = q.pow(2).sum(-1)  # [B, W]
    k_norm = key.pow(2).sum(-1)  # [B, K]
    dist = (q_norm.unsqueeze(2) - 2.0 * (q @ key.transpose(1, 2))).add_(k_norm.unsqueeze(1))
    if reduce == "mean":
        score = -dist.mean(dim=1)
        scale = q_norm.mean(dim=1, keepdim=True) + k_norm
    else:
        score = -dist.sum(dim=1)
        scale = q_norm.sum(dim=1, keepdim=True) + width * k_norm
    margin = 1.05 * unit * (2 * (hidden + 6) * scale + (width + 2) * score.abs())
    score, margin = score.double(), margin.double()
    if invalid is not None:
        score = score.masked_fill(invalid, float("-inf"))
        margin = margin.masked_fill(invalid, 0.0)
    return score, margin


# ----------------------------------------------------------------------------
# Engrams
# ----------------------------------------------------------------------------


class Engrams:
    """The engram store of a :class:`Memoria`: padded per-engram arrays + a sparse co-fire graph.

    Rows may hold different numbers of engrams: shorter rows are padded at the
    front with NULL engrams (type 0, lifespan -1, data 0, id -1), as in
    memoria-pytorch.

    Attributes
    ----------
    data : Tensor [B, M, H] float32
    lifespan : Tensor [B, M] float32
    engrams_types : Tensor [B, M] uint8 (:class:`EngramType` values)
    age : Tensor [B, M] int32, or None unless ``track_age``
    engram_ids : Tensor [B, M] int32, or None unless ``track_engram_id``
    fire_count : Tensor [B, M] int32 (from the graph; -1 for NULL padding)
    induce_counts : Tensor [B, M, M] int32 -- densified on demand: slow, O(M^2) memory
    """

    def __init__(
        self, batch_size: int = 0, hidden_dim: int = 0, *, track_age: bool = False,
        track_engram_id: bool = False, device: torch.device | None = None,
    ) -> None:
        dev = device or torch.device("cpu")
        self.track_age = track_age
        self.track_engram_id = track_engram_id
        self._bufs: dict[str, torch.Tensor] = {}
        self._length = 0
        self.data = torch.zeros((batch_size, 0, hidden_dim), dtype=torch.float32, device=dev)
        self.lifespan = torch.zeros((batch_size, 0), dtype=torch.float32, device=dev)
        self.engrams_types = torch.zeros((batch_size, 0), dtype=torch.uint8, device=dev)
        self._age = torch.zeros((batch_size, 0), dtype=torch.int32, device=dev)
        self._uids = torch.zeros((batch_size, 0), dtype=torch.int64, device=dev)
        self._slots = torch.zeros((batch_size, 0), dtype=torch.int64, device=dev)
        self.graph = _core().HebbianGraph(batch_size)

    # Per-engram arrays live in buffers with spare columns: appending L engrams copies
    # L rows, not the whole store. The attributes are views of the first M columns.
    def _field(name: str, doc: str) -> property:  # noqa: N805 - runs at class creation
        def get(self: Engrams) -> torch.Tensor:
            return self._bufs[name][:, :self._length]

        def set_(self: Engrams, value: torch.Tensor) -> None:
            self._bufs[name] = value
            self._length = value.shape[1]

        return property(get, set_, doc=doc)

    data = _field("data", "[B, M, H] float32 engram data")
    lifespan = _field("lifespan", "[B, M] float32 lifespans")
    engrams_types = _field("engrams_types", "[B, M] uint8 EngramType values")
    _age = _field("_age", "[B, M] int32 ages (always tracked internally)")
    _uids = _field("_uids", "[B, M] int64 engram ids (always tracked internally; -1 for padding)")
    _slots = _field("_slots", "[B, M] int64 node slots of the engrams in the graph (-1 for padding)")
    del _field

    def _append(self, values: dict[str, torch.Tensor]) -> None:
        """Append [B, L, ...] to every per-engram array (amortised O(L) copies)."""
        added = next(iter(values.values())).shape[1]
        new_length = self._length + added
        for name, value in values.items():
            buf = self._bufs[name]
            if buf.shape[1] < new_length:
                capacity = max(new_length, self._length + self._length // 2 + added, 16)
                grown = torch.empty((buf.shape[0], capacity, *buf.shape[2:]), dtype=buf.dtype, device=buf.device)
                grown[:, :self._length] = buf[:, :self._length]
                self._bufs[name] = buf = grown
            buf[:, self._length:new_length] = value
        self._length = new_length

    def _compact(self, step, pads: dict[str, tuple[torch.Tensor, float | int]]) -> None:
        """Replace every per-engram array by its compaction (with spare columns for appends)."""
        width = int(step.num_kept.max()) if step.num_kept.numel() else 0
        capacity = width + max(width // 2, 64)
        for name, (values, pad) in pads.items():
            out = torch.empty((values.shape[0], capacity, *values.shape[2:]), dtype=values.dtype,
                              device=values.device)
            ops.compact_engrams(values, step, pad_value=pad, out=out)
            self._bufs[name] = out
        self._length = width

    @classmethod
    def empty(cls, track_age: bool = False, track_engram_id: bool = False) -> Engrams:
        return cls(0, 0, track_age=track_age, track_engram_id=track_engram_id)

    # shapes ---------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.data.shape[0]

    @property
    def memory_length(self) -> int:
        return self.data.shape[1]

    @property
    def hidden_dim(self) -> int:
        return self.data.shape[2]

    def __len__(self) -> int:
        return self.lifespan.numel()

    # views ----------------------------------------------------------------
    @property
    def age(self) -> torch.Tensor | None:
        return self._age if self.track_age else None

    @property
    def engram_ids(self) -> torch.Tensor | None:
        return self._uids.to(torch.int32) if self.track_engram_id else None

    @property
    def working_memory_mask(self) -> torch.Tensor:
        return self.engrams_types == EngramType.WORKING.value

    @property
    def shortterm_memory_mask(self) -> torch.Tensor:
        return self.engrams_types == EngramType.SHORTTERM.value

    @property
    def longterm_memory_mask(self) -> torch.Tensor:
        return self.engrams_types == EngramType.LONGTERM.value

    @property
    def fire_count(self) -> torch.Tensor:
        uids = self._uids.cpu().numpy()
        out = np.stack([self.graph.fire_count(b, uids[b]) for b in range(self.batch_size)]) if len(self) else (
            np.zeros(tuple(self._uids.shape), dtype=np.int32))
        out = np.where(uids < 0, -1, out).astype(np.int32)
        return torch.from_numpy(out).to(self.data.device)

    @property
    def induce_counts(self) -> torch.Tensor:
        """Dense co-fire counts [B, M, M] int32 (diagonal: fire counts; NULL padding: -1).

        Built from the sparse graph on every access: O(M^2) time and memory. Slow;
        kept for compatibility with code that reads memoria-pytorch's dense matrix.
        """
        uids = self._uids.cpu().numpy()
        length = self.memory_length
        out = np.empty((self.batch_size, length, length), dtype=np.int32)
        for b in range(self.batch_size):
            out[b] = self.graph.dense(b, uids[b], uids[b])
        return torch.from_numpy(out).to(self.data.device)

    def num_edges(self) -> int:
        """Undirected co-fire edges over all rows."""
        return sum(self.graph.num_edges(b) for b in range(self.batch_size)) // 2

    def nbytes(self) -> int:
        """Approximate bytes held: per-engram arrays + graph (8 bytes per directed edge + ~64 per node)."""
        arrays = sum(t.numel() * t.element_size() for t in
                     (self.data, self.lifespan, self.engrams_types, self._age, self._uids))
        graph = sum(8 * self.graph.num_edges(b) + 64 * self.graph.num_nodes(b) for b in range(self.batch_size))
        return arrays + graph

    def status_summary(self) -> list[EngramsInfo]:
        """One :class:`EngramsInfo` per batch row, built from the sparse graph.

        Edge weight ``i -> j`` is ``count(i, j) / fire_count(i)``, as in memoria-pytorch.
        """
        if not self.track_engram_id:
            raise ValueError("status_summary needs track_engram_id=True (Memoria(track_id=True))")
        infos = []
        uids = self._uids.cpu()
        types = self.engrams_types.cpu()
        lifespan = self.lifespan.cpu()
        age = self._age.cpu()
        for b in range(self.batch_size):
            alive = {int(u): i for i, u in enumerate(uids[b].tolist()) if types[b, i] != EngramType.NULL.value}
            fires = dict(zip(*(a.tolist() for a in self.graph.fires(b))))
            src, dst, cnt = (a.tolist() for a in self.graph.edges(b))
            out_edges: dict[int, list[EngramConnection]] = defaultdict(list)
            in_edges: dict[int, list[EngramConnection]] = defaultdict(list)
            edges = {}
            order = sorted(range(len(src)), key=lambda k: (alive.get(src[k], -1), alive.get(dst[k], -1)))
            for k in order:
                s, d, c = src[k], dst[k], cnt[k]
                if s not in alive or d not in alive or fires.get(s, 0) <= 0:
                    continue
                conn = EngramConnection(source_id=s, target_id=d, weight=c / fires[s], cofire_count=c)
                out_edges[s].append(conn)
                in_edges[d].append(conn)
                edges[s, d] = conn
            engrams = {}
            by_type: dict[int, list[int]] = {1: [], 2: [], 3: []}
            for uid, i in alive.items():
                kind = int(types[b, i])
                by_type[kind].append(uid)
                engrams[uid] = EngramInfo(
                    id=uid, type=EngramType(kind).name, lifespan=float(lifespan[b, i]),
                    age=int(age[b, i]) if self.track_age else None, fire_count=int(fires.get(uid, 0)),
                    outgoings=tuple(out_edges[uid]), incoming=tuple(in_edges[uid]),
                )
            infos.append(EngramsInfo(engrams=engrams, edges=edges, working=tuple(by_type[1]),
                                     shortterm=tuple(by_type[2]), longterm=tuple(by_type[3])))
        return infos


# ----------------------------------------------------------------------------
# Memoria
# ----------------------------------------------------------------------------


class Memoria:
    """Memoria engram memory, drop-in for memoria-pytorch's ``Memoria``.

    Parameters
    ----------
    num_reminded_stm : int
        Short-term engrams reminded per step (top-k by distance to working memory).
    stm_capacity : int
        Short-term engrams kept per row; the oldest beyond it become long-term.
    ltm_search_depth : int
        Steps of the greedy co-fire walk from each initial long-term engram.
    initial_lifespan : int or float
        Lifespan of new working-memory engrams.
    num_final_ltms : int
        Long-term engrams reminded per step (nearest to the working memory among those found).
    track_age, track_id, keep_history : bool
        As in memoria-pytorch (``keep_history`` turns on both trackers).
    device : str or torch.device, optional
        Where the per-engram arrays live (default: the device of the first data).
    generator : torch.Generator, optional
        Random tie-breaking (default: torch's global generator).
    tie_break : {"random", "original"}
        ``"random"``: one draw per tie from ``generator``. ``"original"``: consume the
        random stream exactly like memoria-pytorch (O(S M) per step).
    distances : {"certified", "exact", "gemm"}
        How working-memory distances rank engrams. "exact": the original's float32
        arithmetic, in chunks. "certified" (default): a float64 GEMM whose top-k is
        certified against the exact float32 result by an error bound, falling back to
        "exact" at near-ties: the same reminded engrams, much faster. "gemm": float32
        GEMM, no guarantee at near-ties.
    fix_empty_ltm, fix_negative_index, fix_ltm_local_index, fix_padding : bool
        Turn off one quirk of the original each (see ``docs/memoria.md``).
    fix_quirks : bool
        Turn off all of them.
    """

    def __init__(
        self,
        num_reminded_stm: int,
        stm_capacity: int,
        ltm_search_depth: int,
        initial_lifespan: int | float,
        num_final_ltms: int,
        track_age: bool = False,
        track_id: bool = False,
        keep_history: bool = False,
        device: str | torch.device | None = None,
        *,
        generator: torch.Generator | None = None,
        tie_break: Literal["random", "original"] = "random",
        distances: Literal["certified", "exact", "gemm"] = "certified",
        fix_empty_ltm: bool = False,
        fix_negative_index: bool = False,
        fix_ltm_local_index: bool = False,
        fix_padding: bool = False,
        fix_quirks: bool = False,
    ) -> None:
        self.num_reminded_stm = _checks.nonneg_int("num_reminded_stm", num_reminded_stm)
        self.stm_capacity = _checks.nonneg_int("stm_capacity", stm_capacity)
        self.ltm_search_depth = _checks.nonneg_int("ltm_search_depth", ltm_search_depth)
        self.num_final_ltms = _checks.nonneg_int("num_final_ltms", num_final_ltms)
        if isinstance(initial_lifespan, bool) or not isinstance(initial_lifespan, (int, float)):
            raise TypeError(f"initial_lifespan must be a number, got {type(initial_lifespan).__name__}")
        if not np.isfinite(initial_lifespan):
            raise ValueError(f"initial_lifespan must be finite, got {initial_lifespan!r}")
        if distances not in ("certified", "exact", "gemm"):
            raise ValueError(f"distances must be 'certified', 'exact' or 'gemm', got {distances!r}")
        if tie_break not in ("random", "original"):
            raise ValueError(f"tie_break must be 'random' or 'original', got {tie_break!r}")
        if keep_history:
            if not track_id:
                track_id = True
                print("Warning: `keep_history` is True, so `track_id` is automatically set to True", file=sys.stderr)
            if not track_age:
                track_age = True
                print("Warning: `keep_history` is True, so `track_age` is automatically set to True", file=sys.stderr)
        self.initial_lifespan = initial_lifespan
        self.track_age = track_age
        self.track_id = track_id
        self.keep_history = keep_history
        self.device = torch.device(device) if device else None
        self.ext_device: torch.device | None = None
        self.generator = generator
        self.tie_break = tie_break
        self.distances = distances
        self.fix_empty_ltm = fix_empty_ltm or fix_quirks
        self.fix_negative_index = fix_negative_index or fix_quirks
        self.fix_ltm_local_index = fix_ltm_local_index or fix_quirks
        self.fix_padding = fix_padding or fix_quirks
        self.engrams: Engrams
        self.next_engram_id = 0
        self.timestep = 0
        self.history: list[HistoryManager] | None = None
        self._next_uid = 0
        self.reset_memory()

    def reset_memory(self) -> None:
        """Forget every engram and edge."""
        self.engrams = Engrams.empty(track_age=self.track_age, track_engram_id=self.track_id)
        self.next_engram_id = 0
        self._next_uid = 0
        self.timestep = 0
        self.history = None

    # add ------------------------------------------------------------------
    @torch.no_grad()
    def add_working_memory(self, data: torch.Tensor) -> None:
        """Append ``data`` [B, L, H] as working-memory engrams (lifespan = initial_lifespan)."""
        _checks.tensor("data", data, ndim=3, dtypes=None)
        if data.dtype == torch.bool or data.is_complex():
            raise TypeError(f"data must have a real dtype, got {data.dtype}")
        e = self.engrams
        if len(e) and (data.shape[0] != e.batch_size or data.shape[2] != e.hidden_dim):
            raise ValueError(
                f"data must have shape [{e.batch_size}, L, {e.hidden_dim}] (batch and hidden size of the "
                f"stored engrams), got {tuple(data.shape)}"
            )
        values = data.detach().float()
        _checks.finite("data", values)
        self.ext_device = data.device
        self.device = self.device or data.device
        values = values.to(self.device)
        batch, length, hidden = values.shape
        if len(e) == 0:  # like the original, an empty store takes any batch size
            e = Engrams(batch, hidden, track_age=self.track_age, track_engram_id=self.track_id, device=self.device)
            self.engrams = e
        uids = torch.arange(self._next_uid, self._next_uid + length, dtype=torch.int64, device=self.device)
        e._append({
            "data": values,
            "lifespan": torch.full((batch, length), float(self.initial_lifespan), device=self.device),
            "engrams_types": torch.full((batch, length), EngramType.WORKING.value, dtype=torch.uint8,
                                        device=self.device),
            "_age": torch.zeros((batch, length), dtype=torch.int32, device=self.device),
            "_uids": uids.unsqueeze(0).expand(batch, length),
            "_slots": torch.from_numpy(e.graph.add_nodes(uids.unsqueeze(0).expand(batch, length).cpu().numpy()))
            .to(self.device),
        })
        if length:
            self._next_uid += length
            if self.track_id:
                self.next_engram_id = self._next_uid
        self.timestep += 1

    # remind ---------------------------------------------------------------
    def _draw_seed(self) -> int:
        device = self.generator.device if self.generator is not None else "cpu"
        return int(torch.randint(0, 2**62, (1,), generator=self.generator, device=device))

    @torch.no_grad()
    def remind(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Remind short- and long-term engrams with the current working memory; they fire together.

        Returns
        -------
        memories : Tensor [B, R, H] float32 on the device of the last added data
        indices : Tensor [B, R] int64 -- engram positions, -1 pads (unique per row)
        """
        e = self.engrams
        dev = e.data.device
        batch, length = e.engrams_types.shape
        types = e.engrams_types
        wm_idx = _indices_with_mask(types == EngramType.WORKING.value)
        stm_idx = _indices_with_mask(types == EngramType.SHORTTERM.value)
        ltm_mask = types == EngramType.LONGTERM.value
        ltm_idx = _indices_with_mask(ltm_mask)
        wm_data = _gather_rows(e.data, wm_idx, 0.0)
        num_stm = stm_idx.shape[1]

        # 1. short-term engrams nearest to the working memory (mean of -squared L2)
        if num_stm:
            stm_data = _gather_rows(e.data, stm_idx, 0.0)
            top = _nearest_keys(wm_data, stm_data, self.num_reminded_stm, reduce="mean", mode=self.distances,
                                invalid=(stm_idx < 0) if self.fix_padding else None)
            chosen = torch.zeros_like(stm_idx, dtype=torch.bool).scatter_(1, top, True)
            reminded_stm = stm_idx.masked_fill(~chosen, -1)
            if self.fix_padding:
                reminded_stm = _indices_compact(reminded_stm)
        else:
            reminded_stm = stm_idx

        # 2.-3. initial long-term engrams and the co-fire walk
        found = self._search_longterm(reminded_stm, ltm_idx, ltm_mask)

        # 4. the long-term engrams nearest to the working memory (sum of -squared L2)
        if found.shape[1]:
            found_pos = _gather_rows(ltm_idx, found, -1) if self.fix_ltm_local_index else found
            found_data = _gather_rows(e.data, found_pos, 0.0)
            top = _nearest_keys(wm_data, found_data, self.num_final_ltms, reduce="sum", mode=self.distances,
                                invalid=(found_pos < 0) if self.fix_padding else None)
            final_ltm = found_pos.gather(1, top)
        else:
            final_ltm = found

        reminded = torch.cat([reminded_stm, final_ltm.to(dev)], dim=1)

        # 5. fire together, wire together
        fired = torch.cat([wm_idx, reminded], dim=1)
        fired_uids = _gather_rows(e._uids, fired, -1)
        if batch and fired_uids.shape[1]:
            e.graph.fire_together(fired_uids.cpu().numpy())

        reminded = _unique_rows(reminded)
        memories = _gather_rows(e.data, reminded, 0.0)
        out_device = self.ext_device or dev
        return memories.to(out_device).contiguous(), reminded.to(out_device)

    def _search_longterm(self, reminded_stm: torch.Tensor, ltm_idx: torch.Tensor,
                         ltm_mask: torch.Tensor) -> torch.Tensor:
        """Long-term engram candidates [B, N]: local LTM indices (or positions, see fix_ltm_local_index)."""
        e = self.engrams
        batch, length = ltm_mask.shape
        num_slots = reminded_stm.shape[1]
        if num_slots == 0 or batch == 0:
            return torch.zeros((batch, 0), dtype=torch.long, device=e.data.device)
        if not bool(ltm_mask.any()):
            if self.tie_break == "original":  # the original draws its tie-break noise even here
                torch.rand((batch, num_slots, length), dtype=torch.float16, device=e.data.device,
                           generator=self.generator)
            if self.fix_empty_ltm:
                return torch.zeros((batch, 0), dtype=torch.long, device=e.data.device)
            # the original returns zeros here: engram 0 of every row is a candidate
            return torch.zeros((batch, 1), dtype=torch.long, device=e.data.device)
        slots = reminded_stm.cpu()
        queries = slots.clone()
        if not self.fix_negative_index:
            queries[queries < 0] = length - 1  # the original indexes its dense matrix with -1
        node_slots = e._slots.cpu()
        query_slots = _gather_rows(node_slots, queries, -1)
        ltm_positions = ltm_idx.cpu()
        ltm_slots = _gather_rows(node_slots, ltm_positions, -1)
        if self.tie_break == "original":
            uids = e._uids.cpu()
            initial = self._initial_ltm_original(_gather_rows(uids, queries, -1), ltm_slots, ltm_mask.cpu(), uids)
        else:
            initial = torch.from_numpy(e.graph.initial_ltm(
                query_slots.numpy(), ltm_slots.numpy(), ltm_positions.numpy(), length, self._draw_seed()))
        if self.fix_negative_index:
            initial = initial.masked_fill(slots < 0, -1)
        starts = _sorted_unique_front_padded(initial)
        walked = e.graph.walk(starts.numpy(), ltm_slots.numpy(), self.ltm_search_depth,
                              alias_negative=not self.fix_negative_index)
        found = _unique_rows(torch.from_numpy(walked))
        if self.fix_padding or self.fix_negative_index:
            found = _indices_compact(found)
        return found.to(e.data.device)

    def _initial_ltm_original(self, query_uids: torch.Tensor, ltm_slots: torch.Tensor, ltm_mask: torch.Tensor,
                              uids: torch.Tensor) -> torch.Tensor:
        """Initial LTM per slot with memoria-pytorch's tie-breaking and random stream (dense, O(S M))."""
        e = self.engrams
        batch, length = ltm_mask.shape
        counts = np.stack([e.graph.dense(b, query_uids[b].numpy(), uids[b].numpy()) for b in range(batch)])
        counts = torch.from_numpy(counts).to(e.data.device)
        counts.masked_fill_(~ltm_mask.to(counts.device).unsqueeze(1), -1)
        best = counts == counts.max(dim=2, keepdim=True).values
        noise = torch.rand(best.shape, dtype=torch.float16, device=best.device, generator=self.generator)
        chosen = (noise * best).argmax(dim=2).cpu()  # [B, S] positions
        # local index of each chosen position among the long-term engrams (-1 when not long-term)
        local = ltm_mask.long().cumsum(dim=1) - 1 + (ltm_slots.shape[1] - ltm_mask.sum(dim=1, keepdim=True))
        local = local.masked_fill(~ltm_mask, -1)
        return local.gather(1, chosen)

    # adjust ---------------------------------------------------------------
    @torch.no_grad()
    def adjust_lifespan_and_memories(self, indices: torch.Tensor, lifespan_delta: torch.Tensor) -> None:
        """Add ``lifespan_delta`` [B, R] at ``indices`` [B, R] (negative ignored, duplicates add up),
        age every engram, move WORKING -> SHORTTERM and the oldest SHORTTERM beyond capacity ->
        LONGTERM, and drop engrams whose lifespan reaches 0 (with their co-fire edges).

        Raises (and leaves the memory unchanged) on wrong shapes, out-of-range indices or NaN deltas.
        """
        e = self.engrams
        _checks.tensor("indices", indices, ndim=2, dtypes=(torch.int64, torch.int32, torch.int16, torch.uint8))
        _checks.tensor("lifespan_delta", lifespan_delta, ndim=2, dtypes=None)
        if indices.shape[0] != e.batch_size:
            raise ValueError(f"indices must have {e.batch_size} rows (the batch), got shape {tuple(indices.shape)}")
        if lifespan_delta.shape != indices.shape:
            raise ValueError(f"lifespan_delta must have the shape of indices {tuple(indices.shape)}, "
                             f"got {tuple(lifespan_delta.shape)}")
        dev = e.data.device
        step = ops.lifespan_step(
            e.lifespan, e.engrams_types, e._age, indices.to(dev).long(), lifespan_delta.to(dev), self.stm_capacity)
        dropped = ~step.keep & (e._uids >= 0)
        if bool(dropped.any()):
            e.graph.remove(_gather_rows(e._uids, _indices_with_mask(dropped), -1).cpu().numpy())
        if bool(step.keep.all()):
            e.lifespan, e.engrams_types, e._age = step.lifespan, step.types, step.age
        else:
            e._compact(step, {
                "data": (e.data, 0.0), "lifespan": (step.lifespan, -1.0),
                "engrams_types": (step.types, EngramType.NULL.value), "_age": (step.age, -1),
                "_uids": (e._uids, -1), "_slots": (e._slots, -1),
            })
        if self.keep_history:
            if self.history is None:
                self.history = [HistoryManager() for _ in range(indices.shape[0])]
            for history, summary in zip(self.history, e.status_summary()):
                history.add_summary(summary)

    # persistence ----------------------------------------------------------
    def _config(self) -> dict:
        return {
            "num_reminded_stm": self.num_reminded_stm, "stm_capacity": self.stm_capacity,
            "ltm_search_depth": self.ltm_search_depth, "initial_lifespan": self.initial_lifespan,
            "num_final_ltms": self.num_final_ltms, "track_age": self.track_age, "track_id": self.track_id,
            "keep_history": self.keep_history, "tie_break": self.tie_break,
            "distances": self.distances, "fix_empty_ltm": self.fix_empty_ltm,
            "fix_negative_index": self.fix_negative_index, "fix_ltm_local_index": self.fix_ltm_local_index,
            "fix_padding": self.fix_padding,
        }

    def save(self, path: str | Path) -> None:
        """Save the full state (engram arrays, ids, ages, co-fire graph, counters) atomically.

        The history (``keep_history``) is not saved.
        """
        e = self.engrams
        arrays = {
            "data": e.data.cpu().numpy(), "lifespan": e.lifespan.cpu().numpy(),
            "types": e.engrams_types.cpu().numpy(), "age": e._age.cpu().numpy(), "uids": e._uids.cpu().numpy(),
        }
        rows, src, dst, cnt, frow, fid, fcnt = [], [], [], [], [], [], []
        for b in range(e.batch_size):
            s, d, c = e.graph.edges(b)
            rows.append(np.full(len(s), b, dtype=np.int64))
            src.append(s)
            dst.append(d)
            cnt.append(c)
            ids, fires = e.graph.fires(b)
            frow.append(np.full(len(ids), b, dtype=np.int64))
            fid.append(ids)
            fcnt.append(fires)

        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

        arrays.update(edge_row=cat(rows, np.int64), edge_src=cat(src, np.int64), edge_dst=cat(dst, np.int64),
                      edge_count=cat(cnt, np.int32), fire_row=cat(frow, np.int64), fire_id=cat(fid, np.int64),
                      fire_count=cat(fcnt, np.int32))
        meta = {"config": self._config(), "next_engram_id": self.next_engram_id, "next_uid": self._next_uid,
                "timestep": self.timestep}
        _io.save_arrays(path, arrays, format=FORMAT, version=FORMAT_VERSION, meta=meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None,
             generator: torch.Generator | None = None) -> Memoria:
        """Load a memory saved by :meth:`save`; raises ``mnemonix._io.FormatError`` on a newer or corrupted file."""
        arrays, meta, _ = _io.load_arrays(path, format=FORMAT, max_version=FORMAT_VERSION)
        try:
            config = dict(meta["config"])
            memoria = cls(**config, device=device, generator=generator)
            data = torch.from_numpy(arrays["data"])
            batch, length, hidden = data.shape
            shapes = {"lifespan": np.float32, "types": np.uint8, "age": np.int32, "uids": np.int64}
            for key, dtype in shapes.items():
                if arrays[key].shape != (batch, length) or arrays[key].dtype != dtype:
                    raise _io.FormatError(f"array {key!r} has shape {arrays[key].shape} / {arrays[key].dtype}, "
                                          f"expected {(batch, length)} / {np.dtype(dtype)}")
        except (KeyError, TypeError) as exc:
            raise _io.FormatError(f"{str(path)!r} misses a Memoria field ({exc})") from exc
        dev = torch.device(device) if device else torch.device("cpu")
        e = Engrams(batch, hidden, track_age=memoria.track_age, track_engram_id=memoria.track_id, device=dev)
        e.data = data.to(dev)
        e.lifespan = torch.from_numpy(arrays["lifespan"]).to(dev)
        e.engrams_types = torch.from_numpy(arrays["types"]).to(dev)
        e._age = torch.from_numpy(arrays["age"]).to(dev)
        e._uids = torch.from_numpy(arrays["uids"]).to(dev)
        for b in range(batch):
            sel = arrays["edge_row"] == b
            e.graph.set_edges(b, arrays["edge_src"][sel], arrays["edge_dst"][sel], arrays["edge_count"][sel])
            sel = arrays["fire_row"] == b
            e.graph.set_fires(b, arrays["fire_id"][sel], arrays["fire_count"][sel])
        e._slots = torch.from_numpy(e.graph.add_nodes(arrays["uids"])).to(dev)
        memoria.engrams = e
        memoria.device = dev if length else memoria.device
        memoria.next_engram_id = int(meta["next_engram_id"])
        memoria._next_uid = int(meta["next_uid"])
        memoria.timestep = int(meta["timestep"])
        return memoria


def _indices_compact(values: torch.Tensor) -> torch.Tensor:
    """Move the non-negative entries of each row to the end (order kept), -1 in front; drop all -1 columns."""
    keep = values >= 0
    picked = _indices_with_mask(keep)
    return _gather_rows(values, picked, -1)
