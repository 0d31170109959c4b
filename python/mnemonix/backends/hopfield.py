"""Backends of :func:`mnemonix.ops.hopfield_retrieve` (one pass; the op drives iterations).

Every backend has the signature
``run(queries[B, d], keys[N, d], values[N, dv] | None, *, beta, logit_bias[N] | None,
want_argmax) -> (out[B, dv] float32, lse[B] float32, argmax[B] int64 | None)`` where
``values=None`` means the values are the keys and ``logit_bias`` already folds in the mask
(``-inf`` for masked patterns). What each can run is declared at the bottom as data; which
one is fastest for given inputs is the op's speed policy (:mod:`mnemonix.ops.hopfield`).

- ``triton``: the fused kernel of ``mnemonix.kernels.hopfield`` (split-N, exact merge,
  d-tiling, K = V read once). CUDA, or CPU tensors under ``TRITON_INTERPRET=1``. Forward only.
- ``cpp``: the fused OpenMP/SIMD kernel ``mnemonix._core.retrieval`` (CPU, float32): one read
  of each key row serves both products; N split over threads with an exact merge. Forward only.
- ``sdpa``: PyTorch's own fused CPU flash-attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``, the kernel behind
  ``F.scaled_dot_product_attention`` on CPU), which also returns the log-sum-exp. CPU,
  float32, dv == d, no argmax. Forward only.
- ``torch``: streams over N in chunks with an online softmax (running max ``m_i``, running
  sum ``l_i``, accumulator ``acc``): extra memory O(B x chunk), never O(B x N). Any device.
  With autograd it runs :class:`mnemonix.backends.hopfield_grad.StreamingRetrieval`, whose
  backward recomputes the probabilities chunk by chunk (FlashAttention-2 style), so training
  also stays O(B x chunk) on any device.
- ``reference``: the ground truth :func:`mnemonix.reference.hopfield_retrieve` (materialises
  [B, N]); the one adapter through which production code can reach ``reference``.
"""

from __future__ import annotations

import torch

from mnemonix import _triton
from mnemonix._dispatch import Backend
from mnemonix.backends import hopfield_grad
from mnemonix.backends.hopfield_grad import chunk_size, stream_forward

__all__ = ["TRITON", "CPP", "SDPA", "TORCH", "REFERENCE", "BACKENDS", "chunk_size"]


def run_triton(queries, keys, values, *, beta, logit_bias, want_argmax):
    kernels = _triton.load_kernels("hopfield")
    return kernels.hopfield_retrieve(queries, keys, values, beta=beta, logit_bias=logit_bias,
                                     want_argmax=want_argmax)


def _core_retrieval():
    try:
        from mnemonix._core import retrieval
    except ImportError:
        return None
    return retrieval


def _cpp_reasons(inputs) -> list[str]:
    return [] if _core_retrieval() is not None else ["mnemonix._core.retrieval is not built"]


def run_cpp(queries, keys, values, *, beta, logit_bias, want_argmax):
    core = _core_retrieval()
    q = queries.detach().contiguous().numpy()
    k = keys.detach().contiguous().numpy()
    v = None if values is None else values.detach().contiguous().numpy()
    bias = None if logit_bias is None else logit_bias.detach().float().contiguous().numpy()
    out, lse, arg = core.retrieve(q, k, v, beta=float(beta), bias=bias)
    return torch.from_numpy(out), torch.from_numpy(lse), (torch.from_numpy(arg) if want_argmax else None)


def run_torch(queries, keys, values, *, beta, logit_bias, want_argmax):
    tracked = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (queries, keys, values, logit_bias))
    if not tracked:
        return stream_forward(queries, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=want_argmax)
    out, lse = hopfield_grad.StreamingRetrieval.apply(queries, keys, values, logit_bias, float(beta))
    arg = None
    if want_argmax:
        arg = stream_forward(queries.detach(), keys.detach(), None if values is None else values.detach(),
                             beta=beta, logit_bias=None if logit_bias is None else logit_bias.detach(),
                             want_argmax=True)[2]
    return out, lse, arg


def run_reference(queries, keys, values, *, beta, logit_bias, want_argmax):
    from mnemonix import reference  # the one production door to the ground truth

    out, lse, arg = reference.hopfield_retrieve(
        queries.float(), keys, values, beta=beta, bias=logit_bias, return_lse=True, return_argmax=True
    )
    return out, lse, (arg if want_argmax else None)


def _sdpa_kernel():
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _sdpa_reasons(inputs) -> list[str]:
    reasons = []
    if _sdpa_kernel() is None:
        reasons.append("this torch has no aten._scaled_dot_product_flash_attention_for_cpu")
    if inputs.want_argmax:
        reasons.append("the flash kernel does not return the argmax")
    if inputs.values is not None and inputs.values.shape[1] != inputs.keys.shape[1]:
        reasons.append("the flash kernel needs values of the keys' width (dv == d)")
    return reasons


def run_sdpa(queries, keys, values, *, beta, logit_bias, want_argmax):
    k = keys[None, None]
    v = k if values is None else values[None, None]
    mask = None if logit_bias is None else logit_bias.to(torch.float32)[None, None, None, :]
    out, lse = _sdpa_kernel()(queries[None, None], k, v, 0.0, False, attn_mask=mask, scale=beta)
    return out[0, 0].float(), lse[0, 0].float(), None


_CPU = frozenset({"cpu"})
_FP32 = frozenset({torch.float32})

TRITON = Backend("triton", run_triton, needs_triton=True)
CPP = Backend("cpp", run_cpp, devices=_CPU, dtypes=_FP32, extra_reasons=_cpp_reasons)
SDPA = Backend("sdpa", run_sdpa, devices=_CPU, dtypes=_FP32, extra_reasons=_sdpa_reasons)
TORCH = Backend("torch", run_torch, supports_grad=True)
REFERENCE = Backend("reference", run_reference, supports_grad=True)

BACKENDS: tuple[Backend, ...] = (TRITON, CPP, SDPA, TORCH, REFERENCE)
