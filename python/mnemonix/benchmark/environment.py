"""What a measurement ran on: device name, versions, commit, clocks."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import torch


def git_commit(cwd: Path | None = None) -> str:
    """Short commit of the source tree (``-dirty`` when tracked files changed), or "unknown"."""
    where = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=where, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=where, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    """A stable name of the device: the GPU's name, or the CPU model and core count. A CPU model
    name without a model number (a hypervisor's "AMD EPYC" or "Intel(R) Xeon(R) Processor")
    gets the CPU's family and model, which tell apart generations the name hides (an AVX2 EPYC
    and an AVX-512 one): the regression gate compares a device only with itself, and the
    calibration's CPU profiles match this name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model(_cpuinfo())} x{os.cpu_count()}"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str) -> str:
    """The CPU's model name from the text of /proc/cpuinfo (its first processor), with
    ``(family F, model M)`` where the name carries no model number; the platform's processor
    name when the text has no model name."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block only
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "model name" in fields and not re.search(r"\d{3}", name) and "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def gpu_clocks() -> dict[str, Any] | None:
    """SM and memory clocks (MHz) from nvidia-smi when it is there; None otherwise."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    keys = ("sm_mhz", "mem_mhz", "max_sm_mhz", "temperature_c")
    try:
        return dict(zip(keys, (float(v) for v in out.split(","))))
    except ValueError:
        return None


def record(device: torch.device) -> dict[str, Any]:
    """The fields every history line carries about its run."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - any failure means "not available"
        triton_version = None
    import mnemonix

    env: dict[str, Any] = {
        "run_id": uuid.uuid4().hex[:12],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git_commit(),
        "version": mnemonix.__version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["clocks"] = gpu_clocks()
    return env
