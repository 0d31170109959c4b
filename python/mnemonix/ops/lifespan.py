"""``lifespan_step``: one fused Memoria engram lifespan step, and ``compact_engrams``.

Declared like every op (:mod:`mnemonix._dispatch`): checks -> a typed inputs record ->
``dispatch(SPEC, inputs, forced)`` -> a backend of :mod:`mnemonix.backends.lifespan`. The C++
backend checks the values itself, in its one call; the others through :class:`_checks.DataChecks`.
A plain CPU call takes a fast path first (:mod:`mnemonix.ops._lifespan_fast`: the C++ step with a
few attribute checks, ~8 us of Python instead of ~19 us), with the same results and errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import torch

from mnemonix import _checks, _dispatch
from mnemonix._types import EngramType, LifespanResult
from mnemonix.backends import lifespan as lb
from mnemonix.ops import _lifespan_fast as _fast

__all__ = ["lifespan_step", "compact_engrams", "LifespanResult", "LifespanInputs", "SPEC"]

_INDEX_DTYPES = (torch.int64, torch.int32)
_MAX_TYPE = max(int(t) for t in EngramType)  # LONGTERM


@dataclass(frozen=True)
class LifespanInputs:
    """Checked inputs of one step (``delta`` already float32; values checked by the backend's path)."""

    lifespan: torch.Tensor
    types: torch.Tensor
    age: torch.Tensor | None
    reminded_indices: torch.Tensor
    delta: torch.Tensor
    stm_capacity: int

    @property
    def device(self) -> torch.device:
        return self.lifespan.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lifespan.dtype

    @property
    def needs_grad(self) -> bool:
        return False  # integer bookkeeping: no gradient


# Speed policy: the declared order (Triton, C++, torch) without interpreted Triton.
SPEC = _dispatch.OpSpec("lifespan_step", lb.BACKENDS)


def lifespan_step(
    lifespan: torch.Tensor,
    types: torch.Tensor,
    age: torch.Tensor | None,
    reminded_indices: torch.Tensor,
    delta: torch.Tensor,
    stm_capacity: int,
    backend: str | None = None,
    *,
    check_inputs: bool | None = None,
) -> LifespanResult:
    """One Memoria engram lifespan step, fused (Park & Bak 2023).

    Parameters
    ----------
    lifespan : Tensor [B, M] float32
        Lifespan of each engram; no NaN or -inf (+inf: an engram that never expires).
    types : Tensor [B, M] uint8
        0 NULL (padding), 1 WORKING, 2 SHORTTERM, 3 LONGTERM (:class:`mnemonix._types.EngramType`);
        other codes are refused.
    age : Tensor [B, M] int32 or None
        Age of each engram (None: not tracked).
    reminded_indices : Tensor [B, R] int64 or int32
        Engram positions that receive ``delta``; negative entries (the -1 pad)
        are ignored, duplicates accumulate.
    delta : Tensor [B, R], any real dtype (cast to float32), finite
        Lifespan increments.
    stm_capacity : int >= 0
        Short-term engrams kept per row; the oldest (first by position) beyond it
        become LONGTERM.
    backend : {"triton", "cpp", "torch"} or None
        Force a backend; default Triton on CUDA, the fused C++ step on the CPU (value checks in
        the same call), else torch.
    check_inputs : bool or None, keyword-only
        Check the *values* of ``lifespan`` (no NaN or -inf), ``types`` (codes 0..3), ``delta``
        (finite) and ``reminded_indices`` (< M). None (default):
        check, except while a CUDA graph is being captured. On CUDA the checks cost one host
        sync per call (read together); ``False`` makes the call sync-free (CUDA-graph
        capturable), and then an index >= M is ignored like a negative one. See docs/gpu.md.

    Returns
    -------
    LifespanResult
        ``(lifespan, types, age, keep, rank, num_kept)``: new arrays (not
        compacted), keep-mask ``lifespan > 0``, rank of each kept engram in its
        row (-1 when dropped) and kept count per row. Compact any per-engram
        array with :func:`compact_engrams`.

    Inputs are never modified.
    """
    fast = _fast.cpu_fast_step(lifespan, types, age, reminded_indices, delta, stm_capacity, backend, check_inputs)
    if fast is not None:  # a plain CPU call: the C++ step straight away, its results bit for bit
        return fast
    _check(lifespan, types, age, reminded_indices, delta, stm_capacity)
    delta = delta.to(torch.float32)
    check = _checks.data_checks_enabled(check_inputs, lifespan.device)
    inputs = LifespanInputs(lifespan, types, age, reminded_indices, delta, stm_capacity)
    chosen = _dispatch.dispatch(SPEC, inputs, backend)
    if chosen is lb.CPP:  # the kernel checks the values itself, in the same call
        try:
            return lb.lifespan_step_cpp(lifespan, types, age, reminded_indices, delta, stm_capacity, check=check)
        except lb.ValueFault as fault:
            _raise_fault(fault.code, fault.value, length=lifespan.shape[1])
    checks = _checks.DataChecks(lifespan.device, check)
    _check_state_values(checks, lifespan, types)
    checks.finite("delta", delta)
    if reminded_indices.numel():
        length = lifespan.shape[1]
        checks.require_not(reminded_indices.max() >= length,
                           lambda: _index_message(length, int(reminded_indices.max())))
    checks.flush()
    return chosen.run(
        lifespan=lifespan.contiguous(), types=types.contiguous(), age=None if age is None else age.contiguous(),
        reminded_indices=reminded_indices.contiguous(), delta=delta.contiguous(), stm_capacity=stm_capacity,
    )


_LIFESPAN_MESSAGE = "lifespan must not hold NaN or -inf values (+inf is allowed: an engram that never expires)"


def _types_message(top: int) -> str:
    return f"types must hold engram codes 0..{_MAX_TYPE} (NULL, WORKING, SHORTTERM, LONGTERM), got {top}"


def _index_message(length: int, top: int) -> str:
    return f"reminded_indices must be < {length} (the number of engrams per row), got {top}"


def _raise_fault(fault: int, value: int, *, length: int) -> NoReturn:
    """The error of the C++ kernel's failed value check: the torch path's, word for word."""
    if fault == 1:
        raise ValueError(_types_message(value)) from None
    if fault == 2:
        raise ValueError(_LIFESPAN_MESSAGE) from None
    if fault == 3:
        raise _checks.NonFiniteError("delta") from None
    raise ValueError(_index_message(length, value)) from None


def _check_state_values(checks: _checks.DataChecks, lifespan: torch.Tensor, types: torch.Tensor) -> None:
    """Engram codes in 0..3 and lifespans without NaN or -inf (+inf, an engram that never
    expires, is allowed): on CUDA read with the op's other checks, in its one host sync."""
    if not checks.enabled or lifespan.numel() == 0:
        return
    checks.require_not(types.max() > _MAX_TYPE, lambda: _types_message(int(types.max())))
    low = lifespan.amin()  # NaN propagates into the minimum; -inf is the minimum
    checks.require_not(torch.isnan(low) | (low == float("-inf")), _LIFESPAN_MESSAGE)


def _check(lifespan, types, age, reminded_indices, delta, stm_capacity) -> None:
    _checks.tensor("lifespan", lifespan, ndim=2, dtypes=(torch.float32,))
    _checks.tensor("types", types, ndim=2, dtypes=(torch.uint8,))
    if types.shape != lifespan.shape:
        raise ValueError(f"types must have the shape of lifespan {tuple(lifespan.shape)}, got {tuple(types.shape)}")
    if age is not None:
        _checks.tensor("age", age, ndim=2, dtypes=(torch.int32,))
        if age.shape != lifespan.shape:
            raise ValueError(f"age must have the shape of lifespan {tuple(lifespan.shape)}, got {tuple(age.shape)}")
    _checks.tensor("reminded_indices", reminded_indices, ndim=2, dtypes=_INDEX_DTYPES)
    _checks.tensor("delta", delta, ndim=2, dtypes=None)
    if delta.dtype == torch.bool or delta.is_complex():
        raise TypeError(f"delta must have a real numeric dtype, got {delta.dtype}")
    if reminded_indices.shape[0] != lifespan.shape[0]:
        raise ValueError(
            f"reminded_indices must have {lifespan.shape[0]} rows (the batch of lifespan), "
            f"got shape {tuple(reminded_indices.shape)}"
        )
    if delta.shape != reminded_indices.shape:
        raise ValueError(
            f"delta must have the shape of reminded_indices {tuple(reminded_indices.shape)}, got {tuple(delta.shape)}"
        )
    _checks.nonneg_int("stm_capacity", stm_capacity)
    _checks.same_device(
        {"lifespan": lifespan, "types": types, "age": age, "reminded_indices": reminded_indices, "delta": delta}
    )


def compact_engrams(
    values: torch.Tensor, step: LifespanResult, *, pad_value: float | int = 0, pad_front: bool = True,
    out: torch.Tensor | None = None, width: int | None = None,
) -> torch.Tensor:
    """Compact a per-engram array [B, M, ...] with the map of a :func:`lifespan_step` result.

    Kept engrams keep their order; the result is [B, max(num_kept), ...], shorter
    rows padded with ``pad_value`` (at the front when ``pad_front``, Memoria's layout).
    ``out`` [B, C, ...] with C >= max(num_kept): write into its first columns and
    return that view (spare capacity for appends).
    ``width``: ``int(step.num_kept.max())`` when the caller already knows it (compacting
    several arrays of one step): the result's width is the one host sync of this call on
    CUDA, and a given ``width`` saves it.
    """
    _checks.tensor("values", values, min_ndim=2, dtypes=None)
    if width is not None:
        width = _checks.nonneg_int("width", width)
    return lb.compact(values, step, pad_value=pad_value, pad_front=pad_front, out=out, width=width)
