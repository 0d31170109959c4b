"""``nearest_keys``: the k keys nearest to a group of queries, as memoria-pytorch ranks them.

Declared like every op (:mod:`mnemonix._dispatch`): checks -> a typed inputs record ->
``dispatch(SPEC, inputs, forced)`` -> a backend of :mod:`mnemonix.backends.nearest`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnemonix import _checks, _dispatch
from mnemonix.backends import nearest as nb

__all__ = ["nearest_keys", "NearestInputs", "SPEC"]

_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class NearestInputs(_dispatch.SelectionOverKeys):
    """Checked inputs (queries and keys already float32)."""

    queries: torch.Tensor
    keys: torch.Tensor
    k: int
    reduce: str
    invalid: torch.Tensor | None


# Speed policy: the declared order (certified, then exact, then gemm). The certified
# backend is exact by construction and never slower than ``exact`` by more than its
# GEMM (bench/compare_memoria.py times the Memoria step that runs it twice).
SPEC = _dispatch.OpSpec("nearest_keys", nb.BACKENDS)


def nearest_keys(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    reduce: str = "mean",
    invalid: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Per batch row, the ``k`` keys with the highest ``reduce_w -||q_w - key||^2`` (Memoria's ranking).

    The score of key j in row b is ``reduce`` (``"mean"`` or ``"sum"``) over the W queries
    of ``-sum_h (q[b, w, h] - keys[b, j, h])^2``, *defined* by memoria-pytorch's float32
    arithmetic (difference, square, sum over H, then the reduction; see
    :func:`mnemonix.reference.nearest_keys`). Memoria reminds short-term engrams with
    ``reduce="mean"`` and the final long-term engrams with ``reduce="sum"``. The result
    is the set ``torch.topk`` picks from those scores, ties included: near-ties are
    resolved by that arithmetic, never by a faster formula's rounding.

    Parameters
    ----------
    queries : Tensor [B, W, H], float32 / float16 / bfloat16 / float64 (computed in float32)
        W = 0 is allowed: every key then scores 0 (all tie).
    keys : Tensor [B, K, H], same dtype rules and device
    k : int, 0 <= k <= K
    reduce : {"mean", "sum"}, keyword-only
    invalid : bool Tensor [B, K], optional
        True marks keys that never win (padding). Rows with fewer than k valid keys
        are filled with -1.
    backend : {"certified", "exact", "gemm"} or None
        ``"certified"`` (default): GEMM scores with a rigorous error bound, exact at
        near-ties. ``"exact"``: the defining arithmetic, chunked. ``"gemm"``: float32
        GEMM only, no guarantee at near-ties.

    Returns
    -------
    Tensor [B, k] int64 on the keys' device: key indices, a *set* per row (the order
    within a row is not meaningful), -1 for picks beyond the valid keys.

    Raises
    ------
    TypeError, ValueError
        Wrong types, shapes, devices or ``k``; NaN/Inf in the inputs (or squared distances
        that overflow float32).
    """
    _check(queries, keys, k, reduce, invalid)
    inputs = NearestInputs(queries.detach().float(), keys.detach().float(), k, reduce, invalid)
    chosen = _dispatch.dispatch(SPEC, inputs, backend)
    top = chosen.run(inputs.queries, inputs.keys, k, reduce, invalid)
    if invalid is not None and k:
        top = top.masked_fill(invalid.gather(1, top), -1)
    return top


def _check(queries, keys, k, reduce, invalid) -> None:
    _checks.tensor("queries", queries, ndim=3, dtypes=_INPUT_DTYPES)
    _checks.tensor("keys", keys, ndim=3, dtypes=_INPUT_DTYPES)
    batch, _, hidden = queries.shape
    if keys.shape[0] != batch or keys.shape[2] != hidden:
        raise ValueError(f"keys must have shape [{batch}, K, {hidden}] to match queries {tuple(queries.shape)}, "
                         f"got {tuple(keys.shape)}")
    _checks.nonneg_int("k", k)
    if k > keys.shape[1]:
        raise ValueError(f"k must be <= K = {keys.shape[1]} (the number of keys per row), got {k}")
    _checks.choice("reduce", reduce, list(_REDUCTIONS))
    if invalid is not None:
        _checks.tensor("invalid", invalid, ndim=2, dtypes=(torch.bool,))
        if invalid.shape != keys.shape[:2]:
            raise ValueError(f"invalid must have shape {tuple(keys.shape[:2])} (the keys' [B, K]), "
                             f"got {tuple(invalid.shape)}")
    _checks.same_device({"queries": queries, "keys": keys, "invalid": invalid})
