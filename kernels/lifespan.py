"""Fused engram lifespan step (Memoria; Park & Bak 2023, arXiv:2310.03052).

One kernel does, for each batch row, everything a Memoria adjustment step does
to the per-engram scalars: scatter-add of the reminded engrams' lifespan deltas,
decay (-1), age (+1), WORKING -> SHORTTERM, oldest SHORTTERM beyond capacity ->
LONGTERM, the keep-mask (lifespan > 0) and its exclusive prefix sum (the
compaction map). The per-engram arrays are then compacted by one gather per
array outside the kernel (``mnemonix.backends.lifespan.compact``).

Notes on the tricks:

* Scatter without atomics: the deltas of a row are few (R ~ tens to hundreds), so
  each tile of engrams walks the row's reminded indices one by one (scalar loads,
  served from L1 after the first tile) and adds each matching delta. Duplicates
  accumulate in index order, negative and out-of-range indices never match, and
  the summation order is fixed: results are deterministic (no float atomics). A
  [BLOCK_M, BLOCK_R] match matrix does the same work but holds BLOCK_M * BLOCK_R /
  threads values per thread: at BLOCK_M = 1024 it spilled 20 KB on sm_90.
* "Oldest beyond capacity" needs the row's short-term count before any engram
  can be converted, so the program makes two passes over its row: pass 1 counts
  short-term engrams (types only, 1 byte per engram), pass 2 does the rest.
* Prefix sums across tiles: one program per row walks its tiles in order and
  carries the running short-term rank and kept count (``tl.cumsum`` inside a
  tile). This is a single-SM scan per row; for B = 1 and millions of engrams a
  decoupled look-back scan would spread it over SMs (not needed for the 5 ms
  target: pass 2 moves ~14 bytes per engram).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl


@triton.jit
def _row_tile_types(Types, row_off, offs, length, WORKING: tl.constexpr, SHORTTERM: tl.constexpr):
    """Load a tile of types and apply WORKING -> SHORTTERM; returns (types, is_stm, in_range)."""
    in_range = offs < length
    types = tl.load(Types + row_off + offs, mask=in_range, other=0).to(tl.int32)
    types = tl.where(types == WORKING, SHORTTERM, types)
    is_stm = (types == SHORTTERM) & in_range
    return types, is_stm, in_range


@triton.jit
def _lifespan_step_kernel(
    Lifespan, Types, Age, Idx, Delta,
    OutLifespan, OutTypes, OutAge, OutKeep, OutRank, OutNumKept,
    length, num_reminded, stm_capacity,
    HAS_AGE: tl.constexpr, BLOCK_M: tl.constexpr,
    WORKING: tl.constexpr, SHORTTERM: tl.constexpr, LONGTERM: tl.constexpr,
):
    tl.static_assert(BLOCK_M % 16 == 0)
    row = tl.program_id(0)
    row_off = row.to(tl.int64) * length
    idx_off = row.to(tl.int64) * num_reminded
    arange_m = tl.arange(0, BLOCK_M)

    # pass 1: short-term engrams of this row after WORKING -> SHORTTERM
    num_stm = tl.sum(tl.zeros((BLOCK_M,), dtype=tl.int32), axis=0)
    for start in range(0, length, BLOCK_M):
        _, is_stm, _ = _row_tile_types(Types, row_off, start + arange_m, length, WORKING, SHORTTERM)
        num_stm += tl.sum(is_stm.to(tl.int32), axis=0)
    num_exceeded = num_stm - stm_capacity

    # pass 2: scatter, decay, age, transitions, keep-mask and ranks
    stm_seen = tl.sum(tl.zeros((BLOCK_M,), dtype=tl.int32), axis=0)
    kept_seen = tl.sum(tl.zeros((BLOCK_M,), dtype=tl.int64), axis=0)
    for start in range(0, length, BLOCK_M):
        offs = start + arange_m
        types, is_stm, in_range = _row_tile_types(Types, row_off, offs, length, WORKING, SHORTTERM)
        acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for r in range(0, num_reminded):
            idx = tl.load(Idx + idx_off + r)
            delta = tl.load(Delta + idx_off + r).to(tl.float32)
            acc += tl.where(offs.to(idx.dtype) == idx, delta, 0.0)
        life = tl.load(Lifespan + row_off + offs, mask=in_range, other=0.0).to(tl.float32)
        life = (life + acc) - 1.0

        stm_int = is_stm.to(tl.int32)
        stm_rank = stm_seen + tl.cumsum(stm_int, axis=0) - stm_int
        types = tl.where(is_stm & (stm_rank < num_exceeded), LONGTERM, types)
        stm_seen += tl.sum(stm_int, axis=0)

        keep = (life > 0.0) & in_range
        keep_int = keep.to(tl.int64)
        rank = kept_seen + tl.cumsum(keep_int, axis=0) - keep_int
        rank = tl.where(keep, rank, -1)
        kept_seen += tl.sum(keep_int, axis=0)

        tl.store(OutLifespan + row_off + offs, life, mask=in_range)
        tl.store(OutTypes + row_off + offs, types.to(tl.uint8), mask=in_range)
        tl.store(OutKeep + row_off + offs, keep.to(tl.int8), mask=in_range)
        tl.store(OutRank + row_off + offs, rank, mask=in_range)
        if HAS_AGE:
            age = tl.load(Age + row_off + offs, mask=in_range, other=0)
            tl.store(OutAge + row_off + offs, age + 1, mask=in_range)
    tl.store(OutNumKept + row, kept_seen)


LIFESPAN_BLOCK_M = (16, 1024)
"""Smallest and largest engram tile. For sm_90 (ptxas 12.9/13.x), BLOCK_M = 1024 with 8 warps uses
~100 registers and no spills (4 warps: ~144); tests/test_kernels_compile.py checks both ends."""


def lifespan_config(length: int) -> tuple[int, int]:
    """``(BLOCK_M, num_warps)`` for rows of ``length`` engrams: one tile per short row, 1024 beyond.

    No software pipelining (``num_stages=1``): the row walk is a stream of independent loads.
    """
    block_m = min(LIFESPAN_BLOCK_M[1], max(LIFESPAN_BLOCK_M[0], triton.next_power_of_2(length)))
    return block_m, (8 if block_m >= 1024 else 4)


def _device_guard(device: torch.device):
    """Launch on the tensors' device, not the current one (a no-op for CPU tensors)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def lifespan_step(
    lifespan: torch.Tensor,
    types: torch.Tensor,
    age: torch.Tensor | None,
    reminded_indices: torch.Tensor,
    delta: torch.Tensor,
    stm_capacity: int,
    *,
    codes: tuple[int, int, int],
) -> tuple[torch.Tensor, ...]:
    """Launch the fused kernel; inputs are checked, contiguous, lifespan/delta float32.

    ``codes`` are the engram type codes ``(WORKING, SHORTTERM, LONGTERM)`` (device code
    imports nothing of mnemonix: the caller passes them).
    """
    batch, length = lifespan.shape
    num_reminded = reminded_indices.shape[1]
    dev = lifespan.device
    out_lifespan = torch.empty_like(lifespan)
    out_types = torch.empty_like(types)
    out_age = torch.empty_like(age) if age is not None else None
    out_keep = torch.empty((batch, length), dtype=torch.int8, device=dev)
    out_rank = torch.empty((batch, length), dtype=torch.int64, device=dev)
    out_num_kept = torch.zeros((batch,), dtype=torch.int64, device=dev)
    if num_reminded == 0:  # never read (the chunk loop is empty); avoid passing empty buffers
        reminded_indices = torch.full((batch, 1), -1, dtype=torch.int64, device=dev)
        delta = torch.zeros((batch, 1), dtype=torch.float32, device=dev)
    if batch and length:
        block_m, num_warps = lifespan_config(length)
        with _device_guard(dev):
            _lifespan_step_kernel[(batch,)](
                lifespan, types, age if age is not None else lifespan, reminded_indices, delta,
                out_lifespan, out_types, out_age if out_age is not None else out_lifespan,
                out_keep, out_rank, out_num_kept,
                length, num_reminded, stm_capacity,
                HAS_AGE=age is not None, BLOCK_M=block_m,
                WORKING=codes[0], SHORTTERM=codes[1], LONGTERM=codes[2],
                num_warps=num_warps, num_stages=1,
            )
    return out_lifespan, out_types, out_age, out_keep.bool(), out_rank, out_num_kept
