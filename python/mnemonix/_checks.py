"""Argument checks shared by the public boundary (ops, model constructors, load).

Every check raises ValueError or TypeError whose message names the argument,
what was expected and what was given. Checks never modify their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def tensor(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    min_ndim: int | None = None,
    dtypes: Sequence[torch.dtype] | None = FLOAT_DTYPES,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of the given rank and dtype; return it unchanged."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions, got shape {tuple(value.shape)}"
        )
    if dtypes is not None and value.dtype not in dtypes:
        raise TypeError(
            f"{name} must have dtype in {[str(d) for d in dtypes]}, got {value.dtype}"
        )
    return value


def all_finite(value: torch.Tensor) -> bool:
    """True when a tensor holds no NaN/Inf.

    One sum first: a finite sum proves every element finite (any NaN or Inf makes the sum
    NaN or Inf), and it allocates nothing of the input's size. Only a non-finite sum, which
    may also be a harmless overflow, pays for the exact element-wise check.
    """
    if not value.is_floating_point() or value.numel() == 0:
        return True
    total = value.detach().sum(dtype=torch.float64 if value.dtype == torch.float64 else torch.float32)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(value).all())


def finite(name: str, value: torch.Tensor) -> None:
    """Raise, naming the argument, if ``value`` holds NaN or Inf (see :func:`all_finite`)."""
    if not all_finite(value):
        raise ValueError(f"{name} must be finite, got NaN or Inf values")


def same_device(named: dict[str, torch.Tensor | None]) -> torch.device:
    """All given tensors live on one device; return it."""
    present = {k: v for k, v in named.items() if v is not None}
    devices = {k: v.device for k, v in present.items()}
    first_name, first = next(iter(devices.items()))
    for key, dev in devices.items():
        if dev != first:
            raise ValueError(
                f"{key} is on {dev} but {first_name} is on {first}: all inputs must share one device"
            )
    return first


def positive_float(name: str, value: object) -> float:
    """A finite float > 0 (e.g. beta)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return out


def nonneg_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
