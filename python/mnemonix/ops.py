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

from mnemonix import _checks, _dispatch

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
    backend : {None, "triton", "cpp", "torch", "reference"}
        None picks the first that supports the inputs: Triton on CUDA, the fused C++ kernel
        on CPU float32, else the streaming torch path. Inputs that require grad always use
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
    _finite_sum_first("queries", queries)
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


def _finite_sum_first(name: str, t: torch.Tensor) -> None:
    """``_checks.finite`` behind a one-reduction test (cheap for small tensors, no bool temporary)."""
    import math

    if not math.isfinite(float(t.detach().sum(dtype=torch.float32))):
        _checks.finite(name, t)


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


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------
