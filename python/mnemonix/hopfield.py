"""Hopfield networks, batched, on CPU or GPU.

- :class:`ModernHopfield` -- continuous modern Hopfield network (Ramsauer et al. 2020,
  "Hopfield Networks is All You Need"): ``xi <- X^T softmax(beta X xi)`` through the fused
  :func:`mnemonix.ops.hopfield_retrieve`, energy
  ``E(xi) = -lse(beta, X xi)/beta + xi.xi/2 + log(N)/beta + M^2/2`` with ``M`` the largest
  stored-pattern norm.
- :class:`HopfieldRetrieval` -- a ``torch.nn.Module`` wrapping the fused retrieval for use
  inside models (gradients through the streaming torch backend).
- :class:`ClassicalHopfield` (Hopfield 1982) and :class:`DenseHopfield` (dense associative
  memory), with their result :class:`BinaryRetrieval`: binary +-1 networks, defined in
  :mod:`mnemonix.binary_hopfield` and re-exported here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from mnemonix import _checks, _io, _loadcheck, ops
from mnemonix._io import FormatError
from mnemonix._pattern_store import _PatternStore
from mnemonix.binary_hopfield import BinaryRetrieval, ClassicalHopfield, DenseHopfield
from mnemonix.ops.hopfield import SPEC as _RETRIEVE_SPEC

__all__ = ["BinaryRetrieval", "ClassicalHopfield", "DenseHopfield", "HopfieldRetrieval", "ModernHopfield",
           "Retrieval"]

_MODERN_FORMAT = "mnemonix.ModernHopfield"
_MODERN_VERSION = 1
_FLOAT32_MAX = _checks.FLOAT32_MAX
_MAX_NORM = math.sqrt(_FLOAT32_MAX)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """Squared row norms [N] in float32 (inf where a row's squared norm overflows float32)."""
    return x.float().square().sum(1)


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


class ModernHopfield(_PatternStore):
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
        self.beta = _checks.positive_float("beta", beta, maximum=_checks.FLOAT32_MAX)  # it scales float32 logits
        self.max_iter = _checks.positive_int("max_iter", max_iter)
        self.eps = _checks.positive_float("eps", eps)
        self.backend = _checks.choice("backend", backend, _RETRIEVE_SPEC.names, none_ok=True)
        self._patterns: torch.Tensor | None = None
        if patterns is not None:
            self.store(patterns)

    # -- storage -------------------------------------------------------------------------
    @staticmethod
    def _check_patterns(patterns: torch.Tensor) -> torch.Tensor:
        _checks.tensor("patterns", patterns, ndim=2)
        if patterns.shape[0] == 0 or patterns.shape[1] == 0:
            raise ValueError(f"patterns must be a non-empty [N, d] tensor, got shape {tuple(patterns.shape)}")
        # finite squared norms prove finite patterns, and the energy's |x|^2 / 2 term needs them
        if not _checks.all_finite(_squared_norms(patterns)):
            _checks.finite("patterns", patterns)
            raise ValueError(f"patterns has a row whose norm exceeds {_MAX_NORM:.2g}: its squared norm overflows "
                             "float32 (energies and iterated retrieval could not be computed)")
        return patterns

    def store(self, patterns: torch.Tensor) -> ModernHopfield:
        """Replace the stored patterns by a copy of ``patterns`` [N, d].

        The network owns its memory: later changes to the caller's tensor do not reach it.
        """
        self._patterns = self._check_patterns(patterns).detach().clone(memory_format=torch.contiguous_format)
        return self

    def add(self, patterns: torch.Tensor) -> ModernHopfield:
        """Append ``patterns`` [n, d] (same d, dtype and device as the stored ones)."""
        patterns = self._check_patterns(patterns)
        if self._patterns is None:
            return self.store(patterns)
        old = self._patterns
        if patterns.shape[1] != old.shape[1]:
            raise ValueError(f"patterns must have d = {old.shape[1]}, got shape {tuple(patterns.shape)}")
        if patterns.dtype != old.dtype:
            raise TypeError(f"patterns must have the stored patterns' dtype {old.dtype}, got {patterns.dtype}")
        if patterns.device != old.device:
            raise ValueError(f"patterns must be on the stored patterns' device {old.device}, got {patterns.device}")
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
        _checks.flag("with_energy", with_energy)
        x = self.patterns
        _checks.tensor("queries", queries, min_ndim=1)
        squeeze = queries.ndim == 1
        q = queries[None] if squeeze else queries
        if q.shape[-1] != x.shape[1]:
            raise ValueError(f"queries must have last dimension d = {x.shape[1]}, got shape {tuple(queries.shape)}")
        if q.dtype != x.dtype:
            raise TypeError(f"queries must have the stored patterns' dtype {x.dtype}, got {q.dtype}")
        if q.device != x.device:
            raise ValueError(f"queries must be on the stored patterns' device {x.device}, got {q.device}")
        flat = q.reshape(-1, q.shape[-1])
        step = flat.shape[0] if batch_size is None else _checks.positive_int("batch_size", batch_size)
        if flat.shape[0] == 0:  # no queries: empty results of the right shapes
            states = q.new_empty(q.shape[:-1] + (x.shape[1],))
            empty = torch.zeros(q.shape[:-1], dtype=torch.int64, device=q.device)
            energy = torch.zeros(q.shape[:-1], device=q.device) if with_energy else None
            return Retrieval(states=states, nearest=empty, energy=energy)
        outs, nearest = [], []
        for start in range(0, flat.shape[0], step):
            out, arg = ops.hopfield_retrieve(
                flat[start : start + step], x, beta=self.beta, update_steps=steps - 1, eps=self.eps,
                return_argmax=True, backend=self.backend,
            )
            outs.append(out)
            nearest.append(arg)
        states = torch.cat(outs).reshape(q.shape[:-1] + (x.shape[1],))
        arg = torch.cat(nearest).reshape(q.shape[:-1])
        energy = self._energy(states) if with_energy else None  # the op's outputs are finite: no re-check
        if squeeze:
            states, arg = states[0], arg[0]
            energy = None if energy is None else energy[0]
        return Retrieval(states=states, nearest=arg, energy=energy)

    def _energy_from_lse(self, lse: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        x = self.patterns.float()
        big_m = x.norm(dim=1).max()  # stays on the device: no host sync
        sq = 0.5 * (states.float() ** 2).sum(-1)
        return -lse / self.beta + sq + math.log(x.shape[0]) / self.beta + 0.5 * big_m**2

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        """Energy ``E(xi)`` of states [..., B, d] -> [..., B] (float32)."""
        x = self.patterns
        _checks.tensor("states", states, min_ndim=1)
        if states.shape[-1] != x.shape[1]:
            raise ValueError(f"states must have last dimension d = {x.shape[1]}, got {tuple(states.shape)}")
        _checks.finite("states", states)
        if states.device != x.device:
            raise ValueError(f"states must be on the stored patterns' device {x.device}, got {states.device}")
        return self._energy(states)

    def _energy(self, states: torch.Tensor) -> torch.Tensor:
        """:meth:`energy` of checked states (finite, right shape and device)."""
        x = self.patterns
        if states.numel() == 0:
            return torch.zeros(states.shape[:-1], device=states.device)
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
                  "dtype": str(x.dtype).removeprefix("torch."), "device": x.device.type},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> ModernHopfield:
        """Read a network written by :meth:`save` (raises ``FormatError`` on a bad file).

        ``device=None`` puts it back on the device type it was saved from when available here
        (else the CPU). Every field is validated before anything is built.
        """
        device = _loadcheck.device(device, None) if device is not None else None  # before reading the file
        arrays, meta, _ = _io.load_arrays(path, format=_MODERN_FORMAT, max_version=_MODERN_VERSION)
        pats = _loadcheck.array(path, arrays, "patterns", ndim=2, dtypes=("float32",), finite=True)
        if 0 in pats.shape:
            raise FormatError(f"{str(path)!r}: field 'patterns' must be non-empty, got shape {pats.shape}")
        if not _checks.all_finite(_squared_norms(torch.from_numpy(pats))):
            raise FormatError(f"{str(path)!r}: field 'patterns' has a row whose norm exceeds {_MAX_NORM:.2g}")
        positive = {"check": lambda v: v > 0, "expected": "> 0"}
        beta = _loadcheck.meta(path, meta, "beta", "float", check=lambda v: 0 < v <= _FLOAT32_MAX,
                               expected=f"in (0, {_FLOAT32_MAX:.4g}]")
        max_iter = _loadcheck.meta(path, meta, "max_iter", "int", **positive)
        eps = _loadcheck.meta(path, meta, "eps", "float", **positive)
        dtype = getattr(torch, _loadcheck.choice(path, meta, "dtype", ("float32", "float16", "bfloat16"),
                                                 default="float32"))
        dev = _loadcheck.device(device, _loadcheck.choice(path, meta, "device", ("cpu", "cuda"), default="cpu"))
        net = cls(beta=beta, max_iter=max_iter, eps=eps)
        net._patterns = torch.from_numpy(np.ascontiguousarray(pats)).to(device=dev, dtype=dtype)  # checked above
        return net


# ----------------------------------------------------------------------------------------
# layer
# ----------------------------------------------------------------------------------------


class HopfieldRetrieval(torch.nn.Module):
    """Modern Hopfield retrieval as a layer: ``softmax(beta * Q K^T + bias) V``.

    A thin layer over :func:`mnemonix.ops.hopfield_retrieve` (fused forward and backward on
    every backend that can run the inputs). For hflayers-style layers with projections, heads
    and pooling see :mod:`mnemonix.nn`.

    Parameters
    ----------
    beta : float
        Inverse temperature (initial value when ``learn_beta``).
    update_steps : int
        Extra iterations ``q <- out`` (needs ``values=None``; not with ``learn_beta``).
    eps : float
        Convergence threshold of the iterations.
    learn_beta : bool
        Learn ``log(beta)`` as a parameter; the op returns d(beta).
    backend : {None, "triton", "cpp", "amx", "sdpa", "gemm", "torch", "reference"}
        Forwarded to :func:`mnemonix.ops.hopfield_retrieve` (checked here, at construction).
    """

    def __init__(self, beta: float = 1.0, update_steps: int = 0, *, eps: float = 1e-4,
                 learn_beta: bool = False, backend: str | None = None) -> None:
        beta = _checks.positive_float("beta", beta, maximum=_FLOAT32_MAX)  # it scales float32 logits
        update_steps = _checks.nonneg_int("update_steps", update_steps)
        eps = _checks.positive_float("eps", eps)
        learn_beta = _checks.flag("learn_beta", learn_beta)
        backend = _checks.choice("backend", backend, _RETRIEVE_SPEC.names, none_ok=True)
        if learn_beta and update_steps:
            raise ValueError("learn_beta=True needs update_steps=0")
        super().__init__()
        self.update_steps = update_steps
        self.eps = eps
        self.backend = backend
        self.learn_beta = learn_beta
        if learn_beta:
            self.log_beta = torch.nn.Parameter(torch.tensor(math.log(beta)))
        else:
            self.register_buffer("log_beta", torch.tensor(math.log(beta)))

    @property
    def beta(self) -> float:
        """The current inverse temperature ``exp(log_beta)``."""
        return float(self.log_beta.detach().exp())

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                association_mask: torch.Tensor | None = None) -> torch.Tensor:
        """queries [..., B, d], keys [N, d] or [..., N, d], values like keys or None -> [..., B, dv]."""
        if self.learn_beta:
            return ops.hopfield_retrieve(queries, keys, values, beta=self.log_beta.exp(), mask=mask, bias=bias,
                                         association_mask=association_mask, backend=self.backend)
        return ops.hopfield_retrieve(queries, keys, values, beta=self.beta, mask=mask, bias=bias,
                                     association_mask=association_mask, update_steps=self.update_steps,
                                     eps=self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4g}, update_steps={self.update_steps}, learn_beta={self.learn_beta}"
