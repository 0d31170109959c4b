"""Counts of the fuzz suite: each worker reports its probes, the controller prints the total."""

from __future__ import annotations

import pytest

from .harness import STATS

_TOTALS: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the counts to the controller
        workeroutput["mnemonix_fuzz"] = dict(STATS)
    else:
        for key, value in STATS.items():
            _TOTALS[key] = _TOTALS.get(key, 0) + value


def pytest_testnodedown(node, error) -> None:  # xdist controller
    for key, value in getattr(node, "workeroutput", {}).get("mnemonix_fuzz", {}).items():
        _TOTALS[key] = _TOTALS.get(key, 0) + value


def pytest_terminal_summary(terminalreporter) -> None:
    if any(_TOTALS.values()):
        parts = ", ".join(f"{key} {value}" for key, value in _TOTALS.items())
        terminalreporter.write_line(f"mnemonix fuzz: {parts}")
