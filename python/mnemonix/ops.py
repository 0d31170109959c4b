"""The one public door to every mnemonix kernel.

Each op checks its arguments once (names, shapes, dtypes, devices, values),
then dispatches to a backend chosen by device and capability
(:mod:`mnemonix._dispatch`): Triton on CUDA tensors, a memory-bounded torch
path or a fused C++ kernel on CPU. ``backend=`` forces one; forcing
``"triton"`` on CPU tensors works under ``TRITON_INTERPRET=1``. The backends
themselves live in :mod:`mnemonix.backends`; the plain torch ground truth of
every op is :mod:`mnemonix.reference`.
"""

from __future__ import annotations

__all__: list[str] = []

# ----------------------------------------------------------------------------
# hopfield_retrieve
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------

import torch  # noqa: E402

from mnemonix import _checks  # noqa: E402

__all__ += ["salience_topk"]


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN/Inf in a float tensor: one float32 sum (NaN/Inf propagate), confirmed
    element-wise only when the sum is not finite (a NaN, or finite values overflowing it)."""
    if t.numel() == 0:
        return True
    total = t.sum() if t.dtype in (torch.float32, torch.float64) else t.sum(dtype=torch.float32)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(t).all())


def salience_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    payloads: torch.Tensor | None,
    *,
    k: int,
    log_salience: torch.Tensor | None = None,
    r0: torch.Tensor | None = None,
    tau: torch.Tensor | None = None,
    alpha: float | None = None,
    now: float | None = None,
    valid: torch.Tensor | None = None,
    key_norms: torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k salience recall (EpiNet's RecallEngine), batched and memory-bounded.

    ``score[b, m] = cos(q_b, c_m) * s_m`` with salience
    ``s_m = r0_m * exp(-alpha * (now - tau_m))``, handled in log space:
    ``log s_m = log r0_m - alpha (now - tau_m)`` (float64), so nothing
    underflows however old a memory is. The k memories with the largest
    score are selected per query (scores can be negative; ties go to the
    lower index) and ``recall_b = sum_i w_i z_i`` with ``w_i = s_i / sum_j s_j``
    over the selected k (an exact softmax of their log-saliences).

    Parameters
    ----------
    queries : Tensor [B, d], float32 / float16 / bfloat16
    keys : Tensor [N, d], same device; content keys c_m (normalised on the fly;
        a zero-norm key or query has cos = 0 with everything).
    payloads : Tensor [N, dz] or None
        Memories z_m to average; None skips the recall.
    k : int, keyword-only
        1 <= k <= N (N counts every slot, valid or not).
    log_salience : Tensor [N], optional
        log s_m directly. Give either this or all of ``r0, tau, alpha, now``.
    r0 : Tensor [N], > 0;  tau : Tensor [N] (float64 recommended);  alpha : float >= 0;  now : float
    valid : bool Tensor [N], optional
        False marks an empty slot of a fixed-capacity buffer: never selected.
    key_norms : Tensor [N], optional
        Cached ``||c_m||`` (e.g. kept by :class:`mnemonix.epinet.EpisodicMemory`);
        computed on the fly when None. Must match ``keys``.

    Raises ValueError for NaN/Inf in the queries, the salience inputs, any
    valid key (found during the pass over the keys; also when a key's squared
    norm overflows float32) or any payload row that the recall selects.
    backend : {"torch", "triton"} or None
        Force an implementation (``"triton"`` on CPU needs ``TRITON_INTERPRET=1``).

    Returns
    -------
    recall : Tensor [B, dz] float32, or None when ``payloads`` is None
    indices : Tensor [B, k] int64, best first; -1 past the number of valid memories
    weights : Tensor [B, k] float32, sum to 1 per query (0 at index -1)
    scores : Tensor [B, k] float32, ``cos * s_m / max_valid(s)``: relative to the
        most salient valid memory (``-inf`` at index -1)
    """
    from mnemonix import _dispatch
    from mnemonix.backends import salience as sb

    _checks.tensor("queries", queries, ndim=2)
    _checks.tensor("keys", keys, ndim=2)
    if payloads is not None:
        _checks.tensor("payloads", payloads, ndim=2)
    B, d = queries.shape
    N = keys.shape[0]
    if keys.shape[1] != d:
        raise ValueError(f"keys must have shape [N, {d}] to match queries [B, {d}], got {tuple(keys.shape)}")
    if N == 0:
        raise ValueError("keys must hold at least one memory, got N = 0")
    if payloads is not None and payloads.shape[0] != N:
        raise ValueError(f"payloads must have {N} rows (one per key), got shape {tuple(payloads.shape)}")
    k = _checks.positive_int("k", k)
    if k > N:
        raise ValueError(f"k must be <= N = {N} (number of memory slots), got k = {k}")
    time_args = {"r0": r0, "tau": tau, "alpha": alpha, "now": now}
    if log_salience is not None:
        if any(v is not None for v in time_args.values()):
            raise ValueError("give either log_salience or (r0, tau, alpha, now), not both")
        _checks.tensor("log_salience", log_salience, ndim=1, dtypes=(torch.float64, *_checks.FLOAT_DTYPES))
        if log_salience.shape[0] != N:
            raise ValueError(f"log_salience must have shape [{N}], got {tuple(log_salience.shape)}")
    else:
        missing = [name for name, v in time_args.items() if v is None]
        if missing:
            raise ValueError(f"salience needs log_salience or all of r0, tau, alpha, now; missing {missing}")
        for name in ("r0", "tau"):
            _checks.tensor(name, time_args[name], ndim=1, dtypes=(torch.float64, *_checks.FLOAT_DTYPES))
            if time_args[name].shape[0] != N:
                raise ValueError(f"{name} must have shape [{N}], got {tuple(time_args[name].shape)}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0 or alpha == float("inf"):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if isinstance(now, bool) or not isinstance(now, (int, float)) or not abs(float(now)) < float("inf"):
            raise ValueError(f"now must be a finite number, got {now!r}")
    if valid is not None:
        _checks.tensor("valid", valid, ndim=1, dtypes=(torch.bool,))
        if valid.shape[0] != N:
            raise ValueError(f"valid must have shape [{N}], got {tuple(valid.shape)}")
    device = _checks.same_device(
        {"queries": queries, "keys": keys, "payloads": payloads, "log_salience": log_salience,
         "r0": r0, "tau": tau, "valid": valid}
    )
    if key_norms is not None:
        _checks.tensor("key_norms", key_norms, ndim=1, dtypes=(torch.float64, *_checks.FLOAT_DTYPES))
        if key_norms.shape[0] != N or key_norms.device != device:
            raise ValueError(f"key_norms must have shape [{N}] on {device}, got {tuple(key_norms.shape)} "
                             f"on {key_norms.device}")
        if not _all_finite(key_norms) or bool((key_norms < 0).any()):
            raise ValueError("key_norms must be finite and >= 0")
    _checks.finite("queries", queries)
    # keys are checked by the backends during their single pass (a NaN/Inf key makes its norm or
    # score NaN), and payloads on the k rows gathered per query: no extra pass over [N, d] here.
    if log_salience is not None:
        _checks.finite("log_salience", log_salience)
        log_s = log_salience.double()
    else:
        _checks.finite("r0", r0)
        _checks.finite("tau", tau)
        if bool((r0 <= 0).any()):
            raise ValueError("r0 must be > 0 for every memory (salience is logged), got values <= 0")
        log_s = torch.log(r0.double()) - float(alpha) * (float(now) - tau.double())

    inputs = {"queries": queries, "keys": keys, "payloads": payloads, "k": k, "valid": valid}
    chosen = _dispatch.select(
        "salience_topk", sb.priority(device), inputs, device=device, dtype=keys.dtype, forced=backend
    )

    n_valid = N if valid is None else int(valid.sum())
    take = min(k, n_valid)
    indices = torch.full((B, k), -1, dtype=torch.int64, device=device)
    weights = torch.zeros(B, k, dtype=torch.float32, device=device)
    scores = torch.full((B, k), float("-inf"), dtype=torch.float32, device=device)
    recall = None if payloads is None else torch.zeros(B, payloads.shape[1], dtype=torch.float32, device=device)
    if take == 0 or B == 0:
        return recall, indices, weights, scores

    shift = sb.shift_of(log_s, valid)
    # The backend ranks by float32 scores; it returns k + a few candidates, which are re-ranked
    # exactly in float64 (exact order, exact ties). A query whose candidate list may miss a memory
    # within the float32 error of its k-th score (or whose k-th score is not clearly positive:
    # underflowed saliences) is redone over all N in float64.
    n_cand = min(take + sb.CANDIDATE_EXTRA, n_valid)
    cand_val, cand_idx = chosen.run(queries, keys, log_s, shift, valid, n_cand, key_norms=key_norms)
    if n_cand < n_valid:
        theta = cand_val[:, take - 1]
        redo = (theta <= sb.EXACT_THRESHOLD) | (cand_val[:, n_cand - 1] >= theta - sb.score_error_bound(d))
    else:  # every valid memory is a candidate: re-ranking them is exact
        redo = torch.zeros(B, dtype=torch.bool, device=device)
    cand_cos = sb.exact_cosine(queries, keys[cand_idx])  # [B, n_cand] float64
    cand_key = sb.exact_rank_key(cand_cos, log_s[cand_idx] - shift)
    _, top_idx = sb.merge_topk(cand_key, cand_idx, take)
    if bool(redo.any()):
        rows = redo.nonzero().squeeze(1)
        top_idx[rows] = sb.exact_topk_rows(queries[rows], keys, log_s, valid, take)

    chosen_log_s = log_s[top_idx]  # [B, take] float64
    w = torch.softmax(chosen_log_s, dim=1)
    cos = sb.exact_cosine(queries, keys[top_idx])
    indices[:, :take] = top_idx
    weights[:, :take] = w.float()
    scores[:, :take] = (cos * torch.exp(chosen_log_s - shift)).float()
    if payloads is not None:
        z = payloads[top_idx].float()  # [B, take, dz]
        if not _all_finite(z):
            raise ValueError("payloads must be finite: rows selected by the recall hold NaN or Inf values")
        recall = torch.einsum("bk,bkz->bz", w.float(), z)
    return recall, indices, weights, scores


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------
