"""``hopfield_retrieve``: modern Hopfield retrieval ``softmax(beta Q K^T + bias) V``, fused.

Declared like every op (:mod:`mnemonix._dispatch`): checks -> a typed inputs record ->
``dispatch(SPEC, inputs, forced)`` -> one backend of :mod:`mnemonix.backends.hopfield`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mnemonix import _checks, _dispatch
from mnemonix.backends import hopfield as hb

__all__ = ["hopfield_retrieve", "HopfieldInputs", "SPEC", "choose_backend"]


@dataclass(frozen=True)
class HopfieldInputs:
    """Checked inputs of one retrieval pass (queries flattened to [B, d])."""

    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor | None
    logit_bias: torch.Tensor | None
    beta: float
    want_argmax: bool
    needs_grad: bool

    @property
    def device(self) -> torch.device:
        return self.queries.device

    @property
    def dtype(self) -> torch.dtype:
        return self.queries.dtype


# Speed policy thresholds: the largest batch sent to the fused C++ kernel automatically.
# Measured by bench/compare_hopfield.py on the 2-core development machine (bench/NOTES.md):
# with two threads the single-read kernel leads up to B = 8 at every shape; up to B = 16 it
# still leads once the keys are far larger than the caches (>= 32 MB: N = 1e6, d = 128,
# B = 16: 110 vs 150-230 ms for the flash kernel), while on cache-sized stores the
# GEMM-based kernels win from B = 16 (N = 1e5, d = 64: 14 vs 11 ms).
CPP_MAX_BATCH = 8
CPP_MAX_BATCH_LARGE_STORE = 16
CPP_LARGE_STORE_BYTES = 32 << 20


def cpp_max_batch(keys: torch.Tensor) -> int:
    """Largest B sent to the C++ kernel automatically for this key matrix."""
    large = keys.numel() * keys.element_size() >= CPP_LARGE_STORE_BYTES
    return CPP_MAX_BATCH_LARGE_STORE if large else CPP_MAX_BATCH


def speed_policy(inputs: HopfieldInputs, backends) -> list[str]:
    """Fastest first: Triton on CUDA; on CPU the single-read C++ kernel while the work is
    memory-bound (small B), then torch's flash kernel (GEMM-bound), then streaming torch."""
    if inputs.device.type == "cuda":
        return ["triton", "torch", "reference"]
    order = ["cpp"] if inputs.queries.shape[0] <= cpp_max_batch(inputs.keys) else []
    return order + ["sdpa", "torch", "reference"]


SPEC = _dispatch.OpSpec("hopfield_retrieve", hb.BACKENDS, speed_policy)


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
        None lets the speed policy choose among the backends that can run the inputs:
        Triton on CUDA; on CPU float32 the fused C++ kernel at small B, torch's flash CPU
        kernel at larger B (no argmax), else the streaming torch path. When an input
        requires grad only backends with a backward qualify (``torch``: streaming forward
        and a chunked, recomputing backward on any device; ``reference``).

    Returns
    -------
    out : Tensor [..., B, dv] in the queries' dtype, then ``lse`` and ``argmax`` if asked.
    """
    _check_shapes(queries, keys, values, update_steps)
    beta = _checks.positive_float("beta", beta)
    update_steps = _checks.nonneg_int("update_steps", update_steps)
    eps = _checks.positive_float("eps", eps)
    _checks.same_device({"queries": queries, "keys": keys, "values": values, "mask": mask, "bias": bias})
    logit_bias = _logit_bias(keys.shape[0], mask, bias, keys.device)
    _checks.finite("queries", queries)
    # keys / values ([N, d]: as large as the work itself) are checked through the result: any
    # NaN/Inf in them reaches out or lse (every backend multiplies each value row by its weight,
    # also a zero weight), and only then the exact check runs and names the argument.
    lead, d = queries.shape[:-1], queries.shape[-1]
    q = queries.reshape(-1, d)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (queries, keys, values, bias))
    inputs = HopfieldInputs(q, keys, values, logit_bias, beta, return_argmax, needs_grad)
    chosen = _dispatch.dispatch(SPEC, inputs, backend)

    def one_pass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return chosen.run(x, keys, values, beta=beta, logit_bias=logit_bias, want_argmax=return_argmax)

    out, lse, arg = one_pass(q)
    _check_result_finite(out, lse, keys, values)
    if update_steps:
        out, lse, arg = _iterate(one_pass, q, out, lse, arg, update_steps, eps)
        _check_result_finite(out, lse, keys, values)
    result: list[torch.Tensor] = [out.reshape(*lead, out.shape[-1]).to(queries.dtype)]
    if return_lse:
        result.append(lse.reshape(lead))
    if return_argmax:
        result.append(arg.reshape(lead))
    return result[0] if len(result) == 1 else tuple(result)


def choose_backend(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None, *,
                   want_argmax: bool = False) -> str:
    """Name of the backend that :func:`hopfield_retrieve` picks for these inputs (no grad)."""
    q = queries.reshape(-1, queries.shape[-1])
    return _dispatch.dispatch(SPEC, HopfieldInputs(q, keys, values, None, 1.0, want_argmax, False)).name


def _check_shapes(queries, keys, values, update_steps) -> None:
    _checks.tensor("queries", queries, min_ndim=2)
    _checks.tensor("keys", keys, ndim=2)
    if values is not None:
        _checks.tensor("values", values, ndim=2)
    n, d = keys.shape
    if n == 0:
        raise ValueError("keys must hold at least one stored pattern (N >= 1), got N = 0")
    if d == 0:
        raise ValueError(f"keys must have d >= 1 features, got keys of shape {tuple(keys.shape)}")
    if queries.shape[-1] != d:
        raise ValueError(f"queries must have last dimension d = {d} (keys are [N, d] = {tuple(keys.shape)}), "
                         f"got queries of shape {tuple(queries.shape)}")
    if values is not None and values.shape[0] != n:
        raise ValueError(f"values must have N = {n} rows like keys, got values of shape {tuple(values.shape)}")
    if values is not None and isinstance(update_steps, int) and update_steps > 0:
        raise ValueError("update_steps > 0 needs values=None (iterating q <- out needs values = keys)")
    for name, t in (("keys", keys), ("values", values)):
        if t is not None and t.dtype != queries.dtype:
            raise TypeError(f"{name} must have the queries' dtype {queries.dtype}, got {t.dtype}")


def _logit_bias(n: int, mask, bias, device: torch.device) -> torch.Tensor | None:
    """bias [N] (float32) with -inf where ``mask`` is False; None when neither is given."""
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
    return logit_bias


def _check_result_finite(out: torch.Tensor, lse: torch.Tensor, keys: torch.Tensor,
                         values: torch.Tensor | None) -> None:
    """Raise naming the argument when a NaN/Inf in keys or values reached the result."""
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
