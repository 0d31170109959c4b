"""Backends of :func:`mnemonix.ops.nearest_keys`: the k keys nearest to a group of queries.

Every backend answers one question: per batch row, the ``k`` keys with the highest
score ``reduce_w -||q_w - key||^2`` (``reduce`` = mean or sum over the W queries),
where the score is *defined* by memoria-pytorch's float32 arithmetic: difference,
square, sum over H, then the reduction over W (:func:`mnemonix.reference.nearest_keys`).
Invalid keys score ``-inf``. Each backend returns the ``torch.topk`` indices of its
scores [B, k]; the op turns picks of invalid keys into -1.

- ``exact``: that arithmetic itself, chunked over the keys so that no temporary
  exceeds ``CHUNK_ELEMENTS`` floats (the original builds [B, W, K, H]).
- ``certified`` (default): GEMM scores ``2 q.k - |q|^2 - |k|^2`` with a rigorous bound
  on how far the original's float32 result can lie from them. When the bound separates
  the top-k from the rest, the set is the exact one; otherwise (near-ties) the exact
  backend runs. Float32 first, float64 when float32 cannot separate.
- ``gemm``: float32 GEMM scores only: fastest, no guarantee at near-ties.

Host syncs: ``exact`` and ``gemm`` one each (the finite check of the scores);
``certified`` one per precision tried (the separation test, fused with the finite
check), plus the exact backend's one when it falls back.
"""

from __future__ import annotations

import torch

from mnemonix._dispatch import Backend

CHUNK_ELEMENTS = 1 << 18
"""Bound of one [B, W, chunk, H] temporary of the exact backend (1 MB in float32)."""

_FP32 = frozenset({torch.float32})
NONFINITE = ("queries and keys must be finite and their squared distances must fit in float32, "
             "got NaN or Inf scores")


def neg_sq_l2(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``-||q - k||^2`` [B, W, K] for queries [B, W, H] and keys [B, K, H] in the original's float32
    arithmetic (difference, square, sum over H), chunked over K: no temporary exceeds
    ``CHUNK_ELEMENTS`` floats. Bit-identical to the unchunked expression.
    """
    batch, width, hidden = queries.shape
    num_keys = keys.shape[1]
    chunk = max(1, CHUNK_ELEMENTS // max(1, batch * width * hidden))
    parts = []
    for start in range(0, num_keys, chunk):
        diff = queries.unsqueeze(2) - keys[:, start:start + chunk].unsqueeze(1)
        parts.append(diff.pow_(2).sum(dim=3).neg_())
    if not parts:
        return queries.new_zeros((batch, width, 0))
    return torch.cat(parts, dim=2)


def exact_scores(queries: torch.Tensor, keys: torch.Tensor, reduce: str) -> torch.Tensor:
    """Scores [B, K] of the definition; W = 0 gives 0 for every key (all tie)."""
    if queries.shape[1] == 0:
        return queries.new_zeros((queries.shape[0], keys.shape[1]))
    dist = neg_sq_l2(queries, keys)
    return dist.mean(dim=1) if reduce == "mean" else dist.sum(dim=1)


def _masked(score: torch.Tensor, invalid: torch.Tensor | None) -> torch.Tensor:
    return score if invalid is None else score.masked_fill(invalid, float("-inf"))


def _check_finite(score: torch.Tensor, invalid: torch.Tensor | None) -> None:
    bad = ~torch.isfinite(score)
    if invalid is not None:
        bad &= ~invalid
    if bool(bad.any()):  # the one host sync of this backend
        raise ValueError(NONFINITE)


def nearest_exact(queries: torch.Tensor, keys: torch.Tensor, k: int, reduce: str,
                  invalid: torch.Tensor | None) -> torch.Tensor:
    score = exact_scores(queries, keys, reduce)
    _check_finite(score, invalid)
    return _masked(score, invalid).topk(k, dim=1).indices


def nearest_gemm(queries: torch.Tensor, keys: torch.Tensor, k: int, reduce: str,
                 invalid: torch.Tensor | None) -> torch.Tensor:
    if queries.shape[1] == 0:
        return nearest_exact(queries, keys, k, reduce, invalid)
    score, _ = gemm_scores(queries, keys, reduce, torch.float32)
    _check_finite(score, invalid)
    return _masked(score, invalid).topk(k, dim=1).indices


def gemm_scores(queries: torch.Tensor, keys: torch.Tensor, reduce: str,
                precision: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """GEMM scores [B, K] in ``precision`` (returned as float64) and a bound on their error.

    Error of a dot product of H terms: <= gamma_H * sum |terms| (gamma_n ~ n u); with
    |q.k| <= (|q|^2 + |k|^2) / 2 every distance is off by at most
    ~2 (H + 6) u (|q|^2 + |k|^2), and the reduction over W adds (W + 2) u |score|.
    """
    width, hidden = queries.shape[1], queries.shape[2]
    unit = 2.0**-24 if precision == torch.float32 else 2.0**-53
    q, key = queries.to(precision), keys.to(precision)
    q_norm = q.pow(2).sum(-1)  # [B, W]
    k_norm = key.pow(2).sum(-1)  # [B, K]
    dist = (q_norm.unsqueeze(2) - 2.0 * (q @ key.transpose(1, 2))).add_(k_norm.unsqueeze(1))
    if reduce == "mean":
        score = -dist.mean(dim=1)
        scale = q_norm.mean(dim=1, keepdim=True) + k_norm
    else:
        score = -dist.sum(dim=1)
        scale = q_norm.sum(dim=1, keepdim=True) + width * k_norm
    margin = 1.05 * unit * (2 * (hidden + 6) * scale + (width + 2) * score.abs())
    return score.double(), margin.double()


def _separated(score: torch.Tensor, margin: torch.Tensor, top: torch.Tensor,
               invalid: torch.Tensor | None) -> tuple[bool, bool]:
    """(the bound separates ``top`` from the other valid keys in every row, a valid score is not finite)."""
    finite = torch.isfinite(score)
    valid = torch.ones_like(finite) if invalid is None else ~invalid
    inf = torch.full_like(score, float("inf"))
    lower = torch.where(finite & valid, score - margin, inf).gather(1, top).amin(dim=1)
    rest = valid.scatter(1, top, False) & finite
    upper = torch.where(rest, score + margin, -inf).amax(dim=1)
    verdict = torch.stack([(lower > upper).all(), (valid & ~finite).any()]).tolist()  # one host sync
    return bool(verdict[0]), bool(verdict[1])


def nearest_certified(queries: torch.Tensor, keys: torch.Tensor, k: int, reduce: str,
                      invalid: torch.Tensor | None) -> torch.Tensor:
    """GEMM top-k certified against the exact float32 set by an error bound; exact at near-ties.

    The original's float32 result lies within ``(H + W + 8) u |score|`` of the true value
    (sums of non-negative terms, u = 2^-24) and the GEMM score within ``margin`` of it:
    if the k-th best lower bound exceeds every other upper bound, both select one set.
    """
    width, hidden = queries.shape[1], queries.shape[2]
    if width == 0 or k == 0:
        return nearest_exact(queries, keys, k, reduce, invalid)
    exact_error = (hidden + width + 8) * 1.05 * 2.0**-24  # relative, of the original's float32 arithmetic
    # The float32 bound assumes IEEE float32 products: skip that stage when float32 matmuls
    # may run in TF32 / bf16 (torch.set_float32_matmul_precision other than "highest").
    exact_fp32 = torch.get_float32_matmul_precision() == "highest"
    for precision in (torch.float32, torch.float64) if exact_fp32 else (torch.float64,):
        score, margin = gemm_scores(queries, keys, reduce, precision)
        top = _masked(score, invalid).topk(k, dim=1).indices
        separated, nonfinite = _separated(score, margin + exact_error * score.abs(), top, invalid)
        if nonfinite and precision == torch.float64:
            raise ValueError(NONFINITE)
        if separated and not nonfinite:
            return top
    return nearest_exact(queries, keys, k, reduce, invalid)


CERTIFIED = Backend("certified", nearest_certified, dtypes=_FP32)
EXACT = Backend("exact", nearest_exact, dtypes=_FP32)
GEMM = Backend("gemm", nearest_gemm, dtypes=_FP32)
BACKENDS: tuple[Backend, ...] = (CERTIFIED, EXACT, GEMM)
