"""Shared helpers of the ``bench/compare_*.py`` front-ends over the ``mnemonix bench`` harness.

Every number comes from :mod:`mnemonix.benchmark` (interleaved repetitions, p20/p50/p80,
floors, correctness in the same run): a front-end picks a suite's cases, runs them through
:func:`mnemonix.benchmark.run.run_suite` (rows appended to the history), pivots the rows into
its table, and writes ``bench/results/<name>-<device>.json`` with the run's environment.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from mnemonix.benchmark import environment, history, run, suites
from mnemonix.benchmark.settings import DEFAULT_HISTORY

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def add_harness_args(parser: argparse.ArgumentParser, *, repeat: int = 5) -> None:
    """The options every front-end shares: rounds, per-case budget, history file."""
    parser.add_argument("--repeat", type=int, default=repeat, help=f"interleaved rounds per case (default {repeat})")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per case after which rounds stop (>= 3)")
    parser.add_argument("--history", type=Path, default=ROOT / DEFAULT_HISTORY,
                        help=f"history the rows are appended to (default {DEFAULT_HISTORY}); 'none' for no history")


def history_path(args: argparse.Namespace) -> Path | None:
    return None if str(args.history).lower() == "none" else args.history


def run_cases(suite: str, cases: list[suites.Case], device: torch.device, args: argparse.Namespace, *,
              size: str | None = None, only: str | None = None) -> list[dict[str, Any]]:
    """Measure ``cases`` with the harness; rows appended to the history as each case finishes."""
    return run.run_suite(suite, device, history_path=history_path(args), repeat=args.repeat, budget_s=args.budget,
                         cases=cases, size=size, only=only)


def append_rows(rows: Iterable[dict[str, Any]], args: argparse.Namespace) -> None:
    """Append rows measured outside :func:`run_cases` (fresh processes) to the history."""
    path = history_path(args)
    if path is not None:
        history.append(path, rows)


def ms(row: dict[str, Any] | None, field: str = "p50") -> float | None:
    """A row's time in milliseconds (None when the row is missing or was not timed)."""
    return None if row is None or row.get(field) is None else 1e3 * row[field]


def by_backend(rows: list[dict[str, Any]], op: str, **shape: int) -> dict[str, dict[str, Any]]:
    """The rows of ``op`` whose shape includes ``shape``, keyed by backend (peers as ``peer:<name>``)."""
    return {r["backend"]: r for r in rows if r["op"] == op and all(r["shape"].get(k) == v for k, v in shape.items())}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def write_results(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None, *,
                  device: torch.device | None = None) -> Path:
    """Write ``bench/results/<name>-<device>.json`` (the harness rows, the run's environment)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{device.type}.json"
    payload = {"benchmark": name, "environment": environment.record(device), "rows": rows, **(extra or {})}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as an aligned Markdown table (:func:`mnemonix._table.print_table`)."""
    from mnemonix._table import print_table as _print_table

    _print_table(columns, [[r.get(c) for c in columns] for r in rows], markdown=True,
                 float_format=lambda v: f"{v:.4g}")


def report_wrong(rows: list[dict[str, Any]], say: Callable[[str], None] = print) -> int:
    """Name every candidate whose correctness check failed; 1 if any did (the exit status)."""
    wrong = [r for r in rows if r.get("ok") is False]
    for r in wrong:
        say(f"WRONG RESULT: {r['op']} {r['backend']} {r['shape']} {r['dtype']}")
    return 1 if wrong else 0


def peak_extra_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak memory above the baseline while ``fn`` runs (CUDA allocator, or RSS sampled every
    0.5 ms in a thread on CPU). A memory figure, not a timing."""
    import threading
    import time

    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return int(peak[0] - base)


def pivot(rows: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """One table row per (op, shape, dtype): ``<name>_ms`` (p50) of each backend in ``names``
    (backend -> column stem), the floor, ``x_floor`` (auto / floor), ``x_vs_<name>`` (the
    backend's time / auto's) and the reasons of the peers not run."""
    order: list[tuple] = []
    for r in rows:
        key = (r["op"], tuple(r["shape"].items()), r["dtype"])
        if key not in order:
            order.append(key)
    out = []
    for op, shape, dtype in order:
        group = {r["backend"]: r for r in rows
                 if (r["op"], tuple(r["shape"].items()), r["dtype"]) == (op, shape, dtype)}
        auto = group.get("auto")
        row: dict[str, Any] = {"op": op, **dict(shape), "dtype": dtype, "backend": auto and auto.get("chosen")}
        for backend, stem in names.items():
            row[f"{stem}_ms"] = ms(group.get(backend))
            if backend != "auto":
                row[f"x_vs_{stem}"] = ratio(row[f"{stem}_ms"], row.get(f"{names.get('auto', 'auto')}_ms"))
        row["floor_ms"] = None if auto is None or auto.get("floor_s") is None else 1e3 * auto["floor_s"]
        row["x_floor"] = ratio(ms(auto), row["floor_ms"])
        row["ok"] = all(r.get("ok") is not False for r in group.values())
        row["note"] = "; ".join(f"{b}: {r['skipped']}" for b, r in group.items() if r.get("skipped")) or None
        out.append(row)
    return out
