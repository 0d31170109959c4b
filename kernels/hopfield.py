"""Fused modern-Hopfield retrieval ``out = softmax(beta * Q K^T + bias) V`` in Triton.

References
----------
- Ramsauer et al. 2020, "Hopfield Networks is All You Need" (the update rule, eq. 3).
- Milakov & Gimelshein 2018, "Online normalizer calculation for softmax" (running max/sum).
- Dao et al. 2022, "FlashAttention" (tiling, ``m_i`` / ``l_i`` / ``acc``).
- Dao et al. 2023, "Flash-Decoding for long-context inference" (split over N, exact merge;
  the same idea as xformers' ``triton_splitk``).

Tricks
------
- One pass over the stored patterns; ``[B, N]`` is never materialised.
- ``VALUES_ARE_KEYS``: each key tile is loaded once and used for both ``Q K^T`` and ``P K``,
  halving the bytes a generic attention kernel would read for auto-association.
- Split-N: the grid is ``(cdiv(B, BLOCK_B), SPLITS)``; each program writes a partial
  ``(m, l, acc, argmax)`` for its N-range into float32 workspaces, and a merge kernel rescales
  them by ``exp(m_s - max_s m_s)``. Empty or fully masked splits have ``m = -inf``, ``l = 0``.
- Large d: when ``d`` (or ``dv``) exceeds one register tile, the scores of a tile accumulate
  over ``BLOCK_D`` chunks of d, and the accumulator lives in the program's own slice of the
  float32 partial-output workspace (loaded, rescaled and stored per ``BLOCK_DV`` chunk through
  one pointer tensor, so every element stays with one thread). Long key tiles (128) amortise
  that round trip; bench/larged_bytes.py models its bytes.
- Masked patterns / padding carry ``-inf`` logits; the running max is replaced by 0 while it
  is still ``-inf`` so that no ``-inf - -inf`` NaN appears.
- Groups: queries [G1, G2, B, d] (samples x heads) on a third grid axis; keys, values and
  biases are addressed through per-group strides, so keys shared by some or all groups
  (stride 0) are never copied. ``ASSOC`` adds a per-query-row association bias [.., B, N].
- Argmax: the first index of the largest logit (ties go to the lower index, like
  ``torch.argmax``).
- Offsets into K, V and the workspaces are int64 (N x d may pass 2^31 elements).
- Dtypes: fp32/fp16/bf16 inputs, fp32 accumulation. Under ``TRITON_INTERPRET=1`` the dot
  products run in fp32 (the interpreter's bf16 arithmetic is not reliable); on a GPU fp16/bf16
  tiles feed the tensor cores directly and fp32 uses IEEE (not TF32) products.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Largest d (and dv) kept whole in registers; beyond it the large-d scheme tiles over d.
MAX_REGISTER_D = 256
# Most N-splits of one row block (the merge holds BLOCK_S x BLOCK_DV partials in registers).
MAX_SPLITS = 256
# batch_invariant=True: one query tile and at least this many keys per split, whatever B is.
BATCH_INVARIANT_BLOCK_B = 16
BATCH_INVARIANT_SPLIT = 4096


@triton.jit
def _online_softmax_step(s, beta, BIAS, ASSOC, stride_ab, offs_b, row_ok, offs_n, n_ok, n0, m_i, l_i, arg_i,
                         HAS_BIAS: tl.constexpr, HAS_ASSOC: tl.constexpr):
    """Fold one tile of raw scores ``s = q k^T`` [BLOCK_B, BLOCK_N] into the softmax state.

    ``logits = beta * s + bias + assoc`` (``-inf`` outside the tile's range; ``BIAS`` and
    ``ASSOC`` already point at this group's rows); returns
    ``(p, alpha, m_new, l_i, arg_i)`` with ``p = exp(logits - m_new)`` for ``acc += p v``
    and ``alpha = exp(m_i - m_new)``, the factor that rescales ``acc``. While the running
    max is still ``-inf`` it is replaced by 0, so no ``-inf - -inf`` NaN appears.
    """
    s = s * beta
    if HAS_BIAS:
        s += tl.load(BIAS + offs_n, mask=n_ok, other=0.0)[None, :]
    if HAS_ASSOC:
        s += tl.load(ASSOC + offs_b.to(tl.int64)[:, None] * stride_ab + offs_n[None, :],
                     mask=row_ok[:, None] & n_ok[None, :], other=0.0)
    s = tl.where(n_ok[None, :], s, float("-inf"))
    tile_max = tl.max(s, axis=1)
    tile_arg = tl.argmax(s, axis=1, tie_break_left=True).to(tl.int32)
    arg_i = tl.where(tile_max > m_i, n0 + tile_arg, arg_i)
    m_new = tl.maximum(m_i, tile_max)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    return p, alpha, m_new, l_i, arg_i


@triton.jit
def _group_offset(pid_g, G2, stride_1, stride_2):
    """Element offset of group ``pid_g`` (= g1 * G2 + g2) in a tensor with group strides (0 = shared)."""
    return (pid_g // G2).to(tl.int64) * stride_1 + (pid_g % G2).to(tl.int64) * stride_2


@triton.jit
def _hopfield_partial_small_d(
    Q, K, V, BIAS, ASSOC, M_OUT, L_OUT, ACC_OUT, ARG_OUT,
    B, N, D, DV, G2, n_per_split, beta,
    stride_q1, stride_q2, stride_qb, stride_k1, stride_k2, stride_kn, stride_v1, stride_v2, stride_vn,
    stride_c1, stride_c2, stride_a1, stride_a2, stride_ab,
    HAS_BIAS: tl.constexpr, HAS_ASSOC: tl.constexpr, VALUES_ARE_KEYS: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One (row block, N split, group) program; d and dv fit in one register tile each."""
    tl.static_assert(BLOCK_B >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_DV >= 16)
    pid_b = tl.program_id(0)
    split = tl.program_id(1)
    pid_g = tl.program_id(2)
    Q += _group_offset(pid_g, G2, stride_q1, stride_q2)
    K += _group_offset(pid_g, G2, stride_k1, stride_k2)
    V += _group_offset(pid_g, G2, stride_v1, stride_v2)
    BIAS += _group_offset(pid_g, G2, stride_c1, stride_c2)
    ASSOC += _group_offset(pid_g, G2, stride_a1, stride_a2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_b < B
    q = tl.load(Q + offs_b[:, None] * stride_qb + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_B], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_B], tl.float32)
    arg_i = tl.zeros([BLOCK_B], tl.int32)
    acc = tl.zeros([BLOCK_B, BLOCK_DV], tl.float32)
    n_start = split * n_per_split
    n_end = tl.minimum(n_start + n_per_split, N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < n_end
        k = tl.load(K + offs_n.to(tl.int64)[:, None] * stride_kn + offs_d[None, :],
                    mask=n_ok[:, None] & (offs_d[None, :] < D), other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        else:
            s = tl.dot(q, tl.trans(k))
        p, alpha, m_new, l_i, arg_i = _online_softmax_step(s, beta, BIAS, ASSOC, stride_ab, offs_b, row_ok, offs_n,
                                                           n_ok, n0, m_i, l_i, arg_i, HAS_BIAS, HAS_ASSOC)
        if VALUES_ARE_KEYS:
            v = k  # the tile already loaded for the scores: one read serves both products
        else:
            v = tl.load(V + offs_n.to(tl.int64)[:, None] * stride_vn + offs_dv[None, :],
                        mask=n_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
            if DOT_FP32:
                v = v.to(tl.float32)
        if DOT_FP32:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    # partial results of this split: workspaces are [SPLITS, G * B] and [SPLITS, G * B, DV]
    part = split * (tl.num_programs(2) * B) + pid_g * B + offs_b
    tl.store(M_OUT + part, m_i, mask=row_ok)
    tl.store(L_OUT + part, l_i, mask=row_ok)
    tl.store(ARG_OUT + part, arg_i, mask=row_ok)
    tl.store(ACC_OUT + part.to(tl.int64)[:, None] * DV + offs_dv[None, :], acc,
             mask=row_ok[:, None] & (offs_dv[None, :] < DV))


@triton.jit
def _acc_slice(ACC_OUT, rows, row_ok, c0, DV, BLOCK_DV: tl.constexpr):
    """Pointers and mask of columns ``[c0, c0 + BLOCK_DV)`` of the program's accumulator rows.

    The large-d kernel loads a slice, rescales it and stores it back through this one pointer
    tensor: an SSA value has one layout, so each element is stored and later reloaded by the same
    thread, and the next key tile's load sees the store by program order, without a barrier
    (tests/test_hopfield_larged.py checks the compiled IR).
    """
    cols = c0 + tl.arange(0, BLOCK_DV)
    return ACC_OUT + rows[:, None] * DV + cols[None, :], row_ok[:, None] & (cols[None, :] < DV)


@triton.jit
def _large_d_scores(Q, K, offs_b, row_ok, offs_n, n_ok, D, stride_qb, stride_kn,
                    DOT_FP32: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    PRECISION: tl.constexpr):
    """``s = q k^T`` [BLOCK_B, BLOCK_N] of one key tile, summed over BLOCK_D-column chunks of d."""
    offs_c = tl.arange(0, BLOCK_D)
    s = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
    for c0 in range(0, D, BLOCK_D):
        c_ok = (c0 + offs_c) < D
        q = tl.load(Q + offs_b[:, None] * stride_qb + (c0 + offs_c)[None, :],
                    mask=row_ok[:, None] & c_ok[None, :], other=0.0)
        k = tl.load(K + offs_n.to(tl.int64)[:, None] * stride_kn + (c0 + offs_c)[None, :],
                    mask=n_ok[:, None] & c_ok[None, :], other=0.0)
        if DOT_FP32:
            s += tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision=PRECISION)
        else:
            s += tl.dot(q, tl.trans(k))
    return s


@triton.jit
def _hopfield_partial_large_d(
    Q, K, V, BIAS, ASSOC, M_OUT, L_OUT, ACC_OUT, ARG_OUT,
    B, N, D, DV, G2, n_per_split, beta,
    stride_q1, stride_q2, stride_qb, stride_k1, stride_k2, stride_kn, stride_v1, stride_v2, stride_vn,
    stride_c1, stride_c2, stride_a1, stride_a2, stride_ab,
    HAS_BIAS: tl.constexpr, HAS_ASSOC: tl.constexpr, VALUES_ARE_KEYS: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Same as the small-d kernel, tiling d (scores) and dv (accumulator, kept in ACC_OUT).

    Per key tile the program moves ``BLOCK_N (d + dv)`` key/value elements and ``2 BLOCK_B dv``
    float32 accumulator values (load + store of its slice), so a long key tile (BLOCK_N = 128)
    amortises the accumulator; a narrow dv chunk (BLOCK_DV) keeps the [BLOCK_N, BLOCK_DV] value
    tile small. The first key tile of a split starts from 0 (its masked load moves no bytes), so
    the workspace needs no zeroing pass. With values = keys the launcher passes K as V.
    """
    tl.static_assert(BLOCK_B >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_DV >= 16)
    pid_b = tl.program_id(0)
    split = tl.program_id(1)
    pid_g = tl.program_id(2)
    Q += _group_offset(pid_g, G2, stride_q1, stride_q2)
    K += _group_offset(pid_g, G2, stride_k1, stride_k2)
    V += _group_offset(pid_g, G2, stride_v1, stride_v2)
    BIAS += _group_offset(pid_g, G2, stride_c1, stride_c2)
    ASSOC += _group_offset(pid_g, G2, stride_a1, stride_a2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_cv = tl.arange(0, BLOCK_DV)
    row_ok = offs_b < B
    part = split * (tl.num_programs(2) * B) + pid_g * B + offs_b
    rows = part.to(tl.int64)

    m_i = tl.full([BLOCK_B], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_B], tl.float32)
    arg_i = tl.zeros([BLOCK_B], tl.int32)
    n_start = split * n_per_split
    n_end = tl.minimum(n_start + n_per_split, N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < n_end
        s = _large_d_scores(Q, K, offs_b, row_ok, offs_n, n_ok, D, stride_qb, stride_kn,
                            DOT_FP32, BLOCK_B, BLOCK_N, BLOCK_D, PRECISION)
        p, alpha, m_new, l_i, arg_i = _online_softmax_step(s, beta, BIAS, ASSOC, stride_ab, offs_b, row_ok, offs_n,
                                                           n_ok, n0, m_i, l_i, arg_i, HAS_BIAS, HAS_ASSOC)
        # a row vector, not a scalar: the interpreter cannot mask a load with tensor & scalar bool
        started = tl.full([BLOCK_B], n0, tl.int32) > n_start
        for c0 in range(0, DV, BLOCK_DV):
            v = tl.load(V + offs_n.to(tl.int64)[:, None] * stride_vn + (c0 + offs_cv)[None, :],
                        mask=n_ok[:, None] & ((c0 + offs_cv)[None, :] < DV), other=0.0)
            acc_ptrs, acc_mask = _acc_slice(ACC_OUT, rows, row_ok, c0, DV, BLOCK_DV)
            acc = tl.load(acc_ptrs, mask=acc_mask & started[:, None], other=0.0)
            if DOT_FP32:
                acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision=PRECISION)
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            tl.store(acc_ptrs, acc, mask=acc_mask)
        m_i = m_new

    tl.store(M_OUT + part, m_i, mask=row_ok)
    tl.store(L_OUT + part, l_i, mask=row_ok)
    tl.store(ARG_OUT + part, arg_i, mask=row_ok)


@triton.jit
def _hopfield_merge(
    M_PART, L_PART, ACC_PART, ARG_PART, OUT, LSE, ARG,
    B, DV, splits,
    BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """Exact merge of the split partials of one query row and one dv chunk.

    ``splits`` is a runtime value (a store that grows does not recompile the merge); only
    its power-of-two bound ``BLOCK_S`` is a compile-time constant.
    """
    row = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    s_ok = offs_s < splits
    m = tl.load(M_PART + offs_s * B + row, mask=s_ok, other=float("-inf"))
    l_part = tl.load(L_PART + offs_s * B + row, mask=s_ok, other=0.0)
    m_max = tl.max(m, axis=0)  # finite: at least one pattern takes part
    w = tl.exp(m - m_max)
    l_tot = tl.sum(w * l_part, axis=0)
    offs_c = pid_c * BLOCK_DV + tl.arange(0, BLOCK_DV)
    c_ok = offs_c < DV
    acc = tl.load(ACC_PART + (offs_s[:, None] * B + row).to(tl.int64) * DV + offs_c[None, :],
                  mask=s_ok[:, None] & c_ok[None, :], other=0.0)
    out = tl.sum(acc * w[:, None], axis=0) / l_tot
    tl.store(OUT + row.to(tl.int64) * DV + offs_c, out, mask=c_ok)
    if pid_c == 0:
        tl.store(LSE + row, m_max + tl.log(l_tot))
        # the first split that reaches the max holds the first index of the max
        first = tl.min(tl.where(m == m_max, offs_s, BLOCK_S), axis=0)
        arg = tl.load(ARG_PART + first * B + row)
        tl.store(ARG + row, arg.to(tl.int64))


def _pow2(x: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(max(int(x), 1)))


@dataclass(frozen=True)
class HopfieldConfig:
    """One compiled variant of the forward: which partial kernel, its tiles, warps and stages."""

    small_d: bool
    block_b: int
    block_n: int
    block_d: int  # small-d: the whole (padded) d; large-d: the chunk of d per step of the scores
    block_dv: int  # small-d: the whole (padded) dv; large-d: the chunk of dv per accumulator step
    num_warps: int
    num_stages: int
    dot_fp32: bool


SM90_TILES = {
    # (dot_fp32, width, bucket) -> (BLOCK_B, BLOCK_N, num_warps, num_stages). width: the padded
    # max(d, dv) (16..256: the small-d kernel) or 0 (the large-d kernel); bucket: the query tile the
    # batch asks for (16: B <= 16 or batch_invariant, 32: B <= 64 or large d, 64). Every entry
    # compiles for sm_90 without register spills (tests/test_kernels_spills.py; registers in
    # docs/gpu.md); 4 warps spilled from width 64 on (fp32 B64, 16-bit B32) and at width 128-256.
    # Large d: 128-key tiles amortise the accumulator's round trip through the workspace (4x less
    # than 32-key tiles; bench/larged_bytes.py); the 16-bit kernel keeps 16 rows (32 spill 732 B).
    (False, 16, 16): (16, 64, 4, 3), (False, 16, 32): (32, 64, 4, 3), (False, 16, 64): (64, 64, 4, 3),
    (False, 32, 16): (16, 64, 4, 3), (False, 32, 32): (32, 64, 8, 3), (False, 32, 64): (64, 64, 8, 3),
    (False, 64, 16): (16, 64, 4, 3), (False, 64, 32): (32, 64, 8, 3), (False, 64, 64): (64, 64, 8, 3),
    (False, 128, 16): (16, 64, 8, 3), (False, 128, 32): (32, 64, 8, 3), (False, 128, 64): (64, 32, 8, 3),
    (False, 256, 16): (16, 32, 4, 3), (False, 256, 32): (32, 32, 8, 1), (False, 256, 64): (32, 32, 8, 1),
    (False, 0, 16): (16, 128, 8, 3), (False, 0, 32): (16, 128, 8, 3),
    (True, 16, 16): (16, 32, 4, 3), (True, 16, 32): (32, 32, 4, 3), (True, 16, 64): (64, 32, 4, 3),
    (True, 32, 16): (16, 32, 4, 3), (True, 32, 32): (32, 32, 4, 3), (True, 32, 64): (64, 32, 8, 3),
    (True, 64, 16): (16, 32, 4, 3), (True, 64, 32): (32, 32, 4, 3), (True, 64, 64): (64, 32, 8, 3),
    (True, 128, 16): (16, 32, 8, 3), (True, 128, 32): (32, 32, 8, 3), (True, 128, 64): (32, 32, 8, 3),
    (True, 256, 16): (16, 32, 8, 1), (True, 256, 32): (16, 32, 8, 1), (True, 256, 64): (32, 32, 8, 1),
    (True, 0, 16): (16, 128, 8, 1), (True, 0, 32): (32, 128, 8, 1),
}
LARGE_D_CHUNKS = {False: (64, 64), True: (32, 64)}
"""dot_fp32 -> (BLOCK_D, BLOCK_DV) of the large-d kernel: columns of d per score step, of dv per
accumulator step. FMA dots (fp32) hold both operands in registers, hence 32 columns of d; 64 of
dv keep the [128, 64] value tile small (128 columns spilled 616 B at 16-bit, 264 B at fp32)."""


def hopfield_config(b: int, d: int, dv: int, dtype: torch.dtype, *, interpret: bool, batch_invariant: bool = False,
                    max_register_d: int = MAX_REGISTER_D, block_n: int | None = None) -> HopfieldConfig:
    """The forward variant for ``b`` query rows of ``d`` features retrieving ``dv`` columns.

    fp32 inputs (and everything in the interpreter) take fp32 dots; 16-bit ones feed the tensor
    cores. ``batch_invariant`` fixes BLOCK_B, so a row's arithmetic does not depend on ``b``.
    ``max_register_d`` and ``block_n`` are test overrides (force d-tiling / tile sizes).
    """
    dot_fp32 = interpret or dtype == torch.float32
    small_d = max(d, dv) <= max_register_d
    if batch_invariant:
        bucket = BATCH_INVARIANT_BLOCK_B
    else:
        bucket = 16 if b <= 16 else (32 if b <= 64 or not small_d else 64)
    width = min(256, _pow2(max(d, dv))) if small_d else 0
    block_b, tile_n, num_warps, num_stages = SM90_TILES[(dot_fp32 and not interpret, width, bucket)]
    if interpret:  # tiles of the CPU interpreter: small, fast to emulate
        block_b, tile_n = bucket, (64 if small_d and max(d, dv) <= 128 else 32)
    block_n = block_n or tile_n
    if small_d:
        return HopfieldConfig(True, block_b, block_n, _pow2(d), _pow2(dv), num_warps, num_stages, dot_fp32)
    chunk_d, chunk_dv = LARGE_D_CHUNKS[dot_fp32]
    return HopfieldConfig(False, block_b, block_n, min(chunk_d, _pow2(min(d, max_register_d))),
                          min(chunk_dv, _pow2(min(dv, max_register_d))), num_warps, num_stages, dot_fp32)


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``input_precision`` of the fp32 dots: "tf32" only when asked for and the inputs are float32."""
    return "tf32" if allow_tf32 and dtype == torch.float32 else "ieee"


def device_guard(device: torch.device):
    """Launch on the tensors' device, not the current one (a no-op for CPU tensors)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def default_splits(rows: int, n: int, block_b: int, min_split: int, device: torch.device, groups: int = 1) -> int:
    """Enough programs to fill the device (~2 per SM), at least ``min_split`` patterns per split."""
    row_blocks = groups * triton.cdiv(rows, block_b)
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else None
    return planned_splits(row_blocks, n, min_split, sms)


def planned_splits(row_blocks: int, n: int, min_split: int, sms: int | None) -> int:
    """``default_splits`` for ``sms`` multiprocessors (None: the interpreter, 2 splits)."""
    # interpreter: a few splits exercise the merge without slowing tests down
    want = 2 if sms is None else triton.cdiv(2 * sms, row_blocks)
    return max(1, min(want, triton.cdiv(n, min_split), MAX_SPLITS))


def fewest_per_split(cfg: HopfieldConfig) -> int:
    """Fewest patterns per split: 4 key tiles, or one 128-key tile of the large-d kernel.

    A large-d split's fixed cost (its slice's last store and the merge's read, 4 r dv bytes each
    for r query rows) is small next to one tile's keys and values, 128 (d + dv) e bytes; one tile
    keeps the split count (and the parallelism at small B) of the former 4 x 32 keys.
    """
    return cfg.block_n * (4 if cfg.small_d else 1)


def split_size(n: int, cfg: HopfieldConfig, splits: int | None, rows: int, device: torch.device, groups: int,
               batch_invariant: bool) -> int:
    """Stored patterns per split (a multiple of BLOCK_N); batch-invariant: a function of N alone."""
    if splits is None and batch_invariant:
        fewest = triton.cdiv(triton.cdiv(n, MAX_SPLITS), cfg.block_n) * cfg.block_n
        return max(BATCH_INVARIANT_SPLIT, fewest)
    if splits is None:
        splits = default_splits(rows, n, cfg.block_b, fewest_per_split(cfg), device, groups=groups)
    return triton.cdiv(triton.cdiv(n, splits), cfg.block_n) * cfg.block_n


def lift(queries, keys, values, logit_bias):
    """2-D operands (q [B, d], k [N, d], v [N, dv], bias [N]) as one group [1, 1, ...]."""
    return (queries[None, None] if queries.ndim == 2 else queries, keys[None, None] if keys.ndim == 2 else keys,
            values[None, None] if values is not None and values.ndim == 2 else values,
            logit_bias[None, None] if logit_bias is not None and logit_bias.ndim == 1 else logit_bias)


def unit_stride(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` itself when its last dimension is contiguous (any other strides are fine), else a copy."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def group_strides(t: torch.Tensor | None, g1: int, g2: int) -> tuple[int, int]:
    """Strides of the two group dimensions of ``t`` broadcast to (G1, G2): 0 where shared."""
    if t is None:
        return 0, 0
    return tuple(t.expand(g1, g2, *t.shape[2:]).stride()[:2])


def merge_tiles(splits: int, dv: int) -> tuple[int, int]:
    """(BLOCK_S, BLOCK_DV) of the merge: at most 8192 partial values per program."""
    block_s = _pow2(splits, lo=2)
    return block_s, min(_pow2(dv), max(16, 8192 // block_s))


def hopfield_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None,
    *,
    beta: float,
    logit_bias: torch.Tensor | None,
    want_argmax: bool,
    assoc_bias: torch.Tensor | None = None,
    splits: int | None = None,
    max_register_d: int = MAX_REGISTER_D,
    block_n: int | None = None,
    batch_invariant: bool = False,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the partial kernel over ``(cdiv(B, BLOCK_B), SPLITS, G1 * G2)`` and the merge kernel.

    queries [B, d] or [G1, G2, B, d]; keys [N, d] or [K1, K2, N, d] (K1 in {1, G1}, K2 in
    {1, G2}); values like keys with dv columns, or None (= keys); logit_bias [N] or
    [C1, C2, N] float32 with ``-inf`` for masked patterns; assoc_bias [A1, A2, B, N] (an
    additive bias per query row). Returns out [.., B, dv] float32, lse [.., B] float32,
    argmax [.., B] int64 (None unless ``want_argmax``), 2-D inputs giving 2-D outputs.
    ``splits``, ``max_register_d`` and ``block_n`` override the launcher's choices (tests use
    them to force split-N and d-tiling on small shapes). ``batch_invariant``: fixed tiles and
    split size, so a row's results are bitwise the same alone or in any batch. ``allow_tf32``:
    float32 dots on TF32 tensor cores (10-bit mantissa products) instead of IEEE fp32.
    Launched on the tensors' device. No host sync.
    """
    flat = queries.ndim == 2
    q, k, v, bias = (unit_stride(t) for t in lift(queries, keys, values, logit_bias))
    assoc = None if assoc_bias is None else unit_stride(assoc_bias.float())
    bias = None if bias is None else unit_stride(bias.float())
    g1, g2, b, d = q.shape
    n = k.shape[-2]
    dv = d if v is None else v.shape[-1]
    dev = q.device
    cfg = hopfield_config(b, d, dv, q.dtype, interpret=dev.type != "cuda", batch_invariant=batch_invariant,
                          max_register_d=max_register_d, block_n=block_n)
    n_per_split = split_size(n, cfg, splits, b, dev, g1 * g2, batch_invariant)
    splits = triton.cdiv(n, n_per_split)

    rows = g1 * g2 * b
    m_part = torch.empty(splits, rows, device=dev, dtype=torch.float32)
    l_part = torch.empty(splits, rows, device=dev, dtype=torch.float32)
    arg_part = torch.empty(splits, rows, device=dev, dtype=torch.int32)
    acc_part = torch.empty(splits, rows, dv, device=dev, dtype=torch.float32)
    v_arg = k if v is None else v
    strides = (*group_strides(q, g1, g2), q.stride(-2), *group_strides(k, g1, g2), k.stride(-2),
               *group_strides(v_arg, g1, g2), v_arg.stride(-2), *group_strides(bias, g1, g2),
               *group_strides(assoc, g1, g2), 0 if assoc is None else assoc.expand(g1, g2, b, n).stride(2))
    grid = (triton.cdiv(b, cfg.block_b), splits, g1 * g2)
    common = dict(HAS_BIAS=bias is not None, HAS_ASSOC=assoc is not None, VALUES_ARE_KEYS=v is None,
                  DOT_FP32=cfg.dot_fp32, BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d,
                  BLOCK_DV=cfg.block_dv,
                  PRECISION=dot_precision(q.dtype, allow_tf32), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    pointers = (q, k, v_arg, m_part if bias is None else bias, m_part if assoc is None else assoc,  # dummies
                m_part, l_part, acc_part, arg_part)
    sizes = (b, n, d, dv, g2, n_per_split, float(beta))
    out = torch.empty(rows, dv, device=dev, dtype=torch.float32)
    lse = torch.empty(rows, device=dev, dtype=torch.float32)
    arg = torch.empty(rows, device=dev, dtype=torch.int64)
    block_s, merge_dv = merge_tiles(splits, dv)
    with device_guard(dev):
        partial = _hopfield_partial_small_d if cfg.small_d else _hopfield_partial_large_d
        partial[grid](*pointers, *sizes, *strides, **common)
        _hopfield_merge[(rows, triton.cdiv(dv, merge_dv))](
            m_part, l_part, acc_part, arg_part, out, lse, arg, rows, dv, splits,
            BLOCK_S=block_s, BLOCK_DV=merge_dv,
        )
    shape = (b,) if flat else (g1, g2, b)
    return out.view(*shape, dv), lse.view(shape), (arg.view(shape) if want_argmax else None)
