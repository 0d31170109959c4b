"""Saving a :class:`~mnemonix.distributed.ShardedMemoryStore` to one directory, and loading it on any world size.

Layout (:mod:`mnemonix.store._shards`): a top ``MANIFEST.json`` and one ordinary
MemoryStore directory per saving rank, ``<generation>-<uid>-shard-<rank>``. A save writes
a new generation beside the old one: every rank writes its shard (full, atomically),
rank 0 swaps in the top manifest that names the new shards and the SHA-256 of each
shard's manifest, and only then deletes the old generation's directories, so a crash at
any moment leaves one complete generation loadable. The directory must be visible to
every rank (a shared filesystem).

Loading on W' ranks: with as many ranks as shards rank r takes shard r, otherwise rank
r takes rows ``[r N / W', (r + 1) N / W')`` of the shards' concatenation (segments are
sliced, not rewritten). ``MemoryStore.load(path)`` loads the whole as one store.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import torch

from mnemonix.distributed._comm import Comm, hash64
from mnemonix.store import MemoryStore, _persist, _shards

_WORDS = 7  # rows, live, max_norm bits, SHA-256 of the shard's manifest (4 words)


def _check_target(path: Path) -> int:
    """Refuse a target that is not (or cannot become) a sharded store; the next generation number."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"path {str(path)!r} exists and is not a directory")
    if not path.is_dir():
        return 1
    entries = list(path.iterdir())
    manifest = path / _persist.MANIFEST
    if manifest.exists() and not _shards.is_sharded(path):
        raise ValueError(f"path {str(path)!r} holds a store that is not sharded (or an unreadable manifest): "
                         "refusing to write over it")
    if not manifest.exists() and any(not _shards.SHARD_DIR.match(p.name) and not p.name.endswith(".tmp")
                                     for p in entries):
        raise ValueError(f"path {str(path)!r} is a non-empty directory that holds no sharded store: "
                         "refusing to write into it")
    generations = [int(m.group(1)) for p in entries if (m := _shards.SHARD_DIR.match(p.name))]
    if manifest.exists():
        generation = json.loads(manifest.read_bytes()).get("generation")
        generations.append(generation if isinstance(generation, int) else 0)
    return 1 + max(generations, default=0)


def _write_shard(store, shard: Path) -> list[torch.Tensor]:
    """Save this rank's shard; its (rows, live, max_norm, manifest SHA-256) as int64 words."""
    store._local._next_id = store._next_id
    shard.parent.mkdir(parents=True, exist_ok=True)
    store._local.save(shard)
    data = (shard / _persist.MANIFEST).read_bytes()
    m = json.loads(data)
    digest = np.frombuffer(hashlib.sha256(data).digest(), dtype=np.int64)
    max_norm = int(np.array([m["max_norm"]], dtype=np.float64).view(np.int64)[0])
    return [torch.tensor([m["rows"], m["live"], max_norm, *digest.tolist()], dtype=torch.int64)]


def _top_manifest(store, path: Path, generation: int, uid: str, words: list[torch.Tensor]) -> dict:
    """The top manifest naming every rank's shard (``words``: each rank's :func:`_write_shard` row)."""
    first = json.loads((path / _shards.shard_dir_name(generation, uid, 0) / _persist.MANIFEST).read_bytes())
    shards = []
    for rank, w in enumerate(words):
        w = w.cpu()
        name = _shards.shard_dir_name(generation, uid, rank)
        digest = w[3:].numpy().tobytes().hex()
        file = path / name / _persist.MANIFEST
        if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            raise ValueError(f"rank {rank} saved its shard to {str(path / name)!r}, which rank 0 cannot read: "
                             "path must be on a filesystem that every rank shares")
        shards.append({"dir": name, "rows": int(w[0]), "live": int(w[1]), "manifest_sha256": digest})
    max_norm = max(float(w.cpu()[2:3].view(torch.float64)) for w in words)
    return {"generation": generation, "uid": uid, **{f: first[f] for f in _shards.SPEC_FIELDS},
            "rows": sum(s["rows"] for s in shards), "live": sum(s["live"] for s in shards),
            "next_id": store._next_id, "max_norm": max_norm, "shards": shards}


def save(store, path) -> None:
    """Collective save of ``store`` to the directory ``path`` (see the module docstring)."""
    comm: Comm = store._comm
    what = "ShardedMemoryStore.save"
    error, generation, uid, path_text = None, 0, 0, ""
    try:
        path = Path(os.path.abspath(path))
        path_text = str(path)
        generation = _check_target(path)
        uid = secrets.randbits(63)
    except Exception as exc:  # noqa: BLE001 - agreed on below
        error = exc
    table = comm.agree(what, error, method="save", args=hash64(path_text), args_names="path",
                       words=[generation, uid])
    generation = int(table[:, 0].max())  # every rank looked; the newest wins
    uid_hex = f"{int(table[0, 1]):016x}"
    shard = path / _shards.shard_dir_name(generation, uid_hex, comm.rank)
    words = [w[0] for w in comm.exchange(what, lambda: _write_shard(store, shard), [((_WORDS,), torch.int64)])]
    error = None
    if comm.rank == 0:
        try:
            _shards.write_manifest(path, _top_manifest(store, path, generation, uid_hex, words))
        except Exception as exc:  # noqa: BLE001 - agreed on below
            error = exc
    comm.agree(what, error, method="save")
    if comm.rank == 0:  # the new generation is in place: drop the others (also those of crashed saves)
        named = {_shards.shard_dir_name(generation, uid_hex, r) for r in range(comm.world)}
        for p in path.iterdir():
            if _shards.SHARD_DIR.match(p.name) and p.name not in named:
                shutil.rmtree(p, ignore_errors=True)


def _row_range(sharded: _shards.Sharded, rank: int, world: int) -> tuple[int, int]:
    offsets = sharded.offsets()
    if len(sharded.shards) == world:
        return offsets[rank], offsets[rank + 1]
    n = sharded.rows
    return rank * n // world, (rank + 1) * n // world


def load(comm: Comm, path, *, mmap, device, verify) -> tuple[MemoryStore, int, int]:
    """Collective load: (this rank's shard, the whole store's length, its next id)."""
    what = "ShardedMemoryStore.load"
    error, sharded, words, path_text = None, None, [0, 0], ""
    try:
        if device is None:
            device = "cpu" if mmap else comm.device
        device, verify = _persist.load_options(mmap, device, verify)
        path = Path(os.path.abspath(path))
        path_text = str(path)
        sharded = _shards.read_sharded(path)
        words = [sharded.rows, hash64(sharded.manifest["checksum"])]
    except Exception as exc:  # noqa: BLE001 - agreed on below
        error = exc
    table = comm.agree(what, error, method="load", args=hash64(path_text, mmap, verify),
                       args_names="path, mmap and verify", words=words)
    if bool((table[:, 1] != table[0, 1]).any()):
        raise RuntimeError(f"{what}: the ranks read different manifests at {path_text!r} (saved meanwhile?)")
    a, z = _row_range(sharded, comm.rank, comm.world)
    local, error = None, None
    try:
        local = _shards.load_rows(MemoryStore, sharded, a, z, mmap=mmap, device=device, verify=verify)
    except Exception as exc:  # noqa: BLE001 - agreed on below
        error = exc
    comm.agree(what, error, method="load")
    return local, sharded.live, int(sharded.manifest["next_id"])
