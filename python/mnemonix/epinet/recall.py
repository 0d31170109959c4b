"""Top-k salience recall over an episodic memory (via :func:`mnemonix.ops.salience_topk`)."""

from __future__ import annotations

import torch

from mnemonix import _checks, ops
from mnemonix.epinet.clock import real_number
from mnemonix.epinet.memory import EpisodicMemory
from mnemonix.ops.salience import SPEC as _SALIENCE_SPEC

__all__ = ["RecallEngine", "RECALL_BACKENDS"]

#: Backends of :func:`mnemonix.ops.salience_topk` a recall may force.
RECALL_BACKENDS = tuple(_SALIENCE_SPEC.names)


class RecallEngine:
    """Top-k salience recall over an :class:`EpisodicMemory` (via :func:`mnemonix.ops.salience_topk`).

    ``recall(z)``: the salience-weighted mean of the ``top_k`` stored latents
    whose ``cos(z, c_m) * s_m`` is largest; zeros when the memory is empty;
    all stored memories when fewer than ``top_k`` are stored.

    Parameters
    ----------
    top_k : int >= 1
    backend : {"torch", "triton"} or None
        Forwarded to :func:`mnemonix.ops.salience_topk` (None: its dispatch).
    """

    def __init__(self, top_k: int = 5, *, backend: str | None = None) -> None:
        self.top_k = _checks.positive_int("top_k", top_k)
        self.backend = _checks.choice("backend", backend, RECALL_BACKENDS, none_ok=True)

    def recall(
        self, queries: torch.Tensor, memory: EpisodicMemory, *, now: float | None = None, details: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Recall embeddings for a batch of queries.

        Parameters
        ----------
        queries : Tensor [B, key_dim], float32 / float16 / bfloat16
            Copied to the memory's device and dtype; the result comes back on the queries' device.
        memory : EpisodicMemory
        now : float, optional
            Accepted for compatibility and checked (a finite number); the result does not
            depend on it: every salience carries the same factor ``exp(-alpha * now)``,
            which cancels in the ranking and in the weights. The recall works relative
            to the latest store time, so huge absolute times do not drift the weights.
        details : bool
            Also return the indices, weights and scores.

        Returns
        -------
        recall : Tensor [B, payload_dim] float32
        indices : Tensor [B, k] int64 (with ``details``), k = min(top_k, len(memory))
        weights : Tensor [B, k] float32 (with ``details``)
        scores : Tensor [B, k] float32 (with ``details``), relative to the most salient memory
        """
        _checks.tensor("queries", queries, ndim=2)
        if not isinstance(memory, EpisodicMemory):
            raise TypeError(f"memory must be an EpisodicMemory, got {type(memory).__name__}")
        _checks.flag("details", details)
        if queries.shape[1] != memory.key_dim:
            raise ValueError(f"queries must have shape [B, {memory.key_dim}] (the memory's key_dim), "
                             f"got {tuple(queries.shape)}")
        if now is not None:
            real_number("now", now)
        B = queries.shape[0]
        n = len(memory)
        if n == 0:
            out = torch.zeros(B, memory.payload_dim, dtype=torch.float32, device=queries.device)
            if details:
                idx = torch.empty(B, 0, dtype=torch.int64, device=queries.device)
                empty = torch.empty(B, 0, dtype=torch.float32, device=queries.device)
                return out, idx, empty, empty
            return out
        k = min(self.top_k, n)
        q = queries.detach().to(memory.device, memory.dtype)
        recall, idx, w, scores = ops.salience_topk(
            q, memory.c, memory.z, k=k, log_salience=memory.relative_log_salience(), key_norms=memory.c_norms,
            backend=self.backend,
        )
        recall = recall.to(queries.device)
        return (recall, idx, w, scores) if details else recall
