"""Modern Hopfield retrieval: mnemonix against its baselines, side by side in one run.

A front-end of the ``hopfield`` suite of ``mnemonix bench`` (:mod:`mnemonix.benchmark.suites.hopfield`):
per shape (N stored patterns, d dimensions, B queries, values = keys) the harness times

- ``ours``: :func:`mnemonix.ops.hopfield_retrieve` with the automatic backend (named in the row),
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with K = V (flash kernel on CPU),
- ``torch``: plain ``softmax(beta Q K^T) K`` (materialises [B, N]),
- ``hflayers``: the unfused path of the ``hflayers`` package (``bmm`` -> softmax -> ``bmm`` on
  [heads, B, N], re-implemented from its description),
- ``research``: the research code's one-query-at-a-time float64 numpy retrieval
  ``X^T softmax(beta X q)`` (re-implemented from its description) over the whole batch, while
  that stays under a minute's work; reported per query too,

interleaved, with the floor of the shape (one read of the keys at the measured bandwidth, or
the 4 B N d flops at the measured ``torch.mm`` rate) and ours checked against SDPA in the same
run. Peers that would need too much memory or time are skipped with the reason in the row.

    python bench/compare_hopfield.py --quick       # seconds, small shapes
    python bench/compare_hopfield.py               # the issue's shapes (quiet machine!)

The same rows without the table: ``mnemonix bench run --suite hopfield [--size quick]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import add_harness_args, pivot, print_table, report_wrong, run_cases, write_results  # noqa: E402
from mnemonix.benchmark.suites import hopfield as suite  # noqa: E402

NAMES = {"auto": "ours", "peer:sdpa": "sdpa", "peer:plain": "torch", "peer:hflayers": "hflayers",
         "peer:research": "research"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes only (seconds)")
    parser.add_argument("--size", default=None, help=f"a size of the hopfield suite: {', '.join(suite.SIZES)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--name", default="compare_hopfield", help="results file stem")
    add_harness_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.size or ("quick" if args.quick else "default")
    rows = run_cases("hopfield", suite.area_cases(size, device), device, args, size=size)
    table = pivot(rows, NAMES)
    for row in table:
        if row.get("research_ms") is not None:
            row["research_ms_per_query"] = row["research_ms"] / row["B"]
            row["ours_ms_per_query"] = row["ours_ms"] / row["B"]
    columns = ["N", "d", "B", "dtype", "backend", "ours_ms", "sdpa_ms", "torch_ms", "hflayers_ms", "x_vs_sdpa",
               "x_vs_torch", "floor_ms", "x_floor", "research_ms_per_query", "ours_ms_per_query", "x_vs_research",
               "ok", "note"]
    print_table(table, columns)
    path = write_results(args.name + ("" if size == "default" else f"-{size}"), rows, {"table": table},
                         device=device)
    print(f"results: {path}")
    return report_wrong(rows)


if __name__ == "__main__":
    raise SystemExit(main())
