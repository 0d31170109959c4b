"""``mnemonix bench``: run suites into an append-only history, gate regressions, plot.

    mnemonix bench run [--suite smoke|quick|full|gpu|store|memoria|layers|hopfield|salience|plastic|consolidation]
                       [--size tiny|quick|default] [--op OP] [--device cpu|cuda] [--history PATH]
    mnemonix bench compare [--history PATH] [--base RUN] [--new RUN] [--rtol 0.05] [--atol 30e-6]
    mnemonix bench plot [--history PATH] --out DIR
    mnemonix bench calibrate [--device cpu|cuda] [--out PATH] [--small-store N,d] [--large-store N,d]
                           [--salience-max-n N]
                             [--batches 1,2,4,...] [--repeat 7]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure ops against peers and floors; history, regression gate, plots")
    inner = p.add_subparsers(dest="bench_command", metavar="ACTION")
    inner.required = True
    from mnemonix.benchmark.settings import AREA_SIZES, ATOL, DEFAULT_HISTORY, RTOL, SUITES

    run = inner.add_parser("run", help="measure a suite and append one line per measurement to the history")
    run.add_argument("--suite", choices=SUITES, default="smoke", help="smoke takes under a minute on 2 cores")
    run.add_argument("--device", choices=["cpu", "cuda"], default=None,
                     help="default: cuda when available (the gpu suite), else cpu")
    run.add_argument("--history", type=Path, default=DEFAULT_HISTORY, help=f"default: {DEFAULT_HISTORY}")
    run.add_argument("--size", default=None,
                     help=f"an area suite's size: {', '.join(AREA_SIZES)} or one of the area's own "
                          "(default: default)")
    run.add_argument("--op", default=None,
                     help="only this op (e.g. hopfield_retrieve), or the ops under a prefix ending in '.' (store.)")
    run.add_argument("--repeat", type=_positive, default=9, help="interleaved rounds per case (default 9)")
    run.add_argument("--max-seconds", type=float, default=None, help="start no new case after this long")
    run.set_defaults(func=_run)

    cmp = inner.add_parser("compare", help="flag regressions beyond noise between two runs (exit 1 if any)")
    cmp.add_argument("--history", type=Path, default=DEFAULT_HISTORY)
    cmp.add_argument("--base", default=None, help="run id (default: the run before --new on the same device)")
    cmp.add_argument("--new", default=None, help="run id (default: the newest run)")
    cmp.add_argument("--rtol", type=float, default=RTOL)
    cmp.add_argument("--atol", type=float, default=ATOL, help="seconds")
    cmp.add_argument("--no-remeasure", action="store_true", help="fail on the recorded numbers alone")
    cmp.set_defaults(func=_compare)

    plot = inner.add_parser("plot", help="one PNG per op: time and %% of floor over the runs")
    plot.add_argument("--history", type=Path, default=DEFAULT_HISTORY)
    plot.add_argument("--out", type=Path, required=True)
    plot.set_defaults(func=_plot)

    cal = inner.add_parser("calibrate", help="measure the speed policies' crossovers on this machine; write them "
                                             "where the policies read them")
    cal.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    cal.add_argument("--out", type=Path, default=None,
                     help="default: the per-user file (~/.cache/mnemonix/calibration-<device>.json) that the "
                          "policies read; another path is read when MNEMONIX_CALIBRATION names it")
    cal.add_argument("--small-store", type=_store, default=None, metavar="N,d",
                     help="a cache-sized store, < 4 MB (default 8000,64: 2 MB of float32 keys)")
    cal.add_argument("--large-store", type=_store, default=None, metavar="N,d",
                     help="a store far beyond the caches, >= 4 MB and d > 48 (default 300000,128: 154 MB)")
    cal.add_argument("--batches", type=_batches, default=None,
                     help="batch sizes swept (default 1,2,4,8,12,16,24,32,48,64,128)")
    cal.add_argument("--salience-max-n", type=_positive, default=None, metavar="N",
                     help="largest store of the salience sweep (default 128000; B = 1 and 16, d = 64)")
    cal.add_argument("--repeat", type=_positive, default=7, help="interleaved rounds per point (default 7)")
    cal.set_defaults(func=_calibrate)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _store(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        n, d = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N,d (two integers), got {text!r}") from None
    if n < 1 or d < 1:
        raise argparse.ArgumentTypeError(f"N and d must be >= 1, got {text!r}")
    return n, d


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return tuple(sorted(set(values)))


def _run(args: argparse.Namespace) -> int:
    import torch

    from mnemonix.benchmark.run import run_suite

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    print(f"mnemonix bench run --suite {args.suite} on {device} -> {args.history}")
    rows = run_suite(args.suite, device, history_path=args.history, repeat=args.repeat, only=args.op,
                     max_seconds=args.max_seconds, size=args.size)
    wrong = [r for r in rows if r.get("ok") is False]
    for r in wrong:
        print(f"WRONG RESULT: {r['op']} {r['backend']} {r['shape']} {r['dtype']}")
    print(f"{len(rows)} measurements appended to {args.history}")
    return 1 if wrong else 0


def _compare(args: argparse.Namespace) -> int:
    from mnemonix._table import format_table
    from mnemonix.benchmark import gate, history

    rows = history.read(args.history)
    base, new = gate.pick_runs(rows, args.base, args.new)
    verdicts = gate.compare(rows, base, new, rtol=args.rtol, atol=args.atol,
                            remeasure=None if args.no_remeasure else gate.remeasurer())
    table = [{"op": v.op, "backend": v.backend, "shape": " ".join(f"{k}={x}" for k, x in v.shape.items()),
              "dtype": v.dtype, "base_ms": v.base_s * 1e3, "new_ms": v.new_s * 1e3, "drift": v.drift,
              "new/base": v.ratio, "verdict": "REGRESSED" if v.regressed else "ok"} for v in verdicts]
    print(f"base run {base} vs new run {new} (rtol {args.rtol:g}, atol {args.atol * 1e6:g} us; drift: how much "
          f"slower the case's peers ran, divided out of new/base)")
    columns = ["op", "backend", "shape", "dtype", "base_ms", "new_ms", "drift", "new/base", "verdict"]
    print(format_table(columns, [[row[c] for c in columns] for row in table]))
    bad = [v for v in verdicts if v.regressed and not v.backend.startswith("peer:")]
    for v in bad:
        print(f"regression: {v.op} {v.backend} {v.shape} {v.dtype}: {v.base_s * 1e3:.4g} -> {v.new_s * 1e3:.4g} ms")
    return 1 if bad else 0


def _plot(args: argparse.Namespace) -> int:
    from mnemonix.benchmark import history
    from mnemonix.benchmark.plot import plot_history

    for path in plot_history(history.read(args.history), args.out):
        print(f"wrote {path}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    import torch

    from mnemonix.benchmark import calibrate

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    stores = dict(calibrate.DEFAULT_STORES)
    if args.small_store is not None:
        stores["small"] = args.small_store
    if args.large_store is not None:
        stores["large"] = args.large_store
    print(f"mnemonix bench calibrate on {device} (timings on a shared machine are noisy: rerun to confirm)")
    salience = calibrate.SALIENCE_SHAPES
    if args.salience_max_n is not None:
        salience = tuple(shape for shape in salience if shape[1] <= args.salience_max_n)
    doc = calibrate.calibrate(device, stores=stores, batches=args.batches or calibrate.DEFAULT_BATCHES,
                              repeat=args.repeat, salience_shapes=salience)
    path = calibrate.write(doc, args.out)
    for op, values in doc["thresholds"].items():
        for name, value in values.items():
            print(f"{op}.{name} = {value}")
    for name, why in doc["not_measured"].items():
        print(f"{name}: {why}")
    print(f"wrote {path}")
    if args.out is not None:
        print(f"the policies read it with MNEMONIX_CALIBRATION={path}")
    return 0
