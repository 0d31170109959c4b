"""The Hopfield stage of the consolidation simulation, research code vs mnemonix, side by side.

A front-end of the ``consolidation`` suite of ``mnemonix bench``
(:mod:`mnemonix.benchmark.suites.consolidation`). Paper setting (Spens & Burgess 2024): 10,000
Shapes3D images (64x64x3 = 12,288 values in [-1, 1]) stored in a modern Hopfield network,
retrieved from 10,000 uniform-noise cues at very high beta. The research code runs
``X^T softmax(beta X q)`` in float64 numpy, one query at a time; the harness times it over
every cue where that takes seconds, and per cue on a batch of 10 at the paper's N (the full
10,000 cues would take ~15 minutes a call). mnemonix runs all cues through the fused
:func:`mnemonix.ops.hopfield_retrieve` (via ``ModernHopfield.retrieve``) in batches of 1,024,
checked against the research code on the first cues in the same run.

Floor: 2 matmuls of Q [B, d] x K^T [d, N] and P [B, N] x V [N, d]: 4 B N d flops
(4.9 TFLOP at 10k x 10k x 12,288).

Also times one training step of the VAEs on the CPU (tiny VAE, 8x8, batch 64; the paper's large
VAE, 64x64x3, batch 32) and reports the epoch it implies.

Usage: ``python bench/compare_consolidation.py [--quick] [--n N] [--queries B] [--threads T]``.
On a shared machine ``--threads 1`` avoids the slowdown of two OpenMP threads competing with
other jobs (small convolutions then run 5-20x slower than on one thread).
The same rows without the tables: ``mnemonix bench run --suite consolidation [--size quick]``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import add_harness_args, print_table, report_wrong, run_cases, write_results  # noqa: E402
from mnemonix.benchmark import suites  # noqa: E402
from mnemonix.benchmark.suites import consolidation as suite  # noqa: E402
from mnemonix.consolidation.teacher_student import DEFAULT_BETA  # noqa: E402


def hopfield_table(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r["op"] != "consolidation.retrieve" or r.get("p50") is None:
            continue
        n, b, d = r["shape"]["N"], r["shape"]["B"], r["shape"]["d"]
        impl = "mnemonix ModernHopfield.retrieve" if r["role"] == "mnemonix" else "research (numpy f64, 1 query/call)"
        out.append({"impl": impl, "device": r["device"], "N": n, "B": b, "per_query_ms": 1e3 * r["p50"] / b,
                    "total_s": r["p50"], "gflops": 4.0 * b * n * d / r["p50"] / 1e9,
                    "x_floor": r["p50"] / r["floor_s"] if r.get("floor_s") else None, "ok": r.get("ok")})
    for row in out:  # per-query speed-up against the research code at the same N
        research = [o for o in out if o["impl"].startswith("research") and o["N"] == row["N"]]
        if research and not row["impl"].startswith("research"):
            row["speedup"] = research[0]["per_query_ms"] / row["per_query_ms"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 stored x 500 cues (seconds)")
    ap.add_argument("--size", default=None, help=f"a size of the consolidation suite: {', '.join(suite.SIZES)}")
    ap.add_argument("--n", type=int, default=None, help="stored items (default 10,000; quick 500)")
    ap.add_argument("--queries", type=int, default=None, help="noise cues (default 10,000; quick 500)")
    ap.add_argument("--beta", type=float, default=DEFAULT_BETA)
    ap.add_argument("--skip-vae", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the retrieval runs")
    add_harness_args(ap, repeat=3)
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.size or ("quick" if args.quick else "default")
    cases = suite.area_cases(size, device, beta=args.beta)
    if args.n or args.queries:
        n = args.n or (500 if args.quick else 10_000)
        b = args.queries or (500 if args.quick else 10_000)
        cases = [c for c in cases if c.op != "consolidation.retrieve"] + [
            suites.Case("consolidation.retrieve", {"N": n, "B": bb, "d": suite.D}, torch.float32,
                        suite._retrieve(n, bb, args.beta)) for bb in sorted({b, min(b, 10)})]
    if args.skip_vae:
        cases = [c for c in cases if c.op == "consolidation.retrieve"]
    print(f"# consolidation bench, beta {args.beta:g}; torch threads {torch.get_num_threads()}")
    rows = run_cases("consolidation", cases, device, args, size=size)
    hop = hopfield_table(rows)
    print_table(hop, ["impl", "device", "N", "B", "per_query_ms", "total_s", "gflops", "speedup", "x_floor", "ok"])
    vae = [{"impl": r["op"].rsplit(".", 1)[-1], "batch": r["shape"]["batch"], "step_s": r["p50"],
            "epoch_s (1000 items)": r["p50"] * math.ceil(1000 / r["shape"]["batch"]), "ok": r["ok"]}
           for r in rows if r["op"].startswith("consolidation.train_step") and r.get("p50") is not None]
    if vae:
        print()
        print_table(vae, ["impl", "batch", "step_s", "epoch_s (1000 items)", "ok"])
    name = "consolidation" + ("" if size == "default" else f"-{size}")
    path = write_results(name, rows, {"hopfield": hop, "vae": vae, "beta": args.beta}, device=device)
    print(f"\nwrote {path}")
    return report_wrong(rows)


if __name__ == "__main__":
    raise SystemExit(main())
