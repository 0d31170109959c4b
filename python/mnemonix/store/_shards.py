"""A directory of :class:`~mnemonix.store.MemoryStore` shards and loading any range of its rows.

Written by :meth:`mnemonix.distributed.ShardedMemoryStore.save`::

    PATH/MANIFEST.json                    format "mnemonix.ShardedMemoryStore", generation, uid,
                                          the store's dim / dtypes / metric, rows, live, next_id,
                                          max_norm, shards [{dir, rows, live, manifest_sha256}],
                                          checksum (SHA-256 of the canonical JSON without it)
    PATH/<generation>-<uid>-shard-<r>/    rank r's rows: an ordinary MemoryStore directory

Rows are numbered shard after shard (the *concatenation*). :func:`load_rows` builds one
store from any range ``[a, z)`` of them: the segments that overlap the range are mapped
(or copied), sliced, and their id runs re-based, so W' ranks can split a store that W
ranks saved and one process can load all of it as one store. The top manifest names the
SHA-256 of every shard's manifest, so a set of shards from different saves is refused. A
plain MemoryStore directory reads as a sharded store of one shard (itself).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mnemonix._io import FormatError, atomic_write_bytes
from mnemonix.store import _persist
from mnemonix.store import _segments as seg
from mnemonix.store._blocks import Block, empty_columns
from mnemonix.store._index import IdIndex, Run

SHARDED_FORMAT = "mnemonix.ShardedMemoryStore"
SHARDED_VERSION = 1
SHARD_DIR = re.compile(r"^(\d{6})-([0-9a-f]{16})-shard-(\d{5})$")
"""Name of a shard directory: generation, uid of the save, rank."""
SPEC_FIELDS = ("dim", "value_dim", "dtype", "value_dtype", "metric")


def shard_dir_name(generation: int, uid: str, rank: int) -> str:
    return f"{generation:06d}-{uid}-shard-{rank:05d}"


@dataclass(frozen=True)
class Sharded:
    """A checked sharded directory: its top manifest and each shard's ``(directory, manifest)``."""

    path: Path
    manifest: dict
    shards: tuple[tuple[Path, dict], ...]

    @property
    def rows(self) -> int:
        return sum(m["rows"] for _, m in self.shards)

    @property
    def live(self) -> int:
        return sum(m["live"] for _, m in self.shards)

    def offsets(self) -> list[int]:
        """First row of each shard in the concatenation, and the total: [S + 1]."""
        out = [0]
        for _, m in self.shards:
            out.append(out[-1] + m["rows"])
        return out


def _json(path: Path) -> object:
    try:
        return json.loads((path / _persist.MANIFEST).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def is_sharded(path: Path) -> bool:
    """Whether ``path`` holds a sharded store's manifest (anything else is left to the plain reader)."""
    m = _json(path)
    return isinstance(m, dict) and m.get("format") == SHARDED_FORMAT


def write_manifest(path: Path, manifest: dict) -> None:
    """Add format, version and checksum to ``manifest`` and swap it in atomically."""
    manifest = {**manifest, "format": SHARDED_FORMAT, "version": SHARDED_VERSION}
    manifest["checksum"] = _persist.manifest_checksum(manifest)
    atomic_write_bytes(path / _persist.MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))


def _field_int(file: Path, m: dict, name: str, low: int = 0) -> int:
    v = m.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise FormatError(f"{str(file)!r}: field {name!r} must be an int >= {low}, got {v!r}")
    return v


def _check_top(file: Path, m: dict) -> None:
    version = m.get("version")
    if not isinstance(version, int) or version > SHARDED_VERSION:
        raise FormatError(f"{str(file)!r}: field 'version' is {version!r}, this mnemonix reads <= {SHARDED_VERSION}")
    if m.get("checksum") != _persist.manifest_checksum(m):
        raise FormatError(f"{str(file)!r}: field 'checksum' does not match the manifest: it is corrupted")
    for name, low in (("generation", 1), ("rows", 0), ("live", 0), ("next_id", 0)):
        _field_int(file, m, name, low)
    norm = m.get("max_norm")
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm < 0:
        raise FormatError(f"{str(file)!r}: field 'max_norm' must be a finite number >= 0, got {norm!r}")
    shards = m.get("shards")
    if not isinstance(shards, list) or not shards:
        raise FormatError(f"{str(file)!r}: field 'shards' must be a non-empty list")
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict) or not isinstance(entry.get("dir"), str) or not SHARD_DIR.match(entry["dir"]):
            raise FormatError(f"{str(file)!r}: field shards[{i}].dir must name a shard directory, got {entry!r}")
        digest = entry.get("manifest_sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise FormatError(f"{str(file)!r}: field shards[{i}].manifest_sha256 must be a SHA-256 hex digest")
        _field_int(file, entry, "rows")
        _field_int(file, entry, "live")


def _check_shard(file: Path, top: dict, i: int, entry: dict, shard_path: Path) -> dict:
    """The manifest of shard ``i``, checked against the top manifest's entry and spec."""
    shard_file = shard_path / _persist.MANIFEST
    if not shard_file.is_file():
        raise FormatError(f"{str(shard_file)!r}: missing, but {str(file)!r} names shard {entry['dir']!r}")
    if hashlib.sha256(shard_file.read_bytes()).hexdigest() != entry["manifest_sha256"]:
        raise FormatError(f"{str(shard_file)!r}: its SHA-256 differs from field shards[{i}].manifest_sha256 "
                          f"of {str(file)!r} (a shard of another save, or corrupted)")
    m = _persist.read_manifest(shard_path)
    for name in SPEC_FIELDS:
        if m.get(name) != top.get(name):
            raise FormatError(f"{str(file)!r}: field {name!r} is {top.get(name)!r}, shard {entry['dir']!r} "
                              f"has {m.get(name)!r}")
    for name in ("rows", "live"):
        if m[name] != entry[name]:
            raise FormatError(f"{str(file)!r}: field shards[{i}].{name} is {entry[name]}, the shard has {m[name]}")
    if m["next_id"] > top["next_id"]:
        raise FormatError(f"{str(file)!r}: field 'next_id' ({top['next_id']}) is below shard "
                          f"{entry['dir']!r}'s ({m['next_id']})")
    return m


def read_sharded(path: Path) -> Sharded:
    """The checked sharded store at ``path`` (a plain MemoryStore directory: one shard).

    Raises FileNotFoundError when ``path`` does not exist, FormatError naming the file and
    field for anything else that is wrong.
    """
    if not is_sharded(path):
        m = _persist.read_manifest(path)
        return Sharded(path, m, ((path, m),))
    file = path / _persist.MANIFEST
    top = _json(path)
    _check_top(file, top)
    shards = tuple((path / e["dir"], _check_shard(file, top, i, e, path / e["dir"]))
                   for i, e in enumerate(top["shards"]))
    out = Sharded(path, top, shards)
    if out.rows != top["rows"] or out.live != top["live"]:
        raise FormatError(f"{str(file)!r}: fields 'rows'/'live' ({top['rows']}/{top['live']}) differ from "
                          f"the shards' sums ({out.rows}/{out.live})")
    return out


def _slice_run(run: Run, a: int, z: int, start: int) -> Run:
    """A segment's id run cut to its shard's rows [a, z) (inside the segment); row a becomes ``start``."""
    if run.rows is None:  # the segment's own ascending ids, row = base + position: a view
        return Run(run.ids[a - run.base: z - run.base], None, start, verify=run.verify)
    keep = (run.rows >= a) & (run.rows < z)
    return Run(run.ids[keep], run.rows[keep] - a + start, verify=run.verify)


def _shard_piece(shard_path: Path, m: dict, lo: int, hi: int, start: int, spec, device, verify):
    """Rows [lo, hi) of one shard as blocks and id runs re-based at ``start``, and their live mask."""
    live_all = seg.read_tombstones(shard_path, m, device)
    if int(live_all.sum()) != m["live"]:
        raise FormatError(f"{str(shard_path / _persist.MANIFEST)!r}: field 'live' is {m['live']}, "
                          f"the tombstones leave {int(live_all.sum())}")
    blocks, runs = [], []
    for entry in m["segments"]:
        a, z = max(lo, entry["start"]), min(hi, entry["start"] + entry["rows"])
        if a >= z:
            continue
        columns, run, checker = _persist._open_segment(shard_path, entry, spec, verify)
        part = slice(a - entry["start"], z - entry["start"])
        columns = {name: None if t is None else t[part] for name, t in columns.items()}
        lazy = checker if verify == "lazy" else None
        blocks.append(Block(start + a - lo, z - a, columns, frozen=True, verify=lazy, checker=checker))
        runs.append(_slice_run(run, a, z, start + a - lo))
    return blocks, runs, live_all[lo:hi]


def load_rows(cls, sharded: Sharded, a: int, z: int, *, mmap: bool, device, verify):
    """One store (``cls``) of rows ``[a, z)`` of the concatenation of ``sharded``'s shards.

    ``device`` and ``verify`` as checked by :func:`mnemonix.store._persist.load_options`.
    Its auto ids continue after the whole store's ``next_id``.
    """
    top = sharded.manifest
    args = seg.spec_args(top)
    store = cls(args.pop("dim"), device=device, **args)
    blocks, runs, lives, max_norm = [], [], [], 0.0
    offsets = sharded.offsets()
    for (shard_path, m), first in zip(sharded.shards, offsets):
        lo, hi = max(a, first) - first, min(z, first + m["rows"]) - first
        if lo >= hi:
            continue
        b, r, live = _shard_piece(shard_path, m, lo, hi, first + lo - a, store._spec, device, verify)
        blocks += b
        runs += r
        lives.append(live)
        max_norm = max(max_norm, float(m["max_norm"]))
    n_rows = max(z - a, 0)
    if mmap:
        blocks.append(Block(n_rows, 0, empty_columns(0, store._spec, device)))
    else:  # one in-memory block holding every row; no file stays mapped
        blocks, runs = seg.copied(blocks, runs, n_rows, store._spec, device)
    store._blocks = blocks or [Block(0, 0, empty_columns(0, store._spec, device))]
    store._live = torch.cat(lives) if lives else torch.zeros(0, dtype=torch.bool, device=device)
    store._n_rows, store._n_live = n_rows, int(store._live.sum())
    store._index = IdIndex(runs)
    store._next_id = int(top["next_id"])
    store._max_norm = max_norm
    return store
