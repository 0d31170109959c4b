"""Argument checks of the consolidation package (on top of :mod:`mnemonix._checks`).

Each check raises TypeError (wrong type) or ValueError (wrong value, shape or device) whose
message names the argument, what was expected and what was given; none modifies its input.
"""

from __future__ import annotations

import math
import numbers
import os

import torch

from mnemonix import _checks

#: Seeds are drawn into torch/numpy generators, which take 64-bit seeds.
MAX_SEED = 2**63 - 1


def resolve_device(device: object, name: str = "device") -> torch.device:
    """``None`` -> CUDA when available, else the CPU; a str / torch.device -> that device,
    checked to exist (``"cuda"`` without CUDA is a ValueError, as is any other device type)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be None, a str or a torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"{name} must name a device such as 'cpu' or 'cuda', got {device!r}") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"{name} must be a CPU or CUDA device, got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"{name} is {device!r} but CUDA is not available on this machine")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name} is {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:<current>`` are the same device."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    cur = torch.cuda.current_device()
    return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)


def on_device(name: str, tensor: torch.Tensor, device: torch.device, owner: str) -> torch.Tensor:
    """Raise unless ``tensor`` lives on ``device`` (the device of ``owner``, e.g. the VAE); a meta
    tensor is refused as such (:func:`mnemonix._checks.tensor`)."""
    _checks.tensor(name, tensor, dtypes=None)
    if not same_device(tensor.device, device):
        raise ValueError(f"{name} is on {tensor.device} but {owner} is on {device}: move it with .to({str(device)!r})")
    return tensor


def integer(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool; numpy integers accepted) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    out = int(value)
    if (low is not None and out < low) or (high is not None and out > high):
        lo = "" if low is None else f">= {low}"
        hi = "" if high is None else f"<= {high}"
        raise ValueError(f"{name} must be {' and '.join(s for s in (lo, hi) if s)}, got {out}")
    return out


def seed(name: str, value: object) -> int:
    return integer(name, value, low=0, high=MAX_SEED)


def real(name: str, value: object, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool) in the given range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    out = as_float(value)
    bad = not math.isfinite(out)
    bad = bad or (low is not None and (out <= low if low_open else out < low))
    bad = bad or (high is not None and (out >= high if high_open else out > high))
    if bad:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        rng = " and ".join(s for s in (lo, hi) if s)
        raise ValueError(f"{name} must be a finite number{' ' + rng if rng else ''}, got {value!r}")
    return out


def as_float(value: numbers.Real) -> float:
    """``float(value)``; an int beyond float64 (``-10**400``) becomes -inf / +inf instead of an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def path_like(name: str, value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike path, got {type(value).__name__}")
    out = os.fspath(value)
    if not isinstance(out, str) or not out or "\0" in out:
        raise ValueError(f"{name} must be a non-empty path without NUL characters, got {value!r}")
    return out


def generator(name: str, value: object, device: torch.device) -> torch.Generator | None:
    """None or a torch.Generator on ``device`` (a CPU generator cannot draw for CUDA tensors)."""
    if value is None:
        return None
    if not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be None or a torch.Generator, got {type(value).__name__}")
    if not same_device(value.device, device):
        raise ValueError(f"{name} is a generator on {value.device} but it draws for tensors on {device}: "
                         f"pass torch.Generator(device={str(device)!r})")
    return value


def movable(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise unless ``value`` lives on a CPU or CUDA device (a meta tensor holds no data to move)."""
    _checks.tensor(name, value, dtypes=None)
    if value.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be on a CPU or CUDA device, got {value.device}")
    return value


def finite_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise if a float tensor holds NaN/Inf (one reduction, one host sync); a meta tensor
    holds no values to check and is refused."""
    _checks.tensor(name, value, dtypes=None)
    _checks.finite(name, value)
    return value
