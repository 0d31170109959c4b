"""Binary Hopfield networks on +-1 neurons, batched, on CPU or GPU.

- :class:`ClassicalHopfield` -- Hopfield 1982: Hebbian weights ``W = (1/n) sum_mu xi_mu xi_mu^T``
  over +-1 patterns, zero diagonal; synchronous updates ``sigma <- sign(W sigma)``.
- :class:`DenseHopfield` -- dense associative memory (Krotov & Hopfield 2016, polynomial
  ``F(x) = x^degree``; Demircigil et al. 2017, exponential ``F(x) = exp(x)``), energy
  ``E(sigma) = -sum_mu F(xi_mu . sigma)``; a bit flips when that lowers the energy. The energy
  change of flipping bit j comes from the current overlaps ``o_mu = xi_mu . sigma``, for all
  bits at once, instead of recomputing the energy per bit.

The continuous networks live in :mod:`mnemonix.hopfield`, which re-exports everything here
(``from mnemonix.hopfield import ClassicalHopfield`` keeps working, and so do pickles that
name that path). Saved files name their format, not a module, so they load from either.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from mnemonix import _checks, _io, _loadcheck
from mnemonix._io import FormatError
from mnemonix._pattern_store import _PatternStore

__all__ = ["BinaryRetrieval", "ClassicalHopfield", "DenseHopfield"]

@dataclass(frozen=True)
class BinaryRetrieval:
    """Result of :meth:`ClassicalHopfield.retrieve` / :meth:`DenseHopfield.retrieve`.

    states [..., B, n] float32 in {-1, +1}; steps [..., B] int64 (updates or sweeps that
    changed something); converged [..., B] bool (a fixed point was reached within
    ``max_iter``); energy [..., B] float64 (energy of the returned states).
    """

    states: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    energy: torch.Tensor


def _bipolar(name: str, value: object, n: int | None = None, *, min_ndim: int = 2) -> torch.Tensor:
    """Check a tensor of +-1 values (any real dtype); return it as float32."""
    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int16,
              torch.int32, torch.int64)
    t = _checks.tensor(name, value, min_ndim=min_ndim, dtypes=dtypes)
    if t.shape[-1] == 0 or t.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    if n is not None and t.shape[-1] != n:
        raise ValueError(f"{name} must have last dimension n = {n}, got shape {tuple(t.shape)}")
    x = t.float()
    if not bool(((x == 1) | (x == -1)).all()):
        raise ValueError(f"{name} must hold only -1 and +1 values (binarise with torch.where(x > 0, 1, -1))")
    return x


def _sign_keep(field: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """sign(field), keeping the current bit where the field is exactly 0."""
    return torch.where(field > 0, 1.0, torch.where(field < 0, -1.0, state))


_CLASSICAL_FORMAT = "mnemonix.ClassicalHopfield"
_DENSE_FORMAT = "mnemonix.DenseHopfield"
_BINARY_VERSION = 1


class ClassicalHopfield:
    """Classical Hopfield network (Hopfield 1982) on n binary +-1 neurons.

    Storing patterns X [P, n] sets ``W = (1/n) X^T X`` with a zero diagonal (Hebbian rule;
    :meth:`add` accumulates more patterns). Retrieval runs synchronous updates
    ``sigma <- sign(sigma W)`` (a zero field keeps the bit) for all queries at once until a
    query stops changing or ``max_iter`` updates. Synchronous updates may end in a 2-cycle
    instead of a fixed point (then ``converged`` is False). Capacity ~0.14 n random patterns.

    The Hebbian sum ``X^T X`` is kept unscaled: its integer entries are exact in float32 (up
    to 2^24 patterns), so a field that is exactly 0 stays 0 and sign decisions do not depend
    on the order of the float sums; :attr:`weights` applies the 1/n.
    """

    def __init__(self, patterns: torch.Tensor | None = None, *, max_iter: int = 20) -> None:
        self.max_iter = _checks.positive_int("max_iter", max_iter)
        self._hebbian_sum: torch.Tensor | None = None
        self.num_patterns = 0
        if patterns is not None:
            self.store(patterns)

    @property
    def weights(self) -> torch.Tensor:
        """Weight matrix W [n, n] (float32, symmetric, zero diagonal)."""
        return self._sum() / self._sum().shape[0]

    def _sum(self) -> torch.Tensor:
        if self._hebbian_sum is None:
            raise ValueError("no patterns stored: call store(patterns) first")
        return self._hebbian_sum

    @staticmethod
    def _hebbian(x: torch.Tensor) -> torch.Tensor:
        w = x.T @ x
        w.fill_diagonal_(0.0)
        return w

    def store(self, patterns: torch.Tensor) -> ClassicalHopfield:
        """Replace the memory by patterns [P, n] of +-1 values."""
        _checks.tensor("patterns", patterns, ndim=2, dtypes=None)
        x = _bipolar("patterns", patterns)
        self._hebbian_sum = self._hebbian(x)
        self.num_patterns = int(x.shape[0])
        return self

    def add(self, patterns: torch.Tensor) -> ClassicalHopfield:
        """Add patterns [P, n] to the Hebbian sum (same n and device)."""
        if self._hebbian_sum is None:
            return self.store(patterns)
        w = self._hebbian_sum
        _checks.tensor("patterns", patterns, ndim=2, dtypes=None)
        x = _bipolar("patterns", patterns, w.shape[0])
        if x.device != w.device:
            raise ValueError(f"patterns must be on {w.device}, got {x.device}")
        self._hebbian_sum = w + self._hebbian(x)
        self.num_patterns += int(x.shape[0])
        return self

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        """``E(sigma) = -1/2 sigma W sigma`` of states [..., n] -> [...] (float64)."""
        w = self.weights
        s = _bipolar("states", states, w.shape[0], min_ndim=1).to(w.device)
        return -0.5 * ((s @ w) * s).sum(-1).double()

    def retrieve(self, cues: torch.Tensor, *, max_iter: int | None = None) -> BinaryRetrieval:
        """Run synchronous updates from cues [..., B, n] (+-1) until fixed or ``max_iter``."""
        w = self._sum()  # sign(sigma W) = sign(sigma X^T X): the 1/n does not change signs
        steps_max = self.max_iter if max_iter is None else _checks.positive_int("max_iter", max_iter)
        s0 = _bipolar("cues", cues, w.shape[0], min_ndim=1).to(w.device)
        lead = s0.shape[:-1]
        s = s0.reshape(-1, w.shape[0])
        steps = torch.zeros(s.shape[0], dtype=torch.int64, device=s.device)
        converged = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
        for _ in range(steps_max):
            new = _sign_keep(s @ w, s)
            changed = (new != s).any(-1)
            converged |= ~changed
            steps += changed.long()
            s = torch.where(converged[:, None], s, new)
            if bool(converged.all()):
                break
        else:  # a last check: is the final state a fixed point?
            converged = (_sign_keep(s @ w, s) == s).all(-1)
        return BinaryRetrieval(states=s.reshape(s0.shape), steps=steps.reshape(lead),
                               converged=converged.reshape(lead),  # s is +-1: the energy without a re-check
                               energy=(-0.5 * ((s @ self.weights) * s).sum(-1).double()).reshape(lead))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the Hebbian sum and settings atomically (``mnemonix._io``)."""
        _io.save_arrays(path, {"hebbian_sum": self._sum().detach().float().cpu().numpy()},
                        format=_CLASSICAL_FORMAT, version=_BINARY_VERSION,
                        meta={"max_iter": self.max_iter, "num_patterns": self.num_patterns,
                              "device": self._sum().device.type})

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> ClassicalHopfield:
        """Read a network written by :meth:`save` (raises ``FormatError`` on a bad file).

        The Hebbian sum must be square, symmetric, integer-valued with a zero diagonal and
        entries bounded by the pattern count. ``device=None``: as
        :meth:`mnemonix.hopfield.ModernHopfield.load`.
        """
        device = _loadcheck.device(device, None) if device is not None else None  # before reading the file
        arrays, meta, _ = _io.load_arrays(path, format=_CLASSICAL_FORMAT, max_version=_BINARY_VERSION)
        w = _loadcheck.array(path, arrays, "hebbian_sum", ndim=2, dtypes=("float32",), finite=True)
        max_iter = _loadcheck.meta(path, meta, "max_iter", "int", check=lambda v: v > 0, expected="> 0")
        count = _loadcheck.meta(path, meta, "num_patterns", "int", check=lambda v: v >= 0, expected=">= 0")
        square = w.shape[0] == w.shape[1] and w.shape[0] > 0
        if not (square and np.array_equal(w, w.T) and not np.diagonal(w).any() and np.array_equal(w, np.round(w))
                and float(np.abs(w).max(initial=0.0)) <= count):
            raise FormatError(f"{str(path)!r}: field 'hebbian_sum' is not the Hebbian sum of {count} +-1 patterns "
                              "(square, symmetric, integer, zero diagonal, |entries| <= num_patterns)")
        net = cls(max_iter=max_iter)
        dev = _loadcheck.device(device, _loadcheck.choice(path, meta, "device", ("cpu", "cuda"), default="cpu"))
        net._hebbian_sum = torch.from_numpy(np.ascontiguousarray(w)).to(dev)
        net.num_patterns = count
        return net


class DenseHopfield(_PatternStore):
    """Dense associative memory on n binary +-1 neurons with energy ``E = -sum_mu F(xi_mu . sigma)``.

    Parameters
    ----------
    patterns : Tensor [P, n] of +-1 or None
        Stored patterns.
    interaction : {"polynomial", "exponential"}
        ``F(x) = x**degree`` (Krotov & Hopfield 2016) or ``F(x) = exp(x)`` (Demircigil et al.
        2017, capacity ~2^(n/2)).
    degree : int
        Polynomial degree (2 gives the classical energy up to a constant).
    update : {"sequential", "synchronous"}
        ``"sequential"``: asynchronous updates in a fixed sweep j = 0..n-1, exactly as a per-bit
        loop would do them (each flip changes the overlaps the next bit sees), vectorised over
        the batch: each bit costs O(B P) from the overlaps, not a full energy recomputation.
        Every flip lowers the energy, so a sweep without flips is a fixed point.
        ``"synchronous"``: the energy change of every bit, from the same overlaps, in one
        matrix product; all bits that would lower the energy flip at once (faster, may
        oscillate).
    max_iter : int
        Sweeps (sequential) or updates (synchronous).

    Energies are computed in float64 with a per-state scale factored out -- the largest
    overlap for the exponential (``F(o) = e^S e^(o - S)``), the largest ``|o| + 2`` for the
    polynomial (``F(o) = S^degree (o / S)^degree``) -- so flip decisions never overflow,
    whatever the degree or n. The absolute ``energy`` can exceed float64 (exponential past
    overlaps of ~709, polynomial past ``n^degree ~ 1e308``): it is then returned as ``-inf``
    with a warning; the dynamics are unaffected.
    """

    # relative margin below which an energy change counts as a tie (no flip)
    TIE_TOLERANCE = 1e-12

    def __init__(
        self,
        patterns: torch.Tensor | None = None,
        *,
        interaction: str = "exponential",
        degree: int = 3,
        update: str = "sequential",
        max_iter: int = 10,
    ) -> None:
        self.interaction = _checks.choice("interaction", interaction, ("polynomial", "exponential"))
        self.degree = _checks.positive_int("degree", degree)
        self.update = _checks.choice("update", update, ("sequential", "synchronous"))
        self.max_iter = _checks.positive_int("max_iter", max_iter)
        self._patterns: torch.Tensor | None = None
        if patterns is not None:
            self.store(patterns)

    def store(self, patterns: torch.Tensor) -> DenseHopfield:
        """Replace the stored patterns by a copy of patterns [P, n] of +-1 values."""
        _checks.tensor("patterns", patterns, ndim=2, dtypes=None)
        self._patterns = _bipolar("patterns", patterns).clone(memory_format=torch.contiguous_format)
        return self

    def add(self, patterns: torch.Tensor) -> DenseHopfield:
        """Append patterns [P, n] (same n and device)."""
        if self._patterns is None:
            return self.store(patterns)
        _checks.tensor("patterns", patterns, ndim=2, dtypes=None)
        x = _bipolar("patterns", patterns, self._patterns.shape[1])
        if x.device != self._patterns.device:
            raise ValueError(f"patterns must be on {self._patterns.device}, got {x.device}")
        self._patterns = torch.cat([self._patterns, x]).contiguous()
        return self

    # -- energy --------------------------------------------------------------------------
    def _scaled_f(self, overlaps: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """F(o) divided by the per-row scale of :meth:`_shift` (shift [B, 1]); float64, |value| <= 1."""
        if self.interaction == "exponential":
            return torch.exp(overlaps - shift)
        return (overlaps / shift) ** self.degree

    def _shift(self, overlaps: torch.Tensor) -> torch.Tensor:
        """Per-row scale: max overlap (exponential, a log-scale) or max |o| + 2 (polynomial).

        Every overlap a flip can reach (o - 2, o, o + 2) then has a scaled F of magnitude <= 1.
        """
        if self.interaction == "exponential":
            return overlaps.amax(-1, keepdim=True)
        return overlaps.abs().amax(-1, keepdim=True) + 2.0

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        """``E(sigma) = -sum_mu F(xi_mu . sigma)`` of states [..., n] -> [...] (float64).

        ``-inf`` (with a warning) where the true energy is beyond float64's range.
        """
        x = self.patterns
        return self._energy(_bipolar("states", states, x.shape[1], min_ndim=1).to(x.device))

    def _energy(self, s: torch.Tensor) -> torch.Tensor:
        """:meth:`energy` of checked float32 +-1 states on the patterns' device (one host read: the warning)."""
        x = self.patterns
        o = (s @ x.T).double()
        if self.interaction == "exponential":
            energy = -torch.logsumexp(o, -1).exp()
        else:
            scale = self._shift(o)
            energy = -(self._scaled_f(o, scale).sum(-1) * scale[..., 0] ** self.degree)
        if not bool(torch.isfinite(energy).all()):
            warnings.warn("DenseHopfield.energy exceeds the float64 range for some states (returned as -inf); "
                          "retrieval decisions use scaled energies and are unaffected", RuntimeWarning, stacklevel=2)
        return energy

    def flip_energy_changes(self, states: torch.Tensor) -> torch.Tensor:
        """Energy change of flipping each bit of states [..., B, n] alone -> [..., B, n] (float64).

        Flipping bit j moves overlap ``o_mu`` to ``o_mu - 2 sigma_j xi_mu,j``, i.e. to
        ``o_mu - 2`` or ``o_mu + 2``. With ``A_mu = F(o_mu - 2) - F(o_mu)`` and
        ``C_mu = F(o_mu + 2) - F(o_mu)``:
        ``dE_j = -[sum_mu (A + C)/2 + sigma_j sum_mu xi_mu,j (A - C)/2]``, one [B, P] x [P, n]
        product for all bits. Changes are scaled per row (same signs) by ``exp(-max_mu o_mu)``
        (exponential) or ``(max_mu |o_mu| + 2)^-degree`` (polynomial), so they never overflow;
        pass states through :meth:`energy` for absolute values.
        """
        x = self.patterns.double()
        return self._flip_energy_changes(_bipolar("states", states, x.shape[1]).to(x.device).double(), x)

    def _flip_energy_changes(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:meth:`flip_energy_changes` of checked float64 +-1 states [B, n], patterns ``x`` in float64."""
        o = s @ x.T
        shift = self._shift(o)
        f0 = self._scaled_f(o, shift)
        a = self._scaled_f(o - 2, shift) - f0
        c = self._scaled_f(o + 2, shift) - f0
        return -(0.5 * (a + c).sum(-1, keepdim=True) + s * ((0.5 * (a - c)) @ x))

    # -- retrieval -----------------------------------------------------------------------
    def retrieve(self, cues: torch.Tensor, *, max_iter: int | None = None) -> BinaryRetrieval:
        """Update cues [..., B, n] (+-1) until no bit lowers the energy, or ``max_iter``."""
        x = self.patterns
        steps_max = self.max_iter if max_iter is None else _checks.positive_int("max_iter", max_iter)
        s0 = _bipolar("cues", cues, x.shape[1], min_ndim=1).to(x.device)
        lead = s0.shape[:-1]
        s = s0.reshape(-1, x.shape[1]).double()
        xd = x.double()
        steps = torch.zeros(s.shape[0], dtype=torch.int64, device=s.device)
        converged = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
        for _ in range(steps_max):
            if self.update == "sequential":
                s, changed = self._sweep(s, xd)
            else:
                s, changed = self._synchronous_step(s, xd)
            steps += changed.long()
            converged = ~changed
            if not bool(changed.any()):
                break
        else:
            converged = ~(self._flip_mask(s, xd)).any(-1)
        out = s.float().reshape(s0.shape)
        return BinaryRetrieval(states=out, steps=steps.reshape(lead), converged=converged.reshape(lead),
                               energy=self._energy(out.reshape(-1, x.shape[1])).reshape(lead))

    def _flip_mask(self, s: torch.Tensor, xd: torch.Tensor) -> torch.Tensor:
        o = s @ xd.T
        scale = self._scaled_f(o, self._shift(o)).abs().sum(-1, keepdim=True)
        return self._flip_energy_changes(s, xd) < -self.TIE_TOLERANCE * scale  # s is +-1: no re-check

    def _synchronous_step(self, s: torch.Tensor, xd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flip = self._flip_mask(s, xd)
        return torch.where(flip, -s, s), flip.any(-1)

    def _sweep(self, s: torch.Tensor, xd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One asynchronous sweep over bits 0..n-1, all queries at once, from the overlaps."""
        o = s @ xd.T  # [B, P], updated in place of a recomputation after each flip
        changed = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
        s = s.clone()
        for j in range(s.shape[1]):
            t = s[:, j : j + 1] * xd[:, j][None, :]  # sigma_j xi_mu,j  [B, P]
            shift = self._shift(o)
            f0 = self._scaled_f(o, shift)
            delta = -(self._scaled_f(o - 2 * t, shift) - f0).sum(-1)
            flip = delta < -self.TIE_TOLERANCE * f0.abs().sum(-1)
            # no host sync per bit: apply the (possibly empty) flips unconditionally
            s[:, j] = torch.where(flip, -s[:, j], s[:, j])
            o = torch.where(flip[:, None], o - 2 * t, o)
            changed |= flip
        return s, changed

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write patterns (int8) and settings atomically (``mnemonix._io``)."""
        _io.save_arrays(path, {"patterns": self.patterns.cpu().numpy().astype(np.int8)},
                        format=_DENSE_FORMAT, version=_BINARY_VERSION,
                        meta={"interaction": self.interaction, "degree": self.degree, "update": self.update,
                              "max_iter": self.max_iter, "device": self.patterns.device.type})

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> DenseHopfield:
        """Read a network written by :meth:`save` (raises ``FormatError`` on a bad file).

        ``device=None``: as :meth:`mnemonix.hopfield.ModernHopfield.load`.
        """
        device = _loadcheck.device(device, None) if device is not None else None  # before reading the file
        arrays, meta, _ = _io.load_arrays(path, format=_DENSE_FORMAT, max_version=_BINARY_VERSION)
        pats = _loadcheck.array(path, arrays, "patterns", ndim=2, dtypes=("int8",))
        if 0 in pats.shape or not bool(np.isin(pats, (-1, 1)).all()):
            raise FormatError(f"{str(path)!r}: field 'patterns' must be a non-empty array of -1/+1 values")
        positive = {"check": lambda v: v > 0, "expected": "> 0"}
        kwargs = {
            "interaction": _loadcheck.choice(path, meta, "interaction", ("polynomial", "exponential")),
            "degree": _loadcheck.meta(path, meta, "degree", "int", **positive),
            "update": _loadcheck.choice(path, meta, "update", ("sequential", "synchronous")),
            "max_iter": _loadcheck.meta(path, meta, "max_iter", "int", **positive),
        }
        dev = _loadcheck.device(device, _loadcheck.choice(path, meta, "device", ("cpu", "cuda"), default="cpu"))
        return cls(torch.from_numpy(pats.astype(np.float32)).to(dev), **kwargs)
