"""``HistoryManager``: the history of one batch row's engram summaries (memoria-pytorch's ``memoria.history_manager``).

``save`` / ``load`` write the summaries to a checked npz (:mod:`mnemonix._io`: checksum,
atomic write) instead of the original's gzip pickle: loading a file can never run code.
The derived tables (creation, deletion, firings) are rebuilt by replaying the summaries.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from mnemonix import _io
from mnemonix.memoria.types import EngramConnection, EngramHistory, EngramInfo, EngramsInfo, Firing

__all__ = ["HistoryManager"]

FORMAT = "mnemonix.memoria.history"
FORMAT_VERSION = 1
_TYPES = ("WORKING", "SHORTTERM", "LONGTERM")
_GROUPS = ("working", "shortterm", "longterm")
_OUT, _IN, _EDGE = 0, 1, 2


class HistoryManager:
    """History of engram summaries, one :class:`EngramsInfo` per step.

    Attributes
    ----------
    summaries : list[EngramsInfo]
    engram_creation_times, engram_deletion_times, engram_durations : dict[int, int]
    engram_firing_times : dict[int, list[int]];  engram_firings : dict[int, list[Firing]]
    firings_per_time : list[list[Firing]]
    alive_engram_ids, deleted_engram_ids : list[int]
    """

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
        """Steps recorded so far."""
        return len(self)

    @property
    def engram_ids(self) -> list[int]:
        """Every engram id ever seen, in order of first appearance."""
        return list(self.engram_creation_times)

    @property
    def engram_fire_counts(self) -> dict[int, int]:
        """Engram id -> number of steps at which its fire count grew."""
        return {engram_id: len(firings) for engram_id, firings in self.engram_firings.items()}

    @property
    def engram_lastest_alive_timestep(self) -> dict[int, int]:
        """Engram id -> last step at which it was alive (the original's spelling)."""
        return {engram_id: created + self.engram_durations[engram_id] - 1
                for engram_id, created in self.engram_creation_times.items()}

    @property
    def latest_engram_infos(self) -> dict[int, EngramInfo]:
        """Engram id -> its EngramInfo at the last step it was alive."""
        last = self.engram_lastest_alive_timestep
        return {engram_id: self.summaries[last[engram_id]].engrams[engram_id] for engram_id in self.engram_ids}

    def add_summary(self, summary: EngramsInfo) -> None:
        """Record one step: engrams that appear are created, engrams whose fire count grew fired
        (their lifespan gain is the lifespan change + 1), engrams that vanish are deleted."""
        if not isinstance(summary, EngramsInfo):
            raise TypeError(f"summary must be an EngramsInfo, got {type(summary).__name__}")
        now = self.timestep
        previous = self.summaries[-1].engrams if self.summaries else {}
        firings = []
        for engram_id, engram in summary.engrams.items():
            if engram_id not in self.alive_engram_ids:
                self.engram_creation_times[engram_id] = now
                self.alive_engram_ids.append(engram_id)
            elif engram_id in previous and engram.fire_count > previous[engram_id].fire_count:
                firing = Firing(timestep=now, engram_id=engram_id,
                                lifespan_gain=engram.lifespan - previous[engram_id].lifespan + 1.0)
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
        """The history of one engram (KeyError for an id never seen)."""
        created = self.engram_creation_times[engram_id]
        deleted = self.engram_deletion_times.get(engram_id)
        return EngramHistory(
            id=engram_id, creation_timestep=created, deletion_timestep=deleted,
            duration=self.engram_durations.get(engram_id),
            firing_times=self.engram_firing_times.get(engram_id, []),
            firings=self.engram_firings.get(engram_id, []), summaries=self.summaries[created:deleted],
        )

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Save the summaries (npz with version and checksum, written atomically; no pickle)."""
        _io.save_arrays(path, _to_arrays(self.summaries), format=FORMAT, version=FORMAT_VERSION,
                        meta={"num_summaries": len(self.summaries)})

    @classmethod
    def load(cls, path: str | Path) -> HistoryManager:
        """Load a history saved by :meth:`save` (FormatError naming the field on a bad file)."""
        arrays, meta, _ = _io.load_arrays(path, format=FORMAT, max_version=FORMAT_VERSION)
        count = meta.get("num_summaries")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _io.FormatError(f"{str(path)!r}: field 'num_summaries' must be an int >= 0, got {count!r}")
        history = cls()
        for summary in _from_arrays(path, arrays, count):
            history.add_summary(summary)
        return history


def _to_arrays(summaries: list[EngramsInfo]) -> dict[str, np.ndarray]:
    engrams: list[tuple] = []
    conns: list[tuple] = []
    groups: list[tuple] = []
    for step, summary in enumerate(summaries):
        for info in summary.engrams.values():
            owner = len(engrams)
            engrams.append((step, info.id, _TYPES.index(info.type) + 1, info.lifespan,
                            -1 if info.age is None else info.age, info.age is not None, info.fire_count))
            for kind, edges in ((_OUT, info.outgoings), (_IN, info.incoming)):
                conns += [(step, owner, kind, -1, -1, c.source_id, c.target_id, c.weight, c.cofire_count)
                          for c in edges]
        conns += [(step, -1, _EDGE, key[0], key[1], c.source_id, c.target_id, c.weight, c.cofire_count)
                  for key, c in summary.edges.items()]
        for code, name in enumerate(_GROUPS, start=1):
            groups += [(step, code, engram_id) for engram_id in getattr(summary, name)]
    columns = {
        "engram": (engrams, ("step", "id", "type", "lifespan", "age", "has_age", "fire_count"),
                   (np.int64, np.int64, np.uint8, np.float64, np.int64, np.bool_, np.int64)),
        "conn": (conns, ("step", "owner", "kind", "key_src", "key_dst", "source", "target", "weight", "cofire"),
                 (np.int64, np.int64, np.uint8, np.int64, np.int64, np.int64, np.int64, np.float64, np.int64)),
        "group": (groups, ("step", "kind", "id"), (np.int64, np.uint8, np.int64)),
    }
    out = {}
    for prefix, (rows, names, dtypes) in columns.items():
        for k, (name, dtype) in enumerate(zip(names, dtypes)):
            out[f"{prefix}_{name}"] = np.array([row[k] for row in rows], dtype=dtype)
    return out


def _column(path, arrays: dict[str, np.ndarray], name: str, length: int | None, low: int, high: int) -> np.ndarray:
    if name not in arrays or arrays[name].ndim != 1 or (length is not None and len(arrays[name]) != length):
        raise _io.FormatError(f"{str(path)!r}: field {name!r} is missing or has the wrong shape")
    values = arrays[name]
    if values.size and values.dtype.kind in "iu" and (values.min() < low or values.max() >= high):
        raise _io.FormatError(f"{str(path)!r}: field {name!r} holds values outside [{low}, {high})")
    return values


def _from_arrays(path, arrays: dict[str, np.ndarray], count: int) -> list[EngramsInfo]:
    big = 2**62
    e_step = _column(path, arrays, "engram_step", None, 0, count)
    n = len(e_step)
    e_id, e_type, e_life, e_age, e_has_age, e_fire = (
        _column(path, arrays, f"engram_{k}", n, lo, hi) for k, lo, hi in
        (("id", -big, big), ("type", 1, 4), ("lifespan", 0, 0), ("age", -big, big), ("has_age", 0, 2),
         ("fire_count", -big, big)))
    c_step = _column(path, arrays, "conn_step", None, 0, count)
    m = len(c_step)
    c_owner, c_kind, c_ksrc, c_kdst, c_src, c_dst, c_weight, c_cofire = (
        _column(path, arrays, f"conn_{k}", m, lo, hi) for k, lo, hi in
        (("owner", -1, max(n, 1)), ("kind", 0, 3), ("key_src", -big, big), ("key_dst", -big, big),
         ("source", -big, big), ("target", -big, big), ("weight", 0, 0), ("cofire", -big, big)))
    g_step = _column(path, arrays, "group_step", None, 0, count)
    g_kind, g_id = (_column(path, arrays, f"group_{k}", len(g_step), lo, hi) for k, lo, hi in
                    (("kind", 1, 4), ("id", -big, big)))
    edges_of: list[list[list[EngramConnection]]] = [[[], []] for _ in range(n)]
    summary_edges: list[dict] = [{} for _ in range(count)]
    for k in range(m):
        conn = EngramConnection(int(c_src[k]), int(c_dst[k]), float(c_weight[k]), int(c_cofire[k]))
        if c_kind[k] == _EDGE:
            summary_edges[c_step[k]][int(c_ksrc[k]), int(c_kdst[k])] = conn
        elif c_owner[k] < 0 or e_step[c_owner[k]] != c_step[k]:
            raise _io.FormatError(f"{str(path)!r}: field 'conn_owner' names an engram of another step")
        else:
            edges_of[c_owner[k]][int(c_kind[k])].append(conn)
    infos: list[dict[int, EngramInfo]] = [{} for _ in range(count)]
    for k in range(n):
        infos[e_step[k]][int(e_id[k])] = EngramInfo(
            id=int(e_id[k]), type=_TYPES[int(e_type[k]) - 1], lifespan=float(e_life[k]),
            age=int(e_age[k]) if e_has_age[k] else None, fire_count=int(e_fire[k]),
            outgoings=tuple(edges_of[k][_OUT]), incoming=tuple(edges_of[k][_IN]))
    grouped: list[dict[int, list[int]]] = [{1: [], 2: [], 3: []} for _ in range(count)]
    for step, kind, engram_id in zip(g_step.tolist(), g_kind.tolist(), g_id.tolist()):
        grouped[step][kind].append(engram_id)
    return [EngramsInfo(engrams=infos[s], edges=summary_edges[s], working=tuple(grouped[s][1]),
                        shortterm=tuple(grouped[s][2]), longterm=tuple(grouped[s][3])) for s in range(count)]
