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

Padding slots ``K_PAD > TOPK`` hold +inf so they are never the minimum and
never evicted; they are not stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _merge_tile(best_val, best_idx, p, offs_n, offs_k, TOPK: tl.constexpr, K_PAD: tl.constexpr):
    """Merge the scores ``p`` [BLOCK_B, BLOCK_N] of one tile into the running top-k."""
    theta = tl.min(best_val, 1)
    beats = (p > theta[:, None]).to(tl.int32)
    n_rounds = tl.minimum(tl.max(tl.sum(beats, 1), 0), TOPK)
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
    B, N, D, n_per_split,
    stride_qb, stride_kn, stride_os, stride_ob,
    HAS_VALID: tl.constexpr, TOPK: tl.constexpr, K_PAD: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_FP32: tl.constexpr, NEGLIGIBLE_LOG: tl.constexpr,
):
    tl.static_assert(K_PAD >= TOPK)
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_k = tl.arange(0, K_PAD)
    row_ok = offs_b < B
    best_val = tl.where(offs_k[None, :] < TOPK, float("-inf"), float("inf")) + tl.zeros([BLOCK_B, K_PAD], tl.float32)
    best_idx = tl.zeros([BLOCK_B, K_PAD], tl.int32) - 1
    n_nonfinite = tl.zeros([BLOCK_N], tl.int32)  # valid keys whose squared norm is NaN/Inf
    shift = tl.load(Shift)
    start = pid_s * n_per_split
    stop = tl.minimum(start + n_per_split, N)
    for n0 in range(start, stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < stop
        acc = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
        sq = tl.zeros([BLOCK_N], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d < D
            q_ptrs = Q + offs_b[:, None] * stride_qb + offs_d[None, :]
            q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            k_ptrs = K + offs_n[None, :] * stride_kn + offs_d[:, None]  # [BLOCK_D, BLOCK_N]: keys transposed
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
        best_val, best_idx = _merge_tile(best_val, best_idx, p, offs_n, offs_k, TOPK, K_PAD)
    out_offs = pid_s * stride_os + offs_b[:, None] * stride_ob + offs_k[None, :]
    out_mask = row_ok[:, None] & (offs_k[None, :] < TOPK)
    tl.store(OutVal + out_offs, best_val, mask=out_mask)
    tl.store(OutIdx + out_offs, best_idx, mask=out_mask)
    tl.store(NonFinite + pid_s * tl.num_programs(0) + pid_b, tl.sum(n_nonfinite, 0))


def salience_topk_partial(
    unit_queries: torch.Tensor,
    keys: torch.Tensor,
    log_s: torch.Tensor,
    shift: float,
    valid: torch.Tensor | None,
    k: int,
    *,
    negligible_log: float,
    num_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel; returns per-split lists ``(values [S, B, k] float32, indices [S, B, k] int32)``
    and ``nonfinite`` [programs] int32: how many valid keys each program found with a NaN/Inf norm.

    ``unit_queries`` [B, d] float32 (unit norm), ``keys`` [N, d] any float dtype,
    ``log_s`` [N] float64 log-saliences and ``shift`` (the largest valid one),
    ``valid`` [N] bool or None; ``negligible_log``: the relative log-salience below which a
    memory's factor is 0. Lists are unsorted;
    entries of a split with fewer than k candidates hold (-inf, -1).
    """
    B, D = unit_queries.shape
    N = keys.shape[0]
    keys = keys if keys.stride(1) == 1 else keys.contiguous()
    q = unit_queries.contiguous()
    interpret = keys.device.type != "cuda"  # CPU tensors run only under TRITON_INTERPRET=1
    BLOCK_B = 16 if B <= 16 else (32 if B <= 32 else 64)
    BLOCK_N = 64 if (interpret or BLOCK_B == 64) else 128
    BLOCK_D = max(16, min(128, triton.next_power_of_2(D)))
    K_PAD = max(2, triton.next_power_of_2(k))
    b_blocks = triton.cdiv(B, BLOCK_B)
    if num_splits is None:
        if keys.is_cuda:
            sms = torch.cuda.get_device_properties(keys.device).multi_processor_count
            num_splits = max(1, min(triton.cdiv(N, 4 * BLOCK_N), triton.cdiv(4 * sms, b_blocks)))
        else:
            num_splits = max(1, min(4, triton.cdiv(N, 4 * BLOCK_N)))
    n_per_split = triton.cdiv(triton.cdiv(N, num_splits), BLOCK_N) * BLOCK_N
    num_splits = triton.cdiv(N, n_per_split)
    out_val = torch.full((num_splits, B, k), float("-inf"), dtype=torch.float32, device=keys.device)
    out_idx = torch.full((num_splits, B, k), -1, dtype=torch.int32, device=keys.device)
    nonfinite = torch.zeros(num_splits * b_blocks, dtype=torch.int32, device=keys.device)
    # 16-bit tensor-core dots (split query) on GPU when keys are 16-bit; exact fp32 otherwise and in the interpreter.
    dot_fp32 = interpret or keys.dtype == torch.float32
    log_s = log_s.to(torch.float64).contiguous()
    shift_arg = torch.tensor([shift], dtype=torch.float64, device=keys.device)
    valid_arg = valid.to(torch.int8) if valid is not None else log_s
    # The running list and the score tile both live in registers: more warps for the big tiles.
    num_warps = 8 if BLOCK_B * max(BLOCK_N, K_PAD) >= 4096 else 4
    grid = (b_blocks, num_splits)
    _salience_topk_kernel[grid](
        q, keys, log_s, shift_arg, valid_arg, out_val, out_idx, nonfinite,
        B, N, D, n_per_split,
        q.stride(0), keys.stride(0), out_val.stride(0), out_val.stride(1),
        HAS_VALID=valid is not None, TOPK=k, K_PAD=K_PAD,
        BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, DOT_FP32=dot_fp32,
        NEGLIGIBLE_LOG=float(negligible_log), num_warps=num_warps,
    )
    return out_val, out_idx, nonfinite
