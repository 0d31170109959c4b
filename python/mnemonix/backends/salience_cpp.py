"""The fused C++ backend of :func:`mnemonix.ops.salience_topk`: ``mnemonix._core.salience``.

Unlike the selection backends of :mod:`mnemonix.backends.salience` (a float32 candidate list
that the op re-ranks exactly), this one is the whole recall: every score in float64 as the
definition writes it, the exact top-k, the weights, scores and recall, and the value checks, in
one call with the GIL released (csrc/salience/salience.hpp): B x N x d float32 multiply-adds for
the screen, float64 scores for about k keys per query. Past B = 64 the op's speed policy feeds
the same screen from a GEMM instead (``gemm``). Each query is
computed alone in a fixed order: results are batch-invariant and independent of the threads.
"""

from __future__ import annotations

import torch

from mnemonix import calibration
from mnemonix.backends import core_engine, numpy_view

__all__ = ["core_salience", "ValueFault", "recall_cpp", "recall_gemm", "results_of", "FAULT_ARGUMENT"]

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


def _operands(queries, payloads, r0, tau, key_norms):
    """float32 queries and payloads, float64 r0, tau and norms (views when they already are)."""
    q = queries if queries.dtype == torch.float32 else queries.float()
    z = payloads if payloads is None or payloads.dtype == torch.float32 else payloads.float()
    r0, tau, norms = (t if t is None or t.dtype == torch.float64 else t.double() for t in (r0, tau, key_norms))
    return q, z, r0, tau, norms


def _view(t: torch.Tensor | None):
    return None if t is None else numpy_view(t)


def results_of(found):
    """The tensors of a C++ recall's ``(fault, recall, indices, weights, scores)``; a fault raises
    :class:`ValueFault`."""
    fault, recall, idx, w, scores = found
    if fault:
        raise ValueFault(fault)
    return (None if recall is None else torch.from_numpy(recall), torch.from_numpy(idx), torch.from_numpy(w),
            torch.from_numpy(scores))


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
    q, z, r0, tau, norms = _operands(queries, payloads, r0, tau, key_norms)
    return results_of(core_salience().recall(_view(q), _view(keys), _view(z), _view(log_s), _view(r0), _view(tau),
                                           alpha, _view(valid), _view(norms), k, check))


GEMM_CHUNK_SCORES = calibration.DEFAULTS["cpu"]["salience_topk"]["gemm_chunk_scores"]  # 384 k
"""Dot products per chunk of the ``gemm`` backend (1.5 MiB of float32 scores) by default: the
selection reads a chunk while it is still in cache (8 MiB chunks went to memory and back on the
EPYC: N = 1e4, d = 128, B = 1024 took 30-43 ms, now 25-29 ms; bench/NOTES.md, "Salience"). A
CPU profile may set another (``gemm_chunk_scores``, :func:`chunk_scores`)."""
GEMM_MIN_CHUNK = 128
"""Keys per chunk at least (a narrower GEMM loses more than the cache gains)."""
GEMM_CHUNK_NARROW_DIM = 128
"""Keys narrower than this get up to 4x the scores per chunk (128 / d), growing no further than
:data:`GEMM_CHUNK_MAX_SCORES` (or the base, if that is more): each chunk's fixed cost (a GEMM
call, a C++ call) then stays small against its d x B x chunk work (N = 1e6, d = 32, B = 256 in
651 chunks: 325 ms, in 163 chunks 284 ms; d = 128: no gain)."""
GEMM_CHUNK_MAX_SCORES = 4 * GEMM_CHUNK_SCORES
"""Dot products per chunk at most, narrow keys included (6 M at d = 32 took 1.1-2x as long as
1.5 M on the Xeon)."""


GEMM_WHOLE_CHUNKS = 4
"""Keys that would take at most this many chunks go in one: the float32 k-th so far rises chunk by
chunk, so a later chunk's keys are scored exactly against a lower one, and each chunk has its
fixed cost (N = 1e3, d = 128, B = 1024: 3 chunks 4.28 ms, one 3.36 ms; d = 768: 14.7 -> 12.5 ms;
larger chunks of larger stores gained nothing)."""


def chunk_scores() -> int:
    """Dot products per chunk of the ``gemm`` backend for keys of d >= 128: the CPU calibration's
    ``salience_topk.gemm_chunk_scores`` (:data:`GEMM_CHUNK_SCORES` unless a profile or file sets it)."""
    return calibration.thresholds("salience_topk", "cpu")["gemm_chunk_scores"]


def gemm_chunk(b: int, d: int, n: int, scores: int = GEMM_CHUNK_SCORES) -> int:
    """Keys per chunk of :func:`recall_gemm` for B queries over N keys of d features, ``scores``
    dot products per chunk for keys of d >= 128 (:func:`chunk_scores`)."""
    scores = min(max(scores, GEMM_CHUNK_MAX_SCORES), scores * min(4, max(1, GEMM_CHUNK_NARROW_DIM // max(d, 1))))
    chunk = max(GEMM_MIN_CHUNK, scores // max(b, 1))
    return n if n <= GEMM_WHOLE_CHUNKS * chunk else chunk


def recall_gemm(queries: torch.Tensor, keys: torch.Tensor, payloads: torch.Tensor | None, k: int, *,
                log_s: torch.Tensor | None = None, r0: torch.Tensor | None = None, tau: torch.Tensor | None = None,
                alpha: float | None = None, valid: torch.Tensor | None = None,
                key_norms: torch.Tensor | None = None, check: bool = True):
    """:func:`recall_cpp` with the float32 dot products from torch's GEMM, chunk by chunk of keys
    (memory O(B x chunk)): the same screen, exact scoring and outputs in C++
    (``_core.salience.Selection``). Faster than the portable C++ SIMD once B x N x d is large."""
    q, z, r0, tau, norms = _operands(queries, payloads, r0, tau, key_norms)
    selection = core_salience().Selection(_view(q), _view(keys), _view(log_s), _view(r0), _view(tau), alpha,
                                          _view(valid), _view(norms), k, check)
    n, b = keys.shape[0], q.shape[0]
    chunk = gemm_chunk(b, keys.shape[1], n, chunk_scores())
    buffer = torch.empty(b * min(chunk, n), dtype=torch.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        dots = torch.mm(q, keys[start:stop].T, out=buffer[: b * (stop - start)].view(b, stop - start))
        if not selection.scan(numpy_view(dots), start):
            break  # a failed check: finish() reports it
    return results_of(selection.finish(_view(z)))


def cpp_reasons(inputs) -> list[str]:
    """Capability of both C++ backends: the engine is built (float32 keys on the CPU: the Backend
    declarations)."""
    return [] if core_salience() is not None else ["mnemonix._core.salience is not built"]
