"""``mnemonix store``: build, inspect and search a :class:`~mnemonix.store.MemoryStore` on disk.

- ``mnemonix store info PATH``: counts, dtypes, bytes, generation and segments.
- ``mnemonix store build PATH --from FILE.npy [--dtype D] [--metric M] [--chunk N]``: add the
  rows of a 2-D ``.npy`` (memory-mapped, read in chunks, with a progress bar) to the store at
  PATH (created, or appended to when it exists), saving every chunk (incremental saves), so
  memory stays bounded by a chunk however large the file.
- ``mnemonix store search PATH --query FILE.npy -k 10 [--filter IDS.npy]``: exact top-k per
  query row; prints ids and scores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

_DTYPES = ("float32", "float16", "bfloat16", "int8")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="build, inspect and search a MemoryStore directory")
    ops = p.add_subparsers(dest="store_command", metavar="ACTION")
    ops.required = True
    info = ops.add_parser("info", help="counts, dtypes, bytes, generation")
    info.add_argument("path", type=Path)
    info.set_defaults(func=_info)
    build = ops.add_parser("build", help="add the rows of a .npy file to a store (created if absent)")
    build.add_argument("path", type=Path)
    build.add_argument("--from", dest="source", type=Path, required=True, help="2-D .npy of keys [n, d]")
    build.add_argument("--dtype", choices=_DTYPES, default="float32", help="storage dtype of a new store")
    build.add_argument("--metric", choices=("ip", "cos"), default="ip", help="metric of a new store")
    build.add_argument("--chunk", type=int, default=1 << 18, help="rows added and saved at a time")
    build.set_defaults(func=_build)
    search = ops.add_parser("search", help="exact top-k of query rows")
    search.add_argument("path", type=Path)
    search.add_argument("--query", type=Path, required=True, help=".npy of queries [B, d] (or [d])")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--filter", type=Path, default=None, help=".npy of allowed int64 ids")
    search.add_argument("--mmap", action=argparse.BooleanOptionalAction, default=True,
                        help="map the segments instead of reading them (default: on)")
    search.set_defaults(func=_search)


def _npy(path: Path, name: str, *, mmap: bool = False):
    import numpy as np

    if not Path(path).is_file():
        raise FileNotFoundError(f"{name} {str(path)!r} does not exist")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{name} {str(path)!r} is not a readable .npy array ({exc})") from exc


def _info(args: argparse.Namespace) -> int:
    from mnemonix.store._persist import read_manifest

    manifest = read_manifest(args.path)
    seg_bytes = sum(s["bytes"] for s in manifest["segments"])
    summary = {
        "path": str(args.path), "generation": manifest["generation"], "live": manifest["live"],
        "rows": manifest["rows"], "removed": manifest["rows"] - manifest["live"], "dim": manifest["dim"],
        "dtype": manifest["dtype"], "value_dim": manifest["value_dim"], "value_dtype": manifest["value_dtype"],
        "metric": manifest["metric"], "next_id": manifest["next_id"], "segments": len(manifest["segments"]),
        "bytes": seg_bytes + manifest["tombstones"]["bytes"],
    }
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _build(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from mnemonix import MemoryStore

    if args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    data = _npy(args.source, "--from", mmap=True)
    if data.ndim != 2 or data.dtype.kind != "f":
        raise ValueError(f"--from must hold a 2-D float array [n, d], got {data.dtype} {data.shape}")
    exists = (args.path / "MANIFEST.json").is_file()
    store = (MemoryStore.load(args.path, mmap=True) if exists
             else MemoryStore(data.shape[1], dtype=getattr(torch, args.dtype), metric=args.metric))
    if store.dim != data.shape[1]:
        raise ValueError(f"--from rows have d = {data.shape[1]}, the store at {str(args.path)!r} has d = {store.dim}")
    t0 = time.perf_counter()
    with tqdm(total=data.shape[0], unit="rows", unit_scale=True, desc="build") as bar:
        for start in range(0, data.shape[0], args.chunk):
            rows = torch.from_numpy(np.array(data[start: start + args.chunk], dtype=np.float32))
            store.add(rows)
            store.save(args.path)
            # Re-map what is saved: memory stays one chunk however large the file is.
            store = MemoryStore.load(args.path, mmap=True, verify=False)
            bar.update(rows.shape[0])
    elapsed = time.perf_counter() - t0
    print(f"{data.shape[0]} rows added in {elapsed:.1f} s ({data.shape[0] / max(elapsed, 1e-9):,.0f} rows/s); "
          f"store: {len(store)} memories, {store.dtype}, {str(args.path)!r}")
    return 0


def _search(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from mnemonix import MemoryStore

    store = MemoryStore.load(args.path, mmap=args.mmap)
    queries = torch.from_numpy(np.ascontiguousarray(_npy(args.query, "--query")))
    flt = None
    if args.filter is not None:
        flt = torch.from_numpy(np.ascontiguousarray(_npy(args.filter, "--filter")))
    t0 = time.perf_counter()
    scores, ids = store.search(queries, args.k, filter=flt)
    elapsed = time.perf_counter() - t0
    for b in range(ids.shape[0]):
        print(json.dumps({"query": b, "ids": ids[b].tolist(),
                          "scores": [round(float(s), 6) if np.isfinite(float(s)) else None for s in scores[b]]}))
    print(f"{ids.shape[0]} queries, k = {args.k}, {len(store)} memories: {elapsed * 1e3:.1f} ms")
    return 0


def demo_section(ctx) -> None:
    """Build a store from the bundled digits, remove, search with a filter, save, reload mapped."""
    import tempfile

    import torch

    from mnemonix import MemoryStore
    from mnemonix.consolidation import load_digits

    data = load_digits()
    keys = data.images.flatten(1)  # [1797, 64]
    labels = data.labels[:, 0]
    store = MemoryStore(keys.shape[1], dtype=torch.float16, metric="cos")
    ids = store.add(keys, r0=torch.ones(len(keys)), tau=torch.arange(len(keys), dtype=torch.float64))
    removed = store.remove(ids[labels == 9])
    query = keys[labels == 3][:1] + 0.05 * torch.randn(1, keys.shape[1], generator=torch.Generator().manual_seed(0))
    sevens = ids[labels == 7]
    _, top = store.search(query, 5)
    _, top7 = store.search(query, 5, filter=sevens)
    _, recent = store.search(query, 5, alpha=0.002, now=float(len(keys)))
    rows = [["all", top[0].tolist(), labels[top[0]].tolist()],
            ["filter: only 7s", top7[0].tolist(), labels[top7[0]].tolist()],
            ["salience (recent first)", recent[0].tolist(), labels[recent[0]].tolist()]]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store.save(tmp)
        saved = time.perf_counter() - t0
        t0 = time.perf_counter()
        mapped = MemoryStore.load(tmp, mmap=True)
        loaded = time.perf_counter() - t0
        same = torch.equal(mapped.search(query, 5)[1], top)
    print(f"  {len(keys)} digits (8x8 -> 64-d, float16, cosine); removed {removed} nines; query: a noisy 3")
    ctx.table(["search", "top-5 ids", "their digits"], rows)
    print(f"  saved in {saved * 1e3:.1f} ms; mmap load {loaded * 1e3:.1f} ms; same results after reload: {same}")
