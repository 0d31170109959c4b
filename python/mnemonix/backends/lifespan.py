"""Backends of :func:`mnemonix.ops.lifespan_step` and the compaction helper.

``torch``: vectorised torch (CPU or CUDA): one ``index_put_`` with
accumulation for the deltas, two cumulative sums for the short-term ranks and
the compaction map. ``cpp``: the fused C++ step ``mnemonix._core.lifespan`` (CPU;
value checks and the step in one call, rows over OpenMP threads), bit for bit the torch
path's results. ``triton``: the fused kernel of
``mnemonix.kernels.lifespan`` (CUDA, or CPU under ``TRITON_INTERPRET=1``).
They give the same results (identical unless several deltas of one engram are
summed in float32 in a different order: the Triton kernel sums each chunk of
reminded indices as a tree).
"""

from __future__ import annotations

import torch

from mnemonix import _triton
from mnemonix._dispatch import Backend
from mnemonix._types import ENGRAM_LONGTERM, ENGRAM_SHORTTERM, ENGRAM_WORKING, LifespanResult
from mnemonix.backends import core_engine, numpy_view


def lifespan_step_torch(
    lifespan: torch.Tensor,
    types: torch.Tensor,
    age: torch.Tensor | None,
    reminded_indices: torch.Tensor,
    delta: torch.Tensor,
    stm_capacity: int,
) -> LifespanResult:
    batch, length = lifespan.shape
    dev = lifespan.device
    added = torch.zeros((batch, length + 1), dtype=torch.float32, device=dev)
    if reminded_indices.numel():
        # Out-of-range indices (possible only with check_inputs=False) are ignored like the pad.
        idx = torch.where((reminded_indices < 0) | (reminded_indices >= length), length, reminded_indices).long()
        rows = torch.arange(batch, device=dev).unsqueeze(1).expand_as(idx)
        added.index_put_((rows, idx), delta, accumulate=True)
    new_lifespan = (lifespan + added[:, :length]) - 1.0
    new_types = torch.where(types == ENGRAM_WORKING, torch.full_like(types, ENGRAM_SHORTTERM), types)
    is_stm = new_types == ENGRAM_SHORTTERM
    stm_int = is_stm.to(torch.int64)
    stm_rank = stm_int.cumsum(dim=1) - stm_int
    # A capacity past the row length never binds; clamping keeps a Python int of any size
    # (2**70 is a valid capacity) out of int64 tensor arithmetic.
    num_exceeded = stm_int.sum(dim=1, keepdim=True) - min(int(stm_capacity), length)
    new_types = torch.where(is_stm & (stm_rank < num_exceeded), torch.full_like(types, ENGRAM_LONGTERM), new_types)
    new_age = None if age is None else age + 1
    keep = new_lifespan > 0
    keep_int = keep.to(torch.int64)
    rank = torch.where(keep, keep_int.cumsum(dim=1) - 1, torch.full_like(keep_int, -1))
    return LifespanResult(new_lifespan, new_types, new_age, keep, rank, keep_int.sum(dim=1))


def lifespan_step_triton(
    lifespan: torch.Tensor,
    types: torch.Tensor,
    age: torch.Tensor | None,
    reminded_indices: torch.Tensor,
    delta: torch.Tensor,
    stm_capacity: int,
) -> LifespanResult:
    kernels = _triton.load_kernels("lifespan")
    capacity = min(int(stm_capacity), 2**31 - 1)
    codes = (ENGRAM_WORKING, ENGRAM_SHORTTERM, ENGRAM_LONGTERM)
    return LifespanResult(*kernels.lifespan_step(lifespan, types, age, reminded_indices, delta, capacity,
                                                 codes=codes))


def core_lifespan():
    return core_engine("lifespan")


class ValueFault(Exception):
    """The C++ step's first failed value check (``code``: csrc/lifespan/lifespan.hpp's Fault;
    ``value``: the largest type code or index); the op raises the user's error from it."""

    def __init__(self, code: int, value: int) -> None:
        super().__init__(code, value)
        self.code, self.value = code, value


# A capacity beyond any row length means "no conversion"; the kernel takes an int64.
CAPACITY_CAP = 2**62


def lifespan_step_cpp(
    lifespan: torch.Tensor,
    types: torch.Tensor,
    age: torch.Tensor | None,
    reminded_indices: torch.Tensor,
    delta: torch.Tensor,
    stm_capacity: int,
    *,
    check: bool = False,
) -> LifespanResult:
    """The fused C++ step; with ``check``, the value checks run in the same call (row by row, just
    before each row's step) and a failure raises :class:`ValueFault` (no results, inputs untouched)."""
    fault, value, found = core_lifespan().step(
        numpy_view(lifespan), numpy_view(types), None if age is None else numpy_view(age),
        numpy_view(reminded_indices), numpy_view(delta), stm_capacity=min(int(stm_capacity), CAPACITY_CAP),
        working=ENGRAM_WORKING, shortterm=ENGRAM_SHORTTERM, longterm=ENGRAM_LONGTERM, check=check)
    if fault:
        raise ValueFault(fault, value)
    life, kinds, new_age, keep, rank, kept = found
    return LifespanResult(torch.from_numpy(life), torch.from_numpy(kinds),
                          None if new_age is None else torch.from_numpy(new_age), torch.from_numpy(keep),
                          torch.from_numpy(rank), torch.from_numpy(kept))


def _cpp_reasons(inputs) -> list[str]:
    return [] if core_lifespan() is not None else ["mnemonix._core.lifespan is not built"]


_FP32 = frozenset({torch.float32})

TRITON = Backend("triton", lifespan_step_triton, dtypes=_FP32, needs_triton=True)
CPP = Backend("cpp", lifespan_step_cpp, devices=frozenset({"cpu"}), dtypes=_FP32, extra_reasons=_cpp_reasons)
TORCH = Backend("torch", lifespan_step_torch, dtypes=_FP32)
BACKENDS: tuple[Backend, ...] = (TRITON, CPP, TORCH)


def compact(
    values: torch.Tensor, step: LifespanResult, *, pad_value: float | int = 0, pad_front: bool = True,
    out: torch.Tensor | None = None, width: int | None = None,
) -> torch.Tensor:
    """Compact one per-engram array ``values`` [B, M, ...] with the map of ``step``.

    Kept engrams keep their order. Rows keep ``num_kept[b]`` engrams; the result
    has width ``K = max(num_kept)`` and shorter rows are padded with
    ``pad_value`` -- at the front of the row when ``pad_front`` (Memoria's layout:
    its ``mask_select`` puts the null engrams first), else at the end.
    ``out`` [B, C >= K, ...] (optional, not aliasing ``values``) receives the result
    in its first K columns (spare columns let the caller append without copying).
    ``width`` is K when the caller knows it (else read from the device: one host sync).

    Returns
    -------
    Tensor [B, K, ...] of ``values.dtype`` on ``values.device`` (a view of ``out`` if given).
    """
    batch, length = step.keep.shape
    if values.shape[:2] != (batch, length):
        raise ValueError(f"values must have leading shape {(batch, length)}, got {tuple(values.shape)}")
    if width is None:
        width = int(step.num_kept.max()) if batch else 0
    if out is None:
        out = torch.empty((batch, width, *values.shape[2:]), dtype=values.dtype, device=values.device)
    elif out.shape[0] != batch or out.shape[1] < width or out.shape[2:] != values.shape[2:] or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous [{batch}, >= {width}, ...] tensor, got {tuple(out.shape)}")
    result = out[:, :width]
    if width == 0:
        return result
    source = _source_positions(step, width, pad_front)  # [B, width], -1 at padding
    trailing = values.shape[2:]
    index = source.clamp(min=0).view(batch, width, *([1] * len(trailing))).expand(batch, width, *trailing)
    gathered = torch.gather(values, 1, index).to(out.dtype)
    pad = torch.full((), pad_value, dtype=out.dtype, device=out.device)
    result.copy_(torch.where((source >= 0).view(batch, width, *([1] * len(trailing))), gathered, pad))
    return result


def _source_positions(step: LifespanResult, width: int, pad_front: bool) -> torch.Tensor:
    """For each output slot [B, width], the engram it takes (-1: padding). No host sync.

    Kept engram m goes to slot ``offset_b + rank[b, m]``; dropped engrams aim at slot 0 with
    source -1, and an ``amax`` scatter lets any kept engram there win (deterministic).
    """
    batch, length = step.keep.shape
    dev = step.keep.device
    offset = (width - step.num_kept).unsqueeze(1) if pad_front else torch.zeros_like(step.num_kept).unsqueeze(1)
    slot = torch.where(step.keep, offset + step.rank, torch.zeros_like(step.rank))
    positions = torch.arange(length, device=dev).expand(batch, length)
    src = torch.where(step.keep, positions, torch.full_like(positions, -1))
    source = torch.full((batch, width), -1, dtype=torch.int64, device=dev)
    return source.scatter_reduce_(1, slot, src, reduce="amax", include_self=True)
