"""Argument checks of :class:`mnemonix.memoria.Engrams` (errors name the argument, nothing is half-applied)."""

from __future__ import annotations

import math

import torch

from mnemonix import _checks
from mnemonix._types import ENGRAM_WORKING, EngramType

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
MAX_DATA_NORM = math.sqrt(float(torch.finfo(torch.float32).max)) / 4
"""Largest norm of a Memoria engram's data (4.6e18): the squared distance of two engrams, at most
``(|a| + |b|)^2``, then fits float32 with room to spare (remind ranks engrams by it, in float32)."""


def not_meta(name: str, value: torch.Tensor) -> None:
    if value.device.type == "meta":
        raise ValueError(f"{name} is on the meta device: it holds no values")


def int32_values(name: str, value: torch.Tensor) -> torch.Tensor:
    """An integer tensor (or integral floats, truncated as the original does) that fits int32, as int32."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"{name} must hold integers, got {value.dtype}")
    not_meta(name, value)
    if value.numel():
        low, high = value.min(), value.max()
        if value.is_floating_point() and not bool(torch.isfinite(low) & torch.isfinite(high)):
            raise ValueError(f"{name} must be finite, got NaN or Inf values")
        if float(low) < INT32_MIN or float(high) > INT32_MAX:
            raise ValueError(f"{name} must fit in int32, got values in [{float(low)}, {float(high)}]")
    return value.detach().to(torch.int32)


def engram_data(name: str, values: torch.Tensor) -> None:
    """Refuse NaN/Inf and rows [..., H] of float32 ``values`` whose norm exceeds :data:`MAX_DATA_NORM`.

    One host read (the finite check's), a second only to word the error.
    """
    if values.numel() and not bool((values.square().sum(dim=-1) <= MAX_DATA_NORM**2).all()):
        _checks.finite(name, values)
        raise ValueError(f"{name} has a row whose norm exceeds {MAX_DATA_NORM:.2g}: squared distances between "
                         "engrams would overflow float32")


def real_tensor(name: str, value: object, shape: tuple[int, ...] | None = None,
                ndim: int | None = None) -> torch.Tensor:
    """A real (not bool, not complex) tensor of the given shape or rank."""
    _checks.tensor(name, value, ndim=ndim, dtypes=None)
    assert isinstance(value, torch.Tensor)
    if value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"{name} must have a real dtype, got {value.dtype}")
    not_meta(name, value)
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    return value


def engram_type_codes(value: object, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``engrams_types`` as uint8 codes [B, M]: None (WORKING), an EngramType / int code, or a tensor."""
    if value is None:
        return torch.full(shape, ENGRAM_WORKING, dtype=torch.uint8, device=device)
    if isinstance(value, torch.Tensor):
        codes = real_tensor("engrams_types", value, shape)
        if codes.is_floating_point() or codes.dtype not in _INT_DTYPES:
            raise TypeError(f"engrams_types must hold integer codes, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > 3):
            raise ValueError(f"engrams_types must hold EngramType codes 0-3 (NULL, WORKING, SHORTTERM, LONGTERM), "
                             f"got values in [{int(codes.min())}, {int(codes.max())}]")
        return codes.detach().to(torch.uint8, copy=True)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"engrams_types must be an EngramType, an int code or a tensor, got {type(value).__name__}")
    if value not in (0, 1, 2, 3):
        raise ValueError(f"engrams_types must be an EngramType code 0-3, got {value}")
    return torch.full(shape, int(EngramType(value)), dtype=torch.uint8, device=device)


def lifespans(value: object, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``lifespan`` as float32 [B, M]: a finite number or a finite tensor of that shape."""
    if isinstance(value, torch.Tensor):
        out = real_tensor("lifespan", value, shape).detach().to(torch.float32, copy=True)
        _checks.finite("lifespan", out)
        return out
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"lifespan must be a number or a tensor, got {type(value).__name__}")
    if not math.isfinite(value) or abs(value) > 3.4e38:
        raise ValueError(f"lifespan must be finite (in float32), got {value!r}")
    return torch.full(shape, float(value), dtype=torch.float32, device=device)


def int_field(name: str, value: object, shape: tuple[int, int], device: torch.device, *, arange: bool) -> torch.Tensor:
    """``age`` / ``engram_ids``: a tensor of int32 values, or an int (age: every engram; ids: first id)."""
    if isinstance(value, torch.Tensor):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
        return int32_values(name, value).clone()
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or a tensor, got {type(value).__name__}")
    if not arange:
        if not INT32_MIN <= value <= INT32_MAX:
            raise ValueError(f"{name} must fit in int32, got {value}")
        return torch.full(shape, value, dtype=torch.int32, device=device)
    if not INT32_MIN <= value <= INT32_MAX - shape[1]:
        raise ValueError(f"{name} must leave room for {shape[1]} int32 ids, got {value}")
    return torch.arange(value, value + shape[1], dtype=torch.int32, device=device).expand(shape).contiguous()


def field_value(name: str, value: object, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A checked value for a settable field (``data``, ``lifespan``, ``engrams_types``), of that shape/device."""
    if name == "engrams_types":
        out = engram_type_codes(value, shape, device) if isinstance(value, torch.Tensor) else None
        if out is None:
            raise TypeError(f"engrams_types must be a torch.Tensor, got {type(value).__name__}")
    else:
        out = real_tensor(name, value, shape)
        _checks.finite(name, out)
    if out.device != device:
        raise ValueError(f"{name} must be on {device} (the engrams' device), got {out.device}")
    return out


def check_constructor(data, induce_counts, engrams_types, lifespan, age, engram_ids, track_age, track_engram_id):
    """Checked fields of ``Engrams(...)``: data, lifespan, engrams_types, _age, _ids, induce_counts (or None)."""
    data = real_tensor("data", data, ndim=3).detach().to(torch.float32, copy=True)  # never a view of the caller's
    _checks.finite("data", data)
    batch, length, _ = data.shape
    shape, device = (batch, length), data.device
    for name, flag in (("track_age", track_age), ("track_engram_id", track_engram_id)):
        if not isinstance(flag, (bool, int)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    counts = None
    if induce_counts is not None:
        if isinstance(induce_counts, torch.Tensor) and tuple(induce_counts.shape) != (batch, length, length):
            raise ValueError(f"induce_counts must have shape {(batch, length, length)}, "
                             f"got {tuple(induce_counts.shape)}")
        counts = int32_values("induce_counts", induce_counts)
    fields = {
        "data": data, "lifespan": lifespans(lifespan, shape, device),
        "engrams_types": engram_type_codes(engrams_types, shape, device),
        "_age": int_field("age", age, shape, device, arange=False),
        "_ids": int_field("engram_ids", engram_ids, shape, device, arange=True),
    }
    _checks.same_device({"data": data, **{k: v for k, v in (("induce_counts", counts),
                                                             *((n.lstrip("_"), t) for n, t in fields.items()))}})
    return {**fields, "induce_counts": counts}


def index_matrix(name: str, indices: object, batch: int, length: int, *, check_range: bool = True) -> torch.Tensor:
    """Engram positions [B, N] (a tensor or nested list of ints); negative entries mean none; < ``length``.

    ``check_range=False`` leaves the range to a later check (it costs a host sync).
    """
    if isinstance(indices, (list, tuple)):
        try:
            indices = torch.as_tensor(indices)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a rectangular nested list of ints ({exc})") from exc
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(indices).__name__}")
    if indices.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must hold integer positions, got {indices.dtype}")
    not_meta(name, indices)
    if indices.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions [B, N], got shape {tuple(indices.shape)}")
    if indices.shape[0] != batch:
        raise ValueError(f"{name} must have {batch} rows (the batch), got shape {tuple(indices.shape)}")
    if check_range and indices.numel() and int(indices.max()) >= length:
        raise ValueError(f"{name} must be < {length} (the engrams per row), got {int(indices.max())}")
    return indices.long()


def bool_mask(name: str, mask: object, shape: tuple[int, int]) -> torch.Tensor:
    """A bool tensor [B, M]."""
    _checks.tensor(name, mask, ndim=2, dtypes=(torch.bool,))
    assert isinstance(mask, torch.Tensor)
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (the engrams' [B, M]), got {tuple(mask.shape)}")
    return mask
