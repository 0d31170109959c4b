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

Loading validates what it read (shapes, dtypes, codes, finiteness, keys, graph entries
between live engrams, symmetric counts > 0, counters) and raises :class:`mnemonix._io.FormatError`
naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mnemonix import _io

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


def _counter(path: str | Path, meta: dict, name: str) -> int:
    value = meta.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise _fail(path, name, f"must be an int in [0, 2**62), got {value!r}")
    return value


def check_arrays(path: str | Path, arrays: dict[str, np.ndarray], version: int, next_uid: int) -> None:
    """Raise FormatError (naming the field) unless the arrays form a consistent engram store."""
    for key, (dtype, ndim) in _ENGRAM_KEYS.items():
        if key not in arrays:
            raise _fail(path, key, "is missing")
        if arrays[key].dtype != dtype or arrays[key].ndim != ndim:
            raise _fail(path, key, f"must be {np.dtype(dtype)} with {ndim} dimensions, "
                                   f"got {arrays[key].dtype} {arrays[key].shape}")
    batch, length = arrays["data"].shape[:2]
    for key in ("lifespan", "types", "age", "uids", *(("ids",) if version >= 2 else ())):
        if key not in arrays or arrays[key].shape != (batch, length):
            raise _fail(path, key, f"must have shape {(batch, length)}, got "
                                   f"{arrays[key].shape if key in arrays else 'nothing'}")
    for key in ("data", "lifespan"):
        if not np.isfinite(arrays[key]).all():
            raise _fail(path, key, "holds NaN or Inf values")
    if arrays["types"].size and arrays["types"].max() > 3:
        raise _fail(path, "types", f"holds engram type {int(arrays['types'].max())}, expected codes 0-3")
    if version >= 2 and arrays["ids"].dtype != np.int32:
        raise _fail(path, "ids", f"must be int32, got {arrays['ids'].dtype}")
    uids = arrays["uids"]
    if uids.size and (uids.min() < -1 or uids.max() >= next_uid):
        raise _fail(path, "uids", f"must lie in [-1, next_uid = {next_uid}), got [{uids.min()}, {uids.max()}]")
    for b in range(batch):
        real = uids[b][uids[b] >= 0]
        if len(np.unique(real)) != len(real):
            raise _fail(path, "uids", f"repeats a key in row {b}")
    _check_entries(path, arrays, version, batch, uids)


def _check_entries(path: str | Path, arrays: dict[str, np.ndarray], version: int, batch: int,
                   uids: np.ndarray) -> None:
    """Graph entries name live engrams of their row; symmetric counts are > 0 and mirrored."""
    base = np.int64(max(int(uids.max()) + 2 if uids.size else 1, 1))
    live = (np.arange(batch, dtype=np.int64)[:, None] * base + uids)[uids >= 0]
    for kind, cols in _ENTRY_KEYS.items():
        if kind == "overlay" and version < 2:
            continue
        names = [f"{kind}_{c}" for c in ("row", *cols)]
        for name in names:
            if name not in arrays or arrays[name].ndim != 1 or arrays[name].shape != arrays[names[0]].shape:
                raise _fail(path, name, "is missing or has a shape unlike its row array")
            want = np.int32 if name.endswith("count") else np.int64
            if arrays[name].dtype != want:
                raise _fail(path, name, f"must be {np.dtype(want)}, got {arrays[name].dtype}")
        rows = arrays[names[0]]
        if rows.size and (rows.min() < 0 or rows.max() >= batch):
            raise _fail(path, names[0], f"must lie in [0, {batch})")
        for name in names[1:3] if kind != "fire" else names[1:2]:
            if not np.isin(rows * base + arrays[name], live).all():
                raise _fail(path, name, "names an engram that is not in its row")
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
    from mnemonix.memoria.engram import Engrams

    arrays, meta, version = _io.load_arrays(path, format=FORMAT, max_version=FORMAT_VERSION)
    config = meta.get("config")
    if not isinstance(config, dict):
        raise _fail(path, "config", f"must be a dict, got {type(config).__name__}")
    try:
        memoria = cls(**config, generator=generator)
    except (TypeError, ValueError) as exc:
        raise _fail(path, "config", f"is not a valid Memoria configuration ({exc})") from exc
    next_uid, next_id, timestep = (_counter(path, meta, name) for name in ("next_uid", "next_engram_id", "timestep"))
    check_arrays(path, arrays, version, next_uid)
    from mnemonix.memoria.memoria import _device

    if device is None:
        device = "cuda" if meta.get("device") == "cuda" and torch.cuda.is_available() else "cpu"
    dev = _device(device)
    memoria.engrams = Engrams.from_arrays(arrays, next_uid, track_age=memoria.track_age,
                                          track_engram_id=memoria.track_id, device=dev)
    memoria.device = dev if arrays["data"].shape[1] else memoria.device
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
