"""ShardedMemoryStore on 1 and 2 gloo ranks of this machine, and one MemoryStore, over the same rows.

Usage::

    python bench/compare_sharded.py            # N = 2e6 rows in all, d = 128, float32, k = 10
    python bench/compare_sharded.py --quick    # N = 2e5

Every rank is its own process (``torch.multiprocessing`` spawn, gloo on 127.0.0.1, one torch
thread each) holding ``N / P`` of the rows. Per operation (search B = 1 and 64, retrieval
B = 1 and 64) and rank, the median over ``--repeat`` calls, each started right after a
barrier, of:

- ``total``: the collective call;
- ``comm``: the time inside its collectives (:attr:`ShardedMemoryStore.last_call`), which
  includes waiting for the slower rank;
- ``local``: the rest: the rank's own scan of its rows, the argument checks and the merge;
- ``cpu``: the CPU time of the calling thread during the call (the scan runs there: one
  torch thread), which does not grow when the machine is shared and a rank waits for a core;
- ``wire``: ``all_gather`` of payloads of the same sizes right after a barrier (nothing to
  wait for): what the communication itself costs;
- ``bytes``: what each rank receives per call (``(P - 1) x`` the per-rank payload of every
  ``all_gather``), and the sum over ranks.

Timing is the harness's (:func:`mnemonix.benchmark.timing.measure`, with a barrier as each
call's setup, outside the clock, and a fixed number of rounds so that every rank makes the
same collective calls); the rows (ops ``sharded.search`` / ``sharded.retrieve``, shape N, B
and ranks; the extra figures as fields) are appended to the history (``--history``). The
multi-process runs cannot be a single-process suite of ``mnemonix bench run``.

The one-rank run also times ``MemoryStore`` itself on all the rows (the shard *is* one), so
the sharded store's overhead at P = 1 shows. Results: ``bench/results/compare_sharded-<device>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import ROOT, append_rows, print_table, write_results  # noqa: E402
from mnemonix.benchmark import environment  # noqa: E402
from mnemonix.benchmark.timing import Timing, measure  # noqa: E402

CPU = torch.device("cpu")

D, K, BETA, BATCH = 128, 10, 0.05, 1 << 16
HEADER_BYTES = 10 * 8  # the agreement header of every call (mnemonix.distributed._comm.HEADER_WORDS)
STATUS_BYTES = 16


def _payload(op: str, B: int) -> int:
    """Bytes one rank contributes to the data all_gather of ``op`` (status word included)."""
    per_query = K * 16 if op == "search" else (D + 1) * 4  # (float64 score, int64 id) x k | out + lse
    return STATUS_BYTES + B * per_query


def _collective(fn, repeat: int) -> Timing:
    """Percentiles of ``fn`` (a collective call), each call after a barrier: one warm-up call
    and exactly ``repeat`` rounds on every rank (no time budget: the ranks must agree)."""
    return measure({"x": fn}, CPU, repeat=repeat, warmup_s=0.0, budget_s=float("inf"),
                   setup={"x": dist.barrier})["x"]


def _wire(world: int, sizes: list[int], repeat: int) -> float:
    """Median time of all_gathers of ``sizes`` bytes, started together after a barrier."""
    bufs = [torch.zeros(s, dtype=torch.uint8) for s in sizes]
    outs = [[torch.empty_like(b) for _ in range(world)] for b in bufs]

    def gather() -> None:
        for b, o in zip(bufs, outs):
            dist.all_gather(o, b)

    return _collective(gather, repeat).p50


def _build(world: int, rank: int, n_total: int):
    from mnemonix.distributed import ShardedMemoryStore

    store = ShardedMemoryStore(D)
    gen = torch.Generator().manual_seed(1000 + rank)
    n_local = n_total // world
    for start in range(0, n_local, BATCH):  # every rank adds the same number of batches (collective)
        store.add(torch.randn(min(BATCH, n_local - start), D, generator=gen))
    return store


def _rank_main(rank: int, world: int, port: int, n_total: int, repeat: int, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    store_ = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=600))
    dist.init_process_group("gloo", store=store_, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    store = _build(world, rank, n_total)
    queries = {B: torch.randn(B, D, generator=torch.Generator().manual_seed(B)) for B in (1, 64)}
    rows = []
    for op in ("search", "retrieve"):
        for B, q in queries.items():
            call = (lambda q=q: store.search(q, K)) if op == "search" else (lambda q=q: store.retrieve(q, beta=BETA))
            stats: list[tuple] = []

            def tracked(call=call, stats=stats) -> None:
                cpu = time.thread_time()
                call()
                s = store.last_call
                stats.append((s.seconds, s.comm_seconds, s.local_seconds, s.bytes_received, s.collectives,
                              time.thread_time() - cpu))

            total = _collective(tracked, repeat)
            med = np.median(np.array(stats[1:], dtype=np.float64), axis=0)  # the warm-up call's left out
            row = {"ranks": world, "rank": rank, "op": f"{op} B={B}", "N": n_total, "N_per_rank": len(store.local),
                   "total_ms": 1e3 * total.p50, "total_p20_ms": 1e3 * total.p20, "total_p80_ms": 1e3 * total.p80,
                   "comm_ms": 1e3 * med[1], "local_ms": 1e3 * med[2],
                   "bytes_received": int(med[3]), "collectives": int(med[4]), "cpu_ms": 1e3 * med[5],
                   "wire_ms": 1e3 * _wire(world, [HEADER_BYTES, _payload(op, B)], repeat)}
            if world == 1:  # the shard is a MemoryStore holding every row: time it alone
                plain = store.local
                fn = ((lambda q=q, s=plain: s.search(q, K)) if op == "search"
                      else (lambda q=q, s=plain: s.retrieve(q, beta=BETA)))
                alone = measure({"x": fn}, CPU, repeat=repeat)["x"]
                row.update(memorystore_ms=1e3 * alone.p50, memorystore_p20_ms=1e3 * alone.p20,
                           memorystore_p80_ms=1e3 * alone.p80)
            rows.append(row)
    Path(out_dir, f"rank-{rank}.json").write_text(json.dumps(rows))
    dist.barrier()
    dist.destroy_process_group()


def run_world(world: int, n_total: int, repeat: int) -> list[dict]:
    master = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(_rank_main, args=(world, master.port, n_total, repeat, out_dir), nprocs=world,
                           join=True, start_method="spawn")
        return [r for f in sorted(Path(out_dir).iterdir()) for r in json.loads(f.read_text())]


def summarise(per_rank: list[dict]) -> list[dict]:
    """One row per (ranks, op): the slowest rank's total and local time, rank 0's comm, bytes over all ranks."""
    out = []
    keys = sorted({(r["ranks"], r["op"]) for r in per_rank}, key=lambda t: (t[1], t[0]))
    for ranks, op in keys:
        rs = [r for r in per_rank if r["ranks"] == ranks and r["op"] == op]
        slowest = max(rs, key=lambda r: r["local_ms"])
        last = max(rs, key=lambda r: r["total_ms"])
        out.append({"op": op, "ranks": ranks, "N_per_rank": rs[0]["N_per_rank"],
                    "total_ms": last["total_ms"], "total_p20_ms": last["total_p20_ms"],
                    "total_p80_ms": last["total_p80_ms"], "local_ms": slowest["local_ms"],
                    "cpu_ms": max(r["cpu_ms"] for r in rs),
                    "comm_ms": rs[0]["comm_ms"], "wire_ms": max(r["wire_ms"] for r in rs),
                    "bytes_per_rank": rs[0]["bytes_received"], "bytes_all_ranks": sum(r["bytes_received"] for r in rs),
                    **{k: rs[0].get(k) for k in ("memorystore_ms", "memorystore_p20_ms", "memorystore_p80_ms")}})
    return out


def history_rows(rows: list[dict], n_total: int, env: dict) -> list[dict]:
    """The summary rows in the harness's history format (one per measured candidate)."""
    out = []
    for r in rows:
        op, b = r["op"].split(" B=")
        common = {**env, "suite": "sharded", "op": f"sharded.{op}", "dtype": "float32", "floor_s": None,
                  "shape": {"N": n_total, "B": int(b), "ranks": r["ranks"]}, "chosen": None, "ok": None}
        extra = {k: r[k] for k in ("N_per_rank", "local_ms", "cpu_ms", "comm_ms", "wire_ms", "bytes_per_rank",
                                   "bytes_all_ranks")}
        out.append({**common, **extra, "backend": "auto", "role": "mnemonix", "p20": r["total_p20_ms"] / 1e3,
                    "p50": r["total_ms"] / 1e3, "p80": r["total_p80_ms"] / 1e3})  # the slowest rank's
        if r.get("memorystore_ms") is not None:
            out.append({**common, "backend": "memorystore", "role": "mnemonix", "p20": r["memorystore_p20_ms"] / 1e3,
                        "p50": r["memorystore_ms"] / 1e3, "p80": r["memorystore_p80_ms"] / 1e3})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 2e5")
    parser.add_argument("--rows", type=int, default=None, help="total rows (default 2e6, 2e5 with --quick)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--history", type=Path, default=ROOT / "bench" / "history.jsonl",
                        help="default bench/history.jsonl; 'none' for none")
    args = parser.parse_args()
    n_total = args.rows or (200_000 if args.quick else 2_000_000)
    per_rank = []
    for world in args.ranks:
        t0 = time.perf_counter()
        per_rank += run_world(world, n_total, args.repeat)
        print(f"{world} rank(s): {time.perf_counter() - t0:.1f} s (build + timing)", flush=True)
    rows = summarise(per_rank)
    print_table(rows, ["op", "ranks", "N_per_rank", "total_ms", "local_ms", "cpu_ms", "comm_ms", "wire_ms",
                       "bytes_per_rank",
                       "bytes_all_ranks", "memorystore_ms"])
    append_rows(history_rows(rows, n_total, environment.record(CPU)), args)
    name = "compare_sharded" + ("-quick" if args.quick else "")
    path = write_results(name, rows, {"per_rank": per_rank, "d": D, "k": K, "beta": BETA, "N": n_total,
                                      "load_average": os.getloadavg()}, device=CPU)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
