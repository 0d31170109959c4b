"""Plain, readable torch versions of every op: the ground truth of the tests
and the baseline of the benchmarks. Never optimise this file: clarity is its
only job. Inputs are upcast to float32 (float64 where stated) and the math is
written as in the papers.
"""

from __future__ import annotations

import torch

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
):
    """Modern Hopfield retrieval, ``out = softmax(beta * Q K^T + bias) V`` (Ramsauer et al. 2020).

    queries [..., B, d], keys [N, d], values [N, dv] (None: the keys), mask [N] bool
    (True = pattern takes part), bias [N]. With ``update_steps > 0`` (needs values = keys)
    each query iterates ``q <- out`` up to ``update_steps`` more times, and stops on its own
    once ``max|out - q| < eps``. Returns out [..., B, dv] in the queries' dtype, plus the
    log-sum-exp [..., B] (float32) of the last pass and the argmax pattern index [..., B]
    (int64) of the last pass when asked.
    """
    lead = queries.shape[:-1]
    q = queries.reshape(-1, queries.shape[-1]).float()
    k = keys.float()
    v = k if values is None else values.float()
    logit_shift = torch.zeros(k.shape[0])
    if bias is not None:
        logit_shift = logit_shift + bias.float()
    if mask is not None:
        logit_shift = logit_shift.masked_fill(~mask, float("-inf"))
    active = torch.ones(q.shape[0], dtype=torch.bool)
    for step in range(update_steps + 1):
        logits = beta * (q @ k.T) + logit_shift
        out = torch.softmax(logits, dim=-1) @ v
        if step == 0:
            final_out, lse, arg = out, torch.logsumexp(logits, -1), logits.argmax(-1)
        else:
            final_out = torch.where(active[:, None], out, final_out)
            lse = torch.where(active, torch.logsumexp(logits, -1), lse)
            arg = torch.where(active, logits.argmax(-1), arg)
        if step == update_steps:
            break
        changed = (out - q).abs().amax(-1) >= eps
        active = active & changed
        if not bool(active.any()):
            break
        q = torch.where(active[:, None], out, q)
    result = [final_out.reshape(*lead, v.shape[-1]).to(queries.dtype)]
    if return_lse:
        result.append(lse.reshape(lead))
    if return_argmax:
        result.append(arg.reshape(lead))
    return result[0] if len(result) == 1 else tuple(result)


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------
