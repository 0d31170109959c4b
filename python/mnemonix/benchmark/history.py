"""The append-only history: one JSON object per line, one line per measured candidate.

Fields of a line: ``op, backend, role ("mnemonix" | "peer"), chosen (the backend "auto" ran),
shape, dtype, device, device_name, p20, p50, p80, samples (seconds), floor_s, ok (correctness
checked in the same run), peer_ratio (ours only: the median per-round time over the case's
peers', see :func:`mnemonix.benchmark.timing.peer_ratio`), commit, version, torch, triton,
timestamp, run_id, suite``.
Lines are only ever appended (``O_APPEND``, one ``write`` per line), so concurrent runs and
crashes never corrupt earlier lines; a torn last line is skipped on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mnemonix.benchmark.settings import DEFAULT_HISTORY  # noqa: E402,F401


def append(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Append ``rows`` to the history at ``path`` (created with its folder); returns the count."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for row in rows:
            os.write(fd, (json.dumps(row, sort_keys=True) + "\n").encode())
            count += 1
    finally:
        os.close(fd)
    return count


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every well-formed line of the history (a torn or foreign line is skipped)."""
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"history {str(target)!r} does not exist: run `mnemonix bench run` first")
    rows = []
    with target.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and {"op", "backend", "run_id", "p50"} <= row.keys():
                rows.append(row)
    return rows


def runs(rows: list[dict[str, Any]]) -> list[str]:
    """Run ids in the order they first appear (oldest first)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(row["run_id"], None)
    return list(seen)


def key(row: dict[str, Any]) -> tuple:
    """What identifies one measurement across runs."""
    shape = tuple(sorted((row.get("shape") or {}).items()))
    return (row["op"], row["backend"], shape, row.get("dtype"), row.get("device"))
