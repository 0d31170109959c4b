"""Top-k salience recall side by side: the notebook's RecallEngine, plain torch, faiss flat, mnemonix.

A front-end of the ``salience`` suite of ``mnemonix bench`` (:mod:`mnemonix.benchmark.suites.salience`
says what each candidate computes): ``notebook`` (seeds/002's RecallEngine as written),
``torch`` (normalise, one matmul, relative salience, ``topk``, gather), ``faiss`` (``IndexFlatIP``
over salience-scaled normalised keys: the same ranking), ``mnemonix``
(:func:`mnemonix.ops.salience_topk`) and ``mnemonix_cached`` (the same with cached key norms,
as EpisodicMemory calls it), interleaved by the harness, ours checked in the same run. The add
table: a batch into a full :class:`~mnemonix.epinet.EpisodicMemory` against the notebook's
per-item ``torch.cat`` insertion (op ``episodic.add``).

Usage::

    python bench/compare_salience.py --quick          # small sizes, a few seconds
    python bench/compare_salience.py                  # the issue's sizes (CPU: N = 1e5, 1e6, 1e7)
    python bench/compare_salience.py --device cuda    # GPU sizes (bf16, N = 1e6, 1e7, B in {1, 64}, k in {5, 64})

The same rows without the tables: ``mnemonix bench run --suite salience [--size quick]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import add_harness_args, pivot, print_table, report_wrong, run_cases, write_results  # noqa: E402
from mnemonix.benchmark import suites  # noqa: E402
from mnemonix.benchmark.suites import salience as suite  # noqa: E402

NAMES = {"auto": "mnemonix", "cached_norms": "mnemonix_cached", "peer:notebook": "notebook", "peer:plain": "torch",
         "peer:faiss": "faiss"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--size", default=None, help=f"a size of the salience suite: {', '.join(suite.SIZES)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--sizes", default=None, help="comma-separated N values (CPU; d = 128, B = 64, k = 5)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_harness_args(p, repeat=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.size or ("quick" if args.quick else "default")
    cases = suites.cases("salience", device, size)
    if args.sizes:
        wanted = [int(float(s)) for s in args.sizes.split(",")]
        cases = [c for c in cases if c.op != "salience_topk"] + [
            suites.Case("salience_topk", {"N": n, "d": 128, "B": 64, "k": 5}, torch.float32,
                        suite.builder(n, 128, 64, 5, torch.float32, area=True)) for n in wanted]
    rows = run_cases("salience", cases, device, args, size=size)
    recall = pivot([r for r in rows if r["op"] == "salience_topk"], NAMES)
    print_table(recall, ["N", "B", "k", "dtype", "mnemonix_ms", "mnemonix_cached_ms", "notebook_ms", "torch_ms",
                         "faiss_ms", "x_vs_notebook", "x_vs_torch", "x_vs_faiss", "floor_ms", "x_floor", "ok", "note"])
    adds = pivot([r for r in rows if r["op"] == "episodic.add"], {"auto": "mnemonix", "peer:notebook": "notebook"})
    if adds:
        print()
        print_table(adds, ["stored", "batch", "mnemonix_ms", "notebook_ms", "x_vs_notebook", "floor_ms", "x_floor",
                           "ok", "note"])
    path = write_results("salience" + ("" if size == "default" else f"-{size}"), rows,
                         {"table": recall, "add": adds}, device=device)
    print(f"\nwrote {path}")
    return report_wrong(rows)


if __name__ == "__main__":
    raise SystemExit(main())
