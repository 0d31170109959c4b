"""``Memoria.save`` / ``Memoria.load``: the engrams, their counts and the counters in one checked npz.

Format ``mnemonix.memoria`` (:mod:`mnemonix._io`: checksum, atomic write, no pickle):

- version 1: arrays ``data`` [B, M, H] float32, ``lifespan`` [B, M] float32, ``types`` [B, M]
  uint8, ``age`` [B, M] int32, ``uids`` [B, M] int64 (graph keys, -1 for padding), the
  symmetric graph as directed entries ``edge_row/edge_src/edge_dst/edge_count`` and the fire
  counts ``fire_row/fire_id/fire_count``; meta ``config``, ``next_engram_id``, ``next_uid``,
  ``timestep``. Engram ids equal the graph keys.
- version 2 (written only when needed, so that older readers refuse rather than misread):
  adds ``ids`` [B, M] int32 (engram ids that differ from the keys) and the overlay
  ``overlay_row/overlay_src/overlay_dst/overlay_count`` (counts outside the symmetric graph).

Loading validates every field before building anything -- the constructor arguments as
``Memoria(...)`` checks them, the counters, shapes, dtypes, codes, finite data within the norm
bound of ``add_working_memory``, ages a step can still increase, keys distinct per row, graph
entries between live engrams listed once, symmetric counts > 0 -- and raises
:class:`mnemonix._io.FormatError` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mnemonix import _io, _loadcheck

if TYPE_CHECKING:
    from mnemonix.memoria.engram import Engrams
    from mnemonix.memoria.memoria import Memoria

FORMAT = "mnemonix.memoria"
FORMAT_VERSION = 2
_ENGRAM_KEYS = {"data": (np.float32, 3), "lifespan": (np.float32, 2), "types": (np.uint8, 2), "age": (np.int32, 2),
                "uids": (np.int64, 2)}
_ENTRY_KEYS = {"edge": ("src", "dst", "count"), "fire": ("id", "count"), "overlay": ("src", "dst", "count")}


def engram_arrays(e: Engrams) -> tuple[dict[str, np.ndarray], int]:
    """Every array of the engrams and the lowest format version that holds them."""
    uids = e._uids.cpu().numpy()
    arrays = {"data": e.data.cpu().numpy(), "lifespan": e.lifespan.cpu().numpy(),
              "types": e.engrams_types.cpu().numpy(), "age": e._age.cpu().numpy(), "uids": uids}
    parts: dict[str, list[list[np.ndarray]]] = {kind: [[] for _ in range(len(cols) + 1)]
                                                for kind, cols in _ENTRY_KEYS.items()}
    for b in range(e.batch_size):
        overlay = e.graph.overlay[b]
        rows = {"edge": e.graph.edges(b), "fire": e.graph.fires(b),
                "overlay": tuple(np.array(v, dtype=np.int64) for v in zip(*((s, d, c) for (s, d), c in
                                                                            overlay.items()))) or
                (np.zeros(0, np.int64),) * 3}
        for kind, columns in rows.items():
            parts[kind][0].append(np.full(len(columns[0]), b, dtype=np.int64))
            for store, column in zip(parts[kind][1:], columns):
                store.append(np.asarray(column))
    for kind, cols in _ENTRY_KEYS.items():
        for name, chunks in zip(("row", *cols), parts[kind]):
            dtype = np.int32 if name == "count" else np.int64
            arrays[f"{kind}_{name}"] = np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype)
    ids = e._ids.cpu().numpy()
    same_ids = not e.track_engram_id or np.array_equal(ids.astype(np.int64), uids)
    if same_ids and not e.graph.has_overlay():
        for name in ("overlay_row", "overlay_src", "overlay_dst", "overlay_count"):
            del arrays[name]
        return arrays, 1
    arrays["ids"] = ids
    return arrays, 2


def save_memoria(memoria: Memoria, path: str | Path) -> None:
    e = memoria.engrams
    arrays, version = e.to_arrays()
    meta = {"config": memoria._config(), "next_engram_id": memoria.next_engram_id, "next_uid": e.next_uid,
            "timestep": memoria.timestep, "device": e.device.type}
    _io.save_arrays(path, arrays, format=FORMAT, version=version, meta=meta)


def _fail(path: str | Path, field: str, problem: str) -> _io.FormatError:
    return _io.FormatError(f"{str(path)!r}: field {field!r} {problem}")


def check_config(path: str | Path, meta: dict) -> dict:
    """The constructor arguments of the file, each checked as ``Memoria(...)`` checks it (FormatError naming it)."""
    from mnemonix.memoria.memoria import CONFIG_FIELDS, DISTANCES, FIXES, MAX_LIFESPAN, TIE_BREAKS

    config = meta.get("config")
    if not isinstance(config, dict):
        raise _fail(path, "config", f"must be a dict of Memoria's arguments, got {type(config).__name__}")
    unknown = sorted(map(str, set(config) - set(CONFIG_FIELDS)))
    if unknown:
        raise _fail(path, "config", f"holds arguments Memoria does not take: {unknown}")
    named = {f"config.{key}": value for key, value in config.items()}  # errors name 'config.<argument>'
    for name in ("num_reminded_stm", "stm_capacity", "ltm_search_depth", "num_final_ltms"):
        _loadcheck.meta(path, named, f"config.{name}", "int", check=lambda v: v >= 0, expected=">= 0")
    _loadcheck.meta(path, named, "config.initial_lifespan", "float", check=lambda v: 0 < v <= MAX_LIFESPAN,
                    expected=f"in (0, {MAX_LIFESPAN:g}]")
    for name in ("track_age", "track_id", "keep_history", *FIXES):
        _loadcheck.meta(path, named, f"config.{name}", "bool")
    if config["keep_history"] and not (config["track_age"] and config["track_id"]):  # __init__ turns them on
        raise _fail(path, "config", "has keep_history without track_age and track_id (a saved memory has both)")
    _loadcheck.choice(path, named, "config.tie_break", TIE_BREAKS)
    _loadcheck.choice(path, named, "config.distances", DISTANCES)
    return dict(config)  # the values as written (initial_lifespan keeps its int or float kind)


def check_counters(path: str | Path, meta: dict) -> tuple[int, int, int]:
    """(next_uid, next_engram_id, timestep): graph keys are int64, engram ids int32 (the next one at most 2**31)."""
    def counter(name: str, stop: int, expected: str) -> int:
        return _loadcheck.meta(path, meta, name, "int", check=lambda v: 0 <= v < stop, expected=expected)

    return (counter("next_uid", 2**62, "in [0, 2**62)"), counter("next_engram_id", 2**31 + 1, "in [0, 2**31]"),
            counter("timestep", 2**62, "in [0, 2**62)"))


def check_arrays(path: str | Path, arrays: dict[str, np.ndarray], version: int, next_uid: int
                 ) -> dict[str, np.ndarray]:
    """The arrays of this format version, checked to form a consistent engram store (FormatError naming the field).

    Arrays of a later version in an older file are left out (never read unchecked).
    """
    out = {key: _loadcheck.array(path, arrays, key, ndim=ndim, dtypes=[np.dtype(dtype).name])
           for key, (dtype, ndim) in _ENGRAM_KEYS.items()}
    if version >= 2:
        out["ids"] = _loadcheck.array(path, arrays, "ids", ndim=2, dtypes=["int32"])
    batch, length = out["data"].shape[:2]
    for key, value in out.items():
        if key != "data" and value.shape != (batch, length):
            raise _fail(path, key, f"must have shape {(batch, length)} (the [B, M] of 'data'), got {value.shape}")
    _check_values(path, out, next_uid)
    for kind, cols in _ENTRY_KEYS.items():
        if kind != "overlay" or version >= 2:
            for name in (f"{kind}_{c}" for c in ("row", *cols)):
                want = "int32" if name.endswith("count") else "int64"
                out[name] = _loadcheck.array(path, arrays, name, ndim=1, dtypes=[want],
                                             shape=arrays[f"{kind}_row"].shape if f"{kind}_row" in arrays else None)
    _check_entries(path, out, version, batch, out["uids"])
    return out


def _check_values(path: str | Path, arrays: dict[str, np.ndarray], next_uid: int) -> None:
    """Per-engram values as the constructor and the steps accept them; graph keys distinct per row."""
    from mnemonix.memoria._engram_checks import INT32_MAX, MAX_DATA_NORM

    for key in ("data", "lifespan"):
        _loadcheck.array(path, arrays, key, finite=True)
    data = arrays["data"]
    with np.errstate(over="ignore"):  # an overflowing square is a norm beyond the bound
        squares = np.square(data).sum(axis=-1)
    if data.size and float(squares.max()) > MAX_DATA_NORM**2:
        raise _fail(path, "data", f"has an engram whose norm exceeds {MAX_DATA_NORM:.2g} (squared distances "
                                  "between engrams would overflow float32)")
    if arrays["types"].size and arrays["types"].max() > 3:
        raise _fail(path, "types", f"holds engram type {int(arrays['types'].max())}, expected codes 0-3")
    if arrays["age"].size and arrays["age"].max() >= INT32_MAX:
        raise _fail(path, "age", "holds the int32 maximum 2**31 - 1 (the next step would pass it)")
    uids = arrays["uids"]
    if uids.size and (uids.min() < -1 or uids.max() >= next_uid):
        raise _fail(path, "uids", f"must lie in [-1, next_uid = {next_uid}), got [{uids.min()}, {uids.max()}]")
    ordered = np.sort(uids, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeated.any():
        raise _fail(path, "uids", f"repeats a key in row {int(np.nonzero(repeated.any(axis=1))[0][0])}")


def _check_entries(path: str | Path, arrays: dict[str, np.ndarray], version: int, batch: int,
                   uids: np.ndarray) -> None:
    """Graph entries name live engrams of their row, once each, with counts a co-fire can still increase;
    symmetric counts are > 0 and mirrored."""
    from mnemonix.memoria._engram_checks import INT32_MAX

    base = np.int64(max(int(uids.max()) + 2 if uids.size else 1, 1))
    live = (np.arange(batch, dtype=np.int64)[:, None] * base + uids)[uids >= 0]
    for kind, cols in _ENTRY_KEYS.items():
        if kind == "overlay" and version < 2:
            continue
        rows = arrays[f"{kind}_row"]
        if rows.size and (rows.min() < 0 or rows.max() >= batch):
            raise _fail(path, f"{kind}_row", f"must lie in [0, {batch})")
        keys = [f"{kind}_{c}" for c in cols[:-1]]  # the engram columns (src, dst) or (id)
        for name in keys:
            if not np.isin(rows * base + arrays[name], live).all():
                raise _fail(path, name, "names an engram that is not in its row")
        entries = np.stack([rows, *(arrays[name] for name in keys)], axis=1)
        if len(np.unique(entries, axis=0)) != len(entries):
            raise _fail(path, keys[-1], f"lists an entry of {kind} twice")
        counts = arrays[f"{kind}_count"]
        if counts.size and counts.max() >= INT32_MAX:
            raise _fail(path, f"{kind}_count", "holds the int32 maximum 2**31 - 1 (the next co-fire would pass it)")
    src, dst, cnt = arrays["edge_src"], arrays["edge_dst"], arrays["edge_count"]
    if (src == dst).any() or (cnt <= 0).any():
        raise _fail(path, "edge_count", "must hold counts > 0 between distinct engrams")
    rows = arrays["edge_row"]
    forward = np.stack([rows, src, dst, cnt])[:, np.lexsort((cnt, dst, src, rows))]
    backward = np.stack([rows, dst, src, cnt])[:, np.lexsort((cnt, src, dst, rows))]
    if not np.array_equal(forward, backward):
        raise _fail(path, "edge_count", "is not symmetric (every edge is stored in both directions)")


def load_memoria(cls: type[Memoria], path: str | Path, device: str | torch.device | None,
                 generator: torch.Generator | None) -> Memoria:
    """Every field checked first (:func:`check_config`, :func:`check_counters`, :func:`check_arrays`), then built."""
    from mnemonix.memoria.engram import Engrams
    from mnemonix.memoria.memoria import _device

    arrays, meta, version = _io.load_arrays(path, format=FORMAT, max_version=FORMAT_VERSION)
    config = check_config(path, meta)
    next_uid, next_id, timestep = check_counters(path, meta)
    checked = check_arrays(path, arrays, version, next_uid)
    saved = _loadcheck.meta(path, meta, "device", "str", default="cpu")
    if device is None:
        device = "cuda" if saved == "cuda" and torch.cuda.is_available() else "cpu"
    dev = _device(device)
    memoria = cls(**config, generator=generator)
    memoria.engrams = Engrams.from_arrays(checked, next_uid, track_age=memoria.track_age,
                                          track_engram_id=memoria.track_id, device=dev)
    memoria.device = dev if checked["data"].shape[1] else memoria.device
    memoria.next_engram_id, memoria.timestep = next_id, timestep
    return memoria


def engrams_from_arrays(cls: type[Engrams], arrays: dict[str, np.ndarray], next_uid: int, track_age: bool,
                        track_engram_id: bool, device: torch.device) -> Engrams:
    """Engrams from checked arrays (see :func:`check_arrays`)."""
    from mnemonix.memoria._graph import CofireGraph

    uids = arrays["uids"]
    ids = arrays["ids"] if "ids" in arrays else (uids.astype(np.int32) if track_engram_id else np.full_like(
        uids, -1, dtype=np.int32))
    graph = CofireGraph(uids.shape[0])
    for b in range(uids.shape[0]):
        sel = arrays["fire_row"] == b
        graph.set_fires(b, arrays["fire_id"][sel], arrays["fire_count"][sel])
        sel = arrays["edge_row"] == b
        graph.core.set_edges(b, arrays["edge_src"][sel], arrays["edge_dst"][sel], arrays["edge_count"][sel])
        if "overlay_row" in arrays:
            sel = arrays["overlay_row"] == b
            graph.overlay[b].update(zip(zip(arrays["overlay_src"][sel].tolist(), arrays["overlay_dst"][sel].tolist()),
                                        arrays["overlay_count"][sel].tolist()))
    fields = {"data": torch.from_numpy(arrays["data"]), "lifespan": torch.from_numpy(arrays["lifespan"]),
              "engrams_types": torch.from_numpy(arrays["types"]), "_age": torch.from_numpy(arrays["age"]),
              "_ids": torch.from_numpy(np.ascontiguousarray(ids))}
    fields = {k: v.to(device, non_blocking=True) for k, v in fields.items()}
    out = cls.__new__(cls)
    out.track_age, out.track_engram_id = track_age, track_engram_id
    out._attach(fields, graph, torch.from_numpy(uids).to(device, non_blocking=True), next_uid, uids)
    return out
