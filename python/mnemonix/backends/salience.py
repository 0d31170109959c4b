"""Backends of :func:`mnemonix.ops.salience_topk`.

Every backend answers the same question: the k best memories per query by the
float32 *selection score* ``p[b, m] = cos(q_b, c_m) * scale_m``, where
``scale_m = exp(log s_m - shift)`` (``shift`` = largest valid log-salience, so
``scale <= 1``), or 0 when ``log s_m - shift < NEGLIGIBLE_LOG`` (the factor
would underflow or lose precision in float32). Invalid slots never win. Ties go
to the lower index.

That float32 ranking is exact whenever a query's k-th selected score is above
``EXACT_THRESHOLD`` (then every selected memory has a well-represented score
and every memory that was rounded to a zero factor scores below it). The
queries where it is not (fewer than k memories with a clearly positive score)
are redone by :func:`exact_topk_rows` in float64 with the sign/log-magnitude
order of :func:`mnemonix.reference.salience_rank_order`.

Backends:

- ``torch``: streams over N in chunks (memory O(B x chunk)): normalise the key
  chunk on the fly, one matmul, ``topk(k + 1)`` per chunk (the extra entry
  detects a tie at the boundary, resolved with a stable sort of that row), and
  an exact merge of the running list with the chunk's list.
- ``cpp``: the whole recall, exact, in one C++ call (:mod:`mnemonix.backends.salience_cpp`): a
  float32 SIMD screen with a proven error bound, float64 scores for the keys that come close;
  CPU, float32 keys.
- ``gemm``: the same with the screen's dot products from torch's GEMM, chunk by chunk (large
  batches: BLAS outruns the portable build's SIMD).
- ``triton``: :mod:`mnemonix.kernels.salience` (one pass over the keys per
  query block and N-split, running top-k in registers), then the exact merge
  of the per-split lists here.
"""

from __future__ import annotations

import torch

from mnemonix import _triton
from mnemonix._dispatch import Backend
from mnemonix.backends.salience_cpp import cpp_reasons, recall_cpp, recall_gemm
from mnemonix.backends.salience_exact import (  # noqa: F401 - re-exported
    CANDIDATE_EXTRA,
    EXACT_THRESHOLD,
    NEGLIGIBLE_LOG,
    exact_cosine,
    exact_rank_key,
    exact_topk_rows,
    merge_topk,
    needs_redo,
    redo_rows,
    rerank,
    score_error_bound,
    shift_of,
)

NONFINITE_KEYS = "keys must be finite, got NaN or Inf values (or a squared norm that overflows float32)"


TRITON_MAX_K = 128
"""Largest list (k + CANDIDATE_EXTRA) the Triton kernel keeps in registers; beyond, the torch backend."""


def chunk_scale(log_s: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """``exp(log_s - shift)`` as float32, 0 where negligible (``log_s - shift < NEGLIGIBLE_LOG``)."""
    rel = (log_s - shift).clamp(max=0.0)  # > 0 only for invalid slots, which never win
    return torch.where(rel >= NEGLIGIBLE_LOG, torch.exp(rel), torch.zeros_like(rel)).float()


def unit_queries(queries: torch.Tensor) -> torch.Tensor:
    """Queries scaled to unit norm in float32 (zero rows stay zero: cos = 0)."""
    q = queries.float()
    norm = torch.linalg.vector_norm(q, dim=1, keepdim=True)
    return q * torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))


def _chunk_size(B: int, d: int, N: int, batch_invariant: bool = False) -> int:
    """Keys per chunk: [B, chunk] float32 scores of ~8 MiB, 4096 to 32768 keys (4096 when batch-invariant).

    Few, large chunks keep the number of parallel regions per call small (a
    loop of small ops suffers badly when the cores are shared); the memory
    stays O(B x chunk) whatever N is.
    """
    by_scores = 4096 if batch_invariant else (8 << 20) // (4 * max(B, 1))
    return int(max(1, min(N, max(4096, min(by_scores, 32768)))))


def _chunk_dots(q: torch.Tensor, keys_c: torch.Tensor, batch_invariant: bool) -> torch.Tensor:
    """[B, chunk] float32 dot products; batch-invariant: one matmul per query (same shape whatever B)."""
    if not batch_invariant:
        return q @ keys_c.T
    return torch.cat([q[b:b + 1] @ keys_c.T for b in range(q.shape[0])])


def torch_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    log_s: torch.Tensor,
    shift: torch.Tensor | float,
    valid: torch.Tensor | None,
    k: int,
    *,
    key_norms: torch.Tensor | None = None,
    chunk: int | None = None,
    batch_invariant: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunked float32 selection: ``(values [B, k] float32, indices [B, k] int64, keys_bad)``, best first.

    ``log_s`` [N] float64 and ``shift`` give the relative salience of each chunk.
    Per chunk: one matmul, the column factor ``scale / ||c||``, and a row max.
    Only rows whose max beats their running k-th best (``theta``) are merged
    (``topk(k + 1)`` then an exact merge); after the first chunks almost every
    row is skipped. A later equal score never displaces an earlier one (lower
    index wins), so the strict comparison is exact. A NaN/Inf valid key raises at once
    (``keys_bad``, a 0-dim bool tensor, is then always False): this CPU-first path reads
    a few flags per chunk on the host anyway (on CUDA, the Triton backend is the sync-free one).
    """
    B, d = queries.shape
    N = keys.shape[0]
    q = unit_queries(queries)
    chunk = chunk or _chunk_size(B, d, N, batch_invariant)
    best_val = torch.full((B, k), float("-inf"), dtype=torch.float32, device=q.device)
    best_idx = torch.full((B, k), -1, dtype=torch.int64, device=q.device)
    theta = torch.full((B,), float("-inf"), dtype=torch.float32, device=q.device)
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        keys_c = keys[start:stop].float()
        if key_norms is None:
            norm = torch.linalg.vector_norm(keys_c, dim=1)
        else:
            norm = key_norms[start:stop].float()
        factor = torch.where(norm > 0, chunk_scale(log_s[start:stop], shift) / norm, torch.zeros_like(norm))
        # a finite key whose squared norm overflows float32 has norm inf: NaN scores, raised below
        factor = torch.where(torch.isinf(norm), float("nan"), factor)
        p = _chunk_dots(q, keys_c, batch_invariant)
        p.mul_(factor)
        if valid is not None:
            valid_c = valid[start:stop]
            if not bool(valid_c.all()):
                p.masked_fill_(~valid_c, float("-inf"))
        row_max = p.amax(dim=1)
        # A NaN/Inf key, or one whose squared norm overflows float32, gives a NaN score (its norm
        # is NaN/Inf, its factor NaN); amax propagates NaN. Invalid slots were masked to -inf.
        if bool(torch.isnan(row_max).any() | torch.isposinf(row_max).any()):
            raise ValueError(NONFINITE_KEYS)
        active = (row_max > theta).nonzero().squeeze(1)
        if active.numel() == 0:
            continue
        everyone = active.numel() == B
        sub = p if everyone else p[active]
        width = stop - start
        take = min(k + 1, width)
        vals, idx = torch.topk(sub, take, dim=1)
        if take > k:
            boundary_tie = vals[:, k] == vals[:, k - 1]
            if bool(boundary_tie.any()):
                rows = boundary_tie.nonzero().squeeze(1)
                fixed = torch.sort(sub[rows], dim=1, descending=True, stable=True)
                vals[rows] = fixed.values[:, :take]
                idx[rows] = fixed.indices[:, :take]
            vals, idx = vals[:, :k], idx[:, :k]
        run_val = best_val if everyone else best_val[active]
        run_idx = best_idx if everyone else best_idx[active]
        merged_val, merged_idx = merge_topk(
            torch.cat([run_val, vals], dim=1), torch.cat([run_idx, idx + start], dim=1), k
        )
        if everyone:
            best_val, best_idx = merged_val, merged_idx
            theta = best_val[:, k - 1].clone()
        else:
            best_val[active] = merged_val
            best_idx[active] = merged_idx
            theta[active] = merged_val[:, k - 1]
    return best_val, best_idx, torch.zeros((), dtype=torch.bool, device=q.device)


def triton_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    log_s: torch.Tensor,
    shift: torch.Tensor | float,
    valid: torch.Tensor | None,
    k: int,
    *,
    key_norms: torch.Tensor | None = None,
    num_splits: int | None = None,
    batch_invariant: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton selection: per-split lists from the kernel, merged exactly here. No host sync.

    Returns ``(values [B, k], indices [B, k], keys_bad)``; ``keys_bad`` is a 0-dim bool tensor,
    True when a valid key's squared norm is NaN/Inf (the caller raises). ``key_norms`` is
    accepted and not used: the kernel sums the squares of the key tile it has loaded anyway,
    which costs no memory traffic.
    """
    kernels = _triton.load_kernels("salience")
    shift = torch.as_tensor(shift, dtype=torch.float64, device=keys.device)
    part_val, part_idx, nonfinite = kernels.salience_topk_partial(
        unit_queries(queries), keys, log_s, shift, valid, k, negligible_log=NEGLIGIBLE_LOG, num_splits=num_splits,
        batch_invariant=batch_invariant,
    )
    S, B, _ = part_val.shape
    values = part_val.permute(1, 0, 2).reshape(B, S * k)
    indices = part_idx.permute(1, 0, 2).reshape(B, S * k).to(torch.int64)
    values, indices = merge_topk(values, indices, k)
    return values, indices, nonfinite.any()


def _triton_reasons(inputs) -> list[str]:
    reasons = []
    if inputs.k + CANDIDATE_EXTRA > TRITON_MAX_K:
        reasons.append(f"k = {inputs.k} > {TRITON_MAX_K - CANDIDATE_EXTRA} (running top-k lives in registers)")
    if inputs.keys.shape[0] >= 2**31:
        reasons.append("N >= 2**31 (int32 indices in the kernel)")
    return reasons


TORCH = Backend("torch", torch_topk)
TRITON = Backend("triton", triton_topk, needs_triton=True, extra_reasons=_triton_reasons)
CPP = Backend("cpp", recall_cpp, devices=frozenset({"cpu"}), dtypes=frozenset({torch.float32}),
              extra_reasons=cpp_reasons)
GEMM = Backend("gemm", recall_gemm, devices=frozenset({"cpu"}), dtypes=frozenset({torch.float32}),
               extra_reasons=cpp_reasons)
"""``cpp`` and ``gemm`` are the whole recall (:mod:`mnemonix.backends.salience_cpp`), not a
selection: the op branches on them. Both are exact, so they return the same bits."""
WHOLE_RECALL = frozenset({"cpp", "gemm"})
BACKENDS: tuple[Backend, ...] = (TRITON, CPP, GEMM, TORCH)
