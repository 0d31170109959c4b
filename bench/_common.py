"""Shared helpers of the benchmark scripts: environment record, timing, JSON output.

Numbers are ratios measured side by side in one run; every result file records
device, versions and the git commit.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """Device, versions and commit of this run."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent, check=True,
        ).stdout.strip()
        dirty = bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
            text=True, cwd=Path(__file__).parent, check=True,
        ).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    import mnemonix

    env: dict[str, Any] = {
        "commit": commit + ("-dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "triton": triton_version,
        "mnemonix": mnemonix.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return env


def timeit(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1, min_time: float = 0.0) -> float:
    """Median wall time of ``fn`` in seconds (CUDA-synchronised when on GPU)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    start_all = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start_all) < min_time:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    return float(np.median(times))


def write_results(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Write ``bench/results/<name>-<device>.json`` and return the path."""
    env = environment()
    device = "cuda" if env["cuda_device"] else "cpu"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{device}.json"
    payload = {"benchmark": name, "environment": env, "rows": rows, **(extra or {})}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as an aligned Markdown table (:func:`mnemonix._table.print_table`)."""
    from mnemonix._table import print_table as _print_table

    _print_table(columns, [[r.get(c) for c in columns] for r in rows], markdown=True,
                 float_format=lambda v: f"{v:.4g}")
