"""Backward of the fused modern-Hopfield retrieval ``out = softmax(beta * Q K^T + bias) V`` in Triton.

References
----------
- Dao 2023, "FlashAttention-2", section 3.1 (recompute P from the log-sum-exp, dK/dV and dQ
  in separate loops; split-N for dQ with a deterministic sum, as flash-decoding does forward).
- Triton's fused-attention tutorial (``_attn_bwd_dkdv`` / ``_attn_bwd_dq``: one program per
  key tile for dK/dV, one per query tile for dQ).

Tricks
------
- Nothing of size [B, N] is stored: each program recomputes ``p = exp(beta q k^T + bias - lse)``
  tile by tile from the forward's saved log-sum-exp; ``delta = rowsum(dO * O) - d_lse`` (one
  float per query, computed by the launcher) turns ``dp`` into ``ds = p * (dp - delta)``.
- Two kernels, no atomics, so results are deterministic: ``_hopfield_bwd_dkdv`` owns a tile of
  stored patterns and loops over every query (and every group that shares those patterns:
  shared keys sum their gradient inside the program); ``_hopfield_bwd_dq`` owns a tile of
  queries and one split of the stored patterns (few queries and a long store would leave most
  SMs idle otherwise), writes a partial dQ, and the launcher sums the splits in order.
- ``VALUES_ARE_KEYS``: each key tile is loaded once per pass and serves the scores, ``dp``,
  ``dk`` and ``dv``; ``dk + dv`` accumulate in one register buffer and are stored once.
- d(bias): the column sums of ``ds`` per group go to a [G, N] float32 workspace (each element
  written by exactly one program); the launcher sums it over the groups that share the bias.
- Dtypes: fp32/fp16/bf16 inputs, fp32 accumulation; fp16/bf16 tiles feed the tensor cores,
  fp32 uses IEEE products (and everything runs in fp32 under ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .hopfield import _group_offset, _pow2, device_guard, dot_precision, group_strides, unit_stride

# Widest d (and dv) of the backward kernels: the dK/dV program keeps [BLOCK_N, d] and
# [BLOCK_N, dv] float32 accumulators in registers. Wider heads use the streaming torch backward.
MAX_BWD_D = 256
# batch_invariant=True: the dQ kernel's split size (stored patterns) does not follow the batch.
BATCH_INVARIANT_DQ_SPLIT = 4096


@triton.jit
def _probabilities(q, k, beta, lse, BIAS, ASSOC, stride_ab, offs_b, row_ok, offs_n, n_ok,
                   HAS_BIAS: tl.constexpr, HAS_ASSOC: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """``p = exp(beta q k^T + bias - lse)`` of one [BLOCK_B, BLOCK_N] tile, 0 outside the ranges."""
    if DOT_FP32:
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    else:
        s = tl.dot(q, tl.trans(k))
    s = s * beta
    if HAS_BIAS:
        s += tl.load(BIAS + offs_n, mask=n_ok, other=0.0)[None, :]
    if HAS_ASSOC:
        s += tl.load(ASSOC + offs_b.to(tl.int64)[:, None] * stride_ab + offs_n[None, :],
                     mask=row_ok[:, None] & n_ok[None, :], other=0.0)
    p = tl.exp(s - lse[:, None])
    return tl.where(row_ok[:, None] & n_ok[None, :], p, 0.0)


@triton.jit
def _dkdv_rows(q_base, DO, LSE, DELTA, bias_g, assoc_g, b0, B, D, DV_DIM, stride_qb, stride_ab, k, v, beta,
               offs_n, n_ok, offs_d, offs_dv, dk_acc, dv_acc, dbias,
               HAS_BIAS: tl.constexpr, HAS_ASSOC: tl.constexpr, DOT_FP32: tl.constexpr, BLOCK_B: tl.constexpr,
               PRECISION: tl.constexpr):
    """Fold one block of query rows of one group into a key tile's dK, dV and d(bias) accumulators."""
    offs_b = b0 + tl.arange(0, BLOCK_B)
    row_ok = offs_b < B
    q = tl.load(q_base + offs_b.to(tl.int64)[:, None] * stride_qb + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DO + offs_b.to(tl.int64)[:, None] * DV_DIM + offs_dv[None, :],
                 mask=row_ok[:, None] & (offs_dv[None, :] < DV_DIM), other=0.0)
    lse = tl.load(LSE + offs_b, mask=row_ok, other=0.0)
    lse = tl.where(lse == float("-inf"), 0.0, lse)
    delta = tl.load(DELTA + offs_b, mask=row_ok, other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    p = _probabilities(q, k, beta, lse, bias_g, assoc_g, stride_ab, offs_b, row_ok, offs_n, n_ok,
                       HAS_BIAS, HAS_ASSOC, DOT_FP32, PRECISION)
    if DOT_FP32:
        dv_acc += tl.dot(tl.trans(p), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    else:
        dv_acc += tl.dot(tl.trans(p.to(do.dtype)), do)
        dp = tl.dot(do, tl.trans(v))
    ds = p * (dp - delta[:, None])
    if DOT_FP32:
        dk_acc += tl.dot(tl.trans(ds), q, input_precision=PRECISION)
    else:
        dk_acc += tl.dot(tl.trans(ds.to(q.dtype)), q)
    return dk_acc, dv_acc, dbias + tl.sum(ds, axis=0)


@triton.jit
def _hopfield_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, BIAS, ASSOC, DK, DV, DBIAS,
    B, N, D, DV_DIM, G2, K2, R1, R2, beta,
    stride_q1, stride_q2, stride_qb, stride_k1, stride_k2, stride_kn, stride_v1, stride_v2, stride_vn,
    stride_c1, stride_c2, stride_a1, stride_a2, stride_ab,
    HAS_BIAS: tl.constexpr, HAS_ASSOC: tl.constexpr, NEED_DBIAS: tl.constexpr, VALUES_ARE_KEYS: tl.constexpr,
    DOT_FP32: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr,
):
    """dK, dV (and d(bias) per group) of one tile of stored patterns of one key group.

    The key group ``(pk1, pk2)`` is shared by ``R1 x R2`` query groups ``(pk1 + i1, pk2 + i2)``
    (R = 1 for per-group keys, R = G for shared ones); the program loops over all of them.
    """
    tl.static_assert(BLOCK_B >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_DV >= 16)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pk1 = pid_k // K2
    pk2 = pid_k % K2
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    n_ok = offs_n < N
    k_base = K + pk1.to(tl.int64) * stride_k1 + pk2.to(tl.int64) * stride_k2
    k = tl.load(k_base + offs_n.to(tl.int64)[:, None] * stride_kn + offs_d[None, :],
                mask=n_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    if DOT_FP32:
        k = k.to(tl.float32)
    if VALUES_ARE_KEYS:
        v = k  # one read of the tile serves the scores, dp, dk and dv
    else:
        v_base = V + pk1.to(tl.int64) * stride_v1 + pk2.to(tl.int64) * stride_v2
        v = tl.load(v_base + offs_n.to(tl.int64)[:, None] * stride_vn + offs_dv[None, :],
                    mask=n_ok[:, None] & (offs_dv[None, :] < DV_DIM), other=0.0)
        if DOT_FP32:
            v = v.to(tl.float32)
    dk_acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv_acc = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for i1 in range(R1):
        for i2 in range(R2):
            g1 = pk1 + i1
            g2 = pk2 + i2
            g = g1 * G2 + g2
            q_base = Q + g1.to(tl.int64) * stride_q1 + g2.to(tl.int64) * stride_q2
            bias_g = BIAS + g1.to(tl.int64) * stride_c1 + g2.to(tl.int64) * stride_c2
            assoc_g = ASSOC + g1.to(tl.int64) * stride_a1 + g2.to(tl.int64) * stride_a2
            row0 = g.to(tl.int64) * B
            dbias = tl.zeros([BLOCK_N], tl.float32)
            for b0 in range(0, B, BLOCK_B):
                dk_acc, dv_acc, dbias = _dkdv_rows(
                    q_base, DO + row0 * DV_DIM, LSE + row0, DELTA + row0, bias_g, assoc_g, b0, B, D, DV_DIM,
                    stride_qb, stride_ab, k, v, beta, offs_n, n_ok, offs_d, offs_dv, dk_acc, dv_acc, dbias,
                    HAS_BIAS, HAS_ASSOC, DOT_FP32, BLOCK_B, PRECISION)
            if NEED_DBIAS:
                tl.store(DBIAS + g.to(tl.int64) * N + offs_n, dbias, mask=n_ok)
    dk_acc = dk_acc * beta
    out_rows = pid_k.to(tl.int64) * N + offs_n
    if VALUES_ARE_KEYS:
        dk_acc += dv_acc
    else:
        tl.store(DV + out_rows[:, None] * DV_DIM + offs_dv[None, :], dv_acc,
                 mask=n_ok[:, None] & (offs_dv[None, :] < DV_DIM))
    tl.store(DK + out_rows[:, None] * D + offs_d[None, :], dk_acc, mask=n_ok[:, None] & (offs_d[None, :] < D))


@triton.jit
def _hopfield_bwd_dq(
    Q, K, V, DO, LSE, DELTA, BIAS, ASSOC, DQ,
    B, N, D, DV_DIM, G2, n_per_split, beta,
    stride_q1, stride_q2, stride_qb, stride_k1, stride_k2, stride_kn, stride_v1, stride_v2, stride_vn,
    stride_c1, stride_c2, stride_a1, stride_a2, stride_ab,
    HAS_BIAS: tl.constexpr, HAS_ASSOC: tl.constexpr, VALUES_ARE_KEYS: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Partial dQ of one tile of queries of one group over one split of the stored patterns.

    Each (row block, group, split) program writes its own slice of the [SPLITS, G * B, D]
    workspace; the launcher sums the splits (in a fixed order: deterministic).
    """
    tl.static_assert(BLOCK_B >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_DV >= 16)
    pid_b = tl.program_id(0)
    pid_g = tl.program_id(1)
    split = tl.program_id(2)
    Q += _group_offset(pid_g, G2, stride_q1, stride_q2)
    K += _group_offset(pid_g, G2, stride_k1, stride_k2)
    V += _group_offset(pid_g, G2, stride_v1, stride_v2)
    BIAS += _group_offset(pid_g, G2, stride_c1, stride_c2)
    ASSOC += _group_offset(pid_g, G2, stride_a1, stride_a2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_b < B
    rows = pid_g.to(tl.int64) * B + offs_b
    q = tl.load(Q + offs_b.to(tl.int64)[:, None] * stride_qb + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DO + rows[:, None] * DV_DIM + offs_dv[None, :],
                 mask=row_ok[:, None] & (offs_dv[None, :] < DV_DIM), other=0.0)
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    lse = tl.where(lse == float("-inf"), 0.0, lse)
    delta = tl.load(DELTA + rows, mask=row_ok, other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    dq_acc = tl.zeros([BLOCK_B, BLOCK_D], tl.float32)
    n_start = split * n_per_split
    n_end = tl.minimum(n_start + n_per_split, N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < n_end
        k = tl.load(K + offs_n.to(tl.int64)[:, None] * stride_kn + offs_d[None, :],
                    mask=n_ok[:, None] & (offs_d[None, :] < D), other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
        if VALUES_ARE_KEYS:
            v = k
        else:
            v = tl.load(V + offs_n.to(tl.int64)[:, None] * stride_vn + offs_dv[None, :],
                        mask=n_ok[:, None] & (offs_dv[None, :] < DV_DIM), other=0.0)
            if DOT_FP32:
                v = v.to(tl.float32)
        p = _probabilities(q, k, beta, lse, BIAS, ASSOC, stride_ab, offs_b, row_ok, offs_n, n_ok,
                           HAS_BIAS, HAS_ASSOC, DOT_FP32, PRECISION)
        if DOT_FP32:
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq_acc += tl.dot(ds, k, input_precision=PRECISION)
        else:
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dq_acc += tl.dot(ds.to(k.dtype), k)
    part = split.to(tl.int64) * tl.num_programs(1) * B + rows
    tl.store(DQ + part[:, None] * D + offs_d[None, :], dq_acc * beta, mask=row_ok[:, None] & (offs_d[None, :] < D))


@dataclass(frozen=True)
class BackwardConfig:
    """One backward kernel's variant: tiles, warps and stages."""

    block_b: int
    block_n: int
    block_d: int
    block_dv: int
    num_warps: int
    num_stages: int
    dot_fp32: bool


SM90_BWD_TILES = {
    # (dot_fp32, width, kernel) -> (BLOCK_B, BLOCK_N, num_warps, num_stages); width is the padded
    # max(d, dv). Every entry compiles for sm_90 without register spills (tests/test_kernels_spills.py,
    # registers in docs/gpu.md). fp32 dots run on FMA units, whose operands are replicated along the
    # reduction: the fp32 dK/dV kernel spills at any tile for width >= 128 (16 warps cap registers at
    # 128 and spill more), so float32 heads wider than MAX_BWD_D_FP32 take the streaming backward.
    (False, 16, "dkdv"): (64, 64, 8, 1), (False, 16, "dq"): (64, 64, 4, 3),
    (False, 32, "dkdv"): (64, 64, 8, 1), (False, 32, "dq"): (64, 64, 8, 3),
    (False, 64, "dkdv"): (64, 32, 8, 3), (False, 64, "dq"): (64, 64, 8, 3),
    (False, 128, "dkdv"): (32, 32, 8, 3), (False, 128, "dq"): (32, 32, 8, 3),
    (False, 256, "dkdv"): (16, 32, 8, 3), (False, 256, "dq"): (16, 32, 8, 3),
    (True, 16, "dkdv"): (64, 32, 8, 1), (True, 16, "dq"): (64, 32, 8, 3),
    (True, 32, "dkdv"): (16, 16, 8, 2), (True, 32, "dq"): (64, 32, 8, 3),
    (True, 64, "dkdv"): (16, 16, 8, 2), (True, 64, "dq"): (64, 32, 8, 3),
}
MAX_BWD_D_FP32 = 64
"""Widest float32 head (IEEE or TF32 dots) the backward kernels take on a GPU; wider: streaming torch."""


def use_kernels(d: int, dv: int, dtype: torch.dtype, *, interpret: bool) -> bool:
    """Whether the backward kernels take heads of ``d`` / ``dv`` (else the streaming torch backward).

    The interpreter runs every width up to MAX_BWD_D (tests check the kernels' arithmetic there).
    """
    width = max(d, dv)
    return width <= MAX_BWD_D and (interpret or dtype != torch.float32 or width <= MAX_BWD_D_FP32)


def backward_config(d: int, dv: int, dtype: torch.dtype, kernel: str, *, interpret: bool) -> BackwardConfig:
    """The ``kernel`` ("dkdv" or "dq") variant for heads of ``d`` / ``dv`` features (see use_kernels).

    The tiles depend on the widths only, never on the batch (the dQ split size is
    :func:`dq_split_size`'s).
    """
    dot_fp32 = interpret or dtype == torch.float32
    if interpret:
        block_b, block_n, warps, stages = 16, 32, 4, 3
    else:
        block_b, block_n, warps, stages = SM90_BWD_TILES[(dot_fp32, _pow2(max(d, dv)), kernel)]
    return BackwardConfig(block_b, block_n, _pow2(d), _pow2(dv), warps, stages, dot_fp32)


def dq_splits(programs: int, n: int, block_n: int, device: torch.device) -> int:
    """Splits of N for the dQ kernel: ~2 programs per SM, at least 4 key tiles per split."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        want = triton.cdiv(2 * sms, programs)
    else:  # interpreter: two splits exercise the sum without slowing tests down
        want = 2
    return max(1, min(want, triton.cdiv(n, 4 * block_n), 64))


def dq_split_size(programs: int, n: int, block_n: int, device: torch.device, batch_invariant: bool) -> int:
    """Stored patterns per dQ split (a multiple of BLOCK_N); batch-invariant: a function of N alone."""
    if batch_invariant:
        return max(BATCH_INVARIANT_DQ_SPLIT, triton.cdiv(triton.cdiv(n, 64), block_n) * block_n)
    splits = dq_splits(programs, n, block_n, device)
    return triton.cdiv(triton.cdiv(n, splits), block_n) * block_n


def _constexprs(base: dict, cfg: BackwardConfig) -> dict:
    """A kernel's compile-time arguments: the flags of the call and its variant's tiles."""
    return dict(base, BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d, BLOCK_DV=cfg.block_dv,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _dkdv(inputs, strides, common, k, v_arg, shape, beta, want_b, dev):
    """Launch the dK/dV kernel: ``(dk, dv or dk, d(bias) workspace [G, N] or None)`` in float32."""
    g1, g2, b, n, d, dv_dim, k1, k2, has_values = shape
    dk = torch.empty(k1, k2, n, d, device=dev, dtype=torch.float32)
    dv = torch.empty(k1, k2, n, dv_dim, device=dev, dtype=torch.float32) if has_values else dk
    ws = torch.empty(g1 * g2, n, device=dev, dtype=torch.float32) if want_b else inputs[4]
    # strides of the key operands themselves (not broadcast): one program per key group
    key_strides = (k.stride(0), k.stride(1), k.stride(2), v_arg.stride(0), v_arg.stride(1), v_arg.stride(2))
    with device_guard(dev):
        _hopfield_bwd_dkdv[(triton.cdiv(n, common["BLOCK_N"]), k1 * k2)](
            *inputs, dk, dv, ws, b, n, d, dv_dim, g2, k2, g1 // k1, g2 // k2, float(beta),
            *strides[:3], *key_strides, *strides[9:], NEED_DBIAS=want_b, **common)
    return dk, dv, (ws if want_b else None)


def _dq(inputs, strides, common, shape, beta, dev, batch_invariant):
    """Launch the split-N dQ kernel and sum its splits in order: dq [G1 * G2 * B, d] float32."""
    g1, g2, b, n, d, dv_dim = shape[:6]
    block_b, block_n = common["BLOCK_B"], common["BLOCK_N"]
    n_per_split = dq_split_size(triton.cdiv(b, block_b) * g1 * g2, n, block_n, dev, batch_invariant)
    splits = triton.cdiv(n, n_per_split)
    ws = torch.empty(splits, g1 * g2 * b, d, device=dev, dtype=torch.float32)
    with device_guard(dev):
        _hopfield_bwd_dq[(triton.cdiv(b, block_b), g1 * g2, splits)](
            *inputs, ws, b, n, d, dv_dim, g2, n_per_split, float(beta), *strides, **common)
    return ws.sum(dim=0)


def hopfield_backward(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, *, beta,
                      needs=(True, True, True, True), batch_invariant=False, allow_tf32=False):
    """dq, dk, dv, d_key_bias of one retrieval pass in the canonical layout (None where not needed).

    queries [G1, G2, B, d], keys [K1, K2, N, d], values [K1, K2, N, dv] or None (= keys; the
    values' share is in dk), key_bias [C1, C2, N] or None, assoc [A1, A2, B, N] or None,
    out [G1, G2, B, dv] and lse [G1, G2, B] of the forward, d_out / d_lse their gradients
    (either may be None). ``use_kernels(d, dv, ...)`` must hold. ``batch_invariant``: a fixed dQ split
    size (each query's dQ then does not depend on the batch; dK, dV, d(bias) sum over it).
    ``allow_tf32``: float32 dots on TF32 tensor cores. Launched on the tensors' device.
    """
    g1, g2, b, d = queries.shape
    k1, k2, n, _ = keys.shape
    dv_dim = d if values is None else values.shape[-1]
    dev = queries.device
    interpret = dev.type != "cuda"
    cfg = backward_config(d, dv_dim, queries.dtype, "dkdv", interpret=interpret)
    q, k, v = unit_stride(queries), unit_stride(keys), unit_stride(values)
    bias = None if key_bias is None else unit_stride(key_bias.float())
    assoc = None if assoc is None else unit_stride(assoc.float())
    d_out = torch.zeros_like(out) if d_out is None else d_out
    delta = (d_out.float() * out.float()).sum(-1)
    if d_lse is not None:
        delta = delta - d_lse.float()
    do = d_out.to(torch.float32 if cfg.dot_fp32 else queries.dtype).reshape(g1 * g2 * b, dv_dim).contiguous()
    lse = lse.float().reshape(-1).contiguous()
    delta = delta.reshape(-1).contiguous()
    want_q, want_k, want_v, want_b = needs
    want_v = want_v and values is not None
    want_b = want_b and bias is not None
    v_arg = k if v is None else v
    strides = (*group_strides(q, g1, g2), q.stride(-2), *group_strides(k, g1, g2), k.stride(-2),
               *group_strides(v_arg, g1, g2), v_arg.stride(-2), *group_strides(bias, g1, g2),
               *group_strides(assoc, g1, g2), 0 if assoc is None else assoc.expand(g1, g2, b, n).stride(2))
    flags = dict(HAS_BIAS=bias is not None, HAS_ASSOC=assoc is not None, VALUES_ARE_KEYS=v is None,
                 DOT_FP32=cfg.dot_fp32, PRECISION=dot_precision(queries.dtype, allow_tf32))
    inputs = (q, k, v_arg, do, lse, delta, lse if bias is None else bias, lse if assoc is None else assoc)
    shape = (g1, g2, b, n, d, dv_dim, k1, k2, values is not None)
    dq = dk = dv = db = None
    if want_k or want_v or want_b:
        dk, dv, ws = _dkdv(inputs, strides, _constexprs(flags, cfg), k, v_arg, shape, beta, want_b, dev)
        if want_b:
            db = ws.reshape(g1, g2, n).sum_to_size(key_bias.shape).to(key_bias.dtype)
        dk = dk.to(keys.dtype) if want_k else None
        dv = dv.to(values.dtype) if want_v else None
    if want_q:
        dq_cfg = backward_config(d, dv_dim, queries.dtype, "dq", interpret=interpret)
        dq = _dq(inputs, strides, _constexprs(flags, dq_cfg), shape, beta, dev, batch_invariant)
        dq = dq.reshape(g1, g2, b, d).to(queries.dtype)
    return dq, dk, dv, db
