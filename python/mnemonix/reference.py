"""Plain, readable torch versions of every op: the ground truth of the tests
and the baseline of the benchmarks. Never optimise this file: clarity is its
only job. Inputs are upcast to float32 (float64 where stated) and the math is
written as in the papers.
"""

from __future__ import annotations

import torch

from mnemonix._types import ENGRAM_LONGTERM, ENGRAM_SHORTTERM, ENGRAM_WORKING, LifespanResult

__all__ = ["hopfield_retrieve", "salience_log", "salience_rank_order", "salience_topk", "LifespanResult",
           "lifespan_step", "nearest_keys", "search_topk"]

# ----------------------------------------------------------------------------
# hopfield_retrieve
# ----------------------------------------------------------------------------

def hopfield_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None = None,
    *,
    beta: float | torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    association_mask: torch.Tensor | None = None,
    update_steps: int = 0,
    eps: float = 1e-4,
    return_lse: bool = False,
    return_argmax: bool = False,
):
    """Modern Hopfield retrieval, ``out = softmax(beta * Q K^T + bias) V`` (Ramsauer et al. 2020).

    queries [..., B, d]; keys [N, d] shared by every query, or [..., N, d] per sample (leading
    dimensions broadcast against the queries' leading dimensions); values like keys with dv
    columns (None: the keys). ``beta`` is a float or a tensor broadcastable to the queries'
    leading dimensions (one inverse temperature per head, say). mask [..., N] bool (True =
    pattern takes part), bias [..., N] additive, association_mask broadcastable to
    [..., B, N]: bool (True = takes part) or additive float. With ``update_steps > 0`` (needs
    values = keys) each query iterates ``q <- out`` up to ``update_steps`` more times, and
    stops on its own once ``max|out - q| < eps``. Returns out [..., B, dv] in the queries'
    dtype, plus the log-sum-exp [..., B] (float32; float64 for float64 inputs) of the last
    pass and the argmax pattern index [..., B] (int64) of the last pass when asked.
    Everything is differentiable by autograd (the association matrix is materialised).
    """
    work = torch.float64 if queries.dtype == torch.float64 else torch.float32
    lead = queries.shape[:-2]
    q = queries.to(work)
    k = keys.to(work)
    v = k if values is None else values.to(work)
    if isinstance(beta, torch.Tensor):
        beta = beta.to(work)[..., None, None]  # broadcast over [B, N]
    logit_shift = torch.zeros(k.shape[-2], dtype=work, device=q.device)
    if bias is not None:
        logit_shift = logit_shift + bias.to(work)
    if mask is not None:
        logit_shift = logit_shift.masked_fill(~mask, float("-inf"))
    logit_shift = logit_shift[..., None, :]  # [..., 1, N]: the same for every query of a sample
    if association_mask is not None:
        if association_mask.dtype == torch.bool:
            logit_shift = logit_shift.masked_fill(~association_mask, float("-inf"))
        else:
            logit_shift = logit_shift + association_mask.to(work)
    active = torch.ones(q.shape[:-1], dtype=torch.bool, device=q.device)
    for step in range(update_steps + 1):
        logits = beta * (q @ k.transpose(-1, -2)) + logit_shift
        out = torch.softmax(logits, dim=-1) @ v
        if step == 0:
            final_out, lse, arg = out, torch.logsumexp(logits, -1), logits.argmax(-1)
        else:
            final_out = torch.where(active[..., None], out, final_out)
            lse = torch.where(active, torch.logsumexp(logits, -1), lse)
            arg = torch.where(active, logits.argmax(-1), arg)
        if step == update_steps:
            break
        changed = (out - q).abs().amax(-1) >= eps
        active = active & changed
        if not bool(active.any()):
            break
        q = torch.where(active[..., None], out, q)
    full_lead = (*torch.broadcast_shapes(lead, final_out.shape[:-2]), queries.shape[-2])
    result = [final_out.expand(*full_lead, v.shape[-1]).to(queries.dtype)]
    if return_lse:
        result.append(lse.expand(full_lead))
    if return_argmax:
        result.append(arg.expand(full_lead))
    return result[0] if len(result) == 1 else tuple(result)


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------

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


def lifespan_step(
    lifespan: torch.Tensor,
    types: torch.Tensor,
    age: torch.Tensor | None,
    reminded_indices: torch.Tensor,
    delta: torch.Tensor,
    stm_capacity: int,
) -> LifespanResult:
    """One Memoria lifespan step, written step by step (Park & Bak 2023, 004_0d62d127fa438a19.txt).

    1. ``lifespan[b, i] += sum of delta[b, j] over j with reminded_indices[b, j] == i``
       (negative indices are ignored, duplicates accumulate);
    2. ``lifespan -= 1``; ``age += 1``;
    3. WORKING -> SHORTTERM;
    4. in each row with ``c`` short-term engrams, the ``c - stm_capacity`` first ones
       by position (the oldest: engrams are appended) become LONGTERM;
    5. ``keep = lifespan > 0`` and the rank of each kept engram.
    """
    batch, length = lifespan.shape
    added = torch.zeros(batch, length + 1, dtype=torch.float32)
    for b in range(batch):
        for j in range(reminded_indices.shape[1]):
            i = int(reminded_indices[b, j])
            if i >= 0:
                added[b, i] += float(delta[b, j])
    new_lifespan = (lifespan.float().cpu() + added[:, :length]) - 1.0
    new_types = types.cpu().clone()
    new_types[new_types == ENGRAM_WORKING] = ENGRAM_SHORTTERM
    for b in range(batch):
        stm_positions = (new_types[b] == ENGRAM_SHORTTERM).nonzero().flatten()
        exceeded = len(stm_positions) - stm_capacity
        if exceeded > 0:
            new_types[b, stm_positions[:exceeded]] = ENGRAM_LONGTERM
    new_age = None if age is None else (age.cpu().to(torch.int32) + 1)
    keep = new_lifespan > 0
    rank = torch.full((batch, length), -1, dtype=torch.int64)
    for b in range(batch):
        kept = keep[b].nonzero().flatten()
        rank[b, kept] = torch.arange(len(kept))
    num_kept = keep.sum(dim=1).to(torch.int64)
    dev = lifespan.device
    return LifespanResult(
        new_lifespan.to(dev), new_types.to(dev), None if new_age is None else new_age.to(dev),
        keep.to(dev), rank.to(dev), num_kept.to(dev),
    )


# ----------------------------------------------------------------------------
# nearest_keys
# ----------------------------------------------------------------------------

def nearest_keys(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    reduce: str = "mean",
    invalid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The k keys nearest to a group of queries, as memoria-pytorch ranks engrams.

    queries [B, W, H], keys [B, K, H] (computed in float32), 0 <= k <= K, invalid [B, K] bool.
    The weight of key j for query w is ``-sum_h (q[b, w, h] - keys[b, j, h])^2`` (Memoria's
    ``_calculate_memory_weight``); the score of key j is the mean (or sum) of its weights
    over the W queries (0 when W = 0); invalid keys score -inf. The result is
    ``torch.topk(score, k).indices`` [B, k], with -1 where an invalid key was picked.
    """
    q, key = queries.float(), keys.float()
    batch, width = q.shape[0], q.shape[1]
    weight = (q.unsqueeze(2) - key.unsqueeze(1)).pow(2).sum(dim=3).neg()  # [B, W, K]
    if width == 0:
        score = torch.zeros(batch, key.shape[1], device=key.device)
    elif reduce == "mean":
        score = weight.mean(dim=1)
    else:
        score = weight.sum(dim=1)
    if invalid is not None:
        score = score.masked_fill(invalid, float("-inf"))
    top = score.topk(k, dim=1).indices
    if invalid is not None:
        top = top.masked_fill(invalid.gather(1, top), -1)
    return top


# ----------------------------------------------------------------------------
# search_topk
# ----------------------------------------------------------------------------

def search_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    scales: torch.Tensor | None = None,
    metric: str = "ip",
    mask: torch.Tensor | None = None,
    tie_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k rows by inner product or cosine, written as the definition (float64).

    The stored row is ``keys[n]`` as float32, times ``scales[n]`` in float32 for int8 keys.
    Score: ``q . k_n`` (ip) or ``q . k_n / (||q|| ||k_n||)`` (cos; 0 when a norm is 0), with
    the float32 query, each product and sum in float64 over the row (one contiguous sum
    per row, so equal rows tie exactly). Masked-out rows are never selected. Order: score
    descending, then ``tie_ids`` ascending (default: the row), then the row.

    Returns ``(scores [B, k] float64, rows [B, k] int64)``; past the number of kept rows,
    ``-inf`` and -1.
    """
    stored = keys.float() if scales is None else keys.float() * scales.float()[:, None]
    K = stored.double()
    N = K.shape[0]
    keep = torch.ones(N, dtype=torch.bool) if mask is None else mask.cpu()
    ties = torch.arange(N) if tie_ids is None else tie_ids.cpu()
    B = queries.shape[0]
    out_scores = torch.full((B, k), float("-inf"), dtype=torch.float64)
    out_rows = torch.full((B, k), -1, dtype=torch.int64)
    for b in range(B):
        q = queries[b].float().double().cpu()[None, :].expand(N, -1)
        Kc = K.cpu()
        dot = (q * Kc).sum(-1)
        if metric == "cos":
            denom = torch.sqrt((q * q).sum(-1)) * torch.sqrt((Kc * Kc).sum(-1))
            dot = torch.where(denom > 0, dot / torch.where(denom > 0, denom, torch.ones_like(denom)),
                              torch.zeros_like(dot))
        rows = keep.nonzero().flatten()  # ascending row order
        # Stable sorts from the least significant key: tie id ascending, then score descending.
        rows = rows[torch.sort(ties[rows], stable=True).indices]
        rows = rows[torch.sort(dot[rows], descending=True, stable=True).indices]
        take = min(k, rows.numel())
        out_rows[b, :take] = rows[:take]
        out_scores[b, :take] = dot[rows[:take]]
    return out_scores.to(queries.device), out_rows.to(queries.device)

