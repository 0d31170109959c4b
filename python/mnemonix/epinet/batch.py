"""Validation and conversion of a batch offered to :meth:`EpisodicMemory.add`.

:func:`checked_batch` checks every argument and converts it to what the
memory stores (device, dtype, float64 salience, int64 labels, cached key
norms) before anything is written, so that a failing ``add`` leaves the
memory bit-identical. Valid input costs one host sync: the finiteness of
every tensor (and ``r0 > 0``, the key norms' float32 range, the labels'
int64 range) is folded into one small float64 vector checked once; only a
failing batch pays for the per-argument checks that name the culprit.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, NamedTuple

import torch

from mnemonix import _checks

if TYPE_CHECKING:
    from mnemonix.epinet.memory import EpisodicMemory

__all__ = ["Batch", "checked_batch", "real_tensor", "DEFAULT_NAMES"]

# Argument names of EpisodicMemory.add; EpiNet.memorize passes its own (key = payload = z, r0 = salience).
DEFAULT_NAMES = {"z": "z", "c": "c", "r0": "r0", "y": "y", "x": "x"}
_REAL_DTYPES = (torch.float64, *_checks.FLOAT_DTYPES)


class Batch(NamedTuple):
    """A checked batch on the memory's device: n items, converted to the stored dtypes."""

    z: torch.Tensor  # [n, payload_dim] memory dtype
    c: torch.Tensor  # [n, key_dim] memory dtype
    c_norm: torch.Tensor  # [n] float32
    r0: torch.Tensor  # [n] float64, > 0
    y: torch.Tensor  # [n] int64
    x: torch.Tensor | None  # [n, *input_shape] memory dtype
    n: int


def real_tensor(name: str, value: object, ndim: tuple[int, ...]) -> torch.Tensor:
    """A floating tensor (float64/32/16, bfloat16) of one of the ranks ``ndim``, holding data (not meta)."""
    return _checks.tensor(name, value, ndim=ndim, dtypes=_REAL_DTYPES).detach()


def _labels(name: str, y: object, n: int) -> torch.Tensor:
    """Labels of any integer dtype (a tensor, numpy array, sequence or int); bool, float, complex refused."""
    if not isinstance(y, torch.Tensor):
        if isinstance(y, bool) or isinstance(y, (str, bytes)):
            raise TypeError(f"{name} must be an integer tensor of labels, got {type(y).__name__}")
        try:
            y = torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be an integer tensor of labels, got {type(y).__name__} ({exc})") from None
    if y.dtype == torch.bool:
        # True/False as class 1/0 is a guess we do not make: the caller converts explicitly.
        raise TypeError(f"{name} must be an integer tensor of labels, got dtype torch.bool "
                        "(convert with .long() if the classes are 0 and 1)")
    if y.is_floating_point() or y.is_complex():
        raise TypeError(f"{name} must be an integer tensor of labels, got dtype {y.dtype}")
    _checks.tensor(name, y, dtypes=None)  # refuses meta
    if y.ndim > 1 or y.numel() != n:
        raise ValueError(f"{name} must have shape [{n}] (one label per z), got {tuple(y.shape)}")
    return y.detach().reshape(-1)


def _saliences(name: str, r0: object, n: int, device: torch.device) -> torch.Tensor:
    """Initial saliences as float64 [n]: one real number for all, a 0-dim tensor, or a tensor [n]."""
    if isinstance(r0, numbers.Real) and not isinstance(r0, bool):
        try:
            value = float(r0)
        except OverflowError:
            value = float("inf")
        return torch.full((n,), value, dtype=torch.float64, device=device)
    if not isinstance(r0, torch.Tensor):
        raise TypeError(f"{name} must be a real number or a floating tensor of shape [{n}], got {type(r0).__name__}")
    r0 = real_tensor(name, r0, (0, 1))
    if r0.ndim == 1 and r0.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one salience per z), got {tuple(r0.shape)}")
    return r0.to(device, torch.float64).expand(n)


def _shapes(memory: EpisodicMemory, z: torch.Tensor, c: torch.Tensor, x: object, names: dict[str, str]):
    """Check the shapes of z, c and x against the memory; z, c as [n, dim]; x checked (or None)."""
    z = z.unsqueeze(0) if z.ndim == 1 else z
    c = c.unsqueeze(0) if c.ndim == 1 else c
    n = z.shape[0]
    if z.shape[1] != memory.payload_dim:
        raise ValueError(f"{names['z']} must have shape [n, {memory.payload_dim}], got {tuple(z.shape)}")
    if c.shape != (n, memory.key_dim):
        raise ValueError(f"{names['c']} must have shape [{n}, {memory.key_dim}] (one key per z), "
                         f"got {tuple(c.shape)}")
    if memory.input_shape is None:
        if x is not None:
            raise ValueError(f"{names['x']} was given but this memory was built without input_shape")
        return z, c, None, n
    if x is None:
        raise ValueError(f"{names['x']} is required: this memory stores inputs of shape {memory.input_shape}")
    x = real_tensor(names["x"], x, (1 + len(memory.input_shape),))
    if tuple(x.shape) != (n, *memory.input_shape):
        raise ValueError(f"{names['x']} must have shape {(n, *memory.input_shape)} (one input per "
                         f"{names['z']}), got {tuple(x.shape)}")
    return z, c, x, n


def checked_batch(
    memory: EpisodicMemory,
    z: object,
    c: object,
    r0: object,
    y: object,
    x: object,
    names: dict[str, str] = DEFAULT_NAMES,
) -> Batch:
    """Check and convert one batch for ``memory`` (writes nothing). Raises TypeError / ValueError."""
    z = real_tensor(names["z"], z, (1, 2))
    c = real_tensor(names["c"], c, (1, 2))
    z, c, x, n = _shapes(memory, z, c, x, names)
    r0 = _saliences(names["r0"], r0, n, memory.device)
    y_in = _labels(names["y"], y, n)
    dev, dt = memory.device, memory.dtype
    c = c.to(dev, dt)
    batch = Batch(
        z=z.to(dev, dt), c=c, c_norm=torch.linalg.vector_norm(c.float(), dim=1), r0=r0,
        y=y_in.to(dev, torch.int64), x=None if x is None else x.to(dev, dt), n=n,
    )
    if n:
        _check_values(batch, {"z": z, "c": c, "x": x}, y_in.dtype, names)
    return batch


def _check_values(batch: Batch, given: dict[str, torch.Tensor | None], y_dtype: torch.dtype,
                  names: dict[str, str]) -> None:
    """One host sync when everything is valid; on failure, find the argument to name."""
    # A non-finite float64 sum flags a NaN/Inf, a value that overflowed the memory's dtype, a key whose
    # squared norm overflows float32 (the recall could not use it), r0 <= 0 (its log is NaN or -inf),
    # or a uint64 label beyond int64 (it wrapped to a negative value).
    terms = [batch.z.sum(dtype=torch.float64), batch.c.sum(dtype=torch.float64),
             batch.c_norm.square().sum(dtype=torch.float64), torch.log(batch.r0).sum()]
    if batch.x is not None:
        terms.append(batch.x.sum(dtype=torch.float64))
    wrapped = None
    if y_dtype == torch.uint64:
        wrapped = (batch.y < 0).any()
        terms.append(torch.where(wrapped, float("inf"), 0.0).to(torch.float64))
    if _checks.all_finite(torch.stack(terms)):
        return
    for key in ("z", "c", "x"):
        if given[key] is not None:
            _checks.finite(names[key], given[key])
            if not _checks.all_finite(getattr(batch, key)):
                raise ValueError(f"{names[key]} overflows the memory's dtype {batch.z.dtype}: its values must "
                                 f"stay below {torch.finfo(batch.z.dtype).max:.3g} in magnitude")
    if not _checks.all_finite(batch.c_norm.square()):
        raise ValueError(f"{names['c']} has a row whose norm exceeds 1.8e19: its squared norm overflows float32")
    _checks.finite(names["r0"], batch.r0)
    if bool((batch.r0 <= 0).any()):
        raise ValueError(f"{names['r0']} must be > 0 for every item (salience is kept in log space), "
                         "got values <= 0")
    if wrapped is not None and bool(wrapped):
        raise ValueError(f"{names['y']} holds uint64 labels >= 2**63, which int64 cannot represent")
