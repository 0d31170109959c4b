"""Memoria step time and memory, mnemonix vs memoria-pytorch, side by side in one run.

A front-end of the ``memoria`` suite of ``mnemonix bench`` (:mod:`mnemonix.benchmark.suites.memoria`
describes the loop, the shared starting state and the correctness check): the step times are
the harness's (``memoria.step``, interleaved rounds, one process). Resident memory needs a fresh
process per (implementation, size): unless ``--no-memory``, each runs in its own worker that
grows the same state and runs ``--steps`` steps, and its RSS growth (after the steps, minus
before building the store) joins the timed rows as extra fields. memoria-pytorch runs only up
to ``--baseline-max`` engrams (its dense matrix: 4 M^2 bytes, ~5x that in RSS).

    python bench/compare_memoria.py --quick            # 1k engrams, seconds
    python bench/compare_memoria.py                    # 1k .. 100k (lead's quiet machine)
    python bench/compare_memoria.py --sizes 10000 --steps 3
    python bench/compare_memoria.py --gpu-sizes 1000000  # on a CUDA machine

The step times alone: ``mnemonix bench run --suite memoria [--size quick]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORKER_IMPLS = ("auto", "random", "peer:memoria-pytorch")


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def worker(impl: str, size: int, steps: int, grow_chunk: int, device: str, seed: int, threads: int | None) -> dict:
    """(Fresh process) RSS growth of growing the state to ``size`` engrams and ``steps`` steps of ``impl``."""
    import torch

    from mnemonix.benchmark.suites import memoria as suite

    if threads:
        torch.set_num_threads(threads)
    warm = suite.grow(300, 64, device, seed + 7)  # library and allocator warm-up outside the measurement
    del warm
    gc.collect()
    rss0 = _rss()
    ours = suite.grow(size, grow_chunk, device, seed, tie_break="random" if impl == "random" else "original")
    if impl == "peer:memoria-pytorch":
        rss0 = _rss()  # count only what the original's state and steps add
        memoria, device = suite.to_original(ours), "cpu"
        del ours
        gc.collect()
    else:
        memoria = ours
    inputs = [torch.rand(1, suite.WIDTH, suite.HIDDEN, generator=torch.Generator().manual_seed(seed + 1 + i))
              for i in range(steps)]
    step = suite.Stepper(memoria, inputs, device, seed)
    engrams = len(memoria.engrams)
    for _ in range(steps):
        step()
    out = suite.memory_fields(rss0, _rss(), engrams)
    if device.startswith("cuda"):
        out["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if impl != "peer:memoria-pytorch":
        out["edges"] = memoria.engrams.num_edges()
    return out


def memory_of(impl: str, size: int, args: argparse.Namespace, device: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--size", str(size), "--steps", str(args.steps),
           "--grow-chunk", str(args.grow_chunk), "--device", device, "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        return {"memory_error": (done.stderr.strip().splitlines() or ["worker failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> list[dict]:
    out = []
    names = {"auto": "mnemonix", "random": "mnemonix-random", "peer:memoria-pytorch": "memoria-pytorch"}
    for r in rows:
        theirs = next((o for o in rows if o["backend"] == "peer:memoria-pytorch" and o["shape"] == r["shape"]
                       and o["device"] == r["device"] and o.get("p50") is not None), None)
        out.append({"impl": names.get(r["backend"], r["backend"]), "device": r["device"], "engrams": r["shape"]["M"],
                    "edges": r.get("edges"), "step_ms": None if r["p50"] is None else 1e3 * r["p50"],
                    "speedup": None if r["p50"] is None or theirs is None or r is theirs else theirs["p50"] / r["p50"],
                    "rss_mb": r.get("rss_mb"), "beyond_data_mb": r.get("beyond_data_mb"), "gpu_mb": r.get("gpu_mb"),
                    "ok": r.get("ok"), "note": r.get("skipped") or r.get("memory_error")})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1k engrams only (seconds)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 10000, 50000, 100000])
    parser.add_argument("--gpu-sizes", type=int, nargs="*", default=[10000, 100000, 1000000])
    parser.add_argument("--baseline-max", type=int, default=10000, help="largest store memoria-pytorch runs")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (interleaved rounds) per implementation")
    parser.add_argument("--grow-chunk", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per memory worker")
    parser.add_argument("--no-memory", action="store_true", help="step times only (no fresh-process workers)")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per case after which rounds stop")
    parser.add_argument("--history", type=Path, default=None, help="default bench/history.jsonl; 'none' for none")
    parser.add_argument("--worker", choices=WORKER_IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.steps, args.grow_chunk, args.device, args.seed,
                                args.threads)))
        return 0

    import torch

    from bench._common import ROOT, append_rows, print_table, report_wrong, write_results
    from mnemonix.benchmark import run
    from mnemonix.benchmark.suites import memoria as suite

    if args.threads:
        torch.set_num_threads(args.threads)
    args.history = args.history or ROOT / "bench" / "history.jsonl"
    args.repeat = args.steps
    sizes = [1000] if args.quick else args.sizes
    baseline_max = 1000 if args.quick else args.baseline_max
    plans = [(torch.device("cpu"), sizes)]
    if torch.cuda.is_available():
        plans.append((torch.device("cuda"), [10000] if args.quick else args.gpu_sizes))
    rows = []
    for device, device_sizes in plans:
        impls = suite.IMPLS if device.type == "cpu" else ("auto",)
        cases = suite.step_cases(device_sizes, device, baseline_max=baseline_max, grow_chunk=args.grow_chunk,
                                 impls=impls, seed=args.seed)
        timed = run.run_suite("memoria", device, history_path=None, repeat=args.repeat, budget_s=args.budget,
                              cases=cases, size="quick" if args.quick else "default")
        for row in timed:
            if not args.no_memory and row.get("p50") is not None:
                row.update(memory_of(row["backend"], row["shape"]["M"], args, device.type))
        rows += timed
    append_rows(rows, args)  # with the memory figures: one line per measured candidate
    print_table(table(rows), ["impl", "device", "engrams", "edges", "step_ms", "speedup", "rss_mb",
                              "beyond_data_mb", "gpu_mb", "ok", "note"])
    path = write_results("memoria", rows, {"config": suite.CONFIG, "width": suite.WIDTH, "hidden": suite.HIDDEN,
                                           "steps": args.steps, "quick": args.quick})
    print(f"\nwrote {path}")
    return report_wrong(rows)


if __name__ == "__main__":
    raise SystemExit(main())
