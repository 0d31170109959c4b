"""Argument checks of :class:`~mnemonix.store.MemoryStore` (run before any state changes).

Every check raises TypeError (wrong type or dtype) or ValueError (wrong shape, value or
device) naming the argument, what was expected and what was given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mnemonix import _checks

FLOAT_INPUTS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
METRICS = ("ip", "cos")


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds: key width and storage dtype, values, metric, device."""

    dim: int
    value_dim: int | None
    dtype: torch.dtype
    value_dtype: torch.dtype | None
    metric: str
    device: torch.device


def as_tensor(name: str, value: object, device: torch.device) -> torch.Tensor:
    """A torch tensor (numpy arrays are wrapped, zero-copy) on ``device``."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got dtype object")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if value.device.type != device.type:
        raise ValueError(f"{name} must be on the store's device {device}, got {value.device}")
    return value


def rows(name: str, value: object, width: int, spec: StoreSpec, n: int | None = None) -> torch.Tensor:
    """[n, width] finite float rows on the store's device (1-D input of length width: one row)."""
    t = as_tensor(name, value, spec.device)
    if t.ndim == 1 and t.shape[0] == width:
        t = t[None, :]
    _checks.tensor(name, t, ndim=2, dtypes=FLOAT_INPUTS)
    if t.shape[1] != width:
        raise ValueError(f"{name} must have shape [n, {width}], got {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per id), got shape {tuple(t.shape)}")
    _checks.finite(name, t)
    return t


def ids(name: str, value: object, spec: StoreSpec, *, unique: bool) -> torch.Tensor:
    """1-D int64 ids >= 0 (a Python int or list is accepted); distinct when ``unique``."""
    if isinstance(value, (list, tuple)) or (isinstance(value, int) and not isinstance(value, bool)):
        value = torch.tensor(value, dtype=torch.int64, device=spec.device)
    t = as_tensor(name, value, spec.device)
    if t.ndim == 0:
        t = t[None]
    _checks.tensor(name, t, ndim=1, dtypes=(torch.int64,))
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks a missing result), got {int(t.min())}")
    if unique and t.numel() > 1:
        s = torch.sort(t).values
        dup = s[1:] == s[:-1]
        if bool(dup.any()):
            raise ValueError(f"{name} must be distinct within one call, got {int(s[1:][dup][0])} more than once")
    return t


def per_row(name: str, value: object, n: int, default: float, spec: StoreSpec, *, positive: bool) -> torch.Tensor:
    """A float64 column [n]: ``default`` when None, a number broadcast, or a tensor [n]; finite."""
    if value is None:
        value = default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or (positive and value <= 0):
            raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {value!r}")
        t = torch.full((n,), float(value), dtype=torch.float64, device=spec.device)
    else:
        t = as_tensor(name, value, spec.device)
        _checks.tensor(name, t, ndim=1, dtypes=(*FLOAT_INPUTS,))
        if t.shape[0] != n:
            raise ValueError(f"{name} must have shape [{n}] (one per row), got {tuple(t.shape)}")
        t = t.double()
    _checks.finite(name, t)
    if positive and bool((t <= 0).any()):
        raise ValueError(f"{name} must be > 0 for every row (salience is logged), got values <= 0")
    return t


def to_storage(name: str, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast float rows to a float storage dtype; ValueError when they overflow it."""
    out = t.to(dtype)
    if out.dtype != t.dtype and not _checks.all_finite(out):
        raise ValueError(f"{name} overflow the store's dtype {dtype} (finite input, Inf after the cast)")
    return out


def queries(value: object, spec: StoreSpec) -> torch.Tensor:
    """[B, d] finite float32 queries (a single 1-D query becomes [1, d])."""
    return rows("queries", value, spec.dim, spec).float()


def positive_number(name: str, value: object) -> float:
    return _checks.positive_float(name, value)


def salience_args(alpha: object, now: object) -> tuple[float, float] | None:
    """(alpha, now) for the salience rule, or None when both are None."""
    if alpha is None and now is None:
        return None
    if alpha is None or now is None:
        raise ValueError("alpha and now go together: give both for salience ranking or neither, "
                         f"got alpha={alpha!r}, now={now!r}")
    for name, v in (("alpha", alpha), ("now", now)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(v).__name__}")
        if not math.isfinite(float(v)):
            raise ValueError(f"{name} must be finite, got {v!r}")
    if float(alpha) < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    return float(alpha), float(now)


def spec_of(dim, value_dim, dtype, value_dtype, metric, device) -> StoreSpec:
    """Check the constructor's arguments and build the store's spec."""
    dim = _checks.positive_int("dim", dim)
    if value_dim is not None:
        value_dim = _checks.positive_int("value_dim", value_dim)
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.int8):
        raise TypeError(f"dtype must be one of torch.float32, float16, bfloat16, int8, got {dtype!r}")
    if value_dim is None:
        if value_dtype is not None:
            raise ValueError("value_dtype needs value_dim (the store keeps no values)")
    else:
        value_dtype = value_dtype or (torch.float32 if dtype == torch.int8 else dtype)
        if value_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"value_dtype must be torch.float32, float16 or bfloat16, got {value_dtype!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must name a torch device, got {device!r}") from exc
    return StoreSpec(dim, value_dim, dtype, value_dtype, metric, device)
