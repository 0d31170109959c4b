"""Top-k salience recall: one pass over the keys, running top-k in registers.

EpiNet's RecallEngine (seeds/002) scores every memory by
``cos(q_b, c_m) * s_m`` and keeps the k best per query. Here each program
owns a block of queries and one contiguous split of the N memories:

- the key tile is normalised on the fly (its squared norms are summed while
  the dot products accumulate over d), then scaled by the memory's relative
  salience ``scale_m = exp(log s_m - shift)`` (the subtraction in float64,
  the exponential only where it cannot underflow; 0 below e^-80);
- the running top-k lives in registers as ``best_val`` / ``best_idx``
  ``[BLOCK_B, K_PAD]``; a tile is merged only when some score beats the
  current k-th best (``theta``), by repeated max-extraction: take the tile's
  best (lowest index among equals), evict the running minimum (the highest
  index among equal minima), until nothing beats ``theta``. After the first
  tiles almost every tile is skipped after one comparison, so the kernel is a
  single streaming read of the keys;
- splitting N over programs ("flash-decoding", Dao et al. 2023) keeps the GPU
  busy for small B; each split writes its own k best and the host merges the
  lists exactly (ties to the lower index).

Padding slots ``K_PAD > topk`` hold +inf so they are never the minimum and
never evicted; they are not stored. ``topk`` is a runtime argument: one compiled
variant serves every k up to K_PAD. Offsets that multiply a row index by a stride
are int64 (a store of 1.7e7 keys of d = 128 holds 2^31 elements).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@triton.jit
def _merge_tile(best_val, best_idx, p, offs_n, offs_k, topk, K_PAD: tl.constexpr):
    """Merge the scores ``p`` [BLOCK_B, BLOCK_N] of one tile into the running top-k."""
    theta = tl.min(best_val, 1)
    beats = (p > theta[:, None]).to(tl.int32)
    n_rounds = tl.minimum(tl.max(tl.sum(beats, 1), 0), topk)
    for _ in range(n_rounds):
        theta = tl.min(best_val, 1)
        m = tl.max(p, 1)
        take = m > theta
        # The tile's best: lowest index among equal scores.
        j = tl.min(tl.where(p == m[:, None], offs_n[None, :], 2147483647), 1)
        # The slot to evict: among the running minima, the highest memory index.
        is_min = best_val == theta[:, None]
        evict_idx = tl.max(tl.where(is_min, best_idx, -2), 1)
        slot = tl.min(tl.where(is_min & (best_idx == evict_idx[:, None]), offs_k[None, :], K_PAD), 1)
        replace = (offs_k[None, :] == slot[:, None]) & take[:, None]
        best_val = tl.where(replace, m[:, None], best_val)
        best_idx = tl.where(replace, j[:, None], best_idx)
        p = tl.where((offs_n[None, :] == j[:, None]) & take[:, None], float("-inf"), p)
    return best_val, best_idx


@triton.jit
def _salience_topk_kernel(
    Q, K, LogS, Shift, Valid, OutVal, OutIdx, NonFinite,
    B, N, D, n_per_split, topk,
    stride_qb, stride_kn, stride_os, stride_ob,
    HAS_VALID: tl.constexpr, K_PAD: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_FP32: tl.constexpr, NEGLIGIBLE_LOG: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_k = tl.arange(0, K_PAD)
    row_ok = offs_b < B
    # int64 row offsets: N * d (keys) and B * d (queries) pass 2**31 in large stores.
    q_rows = Q + offs_b.to(tl.int64)[:, None] * stride_qb
    best_val = tl.where(offs_k[None, :] < topk, float("-inf"), float("inf")) + tl.zeros([BLOCK_B, K_PAD], tl.float32)
    best_idx = tl.zeros([BLOCK_B, K_PAD], tl.int32) - 1
    n_nonfinite = tl.zeros([BLOCK_N], tl.int32)  # valid keys whose squared norm is NaN/Inf
    shift = tl.load(Shift)
    start = pid_s * n_per_split
    stop = tl.minimum(start + n_per_split, N)
    for n0 in range(start, stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < stop
        k_cols = K + offs_n.to(tl.int64)[None, :] * stride_kn
        acc = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
        sq = tl.zeros([BLOCK_N], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d < D
            q = tl.load(q_rows + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            k_ptrs = k_cols + offs_d[:, None]  # [BLOCK_D, BLOCK_N]: keys transposed
            kt = tl.load(k_ptrs, mask=d_ok[:, None] & n_ok[None, :], other=0.0)
            kt32 = kt.to(tl.float32)
            sq += tl.sum(kt32 * kt32, 0)
            if DOT_FP32:
                acc = tl.dot(q.to(tl.float32), kt32, acc, input_precision="ieee")
            else:
                # Tensor cores in the keys' 16-bit type; the fp32 unit query is split into a 16-bit
                # head and tail (error ~2^-17 instead of 2^-9) at the price of a second dot.
                q_hi = q.to(kt.dtype)
                q_lo = (q - q_hi.to(tl.float32)).to(kt.dtype)
                acc = tl.dot(q_hi, kt, acc)
                acc = tl.dot(q_lo, kt, acc)
        # Relative salience, in float64 until it is known not to underflow.
        rel = tl.minimum(tl.load(LogS + offs_n, mask=n_ok, other=float("-inf")) - shift, 0.0)  # <= 0 if valid
        scale = tl.where(rel >= NEGLIGIBLE_LOG, tl.exp(tl.maximum(rel, NEGLIGIBLE_LOG).to(tl.float32)), 0.0)
        factor = tl.where(sq > 0, scale / tl.sqrt(tl.where(sq > 0, sq, 1.0)), 0.0)
        p = acc * factor[None, :]
        ok = n_ok
        if HAS_VALID:
            ok = ok & (tl.load(Valid + offs_n, mask=n_ok, other=0) != 0)
        n_nonfinite += (ok & ((sq != sq) | (sq == float("inf")))).to(tl.int32)
        p = tl.where(row_ok[:, None] & ok[None, :], p, float("-inf"))
        best_val, best_idx = _merge_tile(best_val, best_idx, p, offs_n, offs_k, topk, K_PAD)
    out_offs = pid_s.to(tl.int64) * stride_os + offs_b.to(tl.int64)[:, None] * stride_ob + offs_k[None, :]
    out_mask = row_ok[:, None] & (offs_k[None, :] < topk)
    tl.store(OutVal + out_offs, best_val, mask=out_mask)
    tl.store(OutIdx + out_offs, best_idx, mask=out_mask)
    tl.store(NonFinite + pid_s.to(tl.int64) * tl.num_programs(0) + pid_b, tl.sum(n_nonfinite, 0))


@dataclass(frozen=True)
class SalienceConfig:
    """One compiled variant of the kernel: tiles, warps and pipeline depth."""

    block_b: int
    block_n: int
    block_d: int
    k_pad: int
    num_warps: int
    num_stages: int
    dot_fp32: bool


SM90_TILES = {
    # (dot_fp32, BLOCK_B): (BLOCK_N, BLOCK_D, num_warps, num_stages). Chosen so that every K_PAD up
    # to 128 compiles for sm_90 without register spills (registers, ptxas 12.9 and 13.x: fp32
    # 168/173/178, 16-bit 247/243/248); tests/test_kernels_compile.py compiles each and asserts no
    # spill. fp32 dots run on FMA units with both operands in registers: BLOCK_D = 32 keeps them
    # small (BLOCK_D = 128 spilled 12-19 KB). 16-bit dots stage operands in shared memory: 3
    # stages; the FMA path gains nothing from a deeper pipeline: 2.
    (True, 16): (64, 32, 4, 2),
    (True, 32): (64, 32, 8, 2),
    (True, 64): (32, 32, 8, 2),
    (False, 16): (64, 32, 4, 3),
    (False, 32): (64, 32, 8, 3),
    (False, 64): (32, 32, 8, 3),
}
MAX_K_PAD = 128
"""Largest running list (power of two) the tiles above were checked with."""
BATCH_INVARIANT_BLOCK_B = 16
BATCH_INVARIANT_SPLIT = 8192
"""Keys per split when results must not depend on the batch (a multiple of every BLOCK_N)."""


def salience_config(B: int, D: int, n_cand: int, key_dtype: torch.dtype, *, interpret: bool,
                    batch_invariant: bool = False) -> SalienceConfig:
    """The kernel variant for ``B`` queries of ``D`` features keeping ``n_cand`` candidates.

    16-bit keys use tensor-core dots on the GPU; fp32 keys (and the interpreter, which has no
    16-bit dot worth testing against) use exact fp32 FMA dots. ``batch_invariant`` fixes
    BLOCK_B, so a query's scores do not depend on how many queries share the call.
    """
    dot_fp32 = interpret or key_dtype == torch.float32
    if batch_invariant:
        block_b = BATCH_INVARIANT_BLOCK_B
    else:
        block_b = 16 if B <= 16 else (32 if B <= 32 else 64)
    block_n, block_d, num_warps, num_stages = SM90_TILES[(dot_fp32, block_b)]
    block_d = max(16, min(block_d, triton.next_power_of_2(D)))
    k_pad = max(2, triton.next_power_of_2(n_cand))
    if k_pad > MAX_K_PAD:
        raise ValueError(f"the Triton salience kernel keeps at most {MAX_K_PAD} candidates, got {n_cand}")
    return SalienceConfig(block_b, block_n, block_d, k_pad, num_warps, num_stages, dot_fp32)


@functools.lru_cache(maxsize=16)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _device_guard(device: torch.device):
    """Launch on the tensors' device, not the current one (a no-op for CPU tensors)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _split_size(N: int, b_blocks: int, cfg: SalienceConfig, device: torch.device, num_splits: int | None,
                batch_invariant: bool) -> int:
    """Keys per split (a multiple of BLOCK_N): ~4 programs per SM on CUDA, at most 4 splits on the CPU."""
    if batch_invariant and num_splits is None:
        return BATCH_INVARIANT_SPLIT
    if num_splits is None:
        if device.type == "cuda":
            sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
            num_splits = max(1, min(triton.cdiv(N, 4 * cfg.block_n), triton.cdiv(4 * sms, b_blocks)))
        else:
            num_splits = max(1, min(4, triton.cdiv(N, 4 * cfg.block_n)))
    return triton.cdiv(triton.cdiv(N, num_splits), cfg.block_n) * cfg.block_n


def salience_topk_partial(
    unit_queries: torch.Tensor,
    keys: torch.Tensor,
    log_s: torch.Tensor,
    shift: torch.Tensor,
    valid: torch.Tensor | None,
    k: int,
    *,
    negligible_log: float,
    num_splits: int | None = None,
    batch_invariant: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the kernel; returns per-split lists ``(values [S, B, k] float32, indices [S, B, k] int32)``
    and ``nonfinite`` [programs] int32: how many valid keys each program found with a NaN/Inf norm.

    ``unit_queries`` [B, d] float32 (unit norm), ``keys`` [N, d] any float dtype,
    ``log_s`` [N] float64 log-saliences and ``shift`` (0-dim float64 tensor on the keys' device:
    the largest valid one), ``valid`` [N] bool or None; ``negligible_log``: the relative
    log-salience below which a memory's factor is 0. Lists are unsorted; entries of a split with
    fewer than k candidates hold (-inf, -1). No host sync. ``batch_invariant``: fixed tiles and
    split size, so that each query's lists do not depend on B.
    """
    B, D = unit_queries.shape
    N = keys.shape[0]
    keys = keys if keys.stride(1) == 1 else keys.contiguous()
    q = unit_queries.contiguous()
    interpret = keys.device.type != "cuda"  # CPU tensors run only under TRITON_INTERPRET=1
    cfg = salience_config(B, D, k, keys.dtype, interpret=interpret, batch_invariant=batch_invariant)
    if os.environ.get("TRITON_INTERPRET", "0") == "1" and keys.dtype == torch.bfloat16:
        # "CUDA" tensors in the interpreter: a test's fake device (mnemonix.testing.fake_cuda). Triton
        # 3.9's interpreter returns garbage for bf16 tl.dot (fp16 is right): keep the GPU tiles, dot in fp32.
        cfg = dataclasses.replace(cfg, dot_fp32=True)
    b_blocks = triton.cdiv(B, cfg.block_b)
    n_per_split = _split_size(N, b_blocks, cfg, keys.device, num_splits, batch_invariant)
    num_splits = triton.cdiv(N, n_per_split)
    out_val = torch.full((num_splits, B, k), float("-inf"), dtype=torch.float32, device=keys.device)
    out_idx = torch.full((num_splits, B, k), -1, dtype=torch.int32, device=keys.device)
    nonfinite = torch.zeros(num_splits * b_blocks, dtype=torch.int32, device=keys.device)
    log_s = log_s.to(torch.float64).contiguous()
    # No valid memory: shift is -inf and every slot loses anyway; 0 keeps masked lanes free of inf - inf.
    shift_arg = torch.nan_to_num(shift.reshape(1).to(torch.float64), neginf=0.0)
    valid_arg = valid.to(torch.int8) if valid is not None else log_s
    with _device_guard(keys.device):
        _salience_topk_kernel[(b_blocks, num_splits)](
            q, keys, log_s, shift_arg, valid_arg, out_val, out_idx, nonfinite,
            B, N, D, n_per_split, k,
            q.stride(0), keys.stride(0), out_val.stride(0), out_val.stride(1),
            HAS_VALID=valid is not None, K_PAD=cfg.k_pad,
            BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d, DOT_FP32=cfg.dot_fp32,
            NEGLIGIBLE_LOG=float(negligible_log), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return out_val, out_idx, nonfinite
