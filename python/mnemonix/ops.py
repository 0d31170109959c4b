"""The one public door to every mnemonix kernel.

Each op checks its arguments once (names, shapes, dtypes, devices, values),
then dispatches to a backend chosen by device and capability
(:mod:`mnemonix._dispatch`): Triton on CUDA tensors, a memory-bounded torch
path or a fused C++ kernel on CPU. ``backend=`` forces one; forcing
``"triton"`` on CPU tensors works under ``TRITON_INTERPRET=1``. The backends
themselves live in :mod:`mnemonix.backends`; the plain torch ground truth of
every op is :mod:`mnemonix.reference`.
"""

from __future__ import annotations

__all__: list[str] = []

# ----------------------------------------------------------------------------
# hopfield_retrieve
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------

# isort: split
import torch  # noqa: E402

from mnemonix import _checks, _dispatch  # noqa: E402
from mnemonix.reference import LifespanResult  # noqa: E402

_INDEX_DTYPES = (torch.int64, torch.int32)


def lifespan_step(
    lifespan: torch.Tensor,
    types: torch.Tensor,
    age: torch.Tensor | None,
    reminded_indices: torch.Tensor,
    delta: torch.Tensor,
    stm_capacity: int,
    backend: str | None = None,
) -> LifespanResult:
    """One Memoria engram lifespan step, fused (Park & Bak 2023).

    Parameters
    ----------
    lifespan : Tensor [B, M] float32
        Lifespan of each engram.
    types : Tensor [B, M] uint8
        0 NULL (padding), 1 WORKING, 2 SHORTTERM, 3 LONGTERM.
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
    backend : {"triton", "torch"} or None
        Force a backend; default Triton on CUDA, torch otherwise.

    Returns
    -------
    LifespanResult
        ``(lifespan, types, age, keep, rank, num_kept)``: new arrays (not
        compacted), keep-mask ``lifespan > 0``, rank of each kept engram in its
        row (-1 when dropped) and kept count per row. Compact any per-engram
        array with :func:`compact_engrams`.

    Inputs are never modified.
    """
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
    device = _checks.same_device(
        {"lifespan": lifespan, "types": types, "age": age, "reminded_indices": reminded_indices, "delta": delta}
    )
    delta = delta.to(torch.float32)
    _checks.finite("delta", delta)
    if reminded_indices.numel() and int(reminded_indices.max()) >= lifespan.shape[1]:
        raise ValueError(
            f"reminded_indices must be < {lifespan.shape[1]} (the number of engrams per row), "
            f"got {int(reminded_indices.max())}"
        )
    from mnemonix.backends import lifespan as _impl

    inputs = {
        "lifespan": lifespan, "types": types, "age": age, "reminded_indices": reminded_indices, "delta": delta,
    }
    backends = _impl.BACKENDS
    if backend == "triton":
        backends = (_impl._TRITON_ANY_DEVICE, *(b for b in backends if b.name != "triton"))
    chosen = _dispatch.select("lifespan_step", backends, inputs, device=device, dtype=torch.float32, forced=backend)
    return chosen.run(
        lifespan=lifespan.contiguous(), types=types.contiguous(),
        age=None if age is None else age.contiguous(),
        reminded_indices=reminded_indices.contiguous(), delta=delta.contiguous(), stm_capacity=stm_capacity,
    )


def compact_engrams(
    values: torch.Tensor, step: LifespanResult, *, pad_value: float | int = 0, pad_front: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Compact a per-engram array [B, M, ...] with the map of a :func:`lifespan_step` result.

    Kept engrams keep their order; the result is [B, max(num_kept), ...], shorter
    rows padded with ``pad_value`` (at the front when ``pad_front``, Memoria's layout).
    ``out`` [B, C, ...] with C >= max(num_kept): write into its first columns and
    return that view (spare capacity for appends).
    """
    from mnemonix.backends.lifespan import compact

    _checks.tensor("values", values, min_ndim=2, dtypes=None)
    return compact(values, step, pad_value=pad_value, pad_front=pad_front, out=out)


__all__ += ["lifespan_step", "compact_engrams", "LifespanResult"]
