"""The fused C++ backend of :func:`mnemonix.ops.salience_topk`: ``mnemonix._core.salience``.

Unlike the selection backends of :mod:`mnemonix.backends.salience` (a float32 candidate list
that the op re-ranks exactly), this one is the whole recall: every score in float64 as the
definition writes it, the exact top-k, the weights, scores and recall, and the value checks, in
one call with the GIL released (csrc/salience/salience.hpp). Exhaustive: B x N x d float64
multiply-adds, so the op's speed policy keeps it to small and mid-size calls. Each query is
computed alone in a fixed order: results are batch-invariant and independent of the threads.
"""

from __future__ import annotations

import torch

from mnemonix.backends import core_engine, numpy_view

__all__ = ["core_salience", "ValueFault", "recall_cpp", "FAULT_ARGUMENT"]

FAULT_ARGUMENT = {1: "log_salience", 2: "r0", 3: "tau", 4: "r0", 5: "key_norms", 6: "queries", 7: "keys",
                  8: "payloads"}
"""The argument each fault code of csrc/salience/salience.hpp's ``Fault`` is about."""


def core_salience():
    return core_engine("salience")


class ValueFault(Exception):
    """The C++ recall's first failed value check (``code``: salience.hpp's ``Fault``)."""

    def __init__(self, code: int) -> None:
        super().__init__(code, FAULT_ARGUMENT.get(code, "?"))
        self.code = code


def recall_cpp(queries: torch.Tensor, keys: torch.Tensor, payloads: torch.Tensor | None, k: int, *,
               log_s: torch.Tensor | None = None, r0: torch.Tensor | None = None, tau: torch.Tensor | None = None,
               alpha: float | None = None, valid: torch.Tensor | None = None,
               key_norms: torch.Tensor | None = None, check: bool = True):
    """``(recall [B, dz] | None, indices [B, k], weights [B, k], scores [B, k])`` of CPU tensors.

    ``log_s`` [N] (float64), or ``r0``, ``tau`` [N] and ``alpha`` (ages from the latest valid
    store time, as the op's torch path). Queries and payloads of another float dtype are
    converted to float32 (keys must be float32: the dispatcher's capability). ``key_norms`` are
    only checked. With ``check``, a failed value check raises :class:`ValueFault` (nothing is
    returned).
    """
    def view(t: torch.Tensor | None):
        return None if t is None else numpy_view(t)

    q = queries if queries.dtype == torch.float32 else queries.float()
    z = payloads if payloads is None or payloads.dtype == torch.float32 else payloads.float()
    r0, tau, norms = (t if t is None or t.dtype == torch.float64 else t.double() for t in (r0, tau, key_norms))
    fault, recall, idx, w, scores = core_salience().recall(
        view(q), view(keys), view(z), view(log_s), view(r0), view(tau), alpha, view(valid), view(norms), k, check)
    if fault:
        raise ValueFault(fault)
    return (None if recall is None else torch.from_numpy(recall), torch.from_numpy(idx), torch.from_numpy(w),
            torch.from_numpy(scores))


def cpp_reasons(inputs) -> list[str]:
    """Capability: the engine is built (float32 keys on the CPU: the Backend declaration)."""
    return [] if core_salience() is not None else ["mnemonix._core.salience is not built"]
