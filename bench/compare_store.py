"""MemoryStore side by side with faiss ``IndexIDMap2(IndexFlatIP)`` and plain torch, d = 128.

A front-end of the ``store`` suite of ``mnemonix bench`` (:mod:`mnemonix.benchmark.suites.store`
says what each op times and against what); the rows go to the history and to
``bench/results/compare_store*-<device>.json``.

Usage::

    python bench/compare_store.py --quick            # N = 1e5 float32 only (size quick)
    python bench/compare_store.py                    # N = 1e6 float32 and float16, N = 1e7 float16 (size default)
    python bench/compare_store.py --int8-1e8         # also N = 1e8 int8 (12.8 GB; needs ~20 GB of disk)
    python bench/compare_store.py --only-int8-1e8    # just that one (compare_store-int8-1e8-<device>.json)
    python bench/compare_store.py --search-only      # N = 1e6 float32 / float16 search rows only (size search)
    python bench/compare_store.py --sweep            # ops.search_topk cpp vs torch scan over B (size sweep)

The same numbers without the table: ``mnemonix bench run --suite store --size quick``.
The N = 1e8 int8 store is built here (4M-row chunks, incremental saves, re-mapped: a store
that does not fit in memory twice); the harness times its last chunks (``store.add_with_saves``)
and its searches.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (  # noqa: E402
    add_harness_args,
    by_backend,
    ms,
    print_table,
    ratio,
    report_wrong,
    run_cases,
    write_results,
)
from mnemonix.benchmark import suites  # noqa: E402
from mnemonix.benchmark.floors import measure_floors  # noqa: E402
from mnemonix.benchmark.suites import store as store_suite  # noqa: E402

CPU = torch.device("cpu")
INT8_N, INT8_CHUNK = 100_000_000, 4_000_000


def table(rows: list[dict]) -> list[dict]:
    """One table row per (op, shape, dtype): our times, the peers', the floor and the ratios."""
    out = []
    seen: list[tuple] = []
    for r in rows:
        key = (r["op"], tuple(r["shape"].items()), r["dtype"])
        if key not in seen:
            seen.append(key)
    for op, shape, dtype in seen:
        group = by_backend([r for r in rows if r["dtype"] == dtype], op, **dict(shape))
        auto = group.get("auto")
        shape_d = dict(shape)
        label = f"N={shape_d['N']:.0e} {dtype}".replace("e+0", "e")
        what = op.removeprefix("store.") + "".join(f" {k}={v}" for k, v in shape_d.items() if k in ("B", "R"))
        row = {"case": label, "op": what, "mnemonix_ms": ms(auto), "mnemonix_torch_ms": ms(group.get("torch")),
               "cpp_ms": ms(group.get("cpp")), "faiss_ms": ms(group.get("peer:faiss")),
               "torch_ms": ms(group.get("peer:torch")), "load+search_ms": ms(group.get("load+search")),
               "floor_ms": None if auto is None or auto["floor_s"] is None else 1e3 * auto["floor_s"]}
        row["mnemonix/floor"] = ratio(row["mnemonix_ms"], row["floor_ms"])
        row["mnemonix/faiss"] = ratio(row["mnemonix_ms"], row["faiss_ms"])
        if op == "search_topk":
            row["torch/cpp"] = ratio(row["mnemonix_torch_ms"], row["cpp_ms"])
        if auto is not None:
            for field in ("MB", "incremental_share", "rss_growth_MB"):
                row[f"mnemonix_{field}"] = auto.get(field)
            if op in ("store.add", "store.add_with_saves"):
                rows_per_call = shape_d.get("chunk", shape_d["N"])
                row["mnemonix_rows_per_s"] = rows_per_call / auto["p50"]
        faiss = group.get("peer:faiss")
        if faiss is not None:
            row["faiss_MB"], row["faiss_rss_growth_MB"] = faiss.get("MB"), faiss.get("rss_growth_MB")
            row["faiss_note"] = faiss.get("skipped")
        out.append(row)
    return out


def int8_cases(work: Path) -> list[suites.Case]:
    """N = 1e8 int8: built in chunks (incremental saves, re-mapped); the last chunks and the
    searches are the harness's cases."""
    from tqdm import tqdm

    from mnemonix import MemoryStore

    path, state = work / "int8", {}
    store = MemoryStore(store_suite.D, dtype=torch.int8)
    gen = torch.Generator().manual_seed(0)

    def chunk() -> None:
        rows = min(INT8_CHUNK, INT8_N - state["store"].num_rows)
        for s in range(0, rows, store_suite.ADD_BATCH):
            state["store"].add(torch.randn(min(store_suite.ADD_BATCH, rows - s), store_suite.D, generator=gen))
        state["store"].save(path)
        state["store"] = MemoryStore.load(path, mmap=True, verify=False)

    state["store"] = store
    timed_chunks = 5  # the check's, the warm-up's and three rounds
    with tqdm(total=INT8_N - timed_chunks * INT8_CHUNK, unit="rows", unit_scale=True, desc="int8 build") as bar:
        while state["store"].num_rows < INT8_N - timed_chunks * INT8_CHUNK:
            chunk()
            bar.update(INT8_CHUNK)

    def build_chunk(device: torch.device) -> suites.Built:
        def check(fn) -> bool:
            before = state["store"].num_rows
            fn()
            return state["store"].num_rows == min(INT8_N, before + INT8_CHUNK)
        return suites.Built({"auto": chunk}, check, bytes_read=0.0, flops=0.0, chosen="torch")

    cases = [suites.Case("store.add_with_saves", {"N": INT8_N, "d": store_suite.D, "chunk": INT8_CHUNK},
                         torch.int8, build_chunk)]
    for b in (1, 64):
        shape = {"N": INT8_N, "d": store_suite.D, "B": b, "k": store_suite.K}
        search = store_suite._search(shape, torch.int8, False)
        cases.append(suites.Case("store.search", shape, torch.int8,
                                 lambda device, search=search: search(device, store=state["store"])))
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 1e5 float32 (size quick)")
    p.add_argument("--int8-1e8", action="store_true", help="also N = 1e8 int8 (12.8 GB)")
    p.add_argument("--only-int8-1e8", action="store_true", help="only N = 1e8 int8 (its own results file)")
    p.add_argument("--search-only", action="store_true", help="only the N = 1e6 float32 / float16 search rows")
    p.add_argument("--sweep", action="store_true", help="only ops.search_topk cpp vs torch over B")
    p.add_argument("--size", default=None, help=f"a size of the store suite: {', '.join(store_suite.SIZES)}")
    p.add_argument("--threads", type=int, default=None, help="torch (and faiss) threads")
    add_harness_args(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss, _ = store_suite._faiss()
        if faiss is not None:
            faiss.omp_set_num_threads(args.threads)
    size = args.size or ("sweep" if args.sweep else "search" if args.search_only else
                         "quick" if args.quick else "default")
    name = {"sweep": "compare_store-sweep", "search": "compare_store-search", "quick": "compare_store-quick",
            "tiny": "compare_store-tiny"}.get(size, "compare_store")
    bw = measure_floors(CPU).bandwidth / 1e9
    print(f"read bandwidth {bw:.1f} GB/s, {torch.get_num_threads()} threads")
    rows: list[dict] = []
    if not args.only_int8_1e8:
        rows += run_cases("store", suites.cases("store", CPU, size), CPU, args, size=size)
    if args.int8_1e8 or args.only_int8_1e8:
        name = "compare_store-int8-1e8" if args.only_int8_1e8 else name
        work = Path(tempfile.mkdtemp(prefix="mnemonix-bench-store-", dir=str(Path.home())))
        try:
            rows += run_cases("store", int8_cases(work), CPU, args, size="int8-1e8")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    shown = table(rows)
    columns = [c for c in ("case", "op", "mnemonix_ms", "mnemonix_torch_ms", "cpp_ms", "faiss_ms", "torch_ms",
                           "load+search_ms", "floor_ms", "mnemonix/floor", "mnemonix/faiss", "torch/cpp",
                           "mnemonix_rss_growth_MB", "faiss_rss_growth_MB", "mnemonix_MB", "faiss_MB",
                           "mnemonix_incremental_share", "mnemonix_rows_per_s")
               if any(r.get(c) is not None for r in shown)]
    print_table(shown, columns)
    out = write_results(name, rows, {"table": shown, "bandwidth_gbs": bw, "threads": torch.get_num_threads()},
                        device=CPU)
    print(f"\nwrote {out}")
    return report_wrong(rows)


if __name__ == "__main__":
    raise SystemExit(main())
