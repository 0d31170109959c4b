"""``Engrams.status_summary``: one EngramsInfo per batch row, built from the sparse counts.

Same records as memoria-pytorch: engrams of a row in position order (NULL engrams left
out); an edge ``i -> j`` for every other non-NULL engram with weight
``count(i, j) / fire_count(i)`` (float32 division) > 0; the incoming edge of ``i`` from ``j``
reports weight ``count(j, i) / fire_count(j)`` and, like the original, co-fire count
``count(i, j)``. Only non-zero counts can give a positive weight, so the work is
proportional to the edges, not to M^2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from mnemonix._types import ENGRAM_LONGTERM, ENGRAM_NULL, ENGRAM_SHORTTERM, ENGRAM_WORKING, EngramType
from mnemonix.memoria.types import EngramConnection, EngramInfo, EngramsInfo

if TYPE_CHECKING:
    from mnemonix.memoria.engram import Engrams


def status_summary(engrams: Engrams) -> list[EngramsInfo]:
    uids = engrams.host_keys()[0]
    # one device-to-host copy: uint8 types, int32 ids and ages and float32 lifespans are exact in float64
    fields = torch.stack([engrams.engrams_types.double(), engrams._ids.double(), engrams.lifespan.double(),
                          engrams._age.double()]).cpu().numpy()
    types, ids, lifespans = fields[0].astype(np.uint8), fields[1].astype(np.int32), fields[2].astype(np.float32)
    ages = fields[3].astype(np.int32) if engrams.track_age else None
    return [_row_summary(engrams, b, uids[b], types[b], ids[b], lifespans[b], None if ages is None else ages[b])
            for b in range(engrams.batch_size)]


def _row_counts(engrams: Engrams, row: int, uids: np.ndarray, alive: np.ndarray):
    """(fire count per position, src, dst, count) of the non-zero off-diagonal counts of the row."""
    length = len(uids)
    fires = np.full(length, -1, dtype=np.int64)
    if (uids[alive] < 0).any():  # padding given a type by the caller: its -1 counts matter, go dense
        dense = engrams.graph.dense(row, uids, uids).astype(np.int64)
        fires = np.diagonal(dense).copy()
        np.fill_diagonal(dense, 0)
        src, dst = np.nonzero(dense)
        return fires, src, dst, dense[src, dst]
    real, real_fires, src, dst, cnt = engrams.graph.entries(row, uids)
    fires[real] = real_fires
    return fires, src, dst, np.asarray(cnt, dtype=np.int64)


def _row_summary(engrams: Engrams, row: int, uids: np.ndarray, types: np.ndarray, ids: np.ndarray,
                 lifespans: np.ndarray, ages: np.ndarray | None) -> EngramsInfo:
    alive = types != ENGRAM_NULL
    fires, src, dst, cnt = _row_counts(engrams, row, uids, alive)
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = cnt.astype(np.float32) / fires[src].astype(np.float32)  # float32, as the original
    keep = (weight > 0) & alive[src] & alive[dst] & (ids[src] != ids[dst])
    count_of = dict(zip(zip(src.tolist(), dst.tolist()), cnt.tolist()))
    outgoing: dict[int, list[EngramConnection]] = {}
    incoming: dict[int, list[EngramConnection]] = {}
    edges: dict[tuple[int, int], EngramConnection] = {}
    for k in np.lexsort((dst, src))[keep[np.lexsort((dst, src))]]:
        s, d = int(src[k]), int(dst[k])
        conn = EngramConnection(source_id=int(ids[s]), target_id=int(ids[d]), weight=float(weight[k]),
                                cofire_count=int(cnt[k]))
        outgoing.setdefault(s, []).append(conn)
        edges[conn.source_id, conn.target_id] = conn
    for k in np.lexsort((src, dst))[keep[np.lexsort((src, dst))]]:
        s, d = int(src[k]), int(dst[k])  # incoming edge of d from s; the original reads count(d, s)
        incoming.setdefault(d, []).append(EngramConnection(
            source_id=int(ids[s]), target_id=int(ids[d]), weight=float(weight[k]),
            cofire_count=int(count_of.get((d, s), 0))))
    infos: dict[int, EngramInfo] = {}
    by_type: dict[int, list[int]] = {ENGRAM_WORKING: [], ENGRAM_SHORTTERM: [], ENGRAM_LONGTERM: []}
    for i in np.flatnonzero(alive).tolist():
        kind = EngramType(int(types[i]))
        by_type[int(kind)].append(int(ids[i]))
        infos[int(ids[i])] = EngramInfo(
            id=int(ids[i]), type=kind.name, lifespan=float(lifespans[i]),
            age=None if ages is None else int(ages[i]), fire_count=int(fires[i]),
            outgoings=tuple(outgoing.get(i, ())), incoming=tuple(incoming.get(i, ())),
        )
    return EngramsInfo(engrams=infos, edges=edges, working=tuple(by_type[ENGRAM_WORKING]),
                       shortterm=tuple(by_type[ENGRAM_SHORTTERM]), longterm=tuple(by_type[ENGRAM_LONGTERM]))
