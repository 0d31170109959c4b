"""Memoria step time and memory, mnemonix vs memoria-pytorch, side by side in one run.

The loop of the issue: ``add_working_memory(B=1, L=64, H=256) -> remind ->
adjust_lifespan_and_memories`` with num_reminded_stm 32, stm_capacity 512,
ltm_search_depth 5, initial_lifespan 50, num_final_ltms 16 and a lifespan delta
of 1 for every reminded engram. ``mnemonix`` runs the default ``tie_break="original"``
(memoria-pytorch's own random stream: B x S x M fp16 draws per step), ``mnemonix-random``
the C++ tie-break (one seed per step).

Method. For each store size M the store is first grown with the same loop
(chunks of ``--grow-chunk`` engrams, nothing dying) until it holds M engrams;
then every lifespan is set to 50 and ``--steps`` loop steps are timed (median).
memoria-pytorch starts from the *same* state (data, types, lifespans and the
co-fire counts densified from our graph into its [B, M, M] matrix), so both
run the same step. Each (implementation, size) runs in its own process: the
resident-memory growth (psutil RSS after the steps minus RSS before building
the store) is not polluted by the other. memoria-pytorch runs only up to
``--baseline-max`` engrams (its dense matrix: 4 M^2 bytes, ~5x that in RSS).

    python bench/compare_memoria.py --quick            # 1k engrams, seconds
    python bench/compare_memoria.py                    # 1k .. 100k (lead's quiet machine)
    python bench/compare_memoria.py --gpu-sizes 1000000  # on a CUDA machine
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIG = dict(num_reminded_stm=32, stm_capacity=512, ltm_search_depth=5, initial_lifespan=50, num_final_ltms=16)
WIDTH, HIDDEN = 64, 256


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def grow(size: int, chunk: int, device: str, seed: int, tie_break: str = "original"):
    """A mnemonix Memoria grown with the benchmark loop (nothing dies) to >= ``size`` engrams.

    Grown with the fast tie-break (the state is shared by every implementation anyway), then
    switched to ``tie_break`` for the timed steps.
    """
    import torch
    from tqdm import tqdm

    from mnemonix.memoria import Memoria

    memoria = Memoria(**dict(CONFIG, initial_lifespan=10**9), device=device, tie_break="random",
                      generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed)
    with tqdm(total=size, desc=f"grow to {size}", file=sys.stderr, leave=False) as bar:
        while len(memoria.engrams) < size:
            data = torch.rand(1, min(chunk, size - len(memoria.engrams)), HIDDEN, generator=gen).to(device)
            memoria.add_working_memory(data)
            _, indices = memoria.remind()
            memoria.adjust_lifespan_and_memories(indices, torch.ones_like(indices, dtype=torch.float32))
            bar.n = len(memoria.engrams)
            bar.refresh()
    memoria.initial_lifespan = CONFIG["initial_lifespan"]
    memoria.engrams.lifespan.fill_(float(CONFIG["initial_lifespan"]))
    memoria.tie_break = tie_break
    return memoria


def to_original(ours):
    """memoria-pytorch Memoria holding the same state (dense co-fire matrix)."""
    import memoria as original

    e = ours.engrams
    theirs = original.Memoria(**CONFIG)
    theirs.engrams = original.Engrams(
        e.data.cpu().clone(), induce_counts=e.induce_counts.cpu(), engrams_types=e.engrams_types.cpu().clone(),
        lifespan=e.lifespan.cpu().clone())
    return theirs


def worker(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    warm = grow(300, 64, args.device, args.seed + 7)  # library and allocator warm-up outside the measurement
    del warm
    gc.collect()
    rss0 = _rss()
    ours = grow(args.size, args.grow_chunk, args.device, args.seed,
                tie_break="random" if args.impl == "mnemonix-random" else "original")
    if args.impl == "memoria-pytorch":
        rss0 = _rss()  # count only what the original's state and steps add
        built = to_original(ours)
        del ours
        gc.collect()
        memoria, device = built, "cpu"
    else:
        memoria, device = ours, args.device
    engrams = len(memoria.engrams)
    edges = memoria.engrams.num_edges() if args.impl != "memoria-pytorch" else None
    gen = torch.Generator().manual_seed(args.seed + 1)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(args.steps + 1):
        data = torch.rand(1, WIDTH, HIDDEN, generator=gen).to(device)
        sync()
        t0 = time.perf_counter()
        memoria.add_working_memory(data)
        _, indices = memoria.remind()
        memoria.adjust_lifespan_and_memories(indices, torch.ones_like(indices, dtype=torch.float32))
        sync()
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])  # the first step warms up
    rss = _rss() - rss0
    data_bytes = engrams * HIDDEN * 4
    return {
        "impl": args.impl, "device": device, "engrams": engrams, "edges": edges,
        "step_ms": 1000 * times[len(times) // 2], "rss_mb": rss / 2**20,
        "beyond_data_mb": (rss - data_bytes) / 2**20, "data_mb": data_bytes / 2**20,
        "gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
    }


def run_worker(impl: str, size: int, args: argparse.Namespace, device: str = "cpu") -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--size", str(size), "--steps", str(args.steps),
           "--grow-chunk", str(args.grow_chunk), "--device", device, "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        return {"impl": impl, "device": device, "engrams": size, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1k engrams only (seconds)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 10000, 50000, 100000])
    parser.add_argument("--gpu-sizes", type=int, nargs="*", default=[10000, 100000, 1000000])
    parser.add_argument("--baseline-max", type=int, default=10000, help="largest store memoria-pytorch runs")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--grow-chunk", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--worker", choices=["mnemonix", "mnemonix-random", "memoria-pytorch"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(argparse.Namespace(**{**vars(args), "impl": args.worker}))))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import torch

    from bench._common import print_table, write_results

    sizes = [1000] if args.quick else args.sizes
    baseline_max = 1000 if args.quick else args.baseline_max
    try:
        import memoria  # noqa: F401

        have_baseline = True
    except ImportError:
        have_baseline = False
        print("memoria-pytorch is not installed: baseline skipped", file=sys.stderr)
    rows = []
    for size in sizes:
        ours = [run_worker(impl, size, args) for impl in ("mnemonix", "mnemonix-random")]
        rows.extend(ours)
        if have_baseline and size <= baseline_max:
            theirs = run_worker("memoria-pytorch", size, args)
            rows.append(theirs)
            for row in ours:
                if "step_ms" in theirs and "step_ms" in row:
                    row["speedup"] = theirs["step_ms"] / row["step_ms"]
    if torch.cuda.is_available():
        for size in ([10000] if args.quick else args.gpu_sizes):
            rows.append(run_worker("mnemonix", size, args, device="cuda"))
    columns = ["impl", "device", "engrams", "edges", "step_ms", "speedup", "rss_mb", "beyond_data_mb", "gpu_mb",
               "error"]
    print_table(rows, columns)
    path = write_results("memoria", rows, {"config": CONFIG, "width": WIDTH, "hidden": HIDDEN, "steps": args.steps,
                                           "quick": args.quick})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
