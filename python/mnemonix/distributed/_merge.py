"""Exact merges of the ranks' partial results (pure functions: no communication).

- Top-k: the global top k of a query lies within the union of every rank's local top k
  (a total order: score descending, then id ascending), so the merge re-selects k of the
  ``P * k`` candidates by their float64 exact scores with the same tie rule as one store.
- Salience: the same, on the exact rank keys computed against the whole store's latest
  store time and largest log-salience (agreed before the scan).
- Retrieval: each rank's softmax partition gives ``(out_r, lse_r)``; with
  ``lse = logsumexp_r lse_r`` the whole is ``sum_r exp(lse_r - lse) out_r``: the merge of
  the split-N kernel (and of the store's own parts). A rank with no allowed row sends
  ``lse_r = -inf`` and weighs 0.
"""

from __future__ import annotations

import torch

from mnemonix.backends.search_exact import rank_select
from mnemonix.store import _query


def _flat(t: torch.Tensor) -> torch.Tensor:
    """[P, B, k] -> [B, P * k] (rank after rank)."""
    P, B, k = t.shape
    return t.permute(1, 0, 2).reshape(B, P * k)


def merge_topk(scores: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global top-k from the ranks' local top-k: scores [P, B, k] float64 (-inf padding), ids [P, B, k] (-1).

    Returns scores [B, k] float32 and ids [B, k] int64, ties to the lower id.
    """
    s, i = _flat(scores), _flat(ids)
    top_s, top_i = rank_select(s, i, i, k)
    return top_s.float(), top_i


def merge_salience(key: torch.Tensor, ids: torch.Tensor, cos: torch.Tensor, rel: torch.Tensor,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global salience top-k from the ranks' selected candidates [P, B, k] each; scores [B, k] float32, ids."""
    _, top_ids, top_cos, top_rel = _query.select_salience(_flat(key), _flat(ids), _flat(cos), _flat(rel), k)
    return _query.salience_scores(top_ids, top_cos, top_rel), top_ids


def merge_retrieval(outs: torch.Tensor, lses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out [B, dv], lse [B])`` of the whole store from the ranks' ``outs`` [P, B, dv], ``lses`` [P, B] (float32)."""
    total = torch.logsumexp(lses, dim=0)
    weights = torch.exp(lses - total)
    return (weights[:, :, None] * outs).sum(dim=0), total
