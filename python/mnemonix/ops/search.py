"""``search_topk``: exact top-k by inner product or cosine over stored rows, memory-bounded.

Declared like every op (:mod:`mnemonix._dispatch`): checks -> a typed inputs record ->
``dispatch(SPEC, inputs, forced)`` -> a float32 candidate scan of
:mod:`mnemonix.backends.search` (Triton on CUDA; the fused C++ scan on CPU, the chunked
GEMM scan past ``CPP_MAX_BATCH`` queries or when the extension is not built), made exact by
:func:`mnemonix.backends.search_exact.exact_select`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnemonix import _checks, _dispatch
from mnemonix.backends import search as sb
from mnemonix.backends.search_exact import CANDIDATE_EXTRA, exact_select

__all__ = ["search_topk", "SearchInputs", "SPEC", "METRICS", "CPP_MAX_BATCH"]

METRICS = ("ip", "cos")
_KEY_DTYPES = (*_checks.FLOAT_DTYPES, torch.int8)


@dataclass(frozen=True)
class SearchInputs(_dispatch.SelectionOverKeys):
    """Checked inputs of one search (queries already float32)."""

    queries: torch.Tensor
    keys: torch.Tensor
    scales: torch.Tensor | None
    mask: torch.Tensor | None
    tie_ids: torch.Tensor | None
    metric: str
    k: int
    n_cand: int


# Largest batch for which the CPU prefers the fused C++ scan over the chunked GEMM scan.
# Measured by `python bench/compare_store.py --sweep` (bench/results/compare_store-sweep-cpu.json,
# bench/NOTES.md "MemoryStore"): on the development machine (AMD EPYC, AVX2 kernels, MKL
# sgemm) the C++ scan was faster at every batch measured, 1 to 16384 (at B = 1 it reads the
# rows once where the GEMV reaches ~1/3 of memory bandwidth; at large B its 6 x 16 register
# blocks run near the FMA peak and it has no [B, chunk] scores to sort). Past the largest
# measured batch the GEMM path is kept: a BLAS with wider vectors may win there.
CPP_MAX_BATCH = 16384


def speed_policy(inputs: SearchInputs, backends) -> list[str]:
    """Triton first on CUDA; on CPU the fused C++ scan up to CPP_MAX_BATCH queries, then GEMM."""
    if inputs.device.type == "cuda":
        return ["triton", "torch"]
    return ["cpp", "torch"] if inputs.queries.shape[0] <= CPP_MAX_BATCH else ["torch", "cpp"]


SPEC = _dispatch.OpSpec("search_topk", sb.BACKENDS, speed_policy)


def search_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    scales: torch.Tensor | None = None,
    metric: str = "ip",
    mask: torch.Tensor | None = None,
    tie_ids: torch.Tensor | None = None,
    max_norm: float | None = None,
    exact_scores: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k rows by inner product or cosine, one streaming pass over the stored rows.

    The score of query ``q`` with stored row ``k_n`` is ``q . k_n`` (``metric="ip"``) or
    ``q . k_n / (||q|| ||k_n||)`` (``"cos"``; 0 when a norm is 0), exact with respect to
    what is stored: the float32 query against the row as stored (int8 rows as
    ``float32(row * scale)``), in float64. A float32 scan keeps ``k + 8`` candidates per
    query, they are re-ranked in float64, and the rare queries whose list could miss a
    near-tie are rescanned. Memory O(B x chunk + B x k) whatever N is.

    Parameters
    ----------
    queries : Tensor [B, d], float32 / float16 / bfloat16, finite
    keys : Tensor [N, d], float32 / float16 / bfloat16 / int8, same device, finite
    k : int >= 1
        Any size: past the number of rows the mask keeps, results are padded.
    scales : Tensor [N] float32, required with int8 keys (forbidden otherwise)
        Per-row scale: the stored row is ``keys[n] * scales[n]``.
    metric : {"ip", "cos"}
    mask : Tensor [N] bool, optional
        False rows never enter the top-k (applied inside the scan).
    tie_ids : Tensor [N] int64, optional
        Equal scores go to the lower ``tie_ids`` entry (then the lower row); default: the
        lower row.
    max_norm : float, optional
        An upper bound of the stored rows' norms (ip); computed during the scan when None.
    exact_scores : bool
        Return the float64 exact scores instead of their float32 rounding.
    backend : {"triton", "cpp", "torch"} or None
        Force an implementation (``"triton"`` on CPU needs ``TRITON_INTERPRET=1``; ``"cpp"``
        runs on CPU tensors).

    Returns
    -------
    scores : Tensor [B, k] float32 (float64 with ``exact_scores``), best first; ``-inf`` padding
    rows : Tensor [B, k] int64, row indices into ``keys``; -1 padding
    """
    _check(queries, keys, scales, mask, tie_ids)
    k = _checks.positive_int("k", k)
    _checks.choice("metric", metric, list(METRICS))
    if max_norm is not None:
        max_norm = _checks.nonneg_float("max_norm", max_norm)
    _checks.flag("exact_scores", exact_scores)
    _checks.finite("queries", queries)
    if scales is not None:
        _checks.finite("scales", scales)
    N = keys.shape[0]
    n_live = N if mask is None else int(mask.sum())
    q32 = queries.float()
    inputs = SearchInputs(q32, keys, scales, mask, tie_ids, metric, k, min(min(k, n_live) + CANDIDATE_EXTRA, n_live))
    chosen = _dispatch.dispatch(SPEC, inputs, backend)
    # the torch scan's fp16 GEMV path scores more coarsely: it keeps more candidates
    extra = CANDIDATE_EXTRA + (sb.extra_candidates(keys, queries.shape[0], max_norm) if chosen is sb.TORCH else 0)

    def run_scan(n: int):
        return chosen.run(q32, keys, scales, metric, mask, n, max_norm=max_norm)

    scores, rows = exact_select(run_scan, q32, keys, scales, mask, tie_ids, k, n_live, metric, extra)
    return (scores if exact_scores else scores.float()), rows


def _check(queries, keys, scales, mask, tie_ids) -> None:
    _checks.tensor("queries", queries, ndim=2)
    _checks.tensor("keys", keys, ndim=2, dtypes=_KEY_DTYPES)
    N, d = keys.shape
    if d == 0:
        raise ValueError(f"keys must have d >= 1 features, got keys of shape {tuple(keys.shape)}")
    if queries.shape[1] != d:
        raise ValueError(f"queries must have shape [B, {d}] to match keys [N, {d}], got {tuple(queries.shape)}")
    if keys.dtype == torch.int8:
        if scales is None:
            raise ValueError("scales must be given with int8 keys (the stored row is keys[n] * scales[n])")
        _checks.tensor("scales", scales, ndim=1, dtypes=(torch.float32,))
        if scales.shape[0] != N:
            raise ValueError(f"scales must have shape [{N}], got {tuple(scales.shape)}")
    elif scales is not None:
        raise ValueError(f"scales must be None with {keys.dtype} keys (only int8 keys are scaled)")
    if mask is not None:
        _checks.tensor("mask", mask, ndim=1, dtypes=(torch.bool,))
        if mask.shape[0] != N:
            raise ValueError(f"mask must have shape [{N}], got {tuple(mask.shape)}")
    if tie_ids is not None:
        _checks.tensor("tie_ids", tie_ids, ndim=1, dtypes=(torch.int64,))
        if tie_ids.shape[0] != N:
            raise ValueError(f"tie_ids must have shape [{N}], got {tuple(tie_ids.shape)}")
    _checks.same_device({"queries": queries, "keys": keys, "scales": scales, "mask": mask, "tie_ids": tie_ids})
