"""MemoryStore side by side with faiss ``IndexIDMap2(IndexFlatIP)`` and plain torch, d = 128.

Usage::

    python bench/compare_store.py --quick            # N = 1e5 float32 only, seconds
    python bench/compare_store.py                    # N = 1e6 float32 and float16, N = 1e7 float16
    python bench/compare_store.py --int8-1e8         # also N = 1e8 int8 (12.8 GB; needs ~20 GB of disk)
    python bench/compare_store.py --only-int8-1e8    # just that one (compare_store-int8-1e8-<device>.json)
    python bench/compare_store.py --search-only      # N = 1e6 float32 / float16 search rows only
    python bench/compare_store.py --sweep            # ops.search_topk cpp vs torch scan over B (policy)

Measured in one run on the same data:

- ``search``: B in {1, 64}, k = 10. ``mnemonix``: ``MemoryStore.search`` (exact, ties to the
  lower id; the op's speed policy picks the scan: the fused C++ scan on CPU);
  ``mnemonix_torch``: the same with the op forced to its chunked GEMM scan (the CPU path
  before the C++ scan); ``faiss``: ``index.search``; ``torch``: ``(Q @ K^T).topk``.
  Contenders run interleaved, one call each per round, and each reports its *minimum* over
  the rounds: the development machine is shared and loaded, and the minimum is the run
  least disturbed by others. ``floor``: one read of the stored bytes at the measured read
  bandwidth (the harness's: a sum over a buffer beyond the caches, at the same thread count).
- ``remove``: 1,000 random ids (``MemoryStore.remove`` vs ``faiss.remove_ids`` vs rebuilding
  the torch tensor without them).
- ``save`` / ``load``: ``MemoryStore.save`` to a fresh directory vs ``faiss.write_index``;
  ``MemoryStore.load(mmap=True)`` time and resident memory growth before the first search
  vs ``faiss.read_index``; ``save after +1%``: bytes an incremental save writes, as a share
  of the store's bytes.
- ``add``: rows per second of ``MemoryStore.add`` in batches of 65,536 (float16 at N = 1e7).
- ``--sweep``: ``ops.search_topk`` with the ``cpp`` and the ``torch`` backend forced, N = 65,536,
  d = 128, k = 10, B from 1 to 16,384 (interleaved minima): where the speed policy's
  ``CPP_MAX_BATCH`` comes from (``compare_store-sweep-<device>.json``).

Results: ``bench/results/compare_store-<device>.json`` (device, versions, commit).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import print_table, write_results  # noqa: E402
from mnemonix import MemoryStore, ops  # noqa: E402
from mnemonix.benchmark.floors import measure_floors  # noqa: E402
from mnemonix.ops import search as search_op  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the bench extra
    psutil = None
try:
    import faiss
except ImportError:  # pragma: no cover - faiss-cpu is in the bench extra
    faiss = None

D, K, BATCH = 128, 10, 1 << 16


def rss() -> int:
    return psutil.Process().memory_info().rss if psutil else 0


def bandwidth_gbs() -> float:
    """One-read bandwidth at this process's thread count, GB/s: the harness's floor measurement
    (:func:`mnemonix.benchmark.floors.measure_floors`: a sum over a buffer far beyond the caches).
    A copy's bandwidth is not a read's (writes allocate lines, and cost more than reads)."""
    return measure_floors(torch.device("cpu")).bandwidth / 1e9


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def build_store(n: int, dtype: torch.dtype, gen: torch.Generator) -> tuple[MemoryStore, float]:
    store = MemoryStore(D, dtype=dtype)
    elapsed = 0.0
    for start in range(0, n, BATCH):
        rows = torch.randn(min(BATCH, n - start), D, generator=gen)  # generated outside the timing
        t0 = time.perf_counter()
        store.add(rows)
        elapsed += time.perf_counter() - t0
    return store, elapsed


def interleaved_min(fns: dict, repeat: int) -> dict:
    """Seconds per call of each function: one warm-up each, then ``repeat`` rounds of one call
    each (interleaved, so that a burst of load from other processes hits all of them), minimum."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


@contextlib.contextmanager
def search_backend(name: str):
    """Force ``ops.search_topk``'s scan (the store calls the op without a backend argument)."""
    spec = search_op.SPEC
    search_op.SPEC = dataclasses.replace(spec, policy=lambda inputs, backends: [name])
    try:
        yield
    finally:
        search_op.SPEC = spec


def torch_scan_search(store, q):
    with search_backend("torch"):
        return store.search(q, K)


def search_rows(label, store, keys, index, bw, gen, repeat) -> list[dict]:
    rows = []
    stored = store.nbytes - 24 * store.num_rows  # key (and scale) bytes a search reads
    for B in (1, 64):
        q = torch.randn(B, D, generator=gen)
        fns = {"mnemonix_ms": lambda q=q: store.search(q, K),
               "mnemonix_torch_ms": lambda q=q: torch_scan_search(store, q)}
        if keys is not None:
            fns["torch_ms"] = lambda q=q: (q.to(keys.dtype) @ keys.T).float().topk(K)
        if index is not None:
            qn = q.numpy()
            fns["faiss_ms"] = lambda qn=qn: index.search(qn, K)
        row = {"case": label, "op": f"search B={B}"}
        row.update({name: 1e3 * t for name, t in interleaved_min(fns, repeat).items()})
        row["floor_ms"] = 1e3 * stored / (bw * 1e9)
        row["mnemonix/floor"] = row["mnemonix_ms"] / row["floor_ms"]
        if "faiss_ms" in row:
            row["mnemonix/faiss"] = row["mnemonix_ms"] / row["faiss_ms"]
        rows.append(row)
    return rows


def search_only(args, bw, gen) -> list[dict]:
    """The N = 1e6 float32 and float16 search rows (faiss on the float32 keys), nothing else."""
    rows = []
    for dtype in (torch.float32, torch.float16):
        label = f"N=1e6 {str(dtype).split('.')[1]}"
        print(f"\n-- {label}", flush=True)
        store, _ = build_store(1_000_000, dtype, gen)
        keys = store.get(store.ids())[0]
        index = None
        if faiss is not None and dtype == torch.float32:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(D))
            index.add_with_ids(keys.numpy(), np.arange(keys.shape[0], dtype=np.int64))
        rows += search_rows(label, store, keys, index, bw, gen, args.repeat)
        del store, keys, index
        gc.collect()
    return rows


def sweep(args, gen) -> list[dict]:
    """ops.search_topk, cpp vs torch scan, N = 65,536, over B (the speed policy's threshold)."""
    n, rows = 1 << 16, []
    x = torch.randn(n, D, generator=gen)
    for dtype in (torch.float32, torch.float16):
        keys = x.to(dtype)
        norm = 1.01 * float(torch.linalg.vector_norm(keys.float(), dim=1).max())
        for B in (1, 4, 16, 64, 256, 1024, 4096, 16384):
            q = torch.randn(B, D, generator=gen)
            fns = {f"{name}_ms": lambda q=q, keys=keys, norm=norm, name=name: ops.search_topk(
                q, keys, K, max_norm=norm, backend=name) for name in ("cpp", "torch")}
            row = {"case": f"N=65536 {str(dtype).split('.')[1]}", "op": f"search_topk B={B}"}
            row.update({name: 1e3 * t for name, t in interleaved_min(fns, 3 if B <= 1024 else 1).items()})
            row["torch/cpp"] = row["torch_ms"] / row["cpp_ms"]
            print(row, flush=True)
            rows.append(row)
    return rows


def remove_row(label, store, keys, index, gen) -> dict:
    ids = torch.randperm(len(store), generator=gen)[:1000]
    row = {"case": label, "op": "remove 1000"}
    t0 = time.perf_counter()
    assert store.remove(ids) == 1000
    row["mnemonix_ms"] = 1e3 * (time.perf_counter() - t0)
    if keys is not None:
        t0 = time.perf_counter()
        keep = torch.ones(keys.shape[0], dtype=torch.bool)
        keep[ids] = False
        _ = keys[keep]
        row["torch_ms"] = 1e3 * (time.perf_counter() - t0)
    if index is not None:
        sel = ids.numpy().astype(np.int64)
        t0 = time.perf_counter()
        assert index.remove_ids(sel) == 1000
        row["faiss_ms"] = 1e3 * (time.perf_counter() - t0)
        row["faiss/mnemonix"] = row["faiss_ms"] / row["mnemonix_ms"]
    return row


def persistence_rows(label, store, index, gen, work: Path) -> list[dict]:
    path = work / "store"
    t0 = time.perf_counter()
    store.save(path)
    save_s = time.perf_counter() - t0
    rows = [{"case": label, "op": "save", "mnemonix_ms": 1e3 * save_s, "mnemonix_MB": dir_bytes(path) / 1e6}]
    if index is not None:
        t0 = time.perf_counter()
        faiss.write_index(index, str(work / "faiss.index"))
        rows[-1]["faiss_ms"] = 1e3 * (time.perf_counter() - t0)
        rows[-1]["faiss_MB"] = (work / "faiss.index").stat().st_size / 1e6
    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    mapped = MemoryStore.load(path, mmap=True)
    row = {"case": label, "op": "load mmap", "mnemonix_ms": 1e3 * (time.perf_counter() - t0),
           "rss_growth_MB": (rss() - before) / 1e6}
    if index is not None:
        gc.collect()
        before = rss()
        t0 = time.perf_counter()
        loaded = faiss.read_index(str(work / "faiss.index"))
        row["faiss_ms"] = 1e3 * (time.perf_counter() - t0)
        row["faiss_rss_growth_MB"] = (rss() - before) / 1e6
        del loaded
    rows.append(row)
    q = torch.randn(1, D, generator=gen)
    t0 = time.perf_counter()
    mapped.search(q, K)  # first search: lazy checksum + page faults
    rows.append({"case": label, "op": "first search after mmap load", "mnemonix_ms": 1e3 * (time.perf_counter() - t0)})
    del mapped
    before_bytes = dir_bytes(path)
    store.add(torch.randn(max(1, store.num_rows // 100), D, generator=gen))
    names = {p.name for p in path.iterdir()}
    store.save(path)
    written = sum(p.stat().st_size for p in path.iterdir() if p.name not in names or p.name == "MANIFEST.json")
    rows.append({"case": label, "op": "save after +1% rows", "mnemonix_MB": written / 1e6,
                 "share_of_store": written / before_bytes})
    return rows


def run_case(label, n, dtype, args, bw, gen, work, *, compare=True) -> list[dict]:
    print(f"\n-- {label}: building N = {n:,} {dtype}", flush=True)
    store, add_s = build_store(n, dtype, gen)
    rows = [{"case": label, "op": "add", "mnemonix_rows_per_s": n / add_s}]
    keys = index = None
    if compare:
        keys = store.get(store.ids())[0]
        if faiss is not None and dtype == torch.float32:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(D))
            t0 = time.perf_counter()
            index.add_with_ids(keys.numpy(), np.arange(n, dtype=np.int64))
            rows[-1]["faiss_rows_per_s"] = n / (time.perf_counter() - t0)
    rows += search_rows(label, store, keys, index, bw, gen, args.repeat)
    rows.append(remove_row(label, store, keys, index, gen))
    del keys
    rows += persistence_rows(label, store, index, gen, work)
    del store, index
    gc.collect()
    return rows


def int8_1e8(args, bw, gen, work) -> list[dict]:
    """N = 1e8 int8 built in chunks (incremental saves, re-mapped), then searched exactly."""
    from tqdm import tqdm

    n, label, path = 100_000_000, "N=1e8 int8", work / "int8"
    store = MemoryStore(D, dtype=torch.int8)
    t0 = time.perf_counter()
    with tqdm(total=n, unit="rows", unit_scale=True, desc="int8 build") as bar:
        for start in range(0, n, 4_000_000):
            for s in range(start, min(start + 4_000_000, n), BATCH):
                store.add(torch.randn(min(BATCH, n - s, start + 4_000_000 - s), D, generator=gen))
            store.save(path)
            store = MemoryStore.load(path, mmap=True, verify=False)
            bar.update(min(4_000_000, n - start))
    rows = [{"case": label, "op": "add (with saves)", "mnemonix_rows_per_s": n / (time.perf_counter() - t0)}]
    rows += search_rows(label, store, None, None, bw, gen, 1)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--int8-1e8", action="store_true", help="also N = 1e8 int8 (12.8 GB)")
    p.add_argument("--only-int8-1e8", action="store_true", help="only N = 1e8 int8 (its own results file)")
    p.add_argument("--search-only", action="store_true", help="only the N = 1e6 float32 / float16 search rows")
    p.add_argument("--sweep", action="store_true", help="only ops.search_topk cpp vs torch over B")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        if faiss is not None:
            faiss.omp_set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    bw = bandwidth_gbs()
    print(f"read bandwidth {bw:.1f} GB/s, {torch.get_num_threads()} threads")
    work = Path(tempfile.mkdtemp(prefix="mnemonix-bench-store-", dir=str(Path.home())))
    rows: list[dict] = []
    try:
        if args.only_int8_1e8:
            pass
        elif args.sweep:
            rows += sweep(args, gen)
        elif args.search_only:
            rows += search_only(args, bw, gen)
        elif args.quick:
            rows += run_case("N=1e5 float32", 100_000, torch.float32, args, bw, gen, work)
        else:
            rows += run_case("N=1e6 float32", 1_000_000, torch.float32, args, bw, gen, work)
            rows += run_case("N=1e6 float16", 1_000_000, torch.float16, args, bw, gen, work)
            rows += run_case("N=1e7 float16", 10_000_000, torch.float16, args, bw, gen, work, compare=False)
        if args.int8_1e8 or args.only_int8_1e8:
            rows += int8_1e8(args, bw, gen, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    columns = ["case", "op", "mnemonix_ms", "mnemonix_torch_ms", "faiss_ms", "torch_ms", "floor_ms", "mnemonix/floor",
               "mnemonix/faiss", "faiss/mnemonix", "rss_growth_MB", "faiss_rss_growth_MB", "mnemonix_MB",
               "faiss_MB", "share_of_store", "mnemonix_rows_per_s", "faiss_rows_per_s"]
    name = "compare_store-quick" if args.quick else "compare_store"
    if args.only_int8_1e8:
        name = "compare_store-int8-1e8"
    elif args.sweep:
        name, columns = "compare_store-sweep", ["case", "op", "cpp_ms", "torch_ms", "torch/cpp"]
    elif args.search_only:
        name = "compare_store-search"
    print_table(rows, columns)
    out = write_results(name, rows, {"bandwidth_gbs": bw, "d": D, "k": K, "threads": torch.get_num_threads()})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
