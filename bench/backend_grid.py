"""The backend grid: where each CPU backend of ``hopfield_retrieve`` wins, and how far the automatic
choice is from the best peer (SDPA with K = V, plain torch) at every shape.

Every shape times, side by side (:func:`mnemonix.benchmark.timing.measure`, interleaved, p20):
``auto`` (the speed policy's choice, through the op's fast path), the forced ``cpp``, ``gemm``
and ``sdpa`` backends, and the peers. The rows go to a JSON-lines file; the summary counts the
shapes where ``auto`` is within 5% of the best peer (the issue's bar) and lists the worst. This
is what the CPU thresholds of :mod:`mnemonix.calibration` were read from (bench/NOTES.md,
"Backend grid").

With ``--dtype float16`` or ``bfloat16`` the operands are 16-bit and the forced backends the
ones that run them (``cpp``, ``sdpa``); the peers run in the same dtype (bench/NOTES.md,
"16-bit operands").

    python bench/backend_grid.py [--out bench/results/backend_grid-cpu.jsonl] [--quick] [--dtype D] [--summary FILE]
                                 [--shapes N:d:B,...] [--repeat R] [--skip NAME,...]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from mnemonix import ops
from mnemonix.backends import hopfield_amx
from mnemonix.benchmark import environment
from mnemonix.benchmark.suites import hopfield as hopfield_suite
from mnemonix.benchmark.timing import measure
from mnemonix.ops.hopfield import choose_backend

HERE = Path(__file__).resolve().parent
CPU = torch.device("cpu")
BACKENDS = ("cpp", "gemm", "sdpa")


def grid(quick: bool) -> list[tuple[int, int, int]]:
    """(N, d, B): N 1e3..1e6, d 32..1024, B 1..4096 while a call stays under ~3e10 multiply-adds
    and the keys under 600 MB, plus d = 12,288 (the research code's images)."""
    ns, ds = ((1_000, 100_000), (32, 128)) if quick else ((1_000, 10_000, 100_000, 1_000_000), (32, 128, 1024))
    bs = (1, 8, 64, 1024) if quick else (1, 4, 8, 16, 32, 64, 256, 1024, 4096)
    shapes = [(n, d, b) for n in ns for d in ds for b in bs if n * d * b <= 3e10 and n * d * 4 <= 600e6]
    return shapes + ([] if quick else [(10_000, 12_288, b) for b in (1, 16, 100)])


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The backends timed per dtype: no GEMM path for 16-bit operands, AMX tiles for bfloat16 only
# (capability; the AMX kernel where this CPU has the tiles)
HALF_BACKENDS = ("cpp", "sdpa")


def backends_of(dtype: str) -> tuple[str, ...]:
    if dtype == "bfloat16" and hopfield_amx.available():
        return (*HALF_BACKENDS, "amx")
    return BACKENDS if dtype == "float32" else HALF_BACKENDS


def measure_shape(n: int, d: int, b: int, repeat: int = 7, dtype: str = "float32",
                  skip: frozenset[str] = frozenset()) -> dict:
    queries, keys, beta = hopfield_suite.problem(n, d, b, DTYPES[dtype], CPU)  # the suites' inputs and peers
    cands = {"auto": lambda: ops.hopfield_retrieve(queries, keys, beta=beta)}
    for name in backends_of(dtype):
        cands[name] = lambda name=name: ops.hopfield_retrieve(queries, keys, beta=beta, backend=name)
    cands.update(hopfield_suite.peers(queries, keys, beta)[0])
    timings = measure(without(cands, skip), CPU, repeat=repeat, budget_s=4.0, warmup_s=0.1)
    return {"N": n, "d": d, "B": b, "dtype": dtype, "chosen": choose_backend(queries, keys),
            **{name: t.p20 for name, t in timings.items()}}


def without(cands: dict[str, Callable[[], object]], skip: frozenset[str]) -> dict[str, Callable[[], object]]:
    """``cands`` less the names in ``skip`` (``--skip``), which must leave ``auto`` and a peer."""
    kept = {name: fn for name, fn in cands.items() if name not in skip}
    if "auto" not in kept or not any(name.startswith("peer:") for name in kept):
        raise SystemExit(f"--skip {','.join(sorted(skip))} would leave no auto or no peer of {sorted(cands)}")
    return kept


def summary(rows: list[dict], backends: tuple[str, ...] = BACKENDS) -> list[str]:
    """The share of shapes where ``auto`` is within 5% of the best peer, the geometric mean of
    auto / best peer, and the worst shapes (with auto / the best of our forced ``backends`` that
    the row timed)."""
    ratios = []
    for r in rows:
        best_peer = min(v for k, v in r.items() if k.startswith("peer:"))
        ratios.append((r["auto"] / best_peer, r, r["auto"] / min(r[k] for k in backends if k in r)))
    within = sum(x <= 1.05 for x, _, _ in ratios)
    faster = sum(x < 1.0 for x, _, _ in ratios)
    geo = math.exp(sum(math.log(x) for x, _, _ in ratios) / len(ratios))
    lines = [f"{len(rows)} shapes: auto within 5% of the best peer at {within} (faster at {faster}); "
             f"geometric mean auto / best peer {geo:.3f}", "worst (auto / best peer, auto / best forced backend):"]
    for x, r, own in sorted(ratios, key=lambda t: -t[0])[:12]:
        dtype = "" if r.get("dtype", "float32") == "float32" else f" {r['dtype']}"
        lines.append(f"  {x:.2f}  N={r['N']} d={r['d']} B={r['B']}{dtype} auto={r['chosen']} ({own:.2f})")
    return lines


def run_grid(argv: list[str] | None, *, description: str, out: Path, quick_help: str,
             shapes: Callable[[bool], list[tuple[int, int, int]]], measure_one: Callable[..., dict],
             backends: tuple[str, ...], dtypes: tuple[str, ...] = ()) -> int:
    """The command line of a grid script: measure every (N, d, B) of ``shapes(quick)`` (or of
    ``--shapes``) with ``measure_one``, one JSON line each (with the environment) into
    ``--out``, then the :func:`summary`; or ``--summary FILE`` of an earlier run. With
    ``dtypes``, a ``--dtype`` option (the first is the default) passed on to ``measure_one``."""
    p = argparse.ArgumentParser(description=description)
    if dtypes:
        p.add_argument("--dtype", choices=dtypes, default=dtypes[0], help="the operands' dtype")
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--shapes", type=_shape_list, default=None,
                   help="only these shapes, as N:d:B[,N:d:B...] (a side-by-side check of a few)")
    p.add_argument("--repeat", type=int, default=7, help="rounds per shape (within a 4 s budget; default 7)")
    p.add_argument("--skip", type=lambda t: frozenset(x for x in t.split(",") if x), default=frozenset(),
                   help="candidates not timed, as NAME[,NAME...] (e.g. peer:plain, whose float16 matmul takes "
                        "seconds a call on a CPU without a float16 unit)")
    p.add_argument("--summary", type=Path, default=None, help="summarise an existing JSON-lines file and exit")
    args = p.parse_args(argv)
    if args.summary is not None:
        rows = [json.loads(line) for line in args.summary.read_text().splitlines() if line]
        print("\n".join(summary(rows, backends + HALF_BACKENDS + ("amx",) if dtypes else backends)))
        return 0
    options = {"skip": args.skip, **({"dtype": args.dtype} if dtypes else {})}
    env = environment.record(CPU)
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as fh:
        for n, d, b in args.shapes or shapes(args.quick):
            row = measure_one(n, d, b, repeat=args.repeat, **options)
            fh.write(json.dumps({**row, "environment": env}) + "\n")
            fh.flush()
            rows.append(row)
            times = "  ".join(f"{k} {v * 1e3:.3g}" for k, v in row.items() if isinstance(v, float))
            print(f"N={n} d={d} B={b} auto={row['chosen']}: {times} ms", flush=True)
    print("\n".join(summary(rows, backends_of(args.dtype) if dtypes else backends)))
    return 0


def _shape_list(text: str) -> list[tuple[int, int, int]]:
    try:
        found = [tuple(int(x) for x in item.split(":")) for item in text.split(",") if item]
    except ValueError:
        found = []
    if not found or any(len(t) != 3 or min(t) < 1 for t in found):
        raise argparse.ArgumentTypeError(f"--shapes must be N:d:B[,N:d:B...] with positive ints, got {text!r}")
    return found  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    return run_grid(argv, description="hopfield_retrieve: every CPU backend and peer over a grid of shapes",
                    out=HERE / "results" / "backend_grid-cpu.jsonl",
                    quick_help="16 shapes (about a minute) instead of the full grid", shapes=grid,
                    measure_one=measure_shape, backends=BACKENDS, dtypes=tuple(DTYPES))


if __name__ == "__main__":
    raise SystemExit(main())
