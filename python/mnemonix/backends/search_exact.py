"""Exact selection for :func:`mnemonix.ops.search_topk`.

The backends rank rows by a float32 score and return ``k + CANDIDATE_EXTRA`` candidates
per query. :func:`exact_select` re-ranks them by the *exact score*: the float64 inner
product (or cosine) of the float32 query with the stored row as :func:`dequantize` returns
it, summed in one fixed order (:func:`exact_pair_scores`), so that bit-equal rows tie
exactly wherever they are stored. Ties go to the lower ``tie_ids`` entry, then the lower
row. Queries whose float32 candidate list may miss a row within the float32 error of the
k-th score are redone by :func:`exact_rescan`: a chunked pass that computes exact scores
only for the rows whose float32 score comes within that error of the k-th one.
"""

from __future__ import annotations

import torch

CANDIDATE_EXTRA = 8
"""Candidates kept beyond k: they are re-ranked exactly in float64."""

UNIT_ROUNDOFF = 2.0**-24
"""float32 unit roundoff."""

_NO_TIE = torch.iinfo(torch.int64).max  # tie key of padding entries: after every real row


def dequantize(rows: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    """Stored rows as float32: ``rows * scales[:, None]`` (int8) or an exact upcast."""
    out = rows.float()
    return out if scales is None else out * scales.float()[:, None]


def float32_error(d: int, metric: str) -> float:
    """Bound on |float32 score - exact score|, relative to ``||q|| * ||k||`` (ip) or absolute (cos).

    One float32 dot over d terms in any order, with FMA (d u), the int8 scale product and
    the dequantisation rounding (3 u), the float64 exact score itself (negligible; 1 u);
    for cosine also the two norms (d u each). A 1% margin covers the ``(1 - d u)`` divisors.
    """
    terms = d + 4 if metric == "ip" else 3 * d + 8
    return 1.01 * terms * UNIT_ROUNDOFF


def exact_pair_scores(queries: torch.Tensor, rows: torch.Tensor, metric: str) -> torch.Tensor:
    """Exact score [P] float64 of query ``queries[p]`` with row ``rows[p]`` (both [P, d] float32).

    Every pair is reduced by the same contiguous float64 sum over d, so equal rows get
    bit-equal scores. Cosine: ``dot / (||q|| ||k||)``, 0 when either norm is 0.
    """
    q = queries.double()
    k = rows.double()
    dot = (q * k).sum(-1)
    if metric == "ip":
        return dot
    denom = torch.sqrt((q * q).sum(-1)) * torch.sqrt((k * k).sum(-1))
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, dot / safe, torch.zeros_like(dot))


def rank_select(
    scores: torch.Tensor, index: torch.Tensor, tie: torch.Tensor, take: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``take`` best of candidate lists [R, M]: score descending, then tie key, then row.

    Padding entries (index -1) must hold score ``-inf``; they sort last.
    """
    tie = torch.where(index < 0, torch.full_like(tie, _NO_TIE), tie)
    order = torch.argsort(torch.where(index < 0, torch.full_like(index, _NO_TIE), index), dim=1, stable=True)
    for key, descending in ((tie, False), (scores, True)):
        step = torch.argsort(torch.gather(key, 1, order), dim=1, descending=descending, stable=True)
        order = torch.gather(order, 1, step)
    top = order[:, :take]
    return torch.gather(scores, 1, top), torch.gather(index, 1, top)


def candidate_scores(q32, keys, scales, index: torch.Tensor, metric: str) -> torch.Tensor:
    """Exact scores [R, M] float64 of candidate rows ``index`` [R, M] (-1: padding, -inf)."""
    R, M = index.shape
    safe = index.clamp(min=0)
    rows = dequantize(keys[safe.reshape(-1)], None if scales is None else scales[safe.reshape(-1)])
    pairs = exact_pair_scores(q32.repeat_interleave(M, dim=0), rows, metric).view(R, M)
    return pairs.masked_fill(index < 0, float("-inf"))


def prepare_queries(q32: torch.Tensor, metric: str) -> torch.Tensor:
    """Queries as the float32 scan uses them: as given (ip) or scaled to unit norm (cos)."""
    if metric == "ip":
        return q32
    norm = torch.linalg.vector_norm(q32, dim=1, keepdim=True)
    return q32 * torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))


def float32_scores(qs, keys, scales, metric: str, start: int, stop: int) -> torch.Tensor:
    """float32 scores [B, stop - start] of prepared queries ``qs`` with rows ``start:stop``.

    int8 rows are upcast exactly and their scale applied to the scores (a [B, w] product
    instead of a [w, d] one); cosine divides by the float32 norm of each dequantised row.
    """
    kf = keys[start:stop].float()
    p = qs @ kf.T
    sc = None if scales is None else scales[start:stop].float()
    if sc is not None:
        p.mul_(sc)
    if metric == "cos":
        norm = torch.linalg.vector_norm(kf, dim=1)
        if sc is not None:
            norm = norm * sc.abs()
        p.mul_(torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm)))
    return p


def scan_error(q32: torch.Tensor, metric: str, max_norm: float) -> torch.Tensor:
    """Per-query bound [B] float64 on one float32 score's error (:func:`float32_error`)."""
    rel = float32_error(q32.shape[1], metric)
    if metric == "cos":
        return torch.full((q32.shape[0],), rel, dtype=torch.float64, device=q32.device)
    return rel * torch.linalg.vector_norm(q32.double(), dim=1) * float(max_norm)


def exact_rescan(q32, keys, scales, mask, tie_ids, thresholds, take: int, metric: str, *, chunk: int = 16384):
    """Exact top-``take`` (scores [R, take] float64, rows [R, take]) of a few queries, over all N.

    Only rows whose float32 score (:func:`float32_scores`) is at least ``thresholds`` [R]
    get an exact score; the caller guarantees that every row of the exact top-``take``
    passes that test. Memory O(R x chunk + chunk x d) whatever N is.
    """
    R, N = q32.shape[0], keys.shape[0]
    qs = prepare_queries(q32, metric)
    best_s = torch.full((R, take), float("-inf"), dtype=torch.float64, device=q32.device)
    best_i = torch.full((R, take), -1, dtype=torch.int64, device=q32.device)
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        hits = float32_scores(qs, keys, scales, metric, start, stop) >= thresholds[:, None].float()
        if mask is not None:
            hits &= mask[start:stop]
        for r in hits.any(dim=1).nonzero().flatten().tolist():
            rows = hits[r].nonzero().flatten() + start
            sub_scales = None if scales is None else scales[rows]
            s = exact_pair_scores(q32[r].expand(rows.shape[0], -1), dequantize(keys[rows], sub_scales), metric)
            s_all = torch.cat([best_s[r], s])[None]
            i_all = torch.cat([best_i[r], rows])[None]
            t_all = i_all if tie_ids is None else tie_ids[i_all.clamp(min=0)]
            top_s, top_i = rank_select(s_all, i_all, t_all, take)
            best_s[r], best_i[r] = top_s[0], top_i[0]
    return best_s, best_i


def exact_select(run_scan, q32, keys, scales, mask, tie_ids, k: int, n_live: int, metric: str,
                 extra: int = CANDIDATE_EXTRA):
    """Exact top-k (scores [B, k] float64, rows [B, k] int64; -inf / -1 past ``n_live``).

    ``run_scan(n_cand)`` returns a backend's float32 candidates ``(values, rows)`` [B, n_cand]
    (best first; ``n_cand = min(k + extra, n_live)``), its per-query bound ``e`` [B] on one
    score's error and the bound on the key norms it used (ip). Rows outside the candidates
    score ``<= values[:, -1]`` in float32; when that is below the k-th value minus ``2 e``
    none of them can reach the exact top-k, else the query is rescanned
    (:func:`exact_rescan`) with the threshold ``k-th value - e - e_rescan``.
    """
    B = q32.shape[0]
    take = min(k, n_live)
    scores = torch.full((B, k), float("-inf"), dtype=torch.float64, device=q32.device)
    rows = torch.full((B, k), -1, dtype=torch.int64, device=q32.device)
    if take == 0 or B == 0:
        return scores, rows
    n_cand = min(take + extra, n_live)
    values, index, err, max_norm = run_scan(n_cand)
    exact = candidate_scores(q32, keys, scales, index, metric)
    tie = index if tie_ids is None else tie_ids[index.clamp(min=0)]
    top_s, top_i = rank_select(exact, index, tie, take)
    if n_cand < n_live:
        theta = values[:, take - 1].double()
        redo = values[:, n_cand - 1].double() >= theta - 2 * err
        if bool(redo.any()):
            r = redo.nonzero().flatten()
            threshold = theta[r] - err[r] - scan_error(q32[r], metric, max_norm)
            # Round the threshold down to float32 so that the comparison in float32 is conservative.
            threshold = torch.nextafter(threshold.float(), torch.tensor(float("-inf"))).double()
            s, i = exact_rescan(q32[r], keys, scales, mask, tie_ids, threshold, take, metric)
            top_s[r], top_i[r] = s, i
    scores[:, :take], rows[:, :take] = top_s, top_i
    return scores, rows
