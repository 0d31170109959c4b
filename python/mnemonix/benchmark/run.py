"""``mnemonix bench run``: measure a suite, check correctness in the same run, append the history."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from mnemonix.benchmark import environment, history, suites
from mnemonix.benchmark.floors import measure_floors
from mnemonix.benchmark.timing import measure, peer_ratio

SLOWDOWN_ENV = "MNEMONIX_BENCH_SLOWDOWN"
"""``op=fraction[,op=fraction...]`` (e.g. ``hopfield_retrieve=0.10``): inject a relative slowdown
into those ops' ``auto`` candidates -- the honest way to measure the regression gate's detection
rate (bench/gate_rates.py)."""


def injected_slowdown() -> dict[str, float]:
    spec = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not spec:
        return {}
    out = {}
    for item in spec.split(","):
        op, sep, fraction = item.partition("=")
        try:
            value = float(fraction)
        except ValueError:
            value = float("nan")
        if not sep or not op.strip() or not value >= 0 or value == float("inf"):
            raise ValueError(f"{SLOWDOWN_ENV} must look like 'op=0.10' or 'op1=0.1,op2=0.1', got {spec!r}")
        out[op.strip()] = value
    return out


def measure_case(case: suites.Case, device: torch.device, *, repeat: int, budget_s: float,
                 env: dict[str, Any], suite: str, size: str | None = None) -> list[dict[str, Any]]:
    """Rows of one case: every candidate timed side by side; ``ok`` from the correctness check.

    ``floor_s`` is None when the case declares neither bytes nor flops (no meaningful floor).
    Each peer the case could not run is a row with ``skipped`` (the reason) and no times.
    """
    built = case.build(device)
    ok = {}
    for name, fn in built.candidates.items():
        if not name.startswith("peer:"):
            if name in built.setup:
                built.setup[name]()
            ok[name] = bool(built.check(fn))
    slow = injected_slowdown()
    slowdown = {"auto": slow[case.op]} if case.op in slow else None
    timings = measure(built.candidates, device, repeat=repeat, budget_s=budget_s, slowdown=slowdown,
                      setup=built.setup)
    floor_s = None
    if built.bytes_read > 0 or built.flops > 0:
        floors = measure_floors(device, case.dtype if case.dtype.is_floating_point else torch.float32)
        floor_s = floors.of(bytes_read=built.bytes_read, flops=built.flops)
    common = {**env, "suite": suite, "op": case.op, "shape": dict(case.shape),
              "dtype": str(case.dtype).removeprefix("torch."), "floor_s": floor_s}
    if size is not None:
        common["size"] = size
    rows = []
    for name, t in timings.items():
        peer = name.startswith("peer:")
        rows.append({
            **common, **built.extra.get(name, {}), "backend": name, "role": "peer" if peer else "mnemonix",
            "chosen": built.chosen if name == "auto" else (None if peer else name),
            "p20": t.p20, "p50": t.p50, "p80": t.p80, "samples": t.samples, "ok": None if peer else ok[name],
            "peer_ratio": None if peer else peer_ratio(timings, name),
        })
    for name, why in built.notes.items():
        rows.append({**common, "backend": name, "role": "peer" if name.startswith("peer:") else "mnemonix",
                     "skipped": why,
                     "p20": None, "p50": None, "p80": None, "ok": None})
    return rows


def run_suite(suite: str, device: torch.device, *, history_path: str | os.PathLike[str] | None,
              repeat: int = 9, budget_s: float = 5.0, only: str | None = None,
              max_seconds: float | None = None, report: Callable[[str], None] = print,
              size: str | None = None, cases: list[suites.Case] | None = None) -> list[dict[str, Any]]:
    """Measure every case of ``suite`` on ``device``; append each case's rows as it finishes.

    ``size``: an area suite's size (see :func:`mnemonix.benchmark.suites.cases`). ``cases``:
    measure these instead of the suite's own (a front-end's chosen shapes; rows still name
    ``suite``). ``only``: the op to keep, or a prefix ending in "." (``store.`` keeps every
    store op). ``max_seconds``: start no new case once the run has taken that long (the GPU
    check has a fixed time budget); the cases not run are reported.
    """
    env = environment.record(device)
    all_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for case in suites.cases(suite, device, size) if cases is None else cases:
        if not _selected(case.op, only):
            continue
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            report(f"  {case.label}: not run (the run's {max_seconds:g} s budget is spent)")
            continue
        try:
            rows = measure_case(case, device, repeat=repeat, budget_s=budget_s, env=env, suite=suite, size=size)
        except (MemoryError, torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            report(f"  {case.label}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            continue
        if history_path is not None:
            history.append(history_path, rows)
        all_rows.extend(rows)
        report(_summary(case, rows))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return all_rows


def _selected(op: str, only: str | None) -> bool:
    return only is None or op == only or (only.endswith(".") and op.startswith(only))


def _summary(case: suites.Case, rows: list[dict[str, Any]]) -> str:
    timed = [r for r in rows if r["p50"] is not None]
    ours = [r for r in timed if r["role"] == "mnemonix"]
    if not ours:
        return f"  {case.label}: nothing of ours timed"
    auto = next((r for r in ours if r["backend"] == "auto"), ours[0])
    peers = [r for r in timed if r["role"] == "peer"]
    best = min(peers, key=lambda r: r["p50"]) if peers else None
    parts = [f"  {case.label}: {auto['backend']} ({auto['chosen']}) {auto['p50'] * 1e3:.3g} ms"]
    if best is not None:
        parts.append(f"best peer {best['backend'][5:]} {best['p50'] * 1e3:.3g} ms "
                     f"(ours/best {auto['p50'] / best['p50']:.2f})")
    if auto["floor_s"]:
        parts.append(f"floor {auto['floor_s'] * 1e3:.3g} ms (x{auto['p50'] / auto['floor_s']:.2f})")
    skipped = [r["backend"] for r in rows if r.get("skipped")]
    if skipped:
        parts.append(f"not run: {', '.join(skipped)}")
    if any(r["ok"] is False for r in ours):
        parts.append("WRONG RESULT: " + ", ".join(r["backend"] for r in ours if r["ok"] is False))
    return ", ".join(parts)
