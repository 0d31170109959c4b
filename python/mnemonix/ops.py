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

import torch

from mnemonix import _checks, _dispatch, _types

__all__: list[str] = []

# ----------------------------------------------------------------------------
# hopfield_retrieve
# ----------------------------------------------------------------------------


def hopfield_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None = None,
    *,
    beta: float,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    update_steps: int = 0,
    eps: float = 1e-4,
    return_lse: bool = False,
    return_argmax: bool = False,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Modern Hopfield retrieval: ``out = softmax(beta * Q K^T + bias) V`` in one fused pass.

    Parameters
    ----------
    queries : Tensor [B, d] or [..., B, d]
        State patterns (float32 / float16 / bfloat16). Leading dimensions (heads, batch)
        are flattened for the kernel and restored on output.
    keys : Tensor [N, d]
        Stored patterns, N >= 1, same dtype and device as ``queries``.
    values : Tensor [N, dv] or None
        Values retrieved; None means auto-association (the keys are the values), in which
        case each tile of keys is read once for both products.
    beta : float
        Inverse temperature, finite and > 0.
    mask : Tensor [N] bool or None
        True where a stored pattern takes part; at least one must.
    bias : Tensor [N] or None
        Additive logit bias per stored pattern (finite).
    update_steps : int
        Extra iterations ``q <- out`` (needs ``values=None``); each query stops on its own
        once ``max|out - q| < eps``.
    eps : float
        Convergence threshold of the iterations.
    return_lse, return_argmax : bool
        Also return the log-sum-exp of the logits [..., B] (float32; the Hopfield energy's
        main term) and the index of the most similar pattern [..., B] (int64), both of the
        last pass.
    backend : {None, "triton", "cpp", "sdpa", "torch", "reference"}
        None picks the first that supports the inputs: Triton on CUDA; on CPU float32 the
        fused C++ kernel at small B, torch's flash CPU kernel at larger B (no argmax), else
        the streaming torch path. Inputs that require grad always use
        ``torch`` (the fused kernels are forward only).

    Returns
    -------
    out : Tensor [..., B, dv] in the queries' dtype, then ``lse`` and ``argmax`` if asked.
    """
    from mnemonix.backends import hopfield as hb

    _checks.tensor("queries", queries, min_ndim=2)
    _checks.tensor("keys", keys, ndim=2)
    if values is not None:
        _checks.tensor("values", values, ndim=2)
    beta = _checks.positive_float("beta", beta)
    update_steps = _checks.nonneg_int("update_steps", update_steps)
    eps = _checks.positive_float("eps", eps)
    device = _checks.same_device({"queries": queries, "keys": keys, "values": values, "mask": mask, "bias": bias})
    n, d = keys.shape
    if n == 0:
        raise ValueError("keys must hold at least one stored pattern (N >= 1), got N = 0")
    if queries.shape[-1] != d:
        raise ValueError(f"queries must have last dimension d = {d} (keys are [N, d] = {tuple(keys.shape)}), "
                         f"got queries of shape {tuple(queries.shape)}")
    if values is not None and values.shape[0] != n:
        raise ValueError(f"values must have N = {n} rows like keys, got values of shape {tuple(values.shape)}")
    if update_steps > 0 and values is not None:
        raise ValueError("update_steps > 0 needs values=None (iterating q <- out needs values = keys)")
    for name, t in (("keys", keys), ("values", values)):
        if t is not None and t.dtype != queries.dtype:
            raise TypeError(f"{name} must have the queries' dtype {queries.dtype}, got {t.dtype}")
    logit_bias = None
    if bias is not None:
        _checks.tensor("bias", bias, ndim=1)
        if bias.shape[0] != n:
            raise ValueError(f"bias must have shape [N] = [{n}], got {tuple(bias.shape)}")
        _checks.finite("bias", bias)
        logit_bias = bias.float()
    if mask is not None:
        _checks.tensor("mask", mask, ndim=1, dtypes=(torch.bool,))
        if mask.shape[0] != n:
            raise ValueError(f"mask must have shape [N] = [{n}], got {tuple(mask.shape)}")
        if not bool(mask.any()):
            raise ValueError("mask must keep at least one stored pattern, got all False")
        base = logit_bias if logit_bias is not None else torch.zeros(n, device=device)
        logit_bias = base.masked_fill(~mask, float("-inf"))
    _checks.finite("queries", queries)
    # keys / values ([N, d]: as large as the work itself) are checked through the result: any
    # NaN/Inf in them reaches out or lse (every backend multiplies each value row by its weight,
    # also a zero weight), and only then the exact check runs and names the argument.

    lead = queries.shape[:-1]
    q = queries.reshape(-1, d)
    inputs = {"queries": q, "keys": keys, "values": values}
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (queries, keys, values, bias)
    )
    forced = backend if backend is not None else ("torch" if needs_grad else None)
    inputs["forced_backend"] = forced
    inputs["want_argmax"] = return_argmax
    candidates = hb.BACKENDS if forced is not None else hb.auto_candidates(device)
    chosen = _dispatch.select("hopfield_retrieve", candidates, inputs, device=device, dtype=queries.dtype,
                              forced=forced)
    if needs_grad and chosen.name not in ("torch", "reference"):
        raise ValueError(f"backend {chosen.name!r} is forward only: inputs require grad, use backend='torch'")

    def one_pass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return chosen.run(x, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=return_argmax)

    out, lse, arg = one_pass(q)
    _check_result_finite(out, lse, keys, values)
    if update_steps:
        out, lse, arg = _iterate(one_pass, q, out, lse, arg, update_steps, eps)
        _check_result_finite(out, lse, keys, values)
    dv = out.shape[-1]
    result: list[torch.Tensor] = [out.reshape(*lead, dv).to(queries.dtype)]
    if return_lse:
        result.append(lse.reshape(lead))
    if return_argmax:
        result.append(arg.reshape(lead))
    return result[0] if len(result) == 1 else tuple(result)


def _check_result_finite(out: torch.Tensor, lse: torch.Tensor, keys: torch.Tensor,
                         values: torch.Tensor | None) -> None:
    """Raise naming the argument when a NaN/Inf in keys or values reached the result."""
    import math

    if math.isfinite(float(lse.detach().sum())) and math.isfinite(float(out.detach().sum())):
        return  # any NaN/Inf element makes its sum NaN/Inf
    if bool(torch.isfinite(lse).all()) and bool(torch.isfinite(out).all()):
        return  # only the sum overflowed
    _checks.finite("keys", keys)
    if values is not None:
        _checks.finite("values", values)
    raise ValueError("hopfield_retrieve: the logits overflow float32 (inputs are finite): "
                     "lower beta or rescale queries and keys")


def _iterate(one_pass, q, out, lse, arg, update_steps, eps):
    """Iterate ``q <- out`` on the queries that still move; converged ones are frozen."""
    state = q.float()
    active = torch.arange(q.shape[0], device=q.device)
    for _ in range(update_steps):
        moved = (out[active] - state[active]).abs().amax(-1) >= eps
        active = active[moved]
        if active.numel() == 0:
            break
        state = state.index_copy(0, active, out[active])
        o, l_, a = one_pass(state[active].to(q.dtype))
        out = out.index_copy(0, active, o)
        lse = lse.index_copy(0, active, l_)
        if arg is not None:
            arg = arg.index_copy(0, active, a)
    return out, lse, arg


__all__ += ["hopfield_retrieve"]


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------



__all__ += ["salience_topk"]


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
        if not _checks.all_finite(key_norms) or bool((key_norms < 0).any()):
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
        log_s = _types.log_salience(r0, tau, alpha, now)

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
        if not _checks.all_finite(z):
            raise ValueError("payloads must be finite: rows selected by the recall hold NaN or Inf values")
        recall = torch.einsum("bk,bkz->bz", w.float(), z)
    return recall, indices, weights, scores


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------

# isort: split

from mnemonix._types import LifespanResult, log_salience  # noqa: E402

_INDEX_DTYPES = (torch.int64, torch.int32)


def lifespan_step(
    lifespan: torch.Tensor,
    types: torch.Tensor,
    age: torch.Tensor | None,
    reminded_indices: torch.Tensor,
    delta: torch.Tensor,
    stm_capacity: int,
    backend: str | None = None,
) -> LifespanResult:
    """One Memoria engram lifespan step, fused (Park & Bak 2023).

    Parameters
    ----------
    lifespan : Tensor [B, M] float32
        Lifespan of each engram.
    types : Tensor [B, M] uint8
        0 NULL (padding), 1 WORKING, 2 SHORTTERM, 3 LONGTERM.
    age : Tensor [B, M] int32 or None
        Age of each engram (None: not tracked).
    reminded_indices : Tensor [B, R] int64 or int32
        Engram positions that receive ``delta``; negative entries (the -1 pad)
        are ignored, duplicates accumulate.
    delta : Tensor [B, R], any real dtype (cast to float32), finite
        Lifespan increments.
    stm_capacity : int >= 0
        Short-term engrams kept per row; the oldest (first by position) beyond it
        become LONGTERM.
    backend : {"triton", "torch"} or None
        Force a backend; default Triton on CUDA, torch otherwise.

    Returns
    -------
    LifespanResult
        ``(lifespan, types, age, keep, rank, num_kept)``: new arrays (not
        compacted), keep-mask ``lifespan > 0``, rank of each kept engram in its
        row (-1 when dropped) and kept count per row. Compact any per-engram
        array with :func:`compact_engrams`.

    Inputs are never modified.
    """
    _checks.tensor("lifespan", lifespan, ndim=2, dtypes=(torch.float32,))
    _checks.tensor("types", types, ndim=2, dtypes=(torch.uint8,))
    if types.shape != lifespan.shape:
        raise ValueError(f"types must have the shape of lifespan {tuple(lifespan.shape)}, got {tuple(types.shape)}")
    if age is not None:
        _checks.tensor("age", age, ndim=2, dtypes=(torch.int32,))
        if age.shape != lifespan.shape:
            raise ValueError(f"age must have the shape of lifespan {tuple(lifespan.shape)}, got {tuple(age.shape)}")
    _checks.tensor("reminded_indices", reminded_indices, ndim=2, dtypes=_INDEX_DTYPES)
    _checks.tensor("delta", delta, ndim=2, dtypes=None)
    if delta.dtype == torch.bool or delta.is_complex():
        raise TypeError(f"delta must have a real numeric dtype, got {delta.dtype}")
    if reminded_indices.shape[0] != lifespan.shape[0]:
        raise ValueError(
            f"reminded_indices must have {lifespan.shape[0]} rows (the batch of lifespan), "
            f"got shape {tuple(reminded_indices.shape)}"
        )
    if delta.shape != reminded_indices.shape:
        raise ValueError(
            f"delta must have the shape of reminded_indices {tuple(reminded_indices.shape)}, got {tuple(delta.shape)}"
        )
    _checks.nonneg_int("stm_capacity", stm_capacity)
    device = _checks.same_device(
        {"lifespan": lifespan, "types": types, "age": age, "reminded_indices": reminded_indices, "delta": delta}
    )
    delta = delta.to(torch.float32)
    _checks.finite("delta", delta)
    if reminded_indices.numel() and int(reminded_indices.max()) >= lifespan.shape[1]:
        raise ValueError(
            f"reminded_indices must be < {lifespan.shape[1]} (the number of engrams per row), "
            f"got {int(reminded_indices.max())}"
        )
    from mnemonix.backends import lifespan as _impl

    inputs = {
        "lifespan": lifespan, "types": types, "age": age, "reminded_indices": reminded_indices, "delta": delta,
    }
    backends = _impl.BACKENDS
    if backend == "triton":
        backends = (_impl._TRITON_ANY_DEVICE, *(b for b in backends if b.name != "triton"))
    chosen = _dispatch.select("lifespan_step", backends, inputs, device=device, dtype=torch.float32, forced=backend)
    return chosen.run(
        lifespan=lifespan.contiguous(), types=types.contiguous(),
        age=None if age is None else age.contiguous(),
        reminded_indices=reminded_indices.contiguous(), delta=delta.contiguous(), stm_capacity=stm_capacity,
    )


def compact_engrams(
    values: torch.Tensor, step: LifespanResult, *, pad_value: float | int = 0, pad_front: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Compact a per-engram array [B, M, ...] with the map of a :func:`lifespan_step` result.

    Kept engrams keep their order; the result is [B, max(num_kept), ...], shorter
    rows padded with ``pad_value`` (at the front when ``pad_front``, Memoria's layout).
    ``out`` [B, C, ...] with C >= max(num_kept): write into its first columns and
    return that view (spare capacity for appends).
    """
    from mnemonix.backends.lifespan import compact

    _checks.tensor("values", values, min_ndim=2, dtypes=None)
    return compact(values, step, pad_value=pad_value, pad_front=pad_front, out=out)


__all__ += ["lifespan_step", "compact_engrams", "LifespanResult", "log_salience"]
