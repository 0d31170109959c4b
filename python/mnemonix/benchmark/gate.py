"""The noise-aware regression gate of ``mnemonix bench compare`` (xformers' rule).

A measurement regressed when ``(new - base) - rtol * base > atol`` on the median (defaults:
rtol 5 %, atol 30 us), comparing runs on the same device name only. Flagged cases are
re-measured (the case is rebuilt from its suite and timed with its peers, as the run timed it)
before the gate fails: the best median of the re-measurements replaces the new value, so one
noisy repetition does not fail a build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mnemonix.benchmark import history, suites
from mnemonix.benchmark.run import injected_slowdown
from mnemonix.benchmark.settings import ATOL, RTOL  # noqa: E402
from mnemonix.benchmark.timing import measure


@dataclass(frozen=True)
class Verdict:
    op: str
    backend: str
    shape: dict[str, int]
    dtype: str
    base_s: float
    new_s: float
    regressed: bool

    @property
    def ratio(self) -> float:
        return self.new_s / self.base_s


def regressed(base: float, new: float, *, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return (new - base) - rtol * base > atol


def pick_runs(rows: list[dict[str, Any]], base: str | None, new: str | None) -> tuple[str, str]:
    """Run ids to compare: the given ones, else the last two runs on the newest run's device."""
    order = history.runs(rows)
    if new is None:
        if not order:
            raise ValueError("the history holds no run")
        new = order[-1]
    device = next((r["device_name"] for r in rows if r["run_id"] == new), None)
    if device is None:
        raise ValueError(f"run {new!r} is not in the history (runs: {order[-5:]})")
    if base is None:
        same = [run for run in order if run != new and
                any(r["run_id"] == run and r["device_name"] == device for r in rows)]
        before = [run for run in same if order.index(run) < order.index(new)]
        if not before:
            raise ValueError(f"no earlier run on {device!r} to compare run {new!r} with")
        base = before[-1]
    elif base not in order:
        raise ValueError(f"run {base!r} is not in the history (runs: {order[-5:]})")
    return base, new


def compare(rows: list[dict[str, Any]], base: str, new: str, *, rtol: float = RTOL, atol: float = ATOL,
            remeasure: Callable[[dict[str, Any]], float | None] | None = None) -> list[Verdict]:
    """Verdicts for every measurement present in both runs (same device name)."""
    base_rows = {history.key(r): r for r in rows if r["run_id"] == base and r.get("p50") is not None}
    verdicts = []
    for row in rows:
        if row["run_id"] != new or row.get("p50") is None:
            continue
        old = base_rows.get(history.key(row))
        if old is None or old.get("device_name") != row.get("device_name"):
            continue
        new_s = row["p50"]
        flagged = regressed(old["p50"], new_s, rtol=rtol, atol=atol)
        if flagged and remeasure is not None and row.get("role") == "mnemonix":
            again = remeasure(row)
            if again is not None:
                new_s = min(new_s, again)
                flagged = regressed(old["p50"], new_s, rtol=rtol, atol=atol)
        verdicts.append(Verdict(row["op"], row["backend"], row.get("shape") or {}, row.get("dtype", ""),
                                old["p50"], new_s, flagged))
    return verdicts


def remeasurer(attempts: int = 2, repeat: int = 9) -> Callable[[dict[str, Any]], float | None]:
    """Re-time a history row's candidate with the current code (best median of ``attempts``),
    side by side with the rest of its case's candidates as the run timed it: timed alone, a
    candidate runs faster than it did among its peers, which would hide a real regression."""
    def again(row: dict[str, Any]) -> float | None:
        device = torch.device(row.get("device", "cpu"))
        try:
            found = suites.cases(row.get("suite", "quick"), device, row.get("size"))
        except ValueError:  # a suite or size this version does not declare
            return None
        for case in found:
            if case.op == row["op"] and case.shape == row.get("shape") and \
                    str(case.dtype).removeprefix("torch.") == row.get("dtype"):
                built = case.build(device)
                if row["backend"] not in built.candidates:
                    return None
                slow = injected_slowdown().get(row["op"])
                slowdown = {"auto": slow} if slow else None
                return min(measure(built.candidates, device, repeat=repeat, slowdown=slowdown,
                                   setup=built.setup)[row["backend"]].p50 for _ in range(attempts))
        return None

    return again
