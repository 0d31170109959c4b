"""The Hopfield stage of the consolidation simulation, research code vs mnemonix, side by side.

Paper setting (Spens & Burgess 2024): 10,000 Shapes3D images (64x64x3 = 12,288 values in
[-1, 1]) stored in a modern Hopfield network, retrieved from 10,000 uniform-noise cues at very
high beta. The research code runs ``X^T softmax(beta X q)`` in float64 numpy, one query at a
time; we time it on a handful of queries and extrapolate. mnemonix runs all cues through the
fused :func:`mnemonix.ops.hopfield_retrieve` (via ``ModernHopfield.retrieve``) in batches.

Floor: 2 matmuls of Q [B, d] x K^T [d, N] and P [B, N] x V [N, d]: 4 B N d flops
(4.9 TFLOP at 10k x 10k x 12,288).

Also reports the VAE training time per epoch on the CPU for the default configurations
(tiny VAE on digits; the paper's large VAE on 64x64x3 scenes, extrapolated from a few batches).

Usage: ``python bench/compare_consolidation.py [--quick] [--n N] [--queries B] [--threads T]``.
On a shared machine ``--threads 1`` avoids the slowdown of two OpenMP threads competing with
other jobs (small convolutions then run 5-20x slower than on one thread).
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import environment, print_table, timeit, write_results  # noqa: E402
from mnemonix.consolidation import ConsolidationConfig, LargeVAE, TinyVAE, load_digits, make_shapes3d  # noqa: E402
from mnemonix.consolidation.teacher_student import (  # noqa: E402
    DEFAULT_BETA,
    noise_cues,
    to_patterns,
    train_vae,
)
from mnemonix.hopfield import ModernHopfield  # noqa: E402


def research_retrieve_one(x64: np.ndarray, q: np.ndarray, beta: float) -> np.ndarray:
    """The research code's update for one query, float64 numpy: X^T softmax(beta X q)."""
    logits = beta * (x64 @ q)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return x64.T @ p


def stored_patterns(n: int, seed: int) -> torch.Tensor:
    """n procedural 64x64x3 scenes as patterns [n, 12288] in [-1, 1], generated in chunks."""
    chunks = []
    for start in range(0, n, 1000):
        chunks.append(to_patterns(make_shapes3d(min(1000, n - start), seed=seed + start).images))
    return torch.cat(chunks)


def bench_hopfield(n: int, b: int, *, research_queries: int, batch: int, beta: float) -> list[dict]:
    rows: list[dict] = []
    x = stored_patterns(n, seed=0)
    d = x.shape[1]
    cues = noise_cues(b, d, seed=1)
    flops = 4.0 * b * n * d

    # research code: float64 numpy, one query at a time (timed on a few, extrapolated)
    x64 = x.double().numpy()
    q64 = cues.double().numpy()
    k = min(research_queries, b)
    research_one(x64, q64[0], beta)  # warm-up
    t0 = time.perf_counter()
    ref_out = [research_one(x64, q64[i], beta) for i in range(k)]
    per_query = (time.perf_counter() - t0) / k
    del x64
    gc.collect()
    rows.append({"stage": "hopfield", "impl": "research (numpy f64, 1 query/call)", "device": "cpu",
                 "dtype": "float64", "N": n, "B": b, "d": d, "per_query_ms": per_query * 1e3,
                 "total_s": per_query * b, "note": f"timed {k} queries, extrapolated"})

    # mnemonix on CPU, float32, batched through the fused op
    hop = ModernHopfield(x, beta=beta)
    hop.retrieve(cues[:2], with_energy=False)  # warm-up: backend selection, lazy imports
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    r = hop.retrieve(cues, batch_size=batch, with_energy=False)
    total = time.perf_counter() - t0
    rss = proc.memory_info().rss - rss0
    err = max(float(np.abs(r.states[i].double().numpy() - ref_out[i]).max()) for i in range(k))
    rows.append({"stage": "hopfield", "impl": f"mnemonix ModernHopfield.retrieve (batch {batch})", "device": "cpu",
                 "dtype": "float32", "N": n, "B": b, "d": d, "per_query_ms": total / b * 1e3, "total_s": total,
                 "gflops": flops / total / 1e9, "speedup": per_query * b / total,
                 "rss_growth_mb": rss / 2**20, "max_abs_err_vs_research": err})

    if torch.cuda.is_available():
        for dtype in (torch.bfloat16, torch.float32):
            xg, qg = x.cuda().to(dtype), cues.cuda().to(dtype)
            hg = ModernHopfield(xg, beta=beta)
            secs = timeit(lambda hg=hg, qg=qg: hg.retrieve(qg, with_energy=False), repeat=5, warmup=2)
            out = hg.retrieve(qg[:k], with_energy=False).states.double().cpu().numpy()
            rows.append({"stage": "hopfield", "impl": "mnemonix ModernHopfield.retrieve (all cues)",
                         "device": torch.cuda.get_device_name(0), "dtype": str(dtype).removeprefix("torch."),
                         "N": n, "B": b, "d": d, "per_query_ms": secs / b * 1e3, "total_s": secs,
                         "gflops": flops / secs / 1e9, "speedup": per_query * b / secs,
                         "max_abs_err_vs_research": float(np.abs(out - np.stack(ref_out)).max())})
            del xg, qg, hg
            torch.cuda.empty_cache()
    return rows


research_one = research_retrieve_one


def bench_vae(quick: bool) -> list[dict]:
    rows: list[dict] = []
    # default digits configuration: tiny VAE, 1200 replayed items, batch 64
    cfg = ConsolidationConfig(n_stored=1200, batch_size=64)
    ds = load_digits()
    stored, held = ds.split(cfg.n_stored, seed=0)
    torch.manual_seed(0)
    vae = TinyVAE()
    hist = train_vae(vae, stored.images, stored.classes, held.subset(slice(0, 300)), epochs=1 if quick else 3,
                     batch_size=cfg.batch_size)
    per_epoch = float(np.mean([h.seconds for h in hist[1:]]))
    rows.append({"stage": "vae", "impl": "tiny VAE, digits 8x8, 1200 items, batch 64", "device": "cpu",
                 "dtype": "float32", "epoch_s": per_epoch, "note": f"mean of {len(hist) - 1} epochs"})
    # the paper's large VAE on 64x64x3, batch 32: time a few optimiser steps, extrapolate to 1000 items
    torch.manual_seed(0)
    big = LargeVAE()
    opt = torch.optim.Adam(big.parameters(), lr=1e-3)
    x = make_shapes3d(32, seed=0).images
    big.train()

    def step() -> None:
        loss, _ = big.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    secs = timeit(step, repeat=2 if quick else 5, warmup=1)
    rows.append({"stage": "vae", "impl": "large VAE (paper), 64x64x3, batch 32", "device": "cpu", "dtype": "float32",
                 "epoch_s": secs * math.ceil(1000 / 32), "step_s": secs,
                 "note": "per 1000-item epoch, extrapolated from single steps"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 stored x 500 cues (seconds)")
    ap.add_argument("--n", type=int, default=None, help="stored items (default 10,000; quick 500)")
    ap.add_argument("--queries", type=int, default=None, help="noise cues (default 10,000; quick 500)")
    ap.add_argument("--research-queries", type=int, default=None, help="queries timed for the research baseline")
    ap.add_argument("--batch", type=int, default=1024, help="cues per fused call on the CPU")
    ap.add_argument("--beta", type=float, default=DEFAULT_BETA)
    ap.add_argument("--skip-vae", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n = args.n or (500 if args.quick else 10_000)
    b = args.queries or (500 if args.quick else 10_000)
    rq = args.research_queries or (5 if args.quick else 10)
    env = environment()
    print(f"# consolidation bench: {n} stored x {b} cues x 12288, beta {args.beta:g}; "
          f"torch threads {env['torch_threads']}, cpu count {env['cpu_count']}, commit {env['commit']}")
    rows = bench_hopfield(n, b, research_queries=rq, batch=args.batch, beta=args.beta)
    print_table(rows, ["impl", "device", "dtype", "N", "B", "per_query_ms", "total_s", "gflops", "speedup",
                       "rss_growth_mb", "max_abs_err_vs_research", "note"])
    if not args.skip_vae:
        vrows = bench_vae(args.quick)
        print()
        print_table(vrows, ["impl", "device", "epoch_s", "step_s", "note"])
        rows += vrows
    name = "consolidation-quick" if args.quick else "consolidation"
    path = write_results(name, rows, {"config": {"n": n, "queries": b, "beta": args.beta, "batch": args.batch,
                                                "floor_tflop": 4.0 * n * b * 12288 / 1e12}})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
