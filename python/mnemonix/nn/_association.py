"""The association step of the Hopfield layers: masks, the fused op, iterations, explicit views.

Inputs are per head, batch first: state patterns ``q [batch, heads, L, hd]``, stored patterns
``k [batch | 1, heads | 1, S, hd]`` and pattern projections ``v [batch | 1, heads | 1, S, pd]``
(a size-1 dimension is shared, never copied). One retrieval is
``xi = softmax(beta q k^T + masks)``, ``out = xi v`` (Ramsauer et al. 2020, eq. 10), run by
:func:`mnemonix.ops.hopfield_retrieve` without materialising ``xi``.

Iterations follow hflayers 1.0.2: ``q <- xi k`` in the association space (the values enter only
at the end), per head until ``update_steps_max`` or until the Frobenius norm of the change of
``xi`` over (queries, stored patterns), maximised over the batch, is at most
``update_steps_eps``. That norm is computed chunk by chunk from the saved log-sum-exps, so the
iterations stay memory-bounded too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mnemonix import ops

# update_steps_max=None means "until converged": stop anyway after this many steps (with a warning).
UNBOUNDED_STEPS_CAP = 1000
# Stored patterns per chunk when measuring the change of the association matrix.
CHANGE_CHUNK = 4096


@dataclass(frozen=True)
class Masks:
    """Masks in the op's convention, built once per forward.

    ``keep [batch, 1, S]`` bool (True = takes part) from the padding mask; ``assoc`` an
    additive float or a bool (True = takes part) association mask broadcastable to
    [batch, heads, L, S].
    """

    keep: torch.Tensor | None = None
    assoc: torch.Tensor | None = None

    def additive(self, dtype: torch.dtype) -> torch.Tensor | None:
        """One additive mask (0 / -inf / float) broadcastable to [batch, heads, L, S], or None."""
        total = None
        if self.keep is not None:
            total = torch.zeros(self.keep.shape, dtype=dtype, device=self.keep.device)
            total = total.masked_fill(~self.keep, float("-inf"))[:, :, None, :]
        if self.assoc is not None:
            a = self.assoc
            a = torch.zeros(a.shape, dtype=dtype, device=a.device).masked_fill(~a, float("-inf")) \
                if a.dtype == torch.bool else a.to(dtype)
            total = a if total is None else total + a
        return total


def retrieve(q, k, v, beta, masks: Masks, *, return_lse: bool = False):
    """``softmax(beta q k^T + masks) v`` (v None: the keys) through the fused op."""
    return ops.hopfield_retrieve(q, k, v, beta=beta, mask=masks.keep, association_mask=masks.assoc,
                                 return_lse=return_lse)


def association_matrix(q, k, beta, masks: Masks) -> torch.Tensor:
    """The explicit ``xi [batch, heads, L, S]`` (for inspection and dropout; materialised)."""
    logits = _scaled(q, beta) @ k.transpose(-1, -2)
    extra = masks.additive(logits.dtype)
    if extra is not None:
        logits = logits + extra
    return torch.softmax(logits, dim=-1)


def _scaled(q: torch.Tensor, beta) -> torch.Tensor:
    if isinstance(beta, torch.Tensor):
        return q * beta.to(q.dtype).reshape(*beta.shape, 1, 1) if beta.ndim else q * beta.to(q.dtype)
    return q * beta


@torch.no_grad()
def association_change(q_a, lse_a, q_b, lse_b, k, beta, masks: Masks) -> torch.Tensor:
    """``|| xi(q_a) - xi(q_b) ||_F`` over (L, S) per (batch, head), chunk by chunk over S."""
    extra = masks.additive(torch.float32)
    qa, qb = _scaled(q_a.float(), beta), _scaled(q_b.float(), beta)
    la, lb = lse_a.float()[..., None], lse_b.float()[..., None]
    total = torch.zeros(torch.broadcast_shapes(qa.shape[:-1], qb.shape[:-1]), device=qa.device)
    for start in range(0, k.shape[-2], CHANGE_CHUNK):
        k_c = k[..., start : start + CHANGE_CHUNK, :].float().transpose(-1, -2)
        e_c = None if extra is None else extra[..., start : start + CHANGE_CHUNK]
        s_a, s_b = qa @ k_c, qb @ k_c
        if e_c is not None:
            s_a, s_b = s_a + e_c, s_b + e_c
        total += (torch.exp(s_a - la) - torch.exp(s_b - lb)).square().sum(-1)
    return total.sum(-1).sqrt()


def _per_head(value, heads: int, dtype, device, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.ndim == 0:
        return t.expand(heads)
    if t.shape != (heads,):
        raise ValueError(f"{name} must be a number or a tensor with one entry per head ({heads}), "
                         f"got shape {tuple(t.shape)}")
    return t


def iterate(q, k, beta, masks: Masks, steps_max, steps_eps) -> torch.Tensor:
    """The state patterns after hflayers' update iterations (``q`` itself when there are none).

    ``steps_max``: int, None (until converged) or a tensor [heads]; ``steps_eps``: float or
    tensor [heads]. Differentiable (unrolled); converged heads keep their state. Eagerly the
    loop stops when every head has stopped; under ``torch.compile`` an int ``steps_max`` runs
    unrolled to the end.
    """
    if isinstance(steps_max, int) and steps_max <= 0:
        return q
    heads = q.shape[1]
    compiling = torch.compiler.is_compiling()
    if steps_max is None:
        cap, limit = UNBOUNDED_STEPS_CAP, torch.full((heads,), UNBOUNDED_STEPS_CAP, device=q.device)
    else:
        limit = _per_head(steps_max, heads, torch.int64, q.device, "update_steps_max")
        limit = torch.where(limit < 0, UNBOUNDED_STEPS_CAP, limit)  # hflayers: < 0 means unbounded
        cap = steps_max if isinstance(steps_max, int) else int(limit.max())
    eps = _per_head(steps_eps, heads, torch.float32, q.device, "update_steps_eps")
    r, lse = retrieve(q, k, None, beta, masks, return_lse=True)
    active = limit > 0
    for step in range(1, cap + 1):
        if not compiling and not bool(active.any()):
            break
        q_new = torch.where(active[None, :, None, None], r, q)
        r_new, lse_new = retrieve(q_new, k, None, beta, masks, return_lse=True)
        change = association_change(q_new, lse_new, q, lse, k, beta, masks).amax(dim=0)
        active = active & (step < limit) & (change > eps)
        q, r, lse = q_new, r_new, lse_new
    else:
        if steps_max is None and not compiling and bool(active.any()):
            warnings.warn(f"update_steps_max=None: stopped after {UNBOUNDED_STEPS_CAP} updates without "
                          f"convergence (update_steps_eps too small?)", stacklevel=3)
    return q


def associate(q, k, v, beta, masks: Masks, *, steps_max, steps_eps, dropout: float, training: bool):
    """Iterate, then ``out = xi v [batch, heads, L, pd]`` (fused unless dropout acts on ``xi``)."""
    q = iterate(q, k, beta, masks, steps_max, steps_eps)
    if dropout > 0.0 and training:  # dropout on the association matrix needs it explicitly
        xi = F.dropout(association_matrix(q, k, beta, masks), p=dropout, training=True)
        return xi @ (k if v is None else v).to(xi.dtype)
    return retrieve(q, k, v, beta, masks)
