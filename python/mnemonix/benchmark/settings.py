"""Defaults of ``mnemonix bench`` that the CLI needs without importing torch."""

from __future__ import annotations

from pathlib import Path

SUITES = ("smoke", "quick", "full", "gpu")
RTOL = 0.05  # the gate's relative tolerance
ATOL = 30e-6  # the gate's absolute tolerance, seconds
DEFAULT_HISTORY = Path("bench") / "history.jsonl"
