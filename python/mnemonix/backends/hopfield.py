"""Backends of :func:`mnemonix.ops.hopfield_retrieve` (one pass; the op drives iterations).

Every backend takes the op's canonical layout (see :mod:`mnemonix.backends.hopfield_grad`):
``run(q[G1, G2, B, d], k[K1, K2, N, d], v[K1, K2, N, dv] | None, *, beta, logit_bias[C1, C2, N]
| None, assoc[A1, A2, B, N] | None, want_argmax) -> (out[G1, G2, B, dv], lse[G1, G2, B],
argmax[G1, G2, B] int64 | None)`` in the work dtype (float32; float64 for float64 inputs), where
``v=None`` means the values are the keys and the biases already fold in the masks (``-inf``).
Each forward is paired with a backward (:data:`BACKWARDS`, same layout): what each can run is
declared at the bottom as data; which one is fastest is the op's speed policy
(:mod:`mnemonix.ops.hopfield`). Gradients reach the backends through the custom op of
:mod:`mnemonix.backends.hopfield_autograd`.

- ``triton``: the fused kernels of ``mnemonix.kernels.hopfield`` (split-N, exact merge,
  d-tiling, K = V read once; groups on a third grid axis) and, for the backward,
  ``mnemonix.kernels.hopfield_bwd`` (FlashAttention-2: dK/dV and dQ kernels, no atomics).
  CUDA, or CPU tensors under ``TRITON_INTERPRET=1``.
- ``cpp``: the fused OpenMP/SIMD kernel ``mnemonix._core.retrieval`` (CPU; float32, and float16
  / bfloat16 rows converted exactly to float32 a chunk at a time, so each is read once in its
  width): one read of each key row serves both products; N split over threads with an exact
  merge; one call per group, by address (``retrieve_at``: no numpy views, which have no
  bfloat16, and no widened copy of 16-bit keys). Forward only.
- ``amx``: bfloat16 on Intel's AMX tiles, ``mnemonix._core.retrieval_amx`` (float32 logits and
  sums, the weights as two bfloat16 terms): :mod:`mnemonix.backends.hopfield_amx`. CPUs with
  AMX-BF16, forward only, no bias or argmax.
- ``sdpa``: PyTorch's own fused CPU flash-attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``, the kernel behind
  ``F.scaled_dot_product_attention`` on CPU), which also returns the log-sum-exp, paired with
  its fused backward. CPU, float32/float64/float16/bfloat16 (16-bit GEMMs, a float32 softmax
  and log-sum-exp), dv == d, no argmax; its backward has no gradient for the log-sum-exp or the
  bias.
- ``gemm``: two GEMMs and one softmax per block of queries, the block's [rows, N] scores
  materialised (at most ~1M of them at a time). Any device, float32/float64, forward only:
  the fastest CPU path for moderate batches over cache-sized stores and for very wide d.
- ``torch``: streams over N in chunks with an online softmax; its backward recomputes the
  probabilities chunk by chunk (FlashAttention-2 style). Extra memory O(G x B x chunk), never
  O(B x N), on any device and dtype (float64 too: the gradcheck path).
- ``reference``: the ground truth :func:`mnemonix.reference.hopfield_retrieve` (materialises
  [B, N]); the one adapter through which production code can reach ``reference``. It is
  called directly, not through the custom op, so its gradients are autograd's.
"""

from __future__ import annotations

import functools
import math

import torch

from mnemonix import _triton, calibration
from mnemonix._dispatch import ALL_FLOAT, Backend
from mnemonix.backends import core_engine
from mnemonix.backends.hopfield_amx import AMX
from mnemonix.backends.hopfield_grad import chunk_size, lift, pick, stream_backward, stream_forward

__all__ = ["TRITON", "CPP", "AMX", "SDPA", "GEMM", "TORCH", "REFERENCE", "BACKENDS", "BACKWARDS", "chunk_size"]


# -- triton -----------------------------------------------------------------------------------

def run_triton(queries, keys, values, *, beta, logit_bias, want_argmax, assoc=None, batch_invariant=False,
               allow_tf32=False):
    kernels = _triton.load_kernels("hopfield")
    return kernels.hopfield_retrieve(queries, keys, values, beta=beta, logit_bias=logit_bias,
                                     want_argmax=want_argmax, assoc_bias=assoc, batch_invariant=batch_invariant,
                                     allow_tf32=allow_tf32)


def backward_triton(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, *, beta, needs,
                    batch_invariant=False, allow_tf32=False):
    kernels = _triton.load_kernels("hopfield_bwd")
    dv = keys.shape[-1] if values is None else values.shape[-1]
    if not kernels.use_kernels(keys.shape[-1], dv, queries.dtype, interpret=queries.device.type != "cuda"):
        # too wide for one register tile (float32: wider than 64): the streaming path
        return stream_backward(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, beta=beta,
                               needs=needs)
    return kernels.hopfield_backward(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, beta=beta,
                                     needs=needs, batch_invariant=batch_invariant, allow_tf32=allow_tf32)


# -- cpp --------------------------------------------------------------------------------------

def _core_retrieval():
    return core_engine("retrieval")


def _not_batch_invariant(inputs, why: str) -> list[str]:
    """The reason a backend gives when the caller asked for batch-invariant results."""
    return [f"not batch-invariant ({why})"] if getattr(inputs, "batch_invariant", False) else []


def _cpp_reasons(inputs) -> list[str]:
    reasons = [] if _core_retrieval() is not None else ["mnemonix._core.retrieval is not built"]
    reasons += _not_batch_invariant(inputs, "its N-split into thread parts follows B, and from 8 queries they "
                                            "go across the vector lanes")
    if getattr(inputs, "association_bias", None) is not None:
        reasons.append("the C++ kernel takes no association mask (a bias per stored pattern only)")
    return reasons


# The C++ kernel's element codes (retrieve_at's element_type)
_ELEMENT_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def run_cpp(queries, keys, values, *, beta, logit_bias, want_argmax, assoc=None, **_):
    core = _core_retrieval()
    q4, k4, v4, b4 = lift(queries, keys, values, logit_bias)
    g1, g2, b, d = q4.shape
    n, dv = k4.shape[-2], k4.shape[-1] if v4 is None else v4.shape[-1]
    code = _ELEMENT_CODES[q4.dtype]
    out = torch.empty(g1, g2, b, dv, dtype=torch.float32)  # dv named: b may be 0
    lse = torch.empty(g1, g2, b, dtype=torch.float32)
    arg = torch.empty(g1, g2, b, dtype=torch.int64)
    for i in range(g1):  # one fused call per group: each reads its own keys once, 16-bit rows as they are
        for j in range(g2):
            q, k = q4[i, j].detach().contiguous(), pick(k4, i, j).detach().contiguous()
            v = None if v4 is None else pick(v4, i, j).detach().contiguous()
            bias = pick(b4, i, j)
            bias = None if bias is None else bias.detach().to(torch.float32).contiguous()
            core.retrieve_at(q.data_ptr(), b, d, k.data_ptr(), n, 0 if v is None else v.data_ptr(), dv, float(beta),
                             0 if bias is None else bias.data_ptr(), out[i, j].data_ptr(), lse[i, j].data_ptr(),
                             arg[i, j].data_ptr(), code)
    return out, lse, (arg if want_argmax else None)


# -- torch ------------------------------------------------------------------------------------

def run_torch(queries, keys, values, *, beta, logit_bias, want_argmax, assoc=None, batch_invariant=False, **_):
    """The streaming pass; ``batch_invariant``: one query row at a time (every shape then is the same
    whatever B is, so are the BLAS kernels and reductions torch picks). ``allow_tf32`` is ignored: on
    CUDA torch's matmuls follow ``torch.backends.cuda.matmul.allow_tf32``."""
    if not batch_invariant:
        return stream_forward(queries, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=want_argmax,
                              assoc=assoc)
    queries, keys, values, logit_bias = lift(queries, keys, values, logit_bias)
    rows = [stream_forward(queries[:, :, r:r + 1], keys, values, beta=beta, logit_bias=logit_bias,
                           want_argmax=want_argmax, assoc=None if assoc is None else assoc[:, :, r:r + 1])
            for r in range(queries.shape[2])]
    if not rows:
        return stream_forward(queries, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=want_argmax,
                              assoc=assoc)
    return tuple(None if parts[0] is None else torch.cat(parts, dim=2) for parts in zip(*rows))


# -- gemm -------------------------------------------------------------------------------------

# Scores materialised at once per block of queries (4 MB of float32): the block stays in the
# caches between its two GEMMs and the softmax, and memory stays bounded whatever B and N are.
GEMM_BLOCK_SCORES = 1 << 20
# ... or up to an eighth of the keys' and values' elements when that is more, at most 8M scores
# (32 MB): every block reads all of K and V again, so over wide rows (d = 12,288: 1e4 keys are
# 491 MB) 1M scores per block made B = 1024 re-stream them 11 times (5.0 s against plain
# torch's one block, 3.1 s).
GEMM_BLOCK_OPERAND_FRACTION = 8
GEMM_BLOCK_MAX_SCORES = 8 << 20


def run_gemm(queries, keys, values, *, beta, logit_bias, want_argmax, assoc=None, **_):
    """Two GEMMs and one softmax per block of queries, the scores of the block materialised.

    Where the keys are narrow and the batch moderate, or d is so large that the GEMMs are all the
    work, BLAS at its full rate beats both the single-read C++ kernel and the flash kernel's
    small blocks (bench/NOTES.md, the backend grid). Forward only.
    """
    q, k, v, bias = lift(queries, keys, values, logit_bias)
    v = k if v is None else v
    if q.shape[:2] == k.shape[:2] == v.shape[:2] == (1, 1) and bias is None and assoc is None:
        # plain rows: the 2-D calls of the fast path (mm, not a batched matmul), bit for bit
        out, lse, arg = gemm_rows(q[0, 0], k[0, 0], v[0, 0], beta, want_lse=True, want_argmax=want_argmax)
        return out[None, None], lse[None, None], (None if arg is None else arg[None, None])
    groups = max(q.shape[0] * q.shape[1], k.shape[0] * k.shape[1])
    return _gemm_blocks(q, k, v, beta, bias, assoc, groups, want_lse=True, want_argmax=want_argmax)


def gemm_rows(q, k, v, beta: float, *, want_lse: bool, want_argmax: bool):
    """:func:`run_gemm` on plain rows ``q [B, d]``, ``k [N, d]``, ``v [N, dv]`` (no bias, no groups):
    per block ``mm``, a fused softmax, ``mm`` -- the plain formula's three calls, so no slower
    than it -- and the log-sum-exp and argmax only when wanted (None otherwise)."""
    return _gemm_blocks(q, k, v, beta, None, None, 1, want_lse=want_lse, want_argmax=want_argmax)


def _gemm_blocks(q, k, v, beta, bias, assoc, groups: int, *, want_lse: bool, want_argmax: bool):
    """``(out, lse | None, argmax | None)`` over blocks of the query rows (dimension -2) that keep
    ``groups x rows x N`` scores within :data:`GEMM_BLOCK_SCORES`, or an eighth of the keys' and
    values' elements up to :data:`GEMM_BLOCK_MAX_SCORES` when that is more. A query whose patterns are
    all masked gets lse = -inf (the op's check names it) and NaN outputs."""
    b, n = q.shape[-2], k.shape[-2]
    operands = groups * n * (k.shape[-1] + v.shape[-1])
    budget = max(GEMM_BLOCK_SCORES, min(GEMM_BLOCK_MAX_SCORES, operands // GEMM_BLOCK_OPERAND_FRACTION))
    rows = max(1, min(b, budget // max(1, n * groups)))
    outs, lses, args = [], [], []
    for r in range(0, max(b, 1), rows):  # one (empty) block for an empty batch
        s = torch.matmul(q[..., r:r + rows, :], k.transpose(-1, -2)).mul_(beta)
        if bias is not None:
            s += bias[..., None, :]
        if assoc is not None:
            s += assoc[..., r:r + rows, :]
        if want_lse:
            lses.append(torch.logsumexp(s, dim=-1))
        if want_argmax:
            args.append(s.argmax(dim=-1))  # the first index of the largest logit
        outs.append(torch.matmul(torch.softmax(s, dim=-1), v))

    def joined(parts, dim):  # the rows are dimension -2 of out, -1 of lse and argmax
        return None if not parts else parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)

    return joined(outs, -2), joined(lses, -1), joined(args, -1)


def _gemm_reasons(inputs) -> list[str]:
    return _not_batch_invariant(inputs, "BLAS blocks the GEMMs by B")


# -- reference --------------------------------------------------------------------------------

def _reference_pass(queries, keys, values, logit_bias, assoc, beta):
    from mnemonix import reference  # the one production door to the ground truth

    bias = None if logit_bias is None else logit_bias
    return reference.hopfield_retrieve(queries, keys, values, beta=beta, bias=bias, association_mask=assoc,
                                       return_lse=True, return_argmax=True)


def _reference_reasons(inputs) -> list[str]:
    return _not_batch_invariant(inputs, "one [B, N] matmul, whose blocking follows B")


def run_reference(queries, keys, values, *, beta, logit_bias, want_argmax, assoc=None, **_):
    """The reference formula; called directly (not through the custom op) autograd differentiates it."""
    q4, k4, v4, b4 = lift(queries, keys, values, logit_bias)
    out, lse, arg = _reference_pass(q4, k4, v4, b4, assoc, beta)
    work = torch.float64 if q4.dtype == torch.float64 else torch.float32
    return out.to(work), lse, (arg if want_argmax else None)


# -- sdpa -------------------------------------------------------------------------------------

# The flash kernel takes one additive mask: a per-sample bias and an association mask shared by
# the samples are summed into one, up to this many elements (64 MB of float32; beyond, the
# merged mask would approach the association matrix the fused paths avoid).
SDPA_MAX_MERGED_MASK = 1 << 24


def _sdpa_kernel():
    """torch's fused CPU flash kernel (the ``torch._`` binding: ~2 us less per call than
    ``torch.ops.aten``'s overload packet), or None in a torch without it."""
    return _SDPA_KERNEL


_SDPA_KERNEL = (getattr(torch, "_scaled_dot_product_flash_attention_for_cpu", None)
                or getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None))


# torch's CPU flash kernel (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp) runs one task per
# (batch, head, block of queries), blocks of 32 queries under 192, of 64 under 768, else of
# 256: a batch of up to 32 queries runs on one core. Cutting the keys into P parts, passed as a
# batch of P problems, gives P times the tasks; the results are merged exactly in C++
# (_core.retrieval.merge_parts_at; FlashDecoding's split-K). Parts keep at least this many rows.
FLASH_MIN_PART_ROWS = 64


def flash_key_parts(b: int, n: int, threads: int, d: int = 0, dv: int = 0, itemsize: int = 4) -> int:
    """How many parts to cut N keys into for one group of B queries on ``threads`` threads: as
    few as make the kernel's tasks a multiple of the threads (balanced), none (1) once there
    are 4 tasks per thread, and never parts under :data:`FLASH_MIN_PART_ROWS` rows. Given the
    keys' and values' widths, a split of wide keys goes on halving its parts while the kernel's
    key blocks (up to 512 rows of a part) take more than :data:`FLASH_PART_BYTES`, up to 8 parts
    per thread and :data:`FLASH_MERGE_MAX_VALUES` values of the parts' results."""
    tasks = -(-b // (32 if b < 192 else 64 if b < 768 else 256))
    if tasks >= 4 * threads:
        return 1
    parts = max(1, min(threads // math.gcd(tasks, threads), n // FLASH_MIN_PART_ROWS))
    if parts > 1:
        while (min(512, n // parts) * d * itemsize > FLASH_PART_BYTES and 2 * parts <= 8 * threads
               and n // (2 * parts) >= FLASH_MIN_PART_ROWS and 2 * parts * b * dv <= FLASH_MERGE_MAX_VALUES):
            parts *= 2
    return parts


# torch's flash kernel takes keys in blocks of up to 512 rows; with keys of d >= 1,024 a block
# passes this many bytes (an L2 cache's half), and more, smaller parts run faster while their
# results stay small (Xeon, two threads, medians of paired runs: N = 1e3, d = 1,024, B = 1:
# 2 parts 119 us, 4 parts 108; B = 8: 290 against 223; B = 16: 485 against 467; N = 2,000,
# B = 8, 8 parts: 886 against 671; N = 1e4, B = 1-8, d = 4,096 and 12,288: within 3%). At
# d = 512 (blocks of 1 MB) more parts gained nothing (1.00-1.05x), nor below (up to 1.10x
# slower at d = 128).
FLASH_PART_BYTES = 1 << 20


def flash_split(q, k, v, beta: float, parts: int, want_lse: bool = True,
                dims: tuple[int, int, int, int] | None = None):
    """``(out [B, dv], lse [B] | None, finite)`` of one group by the flash kernel over ``parts``
    parts of the keys (the first P x (N // P) rows, one strided view; the few rows left are
    scored in the merge), merged into buffers of their own. q [B, d] contiguous, k [N, d] and
    v [N, dv] | None with unit column strides, float32 or (``parts`` > 1) float16 / bfloat16, all
    of one dtype (:func:`flash_parts`): 16-bit parts are merged in float32 and out rounded once
    more (lse float32); ``dims``: their (B, d, N, dv) when the caller has them. ``finite``: the
    queries, out and lse hold no NaN/Inf (the fast path's check)."""
    vv = k if v is None else v
    b, d, n, dv = dims if dims is not None else (*q.shape, k.shape[0], vv.shape[1])
    rows, ks, vs = n // parts, k.stride(0), vv.stride(0)
    kp = k.as_strided((parts, 1, rows, d), (rows * ks, 0, ks, 1))
    vp = kp if v is None else v.as_strided((parts, 1, rows, dv), (rows * vs, 0, vs, 1))
    qp = q.as_strided((parts, 1, b, d), (0, 0, d, 1))
    # the results' buffers are made before the kernel: after it (its GEMMs evict the caches) the
    # first tensor made cost ~15 us (N = 1e3, d = 1,024), torch's code for it read back from L3
    out = q.new_empty(b, dv)
    lse = torch.empty(b, dtype=torch.float32) if want_lse else None
    part_out, part_lse = _SDPA_KERNEL(qp, kp, vp, scale=beta)  # (no dropout, not causal, no mask: the defaults)
    done, size = parts * rows, q.element_size()
    finite = _core_retrieval().merge_parts_at(
        part_out.data_ptr(), part_lse.data_ptr(), parts, b, dv, q.data_ptr(), d, beta, n - done,
        k.data_ptr() + size * done * ks, ks, vv.data_ptr() + size * done * vs, vs, out.data_ptr(),
        0 if lse is None else lse.data_ptr(), _ELEMENT_CODES[q.dtype])
    return out, lse, finite


# One part goes through the merge too (a copy of out) while out holds at most this many values:
# the copy costs less than the view of the kernel's result it replaces (made after the kernel,
# ~15 us); past it the copy is the larger cost.
FLASH_MERGE_MAX_VALUES = 1 << 16


def flash_parts(q, k, v, b: int, n: int, dv: int, d: int | None = None) -> int:
    """How :func:`flash_split` runs one group of B queries (q [B, d], k [N, d], v [N, dv] |
    None, float32, or bfloat16 where the speed policy splits it: :func:`flash_splits_16_bit`;
    ``d``: the keys' width when the caller has it): its key parts (:func:`flash_key_parts`; 1 for
    a small float32 batch whose out the merge copies), or 0 where it cannot or should not: no C++
    merge, queries not contiguous, keys or values with a column stride, a kernel whose results
    are not laid out as the merge reads them, one part with more than
    :data:`FLASH_MERGE_MAX_VALUES` values of out, or one 16-bit part (nothing to gain)."""
    if (not q.is_contiguous() or k.stride(-1) != 1 or (v is not None and v.stride(-1) != 1)
            or _core_retrieval() is None):
        return 0
    return _flash_plan(b, n, k.shape[-1] if d is None else d, dv, torch.get_num_threads(), q.element_size())


@functools.lru_cache(maxsize=4096)
def _flash_plan(b: int, n: int, d: int, dv: int, threads: int, itemsize: int = 4) -> int:
    """:func:`flash_parts` past the operands' layout (memoised: it runs on every call)."""
    if not _flash_results_contiguous():
        return 0
    parts = flash_key_parts(b, n, threads, d, dv, itemsize)
    return parts if parts > 1 or (itemsize == 4 and b * dv <= FLASH_MERGE_MAX_VALUES) else 0


def flash_splits_16_bit(dtype: torch.dtype) -> bool:
    """Whether the speed policy runs torch's flash kernel over key parts for operands of this
    16-bit dtype (threshold ``flash_split_<dtype>``, bfloat16 only; off unless a CPU profile sets it)."""
    return dtype is torch.bfloat16 and bool(calibration.thresholds("hopfield_retrieve", "cpu")
                                            .get("flash_split_bfloat16", 0))


def flash_splits(q, k, v, mask) -> int:
    """Key parts for the general path's flash call on canonical operands: :func:`flash_parts`
    for one group without a mask in float32 (or bfloat16, :func:`flash_splits_16_bit`), else 1
    (the kernel as is)."""
    if (mask is not None or q.shape[:-2].numel() != 1
            or (q.dtype != torch.float32 and not flash_splits_16_bit(q.dtype))):
        return 1
    b, n, dv = q.shape[-2], k.shape[-2], (k if v is None else v).shape[-1]
    return max(1, flash_parts(q[0, 0], k[0, 0], None if v is None else v[0, 0], b, n, dv))


@functools.cache
def _flash_results_contiguous() -> bool:
    """Whether the flash kernel returns out [P, 1, B, dv] and lse [P, 1, B] contiguous, as the
    merge reads them (it allocates them so; probed once on a tiny problem)."""
    if _SDPA_KERNEL is None:
        return False
    q, k = torch.ones(1, 3, 4), torch.ones(5, 4)
    out, lse = _SDPA_KERNEL(q.expand(2, 1, 3, 4), k.expand(2, 1, 5, 4), k.expand(2, 1, 5, 4), 0.0, False,
                            attn_mask=None, scale=1.0)
    return out.is_contiguous() and lse.is_contiguous()


def _sdpa_backward_kernel():
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _sdpa_mask(logit_bias, assoc, dtype):
    """One additive attention mask [.., .., 1 or B, N] (broadcast by the kernel), or None."""
    mask = None if logit_bias is None else logit_bias[..., None, :]
    if assoc is not None:
        mask = assoc if mask is None else mask + assoc
    return None if mask is None else mask.to(dtype)


def _sdpa_reasons(inputs) -> list[str]:
    reasons = _not_batch_invariant(inputs, "the flash kernel's query blocks and GEMMs follow B")
    if _sdpa_kernel() is None:
        reasons.append("this torch has no aten._scaled_dot_product_flash_attention_for_cpu")
    if inputs.want_argmax:
        reasons.append("the flash kernel does not return the argmax")
    keys, values, queries = inputs.keys, inputs.values, inputs.queries
    if queries.numel() == 0:
        reasons.append("the flash kernel crashes (SIGFPE) on an empty batch of queries")
    if values is not None and values.shape[-1] != keys.shape[-1]:
        reasons.append("the flash kernel needs values of the keys' width (dv == d)")
    shared = keys.ndim == 4 and queries.ndim == 4 and keys.shape[:2] != queries.shape[:2]
    if inputs.needs_grad and shared:
        reasons.append("the flash kernel's backward would return a key gradient per group for keys shared by "
                       "several groups (group-times the memory)")
    key_bias, assoc = inputs.logit_bias, getattr(inputs, "association_bias", None)
    if key_bias is not None and assoc is not None and key_bias.ndim == 3:
        merged = torch.broadcast_shapes((*key_bias.shape[:2], 1, key_bias.shape[-1]), assoc.shape)
        if merged != assoc.shape and math.prod(merged) > SDPA_MAX_MERGED_MASK:
            reasons.append(f"the flash kernel takes one mask: the per-sample bias and the shared association mask "
                           f"would merge into {list(merged)} (> {SDPA_MAX_MERGED_MASK} elements)")
    if inputs.needs_grad and getattr(inputs, "lse_needs_grad", True):
        reasons.append("the flash kernel's backward has no gradient for the log-sum-exp (return_lse with grad)")
    if inputs.needs_grad and key_bias is not None and getattr(inputs, "bias_needs_grad", True):
        reasons.append("the flash kernel's backward has no gradient for the bias")
    return reasons


def run_sdpa(queries, keys, values, *, beta, logit_bias, want_argmax, assoc=None, **_):
    q, k, v, b = lift(queries, keys, values, logit_bias)
    v = k if v is None else v
    mask = _sdpa_mask(b, assoc, q.dtype)
    parts = flash_splits(q, k, None if v is k else v, mask)
    if parts > 1:  # one group, a small batch: the keys in parts fill the cores (the fast path's call too)
        out, lse, ok = flash_split(q[0, 0], k[0, 0], None if v is k else v[0, 0], beta, parts)
        out, lse = out[None, None], lse[None, None]
    else:
        groups = q.shape[:2]  # the kernel reads stride-0 (shared) groups correctly: no copy
        k, v = k.expand(*groups, *k.shape[2:]), v.expand(*groups, *v.shape[2:])
        out, lse = _sdpa_kernel()(q, k, v, 0.0, False, attn_mask=mask, scale=beta)
        ok = not bool(((lse == 0) & (out == 0).all(-1)).any())  # merge_parts_at's test of the same mark
    if not ok:  # maybe a query without a finite logit (out = 0, lse = 0): the streaming pass says what it is
        return run_torch(queries, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=want_argmax,
                         assoc=assoc)
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    return out.to(work), lse.to(work), None


def backward_sdpa(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, *, beta, needs, **_):
    """The flash kernel's own fused backward (no d_lse, no d_bias: the capability says so)."""
    if d_lse is not None or (needs[3] and key_bias is not None):
        raise RuntimeError("hopfield_retrieve: the sdpa backward has no gradient for lse or bias")
    v = keys if values is None else values
    d_out = torch.zeros_like(out) if d_out is None else d_out
    dq, dk, dv = _sdpa_backward_kernel()(
        d_out.to(queries.dtype).contiguous(), queries, keys, v, out.to(queries.dtype).contiguous(),
        lse.contiguous(), 0.0, False, attn_mask=_sdpa_mask(key_bias, assoc, queries.dtype), scale=beta)
    if values is None:
        return dq, dk.add_(dv), None, None
    return dq, dk, dv, None


def backward_torch(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, *, beta, needs, **_):
    return stream_backward(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, beta=beta, needs=needs)


_CPU = frozenset({"cpu"})
_HALVES = frozenset({torch.float16, torch.bfloat16})
_WITH_FP64 = ALL_FLOAT | {torch.float64}

TRITON = Backend("triton", run_triton, needs_triton=True, supports_grad=True)
CPP = Backend("cpp", run_cpp, devices=_CPU, dtypes=_HALVES | {torch.float32}, extra_reasons=_cpp_reasons)
SDPA = Backend("sdpa", run_sdpa, devices=_CPU, dtypes=_WITH_FP64, supports_grad=True, extra_reasons=_sdpa_reasons)
TORCH = Backend("torch", run_torch, dtypes=_WITH_FP64, supports_grad=True)
GEMM = Backend("gemm", run_gemm, dtypes=frozenset({torch.float32, torch.float64}), extra_reasons=_gemm_reasons)
REFERENCE = Backend("reference", run_reference, dtypes=_WITH_FP64, supports_grad=True,
                    extra_reasons=_reference_reasons)

BACKENDS: tuple[Backend, ...] = (TRITON, CPP, AMX, SDPA, GEMM, TORCH, REFERENCE)
BY_NAME = {b.name: b for b in BACKENDS}
# The backward paired with each forward that supports gradients (same canonical layout, plus
# ``d_out``, ``d_lse`` and the forward's ``out`` / ``lse``; returns dq, dk, dv, d_key_bias).
# ``reference`` has none: it bypasses the custom op and autograd differentiates its formula.
BACKWARDS = {"triton": backward_triton, "sdpa": backward_sdpa, "torch": backward_torch}
