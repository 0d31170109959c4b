"""Exact float64 selection for :func:`mnemonix.ops.salience_topk`.

The backends rank by float32 scores and return ``k + CANDIDATE_EXTRA`` candidates per query
(``-inf`` marks an empty candidate: an invalid slot, or fewer valid memories than candidates);
:func:`rerank` orders them exactly in float64 (exact order, exact ties to the lower index) and
:func:`redo_rows` redoes over all N, in float64, the few queries that :func:`needs_redo` flags:
their candidate list may miss a memory within the float32 error of the k-th score (or their
k-th score is not clearly positive: underflowed saliences). The order is the
sign/log-magnitude order of the real number ``cos * exp(log_s)`` (:func:`exact_rank_key`),
which never underflows.

Everything here but :func:`redo_rows` runs on the inputs' device without a host sync.
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


def shift_of(log_s: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The largest log-salience among valid memories, a 0-dim float64 tensor on ``log_s``'s device.

    Relative saliences ``log_s - shift`` are then <= 0 for valid memories; ``-inf`` when none is
    valid. Kept on the device: no host sync.
    """
    if valid is None:
        return log_s.max()
    return log_s.masked_fill(~valid, float("-inf")).max()


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


def exact_cosine(queries: torch.Tensor, keys: torch.Tensor, *, fixed_order: bool = False) -> torch.Tensor:
    """cos in float64 of queries [R, d] with keys [M, d] (-> [R, M]) or per-query keys [R, M, d].

    Equal keys get bit-equal cosines (exact ties): per-query keys are reduced
    with one elementwise product and a sum over the last axis (the same
    reduction for every row); shared keys [M, d] are summed over d in a fixed
    loop (a BLAS matmul may round equal rows differently by position). 0
    where a norm is 0. ``fixed_order``: per-query keys too are summed in a fixed
    loop over d, so a row's value does not depend on how many rows there are
    (a reduction kernel may split a long row differently for another batch size).
    """
    q = queries.double()
    c = keys.double()
    if c.ndim == 3 and fixed_order:
        dot = torch.zeros(c.shape[:2], dtype=torch.float64, device=q.device)
        c_sq = torch.zeros(c.shape[:2], dtype=torch.float64, device=q.device)
        for j in range(q.shape[1]):
            dot += q[:, j, None] * c[:, :, j]
            c_sq += c[:, :, j] * c[:, :, j]
        q_sq = torch.zeros(q.shape[0], dtype=torch.float64, device=q.device)
        for j in range(q.shape[1]):
            q_sq += q[:, j] * q[:, j]
        denom = torch.sqrt(q_sq)[:, None] * torch.sqrt(c_sq)
    elif c.ndim == 3:
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


def rerank(queries, keys, log_s, shift, cand_val, cand_idx, k: int, *, fixed_order: bool = False) -> torch.Tensor:
    """The exact best ``k`` [B, k] of float32 candidates ``cand_val``/``cand_idx`` [B, n_cand].

    Re-ranked by :func:`exact_rank_key` in float64, ties to the lower index; empty candidates
    (value ``-inf``) come last, in index order. No host sync.
    """
    safe = cand_idx.clamp(min=0)
    cand_cos = exact_cosine(queries, keys[safe], fixed_order=fixed_order)  # [B, n_cand] float64
    cand_key = exact_rank_key(cand_cos, log_s[safe] - shift)
    cand_key = torch.where(torch.isneginf(cand_val), float("-inf"), cand_key)
    return merge_topk(cand_key, cand_idx, k)[1]


def needs_redo(cand_val: torch.Tensor, k: int, n_valid, d: int) -> torch.Tensor:
    """[B] bool: queries whose float32 candidates may miss an exact top-k member. No host sync.

    A query is safe when its k-th score is clearly positive (above ``EXACT_THRESHOLD``) and
    its last candidate is below the k-th by more than the float32 error, or when every valid
    memory (``n_valid``, an int or a 0-dim tensor) is a candidate.
    """
    n_cand = cand_val.shape[1]
    theta = cand_val[:, k - 1]
    risky = (theta <= EXACT_THRESHOLD) | (cand_val[:, n_cand - 1] >= theta - score_error_bound(d))
    if isinstance(n_valid, int):  # no valid mask: known on the host, no copy to the device
        return risky if n_valid > n_cand else torch.zeros_like(risky)
    return risky & (n_valid > n_cand)


def redo_rows(top_idx, redo, queries, keys, log_s, valid, k: int) -> None:
    """Replace, in place, the rows of ``top_idx`` flagged by ``redo`` with the exact float64 top-k.

    The one data-dependent step of a recall: it reads which rows to redo (a host sync).
    """
    rows = redo.nonzero().squeeze(1)
    top_idx[rows] = exact_topk_rows(queries[rows], keys, log_s, valid, k)
