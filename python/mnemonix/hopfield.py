"""Hopfield networks, batched, on CPU or GPU.

- :class:`ModernHopfield` -- continuous modern Hopfield network (Ramsauer et al. 2020,
  "Hopfield Networks is All You Need"): ``xi <- X^T softmax(beta X xi)`` through the fused
  :func:`mnemonix.ops.hopfield_retrieve`, energy
  ``E(xi) = -lse(beta, X xi)/beta + xi.xi/2 + log(N)/beta + M^2/2`` with ``M`` the largest
  stored-pattern norm.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from mnemonix import _checks, _io, ops

_MODERN_FORMAT = "mnemonix.ModernHopfield"
_MODERN_VERSION = 1


@dataclass(frozen=True)
class Retrieval:
    """Result of :meth:`ModernHopfield.retrieve`.

    states [..., B, d] (queries' dtype), nearest [..., B] (int64, index of the stored pattern
    with the largest similarity in the last update), energy [..., B] (float32, energy of the
    returned states; None when ``with_energy=False``).
    """

    states: torch.Tensor
    nearest: torch.Tensor
    energy: torch.Tensor | None


class ModernHopfield:
    """Continuous modern Hopfield network over stored patterns X [N, d].

    Parameters
    ----------
    patterns : Tensor [N, d] or None
        Patterns to store now (more can be added with :meth:`add`).
    beta : float
        Inverse temperature: high beta retrieves single stored patterns, low beta returns
        metastable mixtures.
    max_iter : int
        Updates per retrieval (1 = one-step retrieval, the usual case at high beta).
    eps : float
        A query stops iterating once its largest coordinate change is below ``eps``.
    backend : str or None
        Forwarded to :func:`mnemonix.ops.hopfield_retrieve`.
    """

    def __init__(
        self,
        patterns: torch.Tensor | None = None,
        *,
        beta: float = 8.0,
        max_iter: int = 1,
        eps: float = 1e-4,
        backend: str | None = None,
    ) -> None:
        self.beta = _checks.positive_float("beta", beta)
        self.max_iter = _checks.positive_int("max_iter", max_iter)
        self.eps = _checks.positive_float("eps", eps)
        self.backend = backend
        self._patterns: torch.Tensor | None = None
        if patterns is not None:
            self.store(patterns)

    # -- storage -------------------------------------------------------------------------
    @property
    def patterns(self) -> torch.Tensor:
        """Stored patterns [N, d]; raises if nothing is stored."""
        if self._patterns is None:
            raise ValueError("no patterns stored: call store(patterns) first")
        return self._patterns

    def __len__(self) -> int:
        return 0 if self._patterns is None else int(self._patterns.shape[0])

    @staticmethod
    def _check_patterns(patterns: torch.Tensor) -> torch.Tensor:
        _checks.tensor("patterns", patterns, ndim=2)
        if patterns.shape[0] == 0 or patterns.shape[1] == 0:
            raise ValueError(f"patterns must be a non-empty [N, d] tensor, got shape {tuple(patterns.shape)}")
        _checks.finite("patterns", patterns)
        return patterns

    def store(self, patterns: torch.Tensor) -> ModernHopfield:
        """Replace the stored patterns by ``patterns`` [N, d]."""
        self._patterns = self._check_patterns(patterns).detach().contiguous()
        return self

    def add(self, patterns: torch.Tensor) -> ModernHopfield:
        """Append ``patterns`` [n, d] (same d, dtype and device as the stored ones)."""
        patterns = self._check_patterns(patterns)
        if self._patterns is None:
            return self.store(patterns)
        old = self._patterns
        if patterns.shape[1] != old.shape[1]:
            raise ValueError(f"patterns must have d = {old.shape[1]}, got shape {tuple(patterns.shape)}")
        if patterns.dtype != old.dtype or patterns.device != old.device:
            raise TypeError(f"patterns must be {old.dtype} on {old.device}, got {patterns.dtype} on {patterns.device}")
        self._patterns = torch.cat([old, patterns.detach()]).contiguous()
        return self

    # -- retrieval -----------------------------------------------------------------------
    def retrieve(
        self,
        queries: torch.Tensor,
        *,
        max_iter: int | None = None,
        batch_size: int | None = None,
        with_energy: bool = True,
    ) -> Retrieval:
        """Retrieve from queries [..., B, d] (noise or partial cues), ``batch_size`` queries at a time.

        Runs up to ``max_iter`` updates per query (each stops once converged). The energy of
        the returned states costs one more fused pass; skip it with ``with_energy=False``.
        """
        steps = self.max_iter if max_iter is None else _checks.positive_int("max_iter", max_iter)
        x = self.patterns
        _checks.tensor("queries", queries, min_ndim=1)
        squeeze = queries.ndim == 1
        q = queries[None] if squeeze else queries
        flat = q.reshape(-1, q.shape[-1])
        step = flat.shape[0] if batch_size is None else _checks.positive_int("batch_size", batch_size)
        outs, nearest = [], []
        for start in range(0, max(flat.shape[0], 1), step):
            out, arg = ops.hopfield_retrieve(
                flat[start : start + step], x, beta=self.beta, update_steps=steps - 1, eps=self.eps,
                return_argmax=True, backend=self.backend,
            )
            outs.append(out)
            nearest.append(arg)
        states = torch.cat(outs).reshape(q.shape[:-1] + (x.shape[1],))
        arg = torch.cat(nearest).reshape(q.shape[:-1])
        energy = self.energy(states) if with_energy else None
        if squeeze:
            states, arg = states[0], arg[0]
            energy = None if energy is None else energy[0]
        return Retrieval(states=states, nearest=arg, energy=energy)

    def _energy_from_lse(self, lse: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        x = self.patterns.float()
        big_m = float(x.norm(dim=1).max())
        sq = 0.5 * (states.float() ** 2).sum(-1)
        return -lse / self.beta + sq + math.log(x.shape[0]) / self.beta + 0.5 * big_m**2

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        """Energy ``E(xi)`` of states [..., B, d] -> [..., B] (float32)."""
        x = self.patterns
        _checks.tensor("states", states, min_ndim=1)
        if states.shape[-1] != x.shape[1]:
            raise ValueError(f"states must have last dimension d = {x.shape[1]}, got {tuple(states.shape)}")
        _, lse = ops.hopfield_retrieve(states.to(x.dtype).reshape(-1, x.shape[1]), x, beta=self.beta,
                                       return_lse=True, backend=self.backend)
        return self._energy_from_lse(lse.reshape(states.shape[:-1]), states)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the network (patterns as float32 plus their dtype, hyper-parameters) atomically."""
        x = self.patterns
        _io.save_arrays(
            path, {"patterns": x.detach().float().cpu().numpy()},
            format=_MODERN_FORMAT, version=_MODERN_VERSION,
            meta={"beta": self.beta, "max_iter": self.max_iter, "eps": self.eps,
                  "dtype": str(x.dtype).removeprefix("torch.")},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> ModernHopfield:
        """Read a network written by :meth:`save` (raises ``FormatError`` on a bad file)."""
        arrays, meta, _ = _io.load_arrays(path, format=_MODERN_FORMAT, max_version=_MODERN_VERSION)
        dtype = getattr(torch, str(meta.get("dtype", "float32")))
        pats = torch.from_numpy(np.ascontiguousarray(arrays["patterns"])).to(device=device, dtype=dtype)
        return cls(pats, beta=meta["beta"], max_iter=meta["max_iter"], eps=meta["eps"])
