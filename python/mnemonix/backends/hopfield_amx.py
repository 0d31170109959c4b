"""The ``amx`` backend of :func:`mnemonix.ops.hopfield_retrieve`: bfloat16 on Intel's AMX tiles.

``mnemonix._core.retrieval_amx`` (csrc/retrieval/amx.cpp) computes ``softmax(beta Q K^T) V``
for bfloat16 operands with AMX's bfloat16 dot products: the logits and every sum in float32
(a product of two bfloat16 values is exact in float32), the weights split into two bfloat16
terms (``P = P_hi + P_lo``) for the weighted sum, out rounded once. Its accuracy is the C++
kernel's, where a 16-bit GEMM (torch's bfloat16 matmul) rounds its logits to bfloat16.

CPU only, bfloat16 only, forward only; no bias, association mask or argmax. Each query's bits do
not depend on the batch (the keys split over the threads by N alone), but the policy takes it at
some batches only, so it refuses ``batch_invariant`` calls. Runs where the CPU has AMX-BF16 tiles and Linux
grants the tile state (:func:`available`); elsewhere its reasons say so. Like the AMX unit itself,
it reads bfloat16 subnormals as zero (their products are below float32's normal range anyway).
"""

from __future__ import annotations

import functools

import torch

from mnemonix._dispatch import Backend
from mnemonix.backends import core_engine
from mnemonix.backends.hopfield_grad import lift, pick


@functools.cache
def available() -> bool:
    """True when the compiled kernel is built and this CPU and OS run AMX bfloat16 tiles."""
    engine = core_engine("retrieval_amx")
    return engine is not None and bool(engine.available())


def retrieve_at(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, beta: float, out: torch.Tensor,
                lse: torch.Tensor | None, threads: int = 0) -> None:
    """One group: contiguous bfloat16 ``q [B, d]``, ``k [N, d]``, ``v [N, dv]`` (None: the keys)
    into ``out [B, dv]`` (bfloat16 or float32) and ``lse [B]`` float32 (None: not wanted), on
    ``threads`` threads (0: OpenMP's default). A NaN or infinite logit makes its query's out and
    lse NaN (the caller checks them)."""
    (b, d), n = q.shape, k.shape[0]
    dv = d if v is None else v.shape[1]
    core_engine("retrieval_amx").retrieve_at(q.data_ptr(), b, d, k.data_ptr(), n, 0 if v is None else v.data_ptr(),
                                             dv, beta, out.data_ptr(), 0 if lse is None else lse.data_ptr(),
                                             out.dtype == torch.float32, threads)


def run_amx(queries, keys, values, *, beta, logit_bias, want_argmax, assoc=None, **_):
    q4, k4, v4, _bias = lift(queries, keys, values, logit_bias)
    g1, g2, b, _d = q4.shape
    dv = k4.shape[-1] if v4 is None else v4.shape[-1]
    out = torch.empty(g1, g2, b, dv, dtype=torch.float32)
    lse = torch.empty(g1, g2, b, dtype=torch.float32)
    for i in range(g1):  # one call per group (shared keys: the same rows, read by each)
        for j in range(g2):
            q, k = q4[i, j].detach().contiguous(), pick(k4, i, j).detach().contiguous()
            v = None if v4 is None else pick(v4, i, j).detach().contiguous()
            retrieve_at(q, k, v, float(beta), out[i, j], lse[i, j])
    return out, lse, None


def _amx_reasons(inputs) -> list[str]:
    reasons = []
    if core_engine("retrieval_amx") is None:
        reasons.append("mnemonix._core.retrieval_amx is not built")
    elif not available():
        reasons.append("this CPU (or OS) has no AMX bfloat16 tiles")
    if getattr(inputs, "batch_invariant", False):
        reasons.append("not batch-invariant as the policy uses it (each query's bits do not depend on B, but it "
                       "runs at some batches only)")
    if inputs.want_argmax:
        reasons.append("the AMX kernel does not return the argmax")
    if inputs.logit_bias is not None or getattr(inputs, "association_bias", None) is not None:
        reasons.append("the AMX kernel takes no bias or mask")
    values = inputs.values if inputs.values is not None else inputs.keys
    if inputs.queries.numel() == 0 or inputs.keys.shape[-2] == 0 or values.shape[-1] == 0:
        reasons.append("the AMX kernel needs at least one query, one key and one value column")
    return reasons


AMX = Backend("amx", run_amx, devices=frozenset({"cpu"}), dtypes=frozenset({torch.bfloat16}),
              extra_reasons=_amx_reasons)
