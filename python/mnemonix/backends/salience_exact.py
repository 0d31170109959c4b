"""Exact float64 selection for :func:`mnemonix.ops.salience_topk`.

The backends rank by float32 scores and return ``k + CANDIDATE_EXTRA`` candidates per query;
:func:`exact_select` re-ranks them exactly in float64 (exact order, exact ties to the lower
index) and redoes over all N, in float64, the few queries whose candidate list may miss a
memory within the float32 error of the k-th score (or whose k-th score is not clearly
positive: underflowed saliences). The order is the sign/log-magnitude order of the real
number ``cos * exp(log_s)`` (:func:`exact_rank_key`), which never underflows.
"""

from __future__ import annotations

import math

import torch

NEGLIGIBLE_LOG = -80.0
"""Relative log-salience below which the float32 factor is taken as 0 (exp(-80) ~ 1.8e-35)."""

EXACT_THRESHOLD = math.exp(-79.0)
"""A k-th float32 score above this proves the float32 selection equals the exact one."""

CANDIDATE_EXTRA = 8
"""Candidates kept beyond k: they are re-ranked exactly in float64 (exact ties, exact order)."""


def shift_of(log_s: torch.Tensor, valid: torch.Tensor | None) -> float:
    """The largest log-salience among valid memories (relative saliences are then <= 1)."""
    if valid is None:
        return float(log_s.max())
    return float(log_s.masked_fill(~valid, float("-inf")).max())


def merge_topk(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of candidate lists ``[B, M]`` by value, ties to the lower index (exact).

    Sorts by index, then stable-sorts by value descending: equal values keep
    ascending index order.
    """
    by_index = torch.sort(indices, dim=1, stable=True)
    values = torch.gather(values, 1, by_index.indices)
    indices = by_index.values
    by_value = torch.sort(values, dim=1, descending=True, stable=True)
    top = by_value.indices[:, :k]
    return by_value.values[:, :k], torch.gather(indices, 1, top)


def exact_cosine(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """cos in float64 of queries [R, d] with keys [M, d] (-> [R, M]) or per-query keys [R, M, d].

    Equal keys get bit-equal cosines (exact ties): per-query keys are reduced
    with one elementwise product and a sum over the last axis (the same
    reduction for every row); shared keys [M, d] are summed over d in a fixed
    loop (a BLAS matmul may round equal rows differently by position). 0
    where a norm is 0.
    """
    q = queries.double()
    c = keys.double()
    if c.ndim == 3:
        dot = (q[:, None, :] * c).sum(-1)
        denom = torch.linalg.vector_norm(q, dim=1)[:, None] * torch.sqrt((c * c).sum(-1))
    else:
        dot = torch.zeros(q.shape[0], c.shape[0], dtype=torch.float64, device=q.device)
        c_sq = torch.zeros(c.shape[0], dtype=torch.float64, device=q.device)
        for j in range(q.shape[1]):
            dot += q[:, j, None] * c[None, :, j]
            c_sq += c[:, j] * c[:, j]
        denom = torch.linalg.vector_norm(q, dim=1)[:, None] * torch.sqrt(c_sq)[None, :]
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, dot / safe, torch.zeros_like(dot)).clamp(-1.0, 1.0)


def exact_rank_key(cos: torch.Tensor, log_s_rel: torch.Tensor) -> torch.Tensor:
    """A float64 key increasing with the real number ``cos * exp(log_s_rel)`` (``log_s_rel <= 0``).

    ``sign(cos) / (1 - log|cos| - log_s_rel)``: never underflows; 0 for cos = 0.
    """
    t = torch.log(cos.abs()) + log_s_rel
    key = torch.sign(cos) / (1.0 - t)
    return torch.where(cos == 0, torch.zeros_like(key), key)


def score_error_bound(d: int) -> float:
    """Bound on |float32 selection score - exact value| (scores are <= 1 in magnitude).

    Dot product and norm rounding ((1.5 d + 8) u), the split 16-bit query of the
    GPU kernel (2^-17), and the negligible factors set to 0 (exp(-80)); doubled
    so that two scores' errors are covered.
    """
    return 2.0 * ((1.5 * d + 8) * 2.0**-24 + 2.0**-17 + math.exp(NEGLIGIBLE_LOG))


def exact_topk_rows(
    queries: torch.Tensor,
    keys: torch.Tensor,
    log_s: torch.Tensor,
    valid: torch.Tensor | None,
    k: int,
    *,
    chunk: int = 8192,
) -> torch.Tensor:
    """Exact top-k indices [R, k] of a few queries in float64, chunked over N (ties: lower index)."""
    R = queries.shape[0]
    N = keys.shape[0]
    shift = shift_of(log_s, valid)
    best_val = torch.empty(R, 0, dtype=torch.float64, device=queries.device)
    best_idx = torch.empty(R, 0, dtype=torch.int64, device=queries.device)
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        cos = exact_cosine(queries, keys[start:stop])
        key = exact_rank_key(cos, log_s[start:stop] - shift)
        if valid is not None:
            key = key.masked_fill(~valid[start:stop], float("-inf"))
        order = torch.sort(key, dim=1, descending=True, stable=True)
        take = min(k, stop - start)
        best_val, best_idx = merge_topk(
            torch.cat([best_val, order.values[:, :take]], dim=1),
            torch.cat([best_idx, order.indices[:, :take] + start], dim=1),
            k,
        )
    return best_idx


def exact_select(run, queries, keys, log_s, valid, take: int, n_valid: int, key_norms) -> torch.Tensor:
    """Exact top-``take`` indices [B, take] (ties to the lower index) from a float32 backend.

    ``run`` is a backend's ``run(queries, keys, log_s, shift, valid, n_cand, key_norms=...)``
    returning float32 candidate values and indices [B, n_cand], best first.
    """
    B, d = queries.shape
    shift = shift_of(log_s, valid)
    n_cand = min(take + CANDIDATE_EXTRA, n_valid)
    cand_val, cand_idx = run(queries, keys, log_s, shift, valid, n_cand, key_norms=key_norms)
    if n_cand < n_valid:
        theta = cand_val[:, take - 1]
        redo = (theta <= EXACT_THRESHOLD) | (cand_val[:, n_cand - 1] >= theta - score_error_bound(d))
    else:  # every valid memory is a candidate: re-ranking them is exact
        redo = torch.zeros(B, dtype=torch.bool, device=queries.device)
    cand_cos = exact_cosine(queries, keys[cand_idx])  # [B, n_cand] float64
    cand_key = exact_rank_key(cand_cos, log_s[cand_idx] - shift)
    _, top_idx = merge_topk(cand_key, cand_idx, take)
    if bool(redo.any()):
        rows = redo.nonzero().squeeze(1)
        top_idx[rows] = exact_topk_rows(queries[rows], keys, log_s, valid, take)
    return top_idx
