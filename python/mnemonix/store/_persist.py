"""On-disk form of a :class:`~mnemonix.store.MemoryStore`: a directory, swapped in atomically.

::

    PATH/MANIFEST.json                      the current generation (JSON, checksummed)
    PATH/seg-<gen>-<uid>-<i>.safetensors     immutable row segments (keys, scales, values,
                                            ids, r0, tau; an id index when ids are unsorted)
    PATH/tomb-<gen>-<uid>.safetensors        the tombstone bitmap of that generation

The manifest names every file of its generation with its size and SHA-256, and carries
the SHA-256 of its own canonical JSON. A save writes the new segments (only the rows
added since the generation this store last saved or loaded at this path) and a new
tombstone bitmap, each to a temporary file that is fsynced and renamed, then replaces the
manifest the same way; only then are files that no manifest names deleted. A crash at any
moment leaves the previous manifest and every file it names intact. Segments are read
with ``safetensors.safe_open``: memory-mapped, zero-copy, no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from mnemonix._io import FormatError, atomic_write_bytes
from mnemonix.store import _segments as seg
from mnemonix.store._blocks import Block, empty_columns
from mnemonix.store._index import IdIndex, Run

FORMAT = "mnemonix.MemoryStore"
VERSION = 1
MANIFEST = "MANIFEST.json"
SEGMENT_MAX_BYTES = 1 << 30
"""Rows per segment file are capped at about this many bytes (bounded memory while saving)."""

_OWN_FILE = re.compile(r"^(seg|tomb)-\d+-[0-9a-f]+(-\d+)?\.safetensors$|^\..*\.tmp$")


@dataclass(frozen=True)
class Persisted:
    """Where and at which generation a store's rows ``[0, rows)`` are saved."""

    path: Path
    uid: str
    generation: int
    rows: int
    segments: tuple[dict, ...]


def manifest_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_manifest(path: Path) -> dict:
    """The checked manifest of the store at ``path`` (FormatError naming file and field)."""
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist")
    file = path / MANIFEST
    if not path.is_dir() or not file.is_file():
        raise FormatError(f"{str(path)!r} is not a MemoryStore directory: no {MANIFEST}")
    try:
        manifest = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{str(file)!r} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FormatError(f"{str(file)!r}: field 'format' must be {FORMAT!r}")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise FormatError(f"{str(file)!r}: field 'version' is {version!r}, this mnemonix reads <= {VERSION}")
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise FormatError(f"{str(file)!r}: field 'checksum' does not match the manifest: it is corrupted")
    seg.check_manifest_fields(file, manifest)
    return manifest


def _on_disk_manifest(path: Path) -> dict | None:
    try:
        return read_manifest(path)
    except (FormatError, FileNotFoundError):
        return None


def _check_target(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ValueError(f"path {str(path)!r} exists and is not a directory")
    if path.is_dir() and not (path / MANIFEST).exists() and any(
            not _OWN_FILE.match(p.name) for p in path.iterdir()):
        raise ValueError(f"path {str(path)!r} is a non-empty directory that holds no MemoryStore: "
                         "refusing to write into it")


def write_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict:
    """Write one safetensors file atomically; its manifest entry (file, bytes, sha256)."""
    data = safetensors.torch.save(tensors, metadata=metadata)
    atomic_write_bytes(path, data)
    return {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def save(store, path: Path) -> Persisted:
    """Write ``store`` (lock held by the caller) to ``path``; incremental when it can be."""
    path = Path(os.path.abspath(path))
    _check_target(path)
    prev = store._persisted
    on_disk = _on_disk_manifest(path) if path.is_dir() else None
    incremental = (prev is not None and prev.path == path and on_disk is not None
                   and on_disk["uid"] == prev.uid and on_disk["generation"] == prev.generation)
    uid = prev.uid if incremental else uuid.uuid4().hex[:16]
    generation = 1 + (on_disk["generation"] if on_disk is not None else 0)
    segments = list(prev.segments) if incremental else []
    first = prev.rows if incremental else 0
    path.mkdir(parents=True, exist_ok=True)
    spec = store._spec
    per_segment = max(1, SEGMENT_MAX_BYTES // max(1, seg.row_bytes(spec)))
    for i, a in enumerate(range(first, store._n_rows, per_segment)):
        z = min(a + per_segment, store._n_rows)
        tensors = seg.segment_tensors(store._blocks, store._live, a, z)
        entry = write_file(path / f"seg-{generation:06d}-{uid}-{i}.safetensors", tensors,
                           {"format": FORMAT, "version": str(VERSION), "start": str(a), "rows": str(z - a)})
        segments.append({**entry, "start": a, "rows": z - a})
    dead = ~store._live[: store._n_rows].cpu()
    bits = torch.from_numpy(np.packbits(dead.numpy()))
    tomb = write_file(path / f"tomb-{generation:06d}-{uid}.safetensors", {"dead_bits": bits},
                      {"format": FORMAT, "rows": str(store._n_rows)})
    manifest = seg.manifest_of(store, uid, generation, segments, tomb)
    manifest["format"], manifest["version"] = FORMAT, VERSION
    manifest["checksum"] = manifest_checksum(manifest)
    atomic_write_bytes(path / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    named = {s["file"] for s in segments} | {tomb["file"], MANIFEST}
    for p in path.iterdir():  # files of older generations (and of crashed saves)
        if p.name not in named and _OWN_FILE.match(p.name):
            p.unlink(missing_ok=True)
    return Persisted(path, uid, generation, store._n_rows, tuple(segments))


def sha256_of(fh) -> str:
    h = hashlib.sha256()
    fh.seek(0)
    for chunk in iter(lambda: fh.read(1 << 22), b""):
        h.update(chunk)
    return h.hexdigest()


def file_verifier(file: Path, entry: dict):
    """A callable that checks ``file``'s SHA-256 once (from a handle opened now: unlinking is harmless)."""
    fh = open(file, "rb")  # noqa: SIM115 - kept open until verified
    lock = threading.Lock()
    state = {"done": False}

    def verify() -> None:
        if state["done"]:
            return
        with lock:
            if state["done"]:
                return
            if sha256_of(fh) != entry["sha256"]:
                raise FormatError(f"{str(file)!r}: field 'sha256' does not match the file: it is corrupted")
            state["done"] = True
            fh.close()

    weakref.finalize(verify, fh.close)  # a store dropped unverified closes its handles
    return verify


def _open_segment(path: Path, entry: dict, spec, verify) -> tuple[dict, Run, object]:
    """Map one segment: (columns, id run, its file's checker), checked against the manifest."""
    file = path / entry["file"]
    seg.check_size(file, entry)
    checker = file_verifier(file, entry)
    if verify is True:
        checker()
    try:
        with safetensors.torch.safe_open(str(file), framework="pt") as f:
            names, meta = set(f.keys()), f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in names}
    except Exception as exc:  # noqa: BLE001 - any parse failure is a format error of this file
        raise FormatError(f"{str(file)!r} is not a readable safetensors segment ({exc})") from exc
    seg.check_segment(file, entry, spec, tensors, meta)
    columns = {name: tensors.get(name) for name in ("keys", "scales", "values", "ids", "r0", "tau")}
    lazy = checker if verify == "lazy" else None
    if "index_ids" in tensors:
        run = Run(tensors["index_ids"], tensors["index_rows"], verify=lazy)
    else:
        run = Run(tensors["ids"], None, entry["start"], verify=lazy)
    return columns, run, checker


def load_options(mmap: object, device, verify: object) -> tuple[torch.device, object]:
    """Checked ``(device, verify)`` of a load (verify's default follows ``mmap``)."""
    if not isinstance(mmap, bool):
        raise TypeError(f"mmap must be a bool, got {type(mmap).__name__}")
    if verify is None:
        verify = "lazy" if mmap else True
    if verify not in (True, False, "lazy"):
        raise ValueError(f"verify must be True, False or 'lazy', got {verify!r}")
    if not mmap and verify == "lazy":
        verify = True  # a copying load reads every byte anyway
    device = torch.device("cpu" if device is None else device)
    if mmap and device.type != "cpu":
        raise ValueError(f"mmap=True maps files into CPU memory: device must be 'cpu', got {device}")
    return device, verify


def load(cls, path: Path, *, mmap: bool, device, verify):
    """Build a store from the directory ``path`` (see :meth:`MemoryStore.load`).

    A directory saved by :class:`~mnemonix.distributed.ShardedMemoryStore` loads as one
    store holding every shard's rows (:mod:`mnemonix.store._shards`).
    """
    device, verify = load_options(mmap, device, verify)
    path = Path(os.path.abspath(path))
    from mnemonix.store import _shards  # imports this module

    if _shards.is_sharded(path):
        sharded = _shards.read_sharded(path)
        return _shards.load_rows(cls, sharded, 0, sharded.rows, mmap=mmap, device=device, verify=verify)
    manifest = read_manifest(path)
    spec_args = seg.spec_args(manifest)
    store = cls(spec_args.pop("dim"), device=device, **spec_args)
    spec = store._spec
    live = seg.read_tombstones(path, manifest, device)
    blocks, runs = [], []
    for entry in manifest["segments"]:
        columns, run, checker = _open_segment(path, entry, spec, verify)
        lazy = checker if verify == "lazy" else None
        blocks.append(Block(entry["start"], entry["rows"], columns, frozen=True, verify=lazy, checker=checker))
        runs.append(run)
    n_rows = manifest["rows"]
    if mmap:
        blocks.append(Block(n_rows, 0, empty_columns(0, spec, device)))
    else:  # one in-memory block (the tail) holding every row; no file stays mapped
        blocks, runs = seg.copied(blocks, runs, n_rows, spec, device)
    store._blocks = blocks
    store._live = live
    store._n_rows, store._n_live = n_rows, int(live.sum())
    store._index = IdIndex(runs)
    store._next_id, store._max_norm = manifest["next_id"], float(manifest["max_norm"])
    if store._n_live != manifest["live"]:
        raise FormatError(f"{str(path / MANIFEST)!r}: field 'live' is {manifest['live']}, "
                          f"the tombstones leave {store._n_live}")
    store._persisted = Persisted(path, manifest["uid"], manifest["generation"], n_rows, tuple(manifest["segments"]))
    return store
