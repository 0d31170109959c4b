"""Backends of :func:`mnemonix.ops.search_topk`: float32 candidate scans.

Every backend answers the same question: the ``n_cand`` rows with the largest float32
score per query (ties in any order), best first, with a per-query bound on one score's
float32 error. :func:`mnemonix.backends.search_exact.exact_select` turns that into the
exact top-k (float64 re-rank of the candidates, ties to the lower id, a rescan of the rare
queries whose list may miss a near-tie).

- ``torch``: streams over N in chunks (memory O(B x chunk)): one matmul per chunk
  (int8 rows upcast exactly, their scale applied to the scores), the mask applied as
  ``-inf`` inside the chunk, a row max, and ``topk`` + merge only for the queries whose
  chunk max beats their running ``n_cand``-th best (after the first chunks almost none).
  Any device.
- ``cpp``: the fused C++ scan ``mnemonix._core.search`` (CPU; csrc/search/search.hpp): one
  streaming pass over the rows in their stored width (float16 / bfloat16 / int8 converted
  tile by tile with F16C / AVX2 when the CPU has them), the mask and the running top-k
  inside the scan, N split over OpenMP threads (``torch.get_num_threads()``) and merged.
- ``triton``: :mod:`mnemonix.kernels.search` (one pass over the keys per query block and
  N-split, running top-k in registers, int8 dequantised in the kernel), then a merge of
  the per-split lists here. CUDA, or CPU tensors under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch

from mnemonix import _triton
from mnemonix._dispatch import ALL_FLOAT, Backend
from mnemonix.backends import core_engine
from mnemonix.backends.search_exact import float32_scores, prepare_queries, scan_error

NONFINITE_KEYS = ("keys must be finite and their scores must not overflow float32, "
                  "got a NaN or Inf score from the stored rows")

TRITON_MAX_CAND = 128
"""Largest candidate list (k + CANDIDATE_EXTRA) the Triton kernel keeps in registers."""

# Chunk of the torch scan: about this many bytes of stored rows per matmul. Large enough
# that the per-chunk overhead (a handful of small ops) stays far below the time to stream
# the chunk (bench/compare_store.py, 2-core development machine); float32 chunks are
# read once by the matmul, narrower types are upcast first, so they get fewer rows.
CHUNK_BYTES = 8 << 20
CHUNK_BYTES_UPCAST = 1 << 20


def chunk_rows(B: int, d: int, N: int, element_size: int) -> int:
    """Rows per chunk of the torch scan: ~CHUNK_BYTES of keys and <= 4M float32 scores."""
    budget = CHUNK_BYTES if element_size == 4 else CHUNK_BYTES_UPCAST
    rows = budget // max(1, d * 4)
    rows = min(rows, (4 << 20) // max(B, 1))
    return int(max(1, min(N, max(256, rows))))


# CPU float16 keys at small B: torch's own fp16 GEMV (float32 accumulation, half output) reads
# the rows as stored at about twice the speed of the float32 MKL path on the development
# machine (bench/compare_store.py); its coarser scores are made exact like any other, with
# more candidates so that rescans stay rare.
HALF_GEMV_MAX_B = 4
HALF_GEMV_EXTRA = 56
HALF_GEMV_CHUNK_ROWS = 1 << 16


def uses_half_gemv(keys: torch.Tensor, B: int, max_norm: float | None) -> bool:
    """Whether :func:`torch_scan` scores these keys with the fp16 GEMV (needs a norm bound)."""
    return keys.dtype == torch.float16 and keys.device.type == "cpu" and B <= HALF_GEMV_MAX_B \
        and max_norm is not None and max_norm > 0


def extra_candidates(keys: torch.Tensor, B: int, max_norm: float | None) -> int:
    """Candidates a scan keeps beyond k + CANDIDATE_EXTRA (more where its scores are coarser)."""
    return HALF_GEMV_EXTRA if uses_half_gemv(keys, B, max_norm) else 0


def half_gemv_error(d: int, metric: str) -> float:
    """Bound on one fp16-GEMV score's error relative to ``||q|| max_norm`` (ip) or absolute (cos).

    The query rounded to half (2^-11), the half output (2^-11 of a score <= 1 in scaled
    units), float32 accumulation and rescaling ((d + 8) u; cosine adds the norm, 2 d u).
    """
    return 1.05 * (2.0**-10 + (d + 8 + (2 * d if metric == "cos" else 0)) * 2.0**-24)


def half_gemv_scores(keys, qs, metric, max_norm, start, stop) -> torch.Tensor:
    """float32 scores [B, w] of rows ``start:stop`` by one fp16 GEMV per query (overflow-safe scaling)."""
    kc = keys[start:stop]
    qn = torch.linalg.vector_norm(qs, dim=1)
    scale = torch.where(qn > 0, 1.0 / (qn * max_norm), torch.zeros_like(qn))  # scaled scores in [-1, 1]
    qh = (qs * scale[:, None]).half()
    p = torch.stack([torch.mv(kc, qh[b]).float() for b in range(qs.shape[0])])
    p.mul_(torch.where(qn > 0, qn * max_norm, torch.zeros_like(qn))[:, None])
    if metric == "cos":
        norm = torch.linalg.vector_norm(kc, dim=1, dtype=torch.float32)
        p.mul_(torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm)))
    return p


def row_norm_bound(keys: torch.Tensor, scales: torch.Tensor | None, start: int, stop: int) -> float:
    """Largest float32 norm of the dequantised rows ``start:stop``, rounded up by 1%."""
    norm = torch.linalg.vector_norm(keys[start:stop].float(), dim=1)
    if scales is not None:
        norm = norm * scales[start:stop].float().abs()
    return 1.01 * float(norm.max()) if norm.numel() else 0.0


def _check_finite(p: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Raise when a kept row scores NaN or +-Inf: one sum first, the exact test only when it is not finite."""
    if torch.isfinite(p.sum()):
        return
    bad = ~torch.isfinite(p)
    if mask is not None:
        bad &= mask
    if bool(bad.any()):
        raise ValueError(NONFINITE_KEYS)


def torch_scan(
    q32: torch.Tensor,
    keys: torch.Tensor,
    scales: torch.Tensor | None,
    metric: str,
    mask: torch.Tensor | None,
    n_cand: int,
    *,
    max_norm: float | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Chunked float32 candidates: ``(values [B, n_cand] f32, rows [B, n_cand] int64, err [B], max_norm)``.

    ``max_norm`` bounds the dequantised rows' norms (ip error bound); computed during the
    scan when None.
    """
    B, d = q32.shape
    N = keys.shape[0]
    qs = prepare_queries(q32, metric)
    half = uses_half_gemv(keys, B, max_norm)
    chunk = chunk or (HALF_GEMV_CHUNK_ROWS if half else chunk_rows(B, d, N, keys.element_size()))
    best_val = torch.full((B, n_cand), float("-inf"), dtype=torch.float32, device=q32.device)
    best_idx = torch.full((B, n_cand), -1, dtype=torch.int64, device=q32.device)
    theta = torch.full((B,), float("-inf"), dtype=torch.float32, device=q32.device)
    seen_norm = 0.0
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        if half:
            p = half_gemv_scores(keys, qs, metric, max_norm, start, stop)
        else:
            p = float32_scores(qs, keys, scales, metric, start, stop)
        if max_norm is None and metric == "ip":
            seen_norm = max(seen_norm, row_norm_bound(keys, scales, start, stop))
        _check_finite(p, None if mask is None else mask[start:stop])
        if mask is not None:
            p.masked_fill_(~mask[start:stop], float("-inf"))
        row_max = p.amax(dim=1)
        active = (row_max > theta).nonzero().flatten()
        if active.numel() == 0:
            continue
        everyone = active.numel() == B
        sub = p if everyone else p[active]
        vals, idx = torch.topk(sub, min(n_cand, stop - start), dim=1)
        run_val = best_val if everyone else best_val[active]
        run_idx = best_idx if everyone else best_idx[active]
        merged_val, pos = torch.topk(torch.cat([run_val, vals], dim=1), n_cand, dim=1)
        merged_idx = torch.gather(torch.cat([run_idx, idx + start], dim=1), 1, pos)
        if everyone:
            best_val, best_idx = merged_val, merged_idx
        else:
            best_val[active], best_idx[active] = merged_val, merged_idx
        theta = best_val[:, n_cand - 1].clone()
    bound = seen_norm if max_norm is None else float(max_norm)
    if half:
        rel = half_gemv_error(d, metric)
        err = torch.full((B,), rel, dtype=torch.float64, device=q32.device) if metric == "cos" else \
            rel * torch.linalg.vector_norm(q32.double(), dim=1) * bound
        return best_val, best_idx, err, bound
    return best_val, best_idx, scan_error(q32, metric, bound), bound


def triton_scan(q32, keys, scales, metric, mask, n_cand, *, max_norm=None, num_splits=None):
    """Triton candidates: per-split lists from the kernel, merged here (same contract as :func:`torch_scan`)."""
    kernels = _triton.load_kernels("search")
    part_val, part_idx, norm_max, n_bad = kernels.search_topk_partial(
        prepare_queries(q32, metric), keys, scales, mask, n_cand, cosine=metric == "cos", num_splits=num_splits)
    if n_bad:
        raise ValueError(NONFINITE_KEYS)
    B = q32.shape[0]
    values = part_val.permute(1, 0, 2).reshape(B, -1)
    indices = part_idx.permute(1, 0, 2).reshape(B, -1).to(torch.int64)
    best_val, pos = torch.topk(values, n_cand, dim=1)
    bound = 1.01 * norm_max if max_norm is None else float(max_norm)
    err = scan_error(q32, metric, bound)
    if keys.dtype != torch.float32 and keys.is_cuda:
        # 16-bit (and int8-as-float16) rows meet the split 16-bit query on tensor cores: an
        # extra error below 2^-16 of ||q|| ||k|| (kernels/search.py).
        qn = 1.0 if metric == "cos" else torch.linalg.vector_norm(q32.double(), dim=1) * bound
        err = err + 2.0**-16 * qn
    return best_val, torch.gather(indices, 1, pos), err, bound


def _core_search():
    return core_engine("search")


_CORE_KEY_TYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                   torch.int8: "int8"}


def _stored_rows(keys: torch.Tensor):
    """(numpy view of the rows as stored, key_type): no cast, bfloat16 as its int16 bits."""
    rows = keys.detach().contiguous()
    if rows.dtype == torch.bfloat16:
        rows = rows.view(torch.int16)
    return rows.numpy(), _CORE_KEY_TYPES[keys.dtype]


def cpp_scan(q32, keys, scales, metric, mask, n_cand, *, max_norm=None, portable=False):
    """C++ candidates (same contract as :func:`torch_scan`); ``portable`` forces the non-AVX2 kernel."""
    rows, key_type = _stored_rows(keys)
    want_norm = max_norm is None and metric == "ip"
    values, index, norm, n_bad = _core_search().scan(
        prepare_queries(q32, metric).contiguous().numpy(), rows, key_type=key_type,
        scales=None if scales is None else scales.detach().contiguous().numpy(),
        mask=None if mask is None else mask.contiguous().numpy(), n_cand=n_cand, cosine=metric == "cos",
        want_norm=want_norm, num_threads=torch.get_num_threads(), portable=portable)
    if n_bad:
        raise ValueError(NONFINITE_KEYS)
    bound = 1.01 * norm if want_norm else (0.0 if max_norm is None else float(max_norm))
    return torch.from_numpy(values), torch.from_numpy(index), scan_error(q32, metric, bound), bound


def _cpp_reasons(inputs) -> list[str]:
    return [] if _core_search() is not None else ["mnemonix._core.search is not built"]


def _triton_reasons(inputs) -> list[str]:
    reasons = []
    if inputs.n_cand > TRITON_MAX_CAND:
        reasons.append(f"k + candidates = {inputs.n_cand} > {TRITON_MAX_CAND} (running top-k lives in registers)")
    if inputs.keys.shape[0] >= 2**31:
        reasons.append("N >= 2**31 (int32 row indices in the kernel)")
    return reasons


STORAGE_DTYPES = ALL_FLOAT | {torch.int8}

TORCH = Backend("torch", torch_scan, dtypes=STORAGE_DTYPES)
CPP = Backend("cpp", cpp_scan, devices=frozenset({"cpu"}), dtypes=STORAGE_DTYPES, extra_reasons=_cpp_reasons)
TRITON = Backend("triton", triton_scan, dtypes=STORAGE_DTYPES, needs_triton=True, extra_reasons=_triton_reasons)
BACKENDS: tuple[Backend, ...] = (TRITON, CPP, TORCH)
