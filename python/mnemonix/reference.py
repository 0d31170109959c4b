"""Plain, readable torch versions of every op: the ground truth of the tests
and the baseline of the benchmarks. Never optimise this file: clarity is its
only job. Inputs are upcast to float32 (float64 where stated) and the math is
written as in the papers.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------
# hopfield_retrieve
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------

# isort: split
import torch  # noqa: E402


def salience_log(
    r0: torch.Tensor, tau: torch.Tensor, alpha: float, now: float
) -> torch.Tensor:
    """``log s_m = log r0_m - alpha * (now - tau_m)`` in float64, shape [N].

    This is the logarithm of ``r0 * exp(-alpha * (now - tau))``; it never
    underflows, whatever the age of a memory.
    """
    return torch.log(r0.double()) - float(alpha) * (float(now) - tau.double())


def _cosine64(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """cos(q_b, c_m) in float64, [B, N]; 0 where the query or the key has norm 0.

    Dot products and norms are summed over the feature axis in one fixed
    order (a loop over d), so equal keys get bit-equal cosines and tie
    exactly (a BLAS matmul may round equal rows differently by position).
    """
    q = queries.double()
    c = keys.double()
    dot = torch.zeros(q.shape[0], c.shape[0], dtype=torch.float64)
    q_sq = torch.zeros(q.shape[0], dtype=torch.float64)
    c_sq = torch.zeros(c.shape[0], dtype=torch.float64)
    for j in range(q.shape[1]):
        dot += q[:, j, None] * c[None, :, j]
        q_sq += q[:, j] * q[:, j]
        c_sq += c[:, j] * c[:, j]
    denom = torch.sqrt(q_sq)[:, None] * torch.sqrt(c_sq)[None, :]
    cos = torch.where(denom > 0, dot / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(dot))
    return cos.clamp(-1.0, 1.0)


def salience_rank_order(cos: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """Order of every memory by the real number ``cos * exp(log_s)``, best first, per query.

    ``cos`` [B, N] float64, ``log_s`` [N] float64. Returns int64 [B, N].
    The product is never formed (it underflows): a memory with cos > 0 beats
    one with cos = 0, which beats one with cos < 0; among cos > 0 the larger
    ``log|cos| + log_s`` wins, among cos < 0 the smaller one wins (closer to
    zero from below). Equal values: the lower index first. Three stable sorts.
    """
    B, N = cos.shape
    sign = torch.sign(cos)
    log_magnitude = torch.log(cos.abs()) + log_s.unsqueeze(0)  # -inf where cos == 0
    within_sign = torch.where(sign > 0, log_magnitude, -log_magnitude)
    within_sign = torch.where(sign == 0, torch.zeros_like(within_sign), within_sign)
    order = torch.arange(N).expand(B, N)
    # Sort keys from least to most significant, each sort stable and descending
    # except the index (ascending), so that equal values keep the lower index first.
    perm = torch.sort(torch.gather(within_sign, 1, order), dim=1, descending=True, stable=True).indices
    order = torch.gather(order, 1, perm)
    perm = torch.sort(torch.gather(sign, 1, order), dim=1, descending=True, stable=True).indices
    return torch.gather(order, 1, perm)


def salience_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    payloads: torch.Tensor | None,
    *,
    k: int,
    log_salience: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k salience recall, written as the definition (float64 throughout).

    ``score[b, m] = cos(q_b, c_m) * s_m`` with ``s_m = exp(log_salience_m)``;
    the k best memories per query by score (ties: lower index), and
    ``recall_b = sum_i w_i z_i`` with ``w_i = s_i / sum_j s_j`` over the k.

    Returns ``(recall [B, dz] float32 | None, indices [B, k] int64,
    weights [B, k] float32, scores [B, k] float32)``. Scores are relative:
    ``cos * exp(log_s - shift)`` with ``shift`` the largest log-salience among
    valid memories (the common factor does not change ranks or weights).
    Slots beyond the number of valid memories hold index -1, weight 0 and
    score -inf.
    """
    B = queries.shape[0]
    N = keys.shape[0]
    log_s = log_salience.double()
    is_valid = torch.ones(N, dtype=torch.bool) if valid is None else valid.cpu().bool()
    n_valid = int(is_valid.sum())
    cos = _cosine64(queries.cpu(), keys.cpu())
    order = salience_rank_order(cos, log_s.cpu())
    # Keep only valid memories, in rank order.
    keep = is_valid[order]
    ranked_valid = order[keep].view(B, n_valid)
    take = min(k, n_valid)
    indices = torch.full((B, k), -1, dtype=torch.int64)
    indices[:, :take] = ranked_valid[:, :take]
    weights = torch.zeros(B, k, dtype=torch.float64)
    scores = torch.full((B, k), float("-inf"), dtype=torch.float64)
    recall = None
    if payloads is not None:
        recall = torch.zeros(B, payloads.shape[1], dtype=torch.float64)
    if take > 0:
        shift = log_s.cpu()[is_valid].max()
        chosen = indices[:, :take]
        chosen_log_s = log_s.cpu()[chosen]
        weights[:, :take] = torch.softmax(chosen_log_s, dim=1)
        scores[:, :take] = torch.gather(cos, 1, chosen) * torch.exp(chosen_log_s - shift)
        if payloads is not None:
            z = payloads.cpu().double()[chosen]  # [B, take, dz]
            recall = (weights[:, :take].unsqueeze(-1) * z).sum(dim=1)
    device = queries.device
    return (
        None if recall is None else recall.float().to(device),
        indices.to(device),
        weights.float().to(device),
        scores.float().to(device),
    )


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------
