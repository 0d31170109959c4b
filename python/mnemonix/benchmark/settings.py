"""Defaults of ``mnemonix bench`` that the CLI needs without importing torch."""

from __future__ import annotations

from pathlib import Path

SIZE_SUITES = ("smoke", "quick", "full", "gpu")
"""Suites by size: the core ops (``hopfield_retrieve``, ``salience_topk``, ``lifespan_step``) at
that suite's shapes; ``full`` adds every area's default shapes."""
AREAS = ("store", "memoria", "layers", "hopfield", "salience", "plastic", "consolidation")
"""Suites by area: what ``bench/compare_<area>.py`` measured, at the area's sizes (``--size``)."""
AREA_SIZES = ("tiny", "quick", "default")
"""Sizes every area declares: ``tiny`` (tests, seconds), ``quick`` (``--quick``), ``default``."""
SUITES = SIZE_SUITES + AREAS
RTOL = 0.05  # the gate's relative tolerance
ATOL = 30e-6  # the gate's absolute tolerance, seconds
DEFAULT_HISTORY = Path("bench") / "history.jsonl"
