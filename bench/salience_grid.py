"""The salience grid: where each CPU backend of ``salience_topk`` wins (the exact C++ recall, the same
with torch's GEMM for its screen, the torch path), and how far the automatic choice is from the
best peer (plain torch top-k; faiss flat on salience-scaled keys when faiss is installed) at
every shape.

Every shape times, side by side (:func:`mnemonix.benchmark.timing.measure`, interleaved, p20):
``auto`` (the speed policy's choice, through the op's fast path), the forced ``cpp``, ``gemm`` and
``torch`` backends, and the peers of the ``salience`` suite (float32 rankings: not exact, which ours is).
k = 10, payloads = keys. The rows go to a JSON-lines file; the summary counts the shapes where
``auto`` is within 5% of the best peer and lists the worst. ``mnemonix bench calibrate`` fits
the policy's ``cpp_max_work`` on a ladder of these shapes.

    python bench/salience_grid.py [--out bench/results/salience_grid-cpu.jsonl] [--quick] [--summary FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.backend_grid import run_grid, without  # noqa: E402
from mnemonix import ops  # noqa: E402
from mnemonix.benchmark.suites import salience as salience_suite  # noqa: E402
from mnemonix.benchmark.timing import measure  # noqa: E402
from mnemonix.ops import salience as salience_op  # noqa: E402

HERE = Path(__file__).resolve().parent
CPU = torch.device("cpu")
BACKENDS = ("cpp", "gemm", "torch")
K = 10


def grid(quick: bool) -> list[tuple[int, int, int]]:
    """(N, d, B): N 1e3..1e6, d 32..768, B 1..1024 while a call stays under ~1e10 multiply-adds."""
    ns, ds = ((1_000, 100_000), (32, 128)) if quick else ((1_000, 10_000, 100_000, 1_000_000), (32, 128, 768))
    bs = (1, 16, 256) if quick else (1, 4, 16, 64, 256, 1024)
    return [(n, d, b) for n in ns for d in ds for b in bs if n * d * b <= 1e10 and n * d * 4 <= 600e6]


def measure_shape(n: int, d: int, b: int, repeat: int = 7, skip: frozenset[str] = frozenset()) -> dict:
    queries, keys, payloads, _, _, log_s = salience_suite.problem(n, d, b, K, torch.float32, CPU)
    cands = {"auto": lambda: ops.salience_topk(queries, keys, payloads, k=K, log_salience=log_s)[1]}
    for name in BACKENDS:
        cands[name] = lambda name=name: ops.salience_topk(queries, keys, payloads, k=K, log_salience=log_s,
                                                          backend=name)[1]
    cands.update(salience_suite.peers(queries, keys, payloads, log_s, K)[0])
    timings = measure(without(cands, skip), CPU, repeat=repeat, budget_s=4.0, warmup_s=0.1)
    return {"N": n, "d": d, "B": b, "chosen": salience_op.cpu_order(b, n, d)[0],
            **{name: t.p20 for name, t in timings.items()}}


def main(argv: list[str] | None = None) -> int:
    return run_grid(argv, description="salience_topk: every CPU backend and peer over a grid of shapes",
                    out=HERE / "results" / "salience_grid-cpu.jsonl", quick_help="12 shapes instead of the full grid",
                    shapes=grid, measure_one=measure_shape, backends=BACKENDS)


if __name__ == "__main__":
    raise SystemExit(main())
