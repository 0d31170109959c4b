"""Exact top-k search, candidate pass: one read of the stored rows, running top-k in registers.

Each program owns a block of queries and one contiguous split of the N stored rows
("flash-decoding" split for small B, Dao et al. 2023). Per tile of rows:

- the score tile ``q . k`` accumulates over d; float32 rows use an IEEE float32 dot;
  float16 / bfloat16 rows use tensor cores with the float32 query split into a 16-bit
  head and tail (two dots, error ~2^-17 of ``||q|| ||k||`` instead of 2^-9); int8 rows are
  converted to float16 exactly in registers and take the same path, their per-row scale
  applied to the scores (dequantisation inside the kernel: the int8 bytes are all that
  is read);
- cosine divides by the row norms, summed from the loaded tile (no extra traffic);
- masked rows and padding score ``-inf`` and never enter the list; a kept row with a
  NaN/Inf score is counted (the host raises);
- the running list ``best_val`` / ``best_idx`` [BLOCK_B, K_PAD] is merged only when some
  score beats the current n-th best (``theta``), by repeated max-extraction; after the
  first tiles almost every tile costs one comparison.

The host merges the per-split lists and re-ranks the candidates exactly in float64
(``mnemonix.backends.search_exact``). Padding slots ``K_PAD > TOPK`` hold +inf so they are
never the minimum and never evicted; they are not stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _merge_tile(best_val, best_idx, p, offs_n, offs_k, TOPK: tl.constexpr, K_PAD: tl.constexpr):
    """Merge the scores ``p`` [BLOCK_B, BLOCK_N] of one tile into the running top list."""
    theta = tl.min(best_val, 1)
    beats = (p > theta[:, None]).to(tl.int32)
    n_rounds = tl.minimum(tl.max(tl.sum(beats, 1), 0), TOPK)
    for _ in range(n_rounds):
        theta = tl.min(best_val, 1)
        m = tl.max(p, 1)
        take = m > theta
        j = tl.min(tl.where(p == m[:, None], offs_n[None, :], 2147483647), 1)  # the tile's best
        is_min = best_val == theta[:, None]
        slot = tl.min(tl.where(is_min, offs_k[None, :], K_PAD), 1)  # a slot holding the minimum
        replace = (offs_k[None, :] == slot[:, None]) & take[:, None]
        best_val = tl.where(replace, m[:, None], best_val)
        best_idx = tl.where(replace, j[:, None], best_idx)
        p = tl.where((offs_n[None, :] == j[:, None]) & take[:, None], float("-inf"), p)
    return best_val, best_idx


@triton.jit
def _search_kernel(
    Q, K, Scales, Mask, OutVal, OutIdx, NormSq, NonFinite,
    B, N, D, n_per_split,
    stride_qb, stride_kn, stride_os, stride_ob,
    HAS_SCALES: tl.constexpr, HAS_MASK: tl.constexpr, COSINE: tl.constexpr,
    TOPK: tl.constexpr, K_PAD: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_FP32: tl.constexpr,
):
    tl.static_assert(K_PAD >= TOPK)
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_k = tl.arange(0, K_PAD)
    row_ok = offs_b < B
    best_val = tl.where(offs_k[None, :] < TOPK, float("-inf"), float("inf")) + tl.zeros([BLOCK_B, K_PAD], tl.float32)
    best_idx = tl.zeros([BLOCK_B, K_PAD], tl.int32) - 1
    norm_sq = tl.zeros([BLOCK_N], tl.float32)  # largest squared row norm seen, per lane
    n_bad = tl.zeros([BLOCK_N], tl.int32)
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
            q = tl.load(Q + offs_b[:, None] * stride_qb + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :],
                        other=0.0)
            kt = tl.load(K + offs_n[None, :] * stride_kn + offs_d[:, None], mask=d_ok[:, None] & n_ok[None, :],
                         other=0)  # [BLOCK_D, BLOCK_N]: rows transposed
            kt32 = kt.to(tl.float32)
            sq += tl.sum(kt32 * kt32, 0)
            if DOT_FP32:
                acc = tl.dot(q, kt32, acc, input_precision="ieee")
            else:
                # int8 is exact in float16; 16-bit rows stay as stored. The float32 query is split
                # into a 16-bit head and tail: two tensor-core dots, error ~2^-17 instead of 2^-9.
                k16 = kt.to(tl.float16) if HAS_SCALES else kt
                q_hi = q.to(k16.dtype)
                q_lo = (q - q_hi.to(tl.float32)).to(k16.dtype)
                acc = tl.dot(q_hi, k16, acc)
                acc = tl.dot(q_lo, k16, acc)
        if HAS_SCALES:
            scale = tl.load(Scales + offs_n, mask=n_ok, other=0.0)
            acc = acc * scale[None, :]
            sq = sq * scale * scale
        if COSINE:
            acc = acc * tl.where(sq > 0, 1.0 / tl.sqrt(tl.where(sq > 0, sq, 1.0)), 0.0)[None, :]
        ok = n_ok
        if HAS_MASK:
            ok = ok & (tl.load(Mask + offs_n, mask=n_ok, other=0) != 0)
        norm_sq = tl.maximum(norm_sq, tl.where(ok, sq, 0.0))
        finite = (acc == acc) & (tl.abs(acc) < float("inf"))
        n_bad += tl.sum((row_ok[:, None] & ok[None, :] & ~finite).to(tl.int32), 0)
        p = tl.where(row_ok[:, None] & ok[None, :] & finite, acc, float("-inf"))
        best_val, best_idx = _merge_tile(best_val, best_idx, p, offs_n, offs_k, TOPK, K_PAD)
    out_offs = pid_s * stride_os + offs_b[:, None] * stride_ob + offs_k[None, :]
    out_mask = row_ok[:, None] & (offs_k[None, :] < TOPK)
    tl.store(OutVal + out_offs, best_val, mask=out_mask)
    tl.store(OutIdx + out_offs, best_idx, mask=out_mask)
    program = pid_s * tl.num_programs(0) + pid_b
    tl.store(NormSq + program, tl.max(norm_sq, 0))
    tl.store(NonFinite + program, tl.sum(n_bad, 0))


def search_topk_partial(
    queries: torch.Tensor,
    keys: torch.Tensor,
    scales: torch.Tensor | None,
    mask: torch.Tensor | None,
    n_cand: int,
    *,
    cosine: bool,
    num_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Launch the kernel; returns ``(values [S, B, n] float32, rows [S, B, n] int32, max_norm, n_bad)``.

    ``queries`` [B, d] float32 (unit rows for cosine), ``keys`` [N, d] float32 / float16 /
    bfloat16 / int8 (with ``scales`` [N] float32), ``mask`` [N] bool or None. Lists are
    unsorted; a split with fewer than n kept rows pads with (-inf, -1). ``max_norm``: the
    largest norm of a kept row; ``n_bad``: kept rows with a NaN/Inf score.
    """
    B, D = queries.shape
    N = keys.shape[0]
    keys = keys if keys.stride(1) == 1 else keys.contiguous()
    q = queries.float().contiguous()
    interpret = keys.device.type != "cuda"  # CPU tensors run only under TRITON_INTERPRET=1
    BLOCK_B = 16 if B <= 16 else (32 if B <= 32 else 64)
    BLOCK_N = 64 if (interpret or BLOCK_B == 64) else 128
    BLOCK_D = max(16, min(128, triton.next_power_of_2(D)))
    K_PAD = max(2, triton.next_power_of_2(n_cand))
    b_blocks = triton.cdiv(B, BLOCK_B)
    if num_splits is None:
        if keys.is_cuda:
            sms = torch.cuda.get_device_properties(keys.device).multi_processor_count
            num_splits = max(1, min(triton.cdiv(N, 4 * BLOCK_N), triton.cdiv(4 * sms, b_blocks)))
        else:
            num_splits = max(1, min(4, triton.cdiv(N, 4 * BLOCK_N)))
    n_per_split = triton.cdiv(triton.cdiv(max(N, 1), num_splits), BLOCK_N) * BLOCK_N
    num_splits = max(1, triton.cdiv(N, n_per_split))
    out_val = torch.full((num_splits, B, n_cand), float("-inf"), dtype=torch.float32, device=keys.device)
    out_idx = torch.full((num_splits, B, n_cand), -1, dtype=torch.int32, device=keys.device)
    norm_sq = torch.zeros(num_splits * b_blocks, dtype=torch.float32, device=keys.device)
    n_bad = torch.zeros(num_splits * b_blocks, dtype=torch.int32, device=keys.device)
    dot_fp32 = interpret or keys.dtype == torch.float32
    scales_arg = scales.float().contiguous() if scales is not None else q
    mask_arg = mask.to(torch.int8) if mask is not None else q
    num_warps = 8 if BLOCK_B * max(BLOCK_N, K_PAD) >= 4096 else 4
    _search_kernel[(b_blocks, num_splits)](
        q, keys, scales_arg, mask_arg, out_val, out_idx, norm_sq, n_bad,
        B, N, D, n_per_split,
        q.stride(0), keys.stride(0), out_val.stride(0), out_val.stride(1),
        HAS_SCALES=scales is not None, HAS_MASK=mask is not None, COSINE=cosine,
        TOPK=n_cand, K_PAD=K_PAD, BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, DOT_FP32=dot_fp32,
        num_warps=num_warps,
    )
    return out_val, out_idx, float(norm_sq.max()) ** 0.5, int(n_bad.sum())
