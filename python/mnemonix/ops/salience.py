"""``salience_topk``: EpiNet's top-k salience recall, batched, memory-bounded and exact.

Declared like every op (:mod:`mnemonix._dispatch`): checks -> a typed inputs record ->
``dispatch(SPEC, inputs, forced)`` -> a float32 selection backend of
:mod:`mnemonix.backends.salience`, made exact by :mod:`mnemonix.backends.salience_exact`.

Host syncs on CUDA (docs/gpu.md): the value checks and the exactness decision are read in one
device-to-host copy per call; ``check_inputs=False, exact=False`` makes the call sync-free
(capturable in a CUDA graph). Shapes never depend on data: fewer valid memories than k pad
with -1 on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnemonix import _checks, _dispatch, _types, calibration
from mnemonix.backends import salience as sb
from mnemonix.backends import salience_cpp as sc
from mnemonix.backends import salience_exact as sx
from mnemonix.ops import _salience_fast

__all__ = ["salience_topk", "log_salience", "SalienceInputs", "SPEC"]

_SALIENCE_DTYPES = (torch.float64, *_checks.FLOAT_DTYPES)


@dataclass(frozen=True)
class SalienceInputs(_dispatch.SelectionOverKeys):
    """Checked inputs of one recall (``log_s`` already in float64)."""

    queries: torch.Tensor
    keys: torch.Tensor
    payloads: torch.Tensor | None
    log_s: torch.Tensor
    valid: torch.Tensor | None
    key_norms: torch.Tensor | None
    k: int
    exact: bool = True
    batch_invariant: bool = False
    time_form: tuple[torch.Tensor, torch.Tensor, float] | None = None
    """``(r0, tau, alpha)`` when the saliences came in that form: the C++ recall computes ``log_s``
    itself from them, as the fast path does (one definition of its rounding)."""


def cpu_order(b: int, n: int, d: int) -> list[str]:
    """CPU backends fastest first for B queries over N keys of d features: the exact C++ recall
    up to ``cpp_max_batch`` queries (it splits the keys over the threads; memory-bound), up to
    ``cpp_max_batch_narrow`` for keys of at most ``narrow_dim`` features (a GEMM with so short
    an inner dimension writes one score per d multiply-adds and the screen reads them back from
    memory; the C++ recall never stores them), or while its B x N x d screen stays under
    ``cpp_max_work`` (calibration); else the same recall with the screen's dot products from
    torch's GEMM. Both are exact (the same bits, batch-invariant); the torch path is the
    fallback."""
    limits = calibration.thresholds("salience_topk", "cpu")
    small = cpp_by_batch(b, d, limits) or b * n * d <= limits["cpp_max_work"]
    return ["cpp", "gemm", "torch"] if small else ["gemm", "cpp", "torch"]


def cpp_by_batch(b: int, d: int, limits: dict[str, int]) -> bool:
    """Whether the batch limits alone (``cpp_max_batch``, ``cpp_max_batch_narrow`` up to
    ``narrow_dim``) send B queries of d features to the C++ recall, whatever the work."""
    return b <= limits["cpp_max_batch"] or (d <= limits["narrow_dim"] and b <= limits["cpp_max_batch_narrow"])


def speed_policy(inputs: SalienceInputs, backends) -> list[str]:
    """Triton first on CUDA; on CPU :func:`cpu_order`."""
    if inputs.device.type == "cuda":
        return ["triton", "torch"]
    b, (n, d) = inputs.queries.shape[0], inputs.keys.shape
    return cpu_order(b, n, d)


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
    check_inputs: bool | None = None,
    exact: bool = True,
    batch_invariant: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k salience recall (EpiNet's RecallEngine), batched and memory-bounded.

    ``score[b, m] = cos(q_b, c_m) * s_m`` with ``s_m = r0_m * exp(-alpha * (now - tau_m))`` in log
    space (``log s_m`` in float64, ages from the latest store time: nothing underflows however old
    a memory is, and ``alpha * now`` of 1e12 loses no precision). The k best scores per query
    (scores can be negative; ties go to the lower index), and ``recall_b = sum_i w_i z_i`` with
    ``w_i = s_i / sum_j s_j`` over the k (an exact softmax of their log-saliences).

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
    backend : {"cpp", "gemm", "torch", "triton"} or None
        Force an implementation (``"triton"`` on CPU needs ``TRITON_INTERPRET=1``). Default: Triton
        on CUDA; on the CPU the exact C++ recall (``cpp``) for small and mid-size calls, the same
        with torch's GEMM for the screen (``gemm``) for large ones.
    check_inputs : bool or None
        Check the values (below). None (default): check, except during a CUDA graph capture.
        On CUDA they cost no host sync beyond the exact re-rank's (read together).
    exact : bool
        True (default): the result equals the float64 definition. The CPU recalls (``cpp``,
        ``gemm``) always are; the float32 selection of ``torch`` / ``triton`` is unless a query
        has near-ties at its candidate boundary or underflowed scores, and those queries are
        redone in float64 (a host read of which). False skips that redo (no host sync).
    batch_invariant : bool
        True: each query's result is bitwise the same alone or in any batch (fixed tiles and
        splits, row-wise float64 sums; the CPU recalls always are). Default results are
        deterministic but not batch-invariant. See docs/gpu.md.

    Raises ValueError for NaN/Inf in the queries, the salience inputs, any valid key (also a
    squared norm overflowing float32) or a selected payload row (unless ``check_inputs`` is False).

    Returns
    -------
    recall : Tensor [B, dz] float32, or None when ``payloads`` is None
    indices : Tensor [B, k] int64, best first; -1 past the number of valid memories
    weights : Tensor [B, k] float32, sum to 1 per query (0 at index -1)
    scores : Tensor [B, k] float32, ``cos * s_m / max_valid(s)``: relative to the
        most salient valid memory (``-inf`` at index -1)
    """
    fast = _salience_fast.cpu_fast_recall(queries, keys, payloads, k, log_salience, r0, tau, alpha, now, valid,
                                          key_norms, backend, check_inputs, exact, batch_invariant, cpu_order)
    if fast is not None:
        return fast
    inputs, checks = _prepare(queries, keys, payloads, k, log_salience, r0, tau, alpha, now, valid, key_norms,
                              check_inputs, exact, batch_invariant)
    return _recall(inputs, _dispatch.dispatch(SPEC, inputs, backend), checks)


def _prepare(queries, keys, payloads, k, log_salience, r0, tau, alpha, now, valid, key_norms, check_inputs,
             exact, batch_invariant) -> tuple[SalienceInputs, _checks.DataChecks]:
    """The checked inputs record, and the value checks (raised at once on the CPU, pending on CUDA)."""
    _check_shapes(queries, keys, payloads, valid)
    k = _checks.positive_int("k", k)
    if k > keys.shape[0]:
        raise ValueError(f"k must be <= N = {keys.shape[0]} (number of memory slots), got k = {k}")
    for name, flag in (("exact", exact), ("batch_invariant", batch_invariant)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {type(flag).__name__}")
    _check_salience_args(keys.shape[0], log_salience, r0, tau, alpha, now)
    device = _checks.same_device(
        {"queries": queries, "keys": keys, "payloads": payloads, "log_salience": log_salience,
         "r0": r0, "tau": tau, "valid": valid}
    )
    enabled = _checks.data_checks_enabled(check_inputs, device)
    if exact and device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise ValueError("salience_topk(exact=True) reads which queries need the float64 redo on the host, "
                         "which a CUDA graph capture cannot do; pass exact=False to capture")
    checks = _checks.DataChecks(device, enabled)
    if log_salience is not None:
        checks.finite("log_salience", log_salience)
    else:
        _time_value_checks(checks, r0, tau)
    log_s = _log_salience(log_salience, r0, tau, alpha, valid)
    _check_key_norms(key_norms, keys.shape[0], device, checks)
    checks.finite("queries", queries)
    # keys are checked by the backends during their single pass (a NaN/Inf key makes its norm or
    # score NaN), and payloads on the k rows gathered per query: no extra pass over [N, d] here.
    time_form = None if log_salience is not None else (r0, tau, float(alpha))
    return SalienceInputs(queries, keys, payloads, log_s, valid, key_norms, k, exact, batch_invariant,
                          time_form), checks


_PAYLOADS_NONFINITE = "payloads must be finite: rows selected by the recall hold NaN or Inf values"


def _recall(inputs: SalienceInputs, chosen: _dispatch.Backend, checks: _checks.DataChecks):
    """Select, re-rank exactly, weigh and recall; one host read (``checks.flush``) on CUDA. The
    whole-recall backends (``cpp``, ``gemm``) do all of it in C++."""
    if chosen.name in sb.WHOLE_RECALL:
        return _recall_whole(chosen, inputs, checks)
    queries, keys, payloads, log_s, valid, k = (
        inputs.queries, inputs.keys, inputs.payloads, inputs.log_s, inputs.valid, inputs.k)
    B, N, device = queries.shape[0], keys.shape[0], keys.device
    if B == 0:
        checks.flush()
        return _outputs(inputs, torch.zeros((0, k), dtype=torch.int64, device=device),
                        torch.zeros(k, dtype=torch.bool, device=device), sx.shift_of(log_s, valid))
    n_valid = N if valid is None else valid.sum()
    shift = sx.shift_of(log_s, valid)
    n_cand = min(k + sx.CANDIDATE_EXTRA, N)
    cand_val, cand_idx, keys_bad = chosen.run(queries, keys, log_s, shift, valid, n_cand,
                                              key_norms=inputs.key_norms, batch_invariant=inputs.batch_invariant)
    checks.require_not(keys_bad, sb.NONFINITE_KEYS)
    top_idx = sx.rerank(queries, keys, log_s, shift, cand_val, cand_idx, k, fixed_order=inputs.batch_invariant)
    slot_ok = torch.arange(k, device=device) < n_valid  # [k]: positions past the valid count pad with -1
    redo = sx.needs_redo(cand_val, k, n_valid, queries.shape[1]) if inputs.exact and n_cand < N else None
    payload_bad = _payload_flag(payloads, top_idx, slot_ok) if payloads is not None and checks.enabled else None
    wanted = [f for f in (None if redo is None else redo.any(), payload_bad) if f is not None]
    read = checks.flush(*wanted)  # the call's one host read on CUDA (none when nothing is wanted)
    redo_any = read.pop(0) if redo is not None else False
    payload_failed = read.pop(0) if payload_bad is not None else False
    if redo_any:
        sx.redo_rows(top_idx, redo, queries, keys, log_s, valid, k)
        payload_failed = payload_bad is not None and bool(_payload_flag(payloads, top_idx, slot_ok))
    if payload_failed:
        raise ValueError(_PAYLOADS_NONFINITE)
    return _outputs(inputs, top_idx, slot_ok, shift)


def _recall_whole(chosen: _dispatch.Backend, inputs: SalienceInputs, checks: _checks.DataChecks):
    """The whole recall in C++ (``cpp`` or ``gemm``); the checks above it already ran, the keys'
    and the selected payloads' run in the call and raise the torch path's errors."""
    checks.flush()
    try:
        r0, tau, alpha = inputs.time_form or (None, None, None)
        return chosen.run(inputs.queries, inputs.keys, inputs.payloads, inputs.k,
                             log_s=None if inputs.time_form else inputs.log_s, r0=r0, tau=tau, alpha=alpha,
                             valid=inputs.valid, check=checks.enabled)
    except sc.ValueFault as fault:
        if fault.code == 7:
            raise ValueError(sb.NONFINITE_KEYS) from None
        if fault.code == 8:
            raise ValueError(_PAYLOADS_NONFINITE) from None
        raise  # the inputs' own checks ran above: any other fault is a bug, not bad input


def _payload_flag(payloads: torch.Tensor, top_idx: torch.Tensor, slot_ok: torch.Tensor) -> torch.Tensor:
    """0-dim bool: a selected payload row holds NaN/Inf (padding slots excluded)."""
    rows = payloads[top_idx.clamp(min=0)]
    return _checks.nonfinite_flag(torch.where(slot_ok[None, :, None], rows, torch.zeros((), dtype=rows.dtype,
                                                                                         device=rows.device)))


def _outputs(inputs: SalienceInputs, top_idx: torch.Tensor, slot_ok: torch.Tensor, shift: torch.Tensor):
    """``(recall, indices, weights, scores)`` of the selected ``top_idx`` [B, k]; slots past ``slot_ok`` padded."""
    queries, keys, payloads, log_s = inputs.queries, inputs.keys, inputs.payloads, inputs.log_s
    safe = top_idx.clamp(min=0)
    chosen_log_s = log_s[safe].masked_fill(~slot_ok, float("-inf"))  # [B, k] float64
    w = torch.softmax(chosen_log_s, dim=1)
    w = torch.where(slot_ok, w, torch.zeros((), dtype=w.dtype, device=w.device))  # no valid memory: 0, not NaN
    cos = sx.exact_cosine(queries, keys[safe], fixed_order=inputs.batch_invariant)
    scores = torch.where(slot_ok, cos * torch.exp(chosen_log_s - shift), float("-inf")).float()
    indices = torch.where(slot_ok, top_idx, -1)
    recall = None
    if payloads is not None:
        z = payloads[safe].float()  # [B, k, dz]
        z = torch.where(slot_ok[None, :, None], z, torch.zeros((), dtype=z.dtype, device=z.device))
        weights32 = w.float()
        if inputs.batch_invariant:  # a fixed sum over k per row (a bmm may block rows by batch size)
            recall = torch.zeros(z.shape[0], z.shape[2], dtype=torch.float32, device=z.device)
            for i in range(z.shape[1]):
                recall += weights32[:, i, None] * z[:, i]
        else:
            recall = torch.einsum("bk,bkz->bz", weights32, z)
    return recall, indices, w.float(), scores


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
    """Either ``log_salience`` or all of ``r0, tau, alpha, now``, each of the right kind and shape."""
    time_args = {"r0": r0, "tau": tau, "alpha": alpha, "now": now}
    if log_salience is not None:
        if any(v is not None for v in time_args.values()):
            raise ValueError("give either log_salience or (r0, tau, alpha, now), not both")
        _checks.tensor("log_salience", log_salience, ndim=1, dtypes=_SALIENCE_DTYPES)
        if log_salience.shape[0] != n:
            raise ValueError(f"log_salience must have shape [{n}], got {tuple(log_salience.shape)}")
        return
    missing = [name for name, v in time_args.items() if v is None]
    if missing:
        raise ValueError(f"salience needs log_salience or all of r0, tau, alpha, now; missing {missing}")
    _check_time_args(r0, tau, alpha, now, n)


def _check_time_args(r0, tau, alpha, now, n: int | None = None) -> tuple[float, float]:
    """r0 and tau [N] (N = ``n`` when given), alpha >= 0 and now finite; (alpha, now) as floats."""
    for name, t in (("r0", r0), ("tau", tau)):
        _checks.tensor(name, t, ndim=1, dtypes=_SALIENCE_DTYPES)
        if n is not None and t.shape[0] != n:
            raise ValueError(f"{name} must have shape [{n}], got {tuple(t.shape)}")
    if r0.shape != tau.shape:
        raise ValueError(f"r0 and tau must have the same shape [N], got r0 {tuple(r0.shape)} and "
                         f"tau {tuple(tau.shape)}")
    return _checks.nonneg_float("alpha", alpha), _checks.finite_float("now", now)


def _time_value_checks(checks: _checks.DataChecks, r0: torch.Tensor, tau: torch.Tensor) -> None:
    """r0 finite and > 0 (it is logged), tau finite."""
    checks.finite("r0", r0)
    checks.finite("tau", tau)
    checks.require_not((r0 <= 0).any(), "r0 must be > 0 for every memory (salience is logged), got values <= 0")


def log_salience(r0: torch.Tensor, tau: torch.Tensor, alpha: float, now: float, *,
                 check_inputs: bool | None = None) -> torch.Tensor:
    """EpiNet's salience in log space: ``log r0_m - alpha * (now - tau_m)``, float64 [N].

    The logarithm of ``r0 * exp(-alpha * (now - tau))``: it never underflows, whatever the age
    of a memory (the definition of :func:`mnemonix._types.log_salience`, checked).

    Parameters
    ----------
    r0 : Tensor [N], float64 / float32 / float16 / bfloat16
        Initial salience of each memory, finite and > 0.
    tau : Tensor [N], same dtypes, same device
        Store time of each memory, finite.
    alpha : float
        Decay rate, a finite number >= 0.
    now : float
        The current time, a finite number.
    check_inputs : bool or None, keyword-only
        Check the values of ``r0`` and ``tau``. None (default): check, except while a CUDA
        graph is being captured; on CUDA the checks cost one host sync.

    Returns
    -------
    Tensor [N] float64 on the inputs' device.
    """
    alpha, now = _check_time_args(r0, tau, alpha, now)
    device = _checks.same_device({"r0": r0, "tau": tau})
    checks = _checks.DataChecks(device, _checks.data_checks_enabled(check_inputs, device))
    _time_value_checks(checks, r0, tau)
    checks.flush()
    return _types.log_salience(r0, tau, alpha, now)


def _log_salience(log_salience, r0, tau, alpha, valid) -> torch.Tensor:
    """float64 [N] log-salience of checked inputs; ages relative to the latest store time."""
    if log_salience is not None:
        return log_salience.double()
    # exp(-alpha * now) is common to every memory: measure ages from the latest store time
    # instead, so that alpha * now ~ 1e12 does not swamp log r0 in float64. On the device: no sync.
    tau64 = tau.double()
    latest = tau64.max()
    if valid is not None:
        latest = torch.where(valid.any(), tau64.masked_fill(~valid, float("-inf")).max(), latest)
    return _types.log_salience(r0, tau, alpha, latest)


def _check_key_norms(key_norms, n: int, device: torch.device, checks: _checks.DataChecks) -> None:
    if key_norms is None:
        return
    _checks.tensor("key_norms", key_norms, ndim=1, dtypes=_SALIENCE_DTYPES)
    if key_norms.shape[0] != n or key_norms.device != device:
        raise ValueError(f"key_norms must have shape [{n}] on {device}, got {tuple(key_norms.shape)} "
                         f"on {key_norms.device}")
    checks.require_not(_checks.nonfinite_flag(key_norms) | (key_norms < 0).any(), "key_norms must be finite and >= 0")
