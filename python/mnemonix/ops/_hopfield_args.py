"""Argument checks of :func:`mnemonix.ops.hopfield_retrieve` and its canonical layout.

:func:`prepare` checks every argument once (names, shapes, dtypes, devices, values) and returns
a :class:`Prepared` record: the operands in the canonical layout of
:mod:`mnemonix.backends.hopfield_grad` (group dimensions ``(G1, G2)``; shared operands keep
size-1 group dimensions and are never copied) and a function that restores the caller's shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mnemonix import _checks

OP_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class Prepared:
    """Canonical operands of one call (see the module docstring)."""

    queries: torch.Tensor                 # [G1, G2, B, d]
    keys: torch.Tensor                    # [K1, K2, N, d]
    values: torch.Tensor | None           # [K1, K2, N, dv]
    key_bias: torch.Tensor | None         # [C1, C2, N] work dtype, -inf = masked
    assoc: torch.Tensor | None            # [A1, A2, B, N] work dtype
    beta: float                           # the kernels' scale (1.0 when beta is a tensor)
    beta_tensor: torch.Tensor | None      # [X1, X2, 1, 1], multiplied into the queries
    update_steps: int
    eps: float
    lead: tuple[int, ...]                 # the caller's leading dimensions of the queries
    rows: int                             # B
    checks: _checks.DataChecks | None     # value checks still to read (None under torch.compile)
    batch_invariant: bool = False         # each row's result bitwise independent of the batch
    allow_tf32: bool = False              # float32 products on TF32 tensor cores (Triton on CUDA)

    def restore(self, t: torch.Tensor) -> torch.Tensor:
        """A canonical result [G1, G2, B, ...] in the caller's shape [..., B, ...]."""
        return t.reshape(*self.lead, self.rows, *t.shape[3:])


def _broadcastable(name: str, shape: Sequence[int], lead: Sequence[int], what: str) -> None:
    """``shape`` (an operand's leading dims) must broadcast to ``lead`` without growing it."""
    ok = len(shape) <= len(lead) and all(s in (1, t) for s, t in zip(reversed(shape), reversed(lead)))
    if not ok:
        raise ValueError(f"{name} must have leading dimensions broadcastable to the queries' {tuple(lead)} "
                         f"({what}), got {name} of shape {tuple(shape)} + ...")


def _group(t: torch.Tensor, lead: Sequence[int], tail: int) -> torch.Tensor:
    """``t [*t_lead, *tail]`` (t_lead broadcastable to ``lead``) as [X1, X2, *tail], X in {1, G}."""
    tail_shape = tuple(t.shape[t.ndim - tail:])
    t_lead = (1,) * (len(lead) - (t.ndim - tail)) + tuple(t.shape[: t.ndim - tail])
    if len(lead) <= 1:
        return t.reshape(1, t_lead[0] if t_lead else 1, *tail_shape)
    t = t.reshape(*t_lead, *tail_shape)
    outer = t_lead[:-1]
    if all(x == 1 for x in outer):
        x1 = 1
    elif tuple(outer) == tuple(lead[:-1]):
        x1 = math.prod(outer)
    else:  # shared over some outer dims only: expand them (a copy, for >= 3 leading dims only)
        t = t.expand(*lead[:-1], *t.shape[len(outer):])
        x1 = math.prod(lead[:-1])
    return t.reshape(x1, t_lead[-1], *tail_shape)


def _check_operands(queries, keys, values, update_steps) -> None:
    _checks.tensor("queries", queries, min_ndim=2, dtypes=OP_DTYPES)
    _checks.tensor("keys", keys, min_ndim=2, dtypes=OP_DTYPES)
    if values is not None:
        _checks.tensor("values", values, min_ndim=2, dtypes=OP_DTYPES)
    n, d = keys.shape[-2:]
    if n == 0:
        raise ValueError("keys must hold at least one stored pattern (N >= 1), got N = 0")
    if d == 0:
        raise ValueError(f"keys must have d >= 1 features, got keys of shape {tuple(keys.shape)}")
    if queries.shape[-1] != d:
        raise ValueError(f"queries must have last dimension d = {d} (keys are [..., N, d] = {tuple(keys.shape)}), "
                         f"got queries of shape {tuple(queries.shape)}")
    lead = queries.shape[:-2]
    _broadcastable("keys", keys.shape[:-2], lead, "one set of stored patterns per sample / head, or shared")
    if values is not None:
        if values.shape[-2] != n:
            raise ValueError(f"values must be [..., N, dv] with N = {n} like the keys {tuple(keys.shape)}, "
                             f"got values of shape {tuple(values.shape)}")
        _broadcastable("values", values.shape[:-2], lead, "one set per sample / head, or shared")
        if isinstance(update_steps, int) and update_steps > 0:
            raise ValueError("update_steps > 0 needs values=None (iterating q <- out needs values = keys)")
    for name, t in (("keys", keys), ("values", values)):
        if t is not None and t.dtype != queries.dtype:
            raise TypeError(f"{name} must have the queries' dtype {queries.dtype}, got {t.dtype}")


def _check_beta(beta, queries) -> tuple[float, torch.Tensor | None]:
    if not isinstance(beta, torch.Tensor):  # the kernels scale float32 logits by beta: float32's range
        return _checks.positive_float("beta", beta, maximum=_checks.FLOAT32_MAX), None
    if not beta.is_floating_point():
        raise TypeError(f"beta must be a float or a floating-point tensor, got a tensor of dtype {beta.dtype}")
    _broadcastable("beta", beta.shape, queries.shape[:-2], "one inverse temperature per group, e.g. per head")
    return 1.0, beta


def _check_vector(name: str, t, n: int, lead, dtypes) -> None:
    _checks.tensor(name, t, min_ndim=1, dtypes=dtypes)
    if t.shape[-1] != n:
        raise ValueError(f"{name} must have shape [..., N] with N = {n}, got {tuple(t.shape)}")
    _broadcastable(name, t.shape[:-1], lead, "per sample / head, or shared")


def _check_association(assoc, n: int, b: int, lead) -> None:
    if not isinstance(assoc, torch.Tensor):
        raise TypeError(f"association_mask must be a torch.Tensor, got {type(assoc).__name__}")
    if assoc.dtype != torch.bool and not assoc.is_floating_point():
        raise TypeError(f"association_mask must be bool (True = takes part) or floating point (additive), "
                        f"got {assoc.dtype}")
    shape = tuple(assoc.shape)
    if assoc.ndim == 0 or shape[-1] != n or (assoc.ndim >= 2 and shape[-2] not in (1, b)):
        raise ValueError(f"association_mask must be broadcastable to [..., B, N] = [..., {b}, {n}], got {shape}")
    _broadcastable("association_mask", shape[:-2], lead, "per sample / head, or shared")
    if assoc.requires_grad and torch.is_grad_enabled():
        raise ValueError("association_mask is a constant (it gets no gradient), got a tensor that requires grad: "
                         "detach it, or pass a learnable per-pattern bias as bias=")


def _check_values(checks: _checks.DataChecks, queries, keys, values, beta_tensor, mask, bias, assoc) -> None:
    """Checks that need the data (skipped under torch.compile); on CUDA they are read with the
    result's check, in the call's one host sync (see ``ops.hopfield._check_result``).

    The keys are read here only when the values are apart from them: a NaN/Inf key always
    reaches the result when it is also the value (its weight, even 0, times it is NaN), but with
    other values a key whose logits are all -inf (or NaN, in torch's flash kernel) gets weight 0
    and shows nowhere."""
    checks.finite("queries", queries)
    if values is not None:
        checks.finite("keys", keys)
    if beta_tensor is not None:
        checks.require_not(~((beta_tensor > 0) & (beta_tensor <= _checks.FLOAT32_MAX)).all(),  # NaN fails both
                           f"beta must be finite, > 0 and <= {_checks.FLOAT32_MAX:.4g} (float32's range) "
                           "everywhere, got a tensor with values <= 0, NaN/Inf or beyond float32")
    if bias is not None:
        checks.finite("bias", bias)
    if mask is not None:
        checks.require_not(~mask.any(dim=-1).all(), "mask must keep at least one stored pattern (per sample), "
                                                    "got all False")
    if assoc is None:
        return
    if assoc.is_floating_point():
        checks.require_not(torch.isnan(assoc).any() | (assoc == float("inf")).any(),
                           "association_mask must hold finite values or -inf, got NaN or +inf")
        assoc = assoc > float("-inf")
    if mask is None:
        every_row = assoc.any(dim=-1).all()
    else:  # kept patterns per query row, without broadcasting the two masks into one
        every_row = ((assoc.float() @ mask.float()[..., None]) > 0).all()
    checks.require_not(~every_row, "mask and association_mask must leave every query at least one stored "
                                   "pattern, got a query whose patterns are all masked")


def prepare(queries, keys, values, *, beta, mask, bias, association_mask, update_steps, eps,
            batch_invariant=False, allow_tf32=False) -> Prepared:
    """Check every argument and build the canonical operands (see the module docstring)."""
    _check_operands(queries, keys, values, update_steps)
    batch_invariant = _checks.flag("batch_invariant", batch_invariant)
    allow_tf32 = _checks.flag("allow_tf32", allow_tf32)
    scale, beta_tensor = _check_beta(beta, queries)
    update_steps = _checks.nonneg_int("update_steps", update_steps)
    eps = _checks.positive_float("eps", eps)
    lead, b = tuple(queries.shape[:-2]), queries.shape[-2]
    n = keys.shape[-2]
    if mask is not None:
        _check_vector("mask", mask, n, lead, (torch.bool,))
    if bias is not None:
        _check_vector("bias", bias, n, lead, OP_DTYPES)
    if association_mask is not None:
        _check_association(association_mask, n, b, lead)
    _checks.same_device({"queries": queries, "keys": keys, "values": values, "mask": mask, "bias": bias,
                         "association_mask": association_mask, "beta": beta_tensor})
    checks = None
    if not torch.compiler.is_compiling():
        checks = _checks.DataChecks(queries.device)
        _check_values(checks, queries, keys, values, beta_tensor, mask, bias, association_mask)
    work = torch.float64 if queries.dtype == torch.float64 else torch.float32
    key_bias, assoc = _biases(mask, bias, association_mask, lead, b, work)
    if values is not None and values.shape[:-2] != keys.shape[:-2]:  # one group structure for both (views)
        both = torch.broadcast_shapes(keys.shape[:-2], values.shape[:-2])
        keys, values = keys.expand(*both, *keys.shape[-2:]), values.expand(*both, *values.shape[-2:])
    q = _group(queries, lead, 2)
    k = _group(keys, lead, 2)
    v = None if values is None else _group(values, lead, 2)
    beta_g = None if beta_tensor is None else _group(beta_tensor[..., None, None], lead, 2)
    shared = all(t is None or t.shape[:2] == (1, 1) for t in (k, v, key_bias, beta_g)) and assoc is None
    if shared and q.shape[:2] != (1, 1):  # nothing varies by group: the groups fold into rows
        q = q.reshape(1, 1, -1, q.shape[-1])
    return Prepared(q, k, v, key_bias, assoc, scale, beta_g, update_steps, eps, lead, b, checks, batch_invariant,
                    allow_tf32)


def _biases(mask, bias, association_mask, lead, b: int, work: torch.dtype):
    """key_bias [C1, C2, N] (bias, -inf where masked, plus a per-pattern association mask) and
    assoc [A1, A2, B, N] (a per-query association mask), in the work dtype."""
    key_bias = None if bias is None else _group(bias, lead, 1).to(work)
    if mask is not None:
        m = _group(mask, lead, 1)
        base = key_bias if key_bias is not None else torch.zeros(m.shape, dtype=work, device=m.device)
        key_bias = base.masked_fill(~m, float("-inf"))
    if association_mask is None:
        return key_bias, None
    am = association_mask if association_mask.ndim >= 2 else association_mask[None]
    am = _group(am, lead, 2)
    if am.dtype == torch.bool:
        am = torch.zeros(am.shape, dtype=work, device=am.device).masked_fill(~am, float("-inf"))
    else:
        am = am.to(work)
    if am.shape[2] == 1:  # the same for every query of a group: a key bias
        row = am[:, :, 0]
        key_bias = row if key_bias is None else key_bias + row
        return key_bias, None
    return key_bias, am
