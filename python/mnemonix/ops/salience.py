"""``salience_topk``: EpiNet's top-k salience recall, batched, memory-bounded and exact.

Declared like every op (:mod:`mnemonix._dispatch`): checks -> a typed inputs record ->
``dispatch(SPEC, inputs, forced)`` -> a float32 selection backend of
:mod:`mnemonix.backends.salience`, made exact by
:func:`mnemonix.backends.salience_exact.exact_select`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnemonix import _checks, _dispatch, _types
from mnemonix.backends import salience as sb
from mnemonix.backends.salience_exact import exact_cosine, exact_select, shift_of

__all__ = ["salience_topk", "SalienceInputs", "SPEC"]

_SALIENCE_DTYPES = (torch.float64, *_checks.FLOAT_DTYPES)


@dataclass(frozen=True)
class SalienceInputs:
    """Checked inputs of one recall (``log_s`` already in float64)."""

    queries: torch.Tensor
    keys: torch.Tensor
    payloads: torch.Tensor | None
    log_s: torch.Tensor
    valid: torch.Tensor | None
    key_norms: torch.Tensor | None
    k: int

    @property
    def device(self) -> torch.device:
        return self.keys.device

    @property
    def dtype(self) -> torch.dtype:
        return self.keys.dtype

    @property
    def needs_grad(self) -> bool:
        return False  # a selection: no gradient flows through indices


def speed_policy(inputs: SalienceInputs, backends) -> list[str]:
    """Triton first on CUDA; on CPU the chunked torch path (BLAS matmul per chunk)."""
    return ["triton", "torch"] if inputs.device.type == "cuda" else ["torch"]


SPEC = _dispatch.OpSpec("salience_topk", sb.BACKENDS, speed_policy)


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
    over the selected k (an exact softmax of their log-saliences). Ranking and
    weights depend only on time differences: the common factor ``exp(-alpha now)``
    is dropped and ages are taken relative to the latest store time, so huge
    absolute times (``alpha * now`` of 1e12 and more) lose no precision.

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
    backend : {"torch", "triton"} or None
        Force an implementation (``"triton"`` on CPU needs ``TRITON_INTERPRET=1``).

    Raises ValueError for NaN/Inf in the queries, the salience inputs, any
    valid key (found during the pass over the keys; also when a key's squared
    norm overflows float32) or any payload row that the recall selects.

    Returns
    -------
    recall : Tensor [B, dz] float32, or None when ``payloads`` is None
    indices : Tensor [B, k] int64, best first; -1 past the number of valid memories
    weights : Tensor [B, k] float32, sum to 1 per query (0 at index -1)
    scores : Tensor [B, k] float32, ``cos * s_m / max_valid(s)``: relative to the
        most salient valid memory (``-inf`` at index -1)
    """
    _check_shapes(queries, keys, payloads, valid)
    k = _checks.positive_int("k", k)
    if k > keys.shape[0]:
        raise ValueError(f"k must be <= N = {keys.shape[0]} (number of memory slots), got k = {k}")
    _check_salience_args(keys.shape[0], log_salience, r0, tau, alpha, now)
    device = _checks.same_device(
        {"queries": queries, "keys": keys, "payloads": payloads, "log_salience": log_salience,
         "r0": r0, "tau": tau, "valid": valid}
    )
    log_s = _log_salience(log_salience, r0, tau, alpha, valid)
    _check_key_norms(key_norms, keys.shape[0], device)
    _checks.finite("queries", queries)
    # keys are checked by the backends during their single pass (a NaN/Inf key makes its norm or
    # score NaN), and payloads on the k rows gathered per query: no extra pass over [N, d] here.
    inputs = SalienceInputs(queries, keys, payloads, log_s, valid, key_norms, k)
    chosen = _dispatch.dispatch(SPEC, inputs, backend)
    return _recall(inputs, chosen)


def _recall(inputs: SalienceInputs, chosen: _dispatch.Backend):
    queries, keys, payloads, log_s, valid, k = (
        inputs.queries, inputs.keys, inputs.payloads, inputs.log_s, inputs.valid, inputs.k)
    B, N, device = queries.shape[0], keys.shape[0], keys.device
    n_valid = N if valid is None else int(valid.sum())
    take = min(k, n_valid)
    indices = torch.full((B, k), -1, dtype=torch.int64, device=device)
    weights = torch.zeros(B, k, dtype=torch.float32, device=device)
    scores = torch.full((B, k), float("-inf"), dtype=torch.float32, device=device)
    recall = None if payloads is None else torch.zeros(B, payloads.shape[1], dtype=torch.float32, device=device)
    if take == 0 or B == 0:
        return recall, indices, weights, scores
    top_idx = exact_select(chosen.run, queries, keys, log_s, valid, take, n_valid, inputs.key_norms)
    chosen_log_s = log_s[top_idx]  # [B, take] float64
    w = torch.softmax(chosen_log_s, dim=1)
    cos = exact_cosine(queries, keys[top_idx])
    indices[:, :take] = top_idx
    weights[:, :take] = w.float()
    scores[:, :take] = (cos * torch.exp(chosen_log_s - shift_of(log_s, valid))).float()
    if payloads is not None:
        z = payloads[top_idx].float()  # [B, take, dz]
        if not _checks.all_finite(z):
            raise ValueError("payloads must be finite: rows selected by the recall hold NaN or Inf values")
        recall = torch.einsum("bk,bkz->bz", w.float(), z)
    return recall, indices, weights, scores


def _check_shapes(queries, keys, payloads, valid) -> None:
    _checks.tensor("queries", queries, ndim=2)
    _checks.tensor("keys", keys, ndim=2)
    if payloads is not None:
        _checks.tensor("payloads", payloads, ndim=2)
    d, n = queries.shape[1], keys.shape[0]
    if keys.shape[1] != d:
        raise ValueError(f"keys must have shape [N, {d}] to match queries [B, {d}], got {tuple(keys.shape)}")
    if n == 0:
        raise ValueError("keys must hold at least one memory, got N = 0")
    if d == 0:
        raise ValueError(f"keys must have d >= 1 features, got keys of shape {tuple(keys.shape)}")
    if payloads is not None and payloads.shape[0] != n:
        raise ValueError(f"payloads must have {n} rows (one per key), got shape {tuple(payloads.shape)}")
    if valid is not None:
        _checks.tensor("valid", valid, ndim=1, dtypes=(torch.bool,))
        if valid.shape[0] != n:
            raise ValueError(f"valid must have shape [{n}], got {tuple(valid.shape)}")


def _check_salience_args(n, log_salience, r0, tau, alpha, now) -> None:
    """Either ``log_salience`` or all of ``r0, tau, alpha, now``, each of the right kind."""
    time_args = {"r0": r0, "tau": tau, "alpha": alpha, "now": now}
    if log_salience is not None:
        if any(v is not None for v in time_args.values()):
            raise ValueError("give either log_salience or (r0, tau, alpha, now), not both")
        _checks.tensor("log_salience", log_salience, ndim=1, dtypes=_SALIENCE_DTYPES)
        if log_salience.shape[0] != n:
            raise ValueError(f"log_salience must have shape [{n}], got {tuple(log_salience.shape)}")
        _checks.finite("log_salience", log_salience)
        return
    missing = [name for name, v in time_args.items() if v is None]
    if missing:
        raise ValueError(f"salience needs log_salience or all of r0, tau, alpha, now; missing {missing}")
    for name in ("r0", "tau"):
        _checks.tensor(name, time_args[name], ndim=1, dtypes=_SALIENCE_DTYPES)
        if time_args[name].shape[0] != n:
            raise ValueError(f"{name} must have shape [{n}], got {tuple(time_args[name].shape)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0 or alpha == float("inf"):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not abs(float(now)) < float("inf"):
        raise ValueError(f"now must be a finite number, got {now!r}")
    _checks.finite("r0", r0)
    _checks.finite("tau", tau)
    if bool((r0 <= 0).any()):
        raise ValueError("r0 must be > 0 for every memory (salience is logged), got values <= 0")


def _log_salience(log_salience, r0, tau, alpha, valid) -> torch.Tensor:
    """float64 [N] log-salience of checked inputs; ages relative to the latest store time."""
    if log_salience is not None:
        return log_salience.double()
    # exp(-alpha * now) is common to every memory: measure ages from the latest store time
    # instead, so that alpha * now ~ 1e12 does not swamp log r0 in float64.
    live = tau if valid is None or not bool(valid.any()) else tau[valid]
    return _types.log_salience(r0, tau, alpha, float(live.double().max()))


def _check_key_norms(key_norms, n: int, device: torch.device) -> None:
    if key_norms is None:
        return
    _checks.tensor("key_norms", key_norms, ndim=1, dtypes=_SALIENCE_DTYPES)
    if key_norms.shape[0] != n or key_norms.device != device:
        raise ValueError(f"key_norms must have shape [{n}] on {device}, got {tuple(key_norms.shape)} "
                         f"on {key_norms.device}")
    if not _checks.all_finite(key_norms) or bool((key_norms < 0).any()):
        raise ValueError("key_norms must be finite and >= 0")
