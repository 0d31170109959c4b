"""Backends of :func:`mnemonix.ops.hopfield_retrieve` (one pass; ``ops`` drives iterations).

Every backend has the signature
``run(queries[B, d], keys[N, d], values[N, dv] | None, *, beta, logit_bias[N] | None,
want_argmax) -> (out[B, dv] float32, lse[B] float32, argmax[B] int64 | None)`` where
``values=None`` means the values are the keys and ``logit_bias`` already folds in the mask
(``-inf`` for masked patterns).

- ``torch``: streams over N in chunks with an online softmax (running max ``m_i``, running
  sum ``l_i``, accumulator ``acc``), so extra memory is O(B x chunk), never O(B x N).
  Without autograd it reuses one logits buffer and updates in place (``addmm``, ``exp_``).
  When an input requires grad it computes the plain differentiable formula of the reference
  (backward needs O(B x N) memory whichever way the forward runs). BLAS matmuls make it the CPU choice for larger B.
- ``triton``: the fused kernel of :mod:`mnemonix.kernels.hopfield` (split-N, exact merge,
  d-tiling). Chosen automatically on CUDA tensors; on CPU tensors only when forced, under
  ``TRITON_INTERPRET=1``. Forward only.
- ``cpp``: the fused OpenMP/SIMD kernel ``mnemonix._core.retrieval`` (CPU, float32): one read
  of each key row serves both products; N split over threads with an exact merge. Chosen
  automatically for ``B <= cpp_max_batch(keys)`` (8, or 16 for key matrices of 32 MB and more;
  above it the GEMM-based backends win).
  Forward only.
- ``sdpa``: PyTorch's own fused CPU flash-attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``, the kernel behind
  ``F.scaled_dot_product_attention`` on CPU), which also returns the log-sum-exp. At larger B
  the work is compute-bound and that kernel runs at the GEMM floor, so mnemonix uses it rather
  than a second copy of the same blocking; O(B x block) memory, a broadcast [N] bias. CPU,
  float32, dv == d, no argmax (it does not track one): otherwise ``torch``. Forward only.
- ``reference``: :func:`mnemonix.reference.hopfield_retrieve` (materialises [B, N]).

Gradients always come from ``torch`` (:func:`mnemonix.ops.hopfield_retrieve` forces it when an
input requires grad).
"""

from __future__ import annotations

import torch

from mnemonix import _triton, reference
from mnemonix._dispatch import Backend

# Extra memory target of the streaming CPU path: about this many float32 logits at a time.
_CHUNK_ELEMENTS = 1 << 20


def chunk_size(batch: int, n: int) -> int:
    """Patterns per chunk: ~1M logits in flight, at least 256, at most N."""
    return max(1, min(n, max(256, _CHUNK_ELEMENTS // max(batch, 1))))


def run_triton(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None,
    *,
    beta: float,
    logit_bias: torch.Tensor | None,
    want_argmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    kernels = _triton.load_kernels("hopfield")
    return kernels.hopfield_retrieve(queries, keys, values, beta=beta, logit_bias=logit_bias,
                                     want_argmax=want_argmax)


# Largest batch the fused C++ kernel takes in automatic selection. Measured on the 2-core
# development machine (bench/NOTES.md): with two threads the single-read kernel leads up to
# B = 8 at every shape; up to B = 16 it still leads once the keys are far larger than the
# caches (>= 32 MB: N = 1e6, d = 128, B = 16: 110 vs 150-230 ms for the flash kernel), while
# on cache-sized stores the GEMM-based kernels win from B = 16 (N = 1e5, d = 64: 14 vs 11 ms).
CPP_MAX_BATCH = 8
CPP_MAX_BATCH_LARGE_STORE = 16
CPP_LARGE_STORE_BYTES = 32 << 20


def cpp_max_batch(keys: torch.Tensor) -> int:
    """Largest B sent to the C++ kernel automatically for this key matrix."""
    large = keys.numel() * keys.element_size() >= CPP_LARGE_STORE_BYTES
    return CPP_MAX_BATCH_LARGE_STORE if large else CPP_MAX_BATCH


def _core_retrieval():
    try:
        from mnemonix._core import retrieval
    except ImportError:
        return None
    return retrieval


def _cpp_reasons(inputs) -> list[str]:
    reasons = []
    if _core_retrieval() is None:
        reasons.append("mnemonix._core.retrieval is not built")
    q = inputs["queries"]
    limit = cpp_max_batch(inputs["keys"])
    if q.shape[0] > limit and not inputs.get("forced_backend"):
        reasons.append(f"B = {q.shape[0]} > {limit}: the GEMM-based backends are faster")
    return reasons


def run_cpp(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None,
    *,
    beta: float,
    logit_bias: torch.Tensor | None,
    want_argmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    core = _core_retrieval()
    q = queries.detach().contiguous().numpy()
    k = keys.detach().contiguous().numpy()
    v = None if values is None else values.detach().contiguous().numpy()
    bias = None if logit_bias is None else logit_bias.detach().float().contiguous().numpy()
    out, lse, arg = core.retrieve(q, k, v, beta=float(beta), bias=bias)
    return torch.from_numpy(out), torch.from_numpy(lse), (torch.from_numpy(arg) if want_argmax else None)


def run_torch(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None,
    *,
    beta: float,
    logit_bias: torch.Tensor | None,
    want_argmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    needs_graph = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (queries, keys, values, logit_bias))
    if needs_graph:
        # Autograd keeps every chunk's probabilities anyway (O(B x N) for backward), so
        # streaming buys nothing here: the plain formula of the reference is the graph.
        return run_reference(queries, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=want_argmax)
    return _run_torch_no_grad(queries, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=want_argmax)


@torch.no_grad()
def _run_torch_no_grad(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None,
    *,
    beta: float,
    logit_bias: torch.Tensor | None,
    want_argmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The same streaming loop without autograd: one logits buffer reused for every chunk,
    ``addmm`` for logits + bias and for ``acc * alpha + P V``, in-place ``exp``."""
    q = queries.float() * beta
    b, n = q.shape[0], keys.shape[0]
    d = keys.shape[1]
    dv = d if values is None else values.shape[1]
    converts = keys.dtype != torch.float32
    step = chunk_size(b, n)
    if converts:  # a converted fp32 tile costs step * d floats: bound it too
        step = max(1, min(step, max(256, (4 * _CHUNK_ELEMENTS) // max(d, dv))))
    m_i = torch.full((b,), float("-inf"), device=q.device)
    l_i = torch.zeros(b, device=q.device)
    acc = torch.zeros(b, dv, device=q.device)
    best = torch.zeros(b, dtype=torch.long, device=q.device) if want_argmax else None
    buffer = torch.empty(b * step, device=q.device)
    for start in range(0, n, step):
        k_tile = keys[start : start + step].float()
        v_tile = k_tile if values is None else values[start : start + step].float()
        width = k_tile.shape[0]
        s = buffer[: b * width].view(b, width)
        if logit_bias is None:
            torch.mm(q, k_tile.T, out=s)
        else:
            torch.addmm(logit_bias[start : start + step][None, :], q, k_tile.T, out=s)
        if best is not None:
            tile_max, tile_arg = s.max(dim=1)
            best = torch.where(tile_max > m_i, tile_arg + start, best)
        else:
            tile_max = s.amax(dim=1)
        m_new = torch.maximum(m_i, tile_max)
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        alpha = torch.exp(m_i - m_safe)
        p = s.sub_(m_safe[:, None]).exp_()
        l_i.mul_(alpha).add_(p.sum(dim=1))
        acc.mul_(alpha[:, None]).addmm_(p, v_tile)
        m_i = m_new
    out = acc.div_(l_i[:, None])
    lse = m_i + torch.log(l_i)
    return out, lse, best


def run_reference(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None,
    *,
    beta: float,
    logit_bias: torch.Tensor | None,
    want_argmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
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
    if inputs.get("want_argmax"):
        reasons.append("the flash kernel does not return the argmax")
    values = inputs.get("values")
    if values is not None and values.shape[1] != inputs["keys"].shape[1]:
        reasons.append("the flash kernel needs values of the keys' width (dv == d)")
    return reasons


def run_sdpa(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None,
    *,
    beta: float,
    logit_bias: torch.Tensor | None,
    want_argmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if want_argmax:
        raise ValueError("backend 'sdpa' does not return the argmax: use backend='cpp' or 'torch'")
    k = keys[None, None]
    v = k if values is None else values[None, None]
    mask = None if logit_bias is None else logit_bias.to(torch.float32)[None, None, None, :]
    out, lse = _sdpa_kernel()(queries[None, None], k, v, 0.0, False, attn_mask=mask, scale=beta)
    return out[0, 0].float(), lse[0, 0].float(), None


TRITON = Backend(name="triton", run=run_triton, needs_triton=True)
CPP = Backend(name="cpp", run=run_cpp, devices=frozenset({"cpu"}), dtypes=frozenset({torch.float32}),
              extra_reasons=_cpp_reasons)
SDPA = Backend(name="sdpa", run=run_sdpa, devices=frozenset({"cpu"}), dtypes=frozenset({torch.float32}),
               extra_reasons=_sdpa_reasons)
TORCH = Backend(name="torch", run=run_torch)
REFERENCE = Backend(name="reference", run=run_reference)

# Priority order for automatic selection. ``triton`` takes part in automatic selection on
# CUDA tensors only (see :func:`auto_candidates`); on CPU it runs only when forced.
BACKENDS: list[Backend] = [TRITON, CPP, SDPA, TORCH, REFERENCE]


def auto_candidates(device: torch.device) -> list[Backend]:
    """Backends tried in order when ``backend=None``: no interpreted Triton on CPU tensors."""
    if device.type == "cuda":
        return BACKENDS
    return [b for b in BACKENDS if not b.needs_triton]
