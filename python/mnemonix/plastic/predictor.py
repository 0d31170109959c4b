"""Plastic memory as a sequence model: the next-character distribution read from the graph.

A :class:`PlasticPredictor` is a frozen copy of a memory's graph (taken under one read
lock; the C++ class ``mnemonix._core.plastic.Predictor``, ``csrc/plastic/predictor.hpp``)
plus the interpolation parameters of a :class:`Backoff`. The probability of the next
character ``a`` after a history ``h`` (``h`` holds the start token: ``">em"`` when scoring
``">emma_"``) mixes, from the most specific context to the least:

- **graph**: the graph's own context. The deepest node ``u`` that is a prefix of ``h``; each
  of its out-edges ``u -> w`` with ``w`` extending ``h`` votes for ``w[len(h)]`` with
  ``count(w)``. This is the whole history, anchored at the start of the string.
- **k-grams**, ``k = min(order, len(h) - 1)`` down to 0: the last ``k`` characters of ``h``.
  Their counts are read from the graph too: each position ``j`` of an edge ``u -> w``
  (``len(u) <= j < len(w)``) carries ``count(w)`` for ``(w[j-k:j], w[j])``. On a tree with
  exact counts (tokenised names with ``exact_counts=True``) these are exactly the k-gram
  counts of the learned samples.
- **uniform** over the alphabet.

Each level with counts ``c`` (total ``C``, ``N`` distinct next characters) is interpolated
with the level below by absolute discounting (Ney, Essen & Kneser 1994)::

    p(a) = (max(c(a) - D, 0) + D * N * p_below(a)) / C

and a level without counts passes ``p_below`` through. With every discount in (0, 1] every
level sums to one and every character of the alphabet (stop token included) keeps a non-zero
probability. Discounts default to Ney's estimate ``n1 / (n1 + 2 n2)`` from each level's counts
of counts; :meth:`PlasticPredictor.fit` fits them, and the order, on a validation split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Backoff", "PlasticPredictor", "DEFAULT_ORDER", "MAX_ORDER"]

#: k-gram order of the default :class:`Backoff` (``PlasticMemory.log_prob`` without one).
DEFAULT_ORDER = 4
#: Longest k-gram order :meth:`PlasticPredictor.fit` tries by default.
MAX_ORDER = 6
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class Backoff:
    """Interpolation parameters of a :class:`PlasticPredictor`.

    Parameters
    ----------
    discounts : tuple of float, len order + 1
        ``discounts[k]`` is the absolute discount of the k-gram level (``k = 0``: unigram),
        each in (0, 1].
    graph_context : bool, default True
        Put the graph's own context (the whole anchored history) on top of the k-grams.
        ``False`` leaves a plain interpolated k-gram model read from the graph.
    graph_discount : float, default 0.75
        Discount of the graph level, in (0, 1] (ignored when ``graph_context`` is False).
    """

    discounts: tuple[float, ...]
    graph_context: bool = True
    graph_discount: float = 0.75

    def __post_init__(self) -> None:
        if isinstance(self.discounts, (str, bytes)) or not isinstance(self.discounts, Iterable):
            raise TypeError(f"discounts must be a sequence of floats, got {type(self.discounts).__name__}")
        values = tuple(self.discounts)
        if not values:
            raise ValueError("discounts must hold order + 1 >= 1 values, got none")
        for k, d in enumerate(values):
            _check_discount(f"discounts[{k}]", d)
        object.__setattr__(self, "discounts", tuple(float(d) for d in values))
        if not isinstance(self.graph_context, bool):
            raise TypeError(f"graph_context must be a bool, got {type(self.graph_context).__name__}")
        _check_discount("graph_discount", self.graph_discount)
        object.__setattr__(self, "graph_discount", float(self.graph_discount))

    @property
    def order(self) -> int:
        """Longest k-gram context used (``len(discounts) - 1``)."""
        return len(self.discounts) - 1

    def _core_args(self) -> tuple[np.ndarray, bool, float]:
        return np.asarray(self.discounts, dtype=np.float64), self.graph_context, self.graph_discount


def _check_discount(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (0.0 < float(value) <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def _check_samples(name: str, samples: object) -> list[str]:
    if isinstance(samples, str):
        raise TypeError(f"{name} must be a list of str, got a single str")
    if not isinstance(samples, Iterable):
        raise TypeError(f"{name} must be a list of str, got {type(samples).__name__}")
    out = list(samples)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(s).__name__}")
    return out


class PlasticPredictor:
    """Next-character distribution read from a frozen copy of a plastic memory's graph.

    Made by :meth:`mnemonix.plastic.PlasticMemory.predictor`; immutable (learning more
    into the memory does not change it), so any number of threads may use it at once. Every
    scoring call runs in C++ without the GIL. Samples are scored as learned (tokenised:
    ``">emma_"``): the characters after the start string are predicted, the stop token
    included.

    Attributes
    ----------
    alphabet : str
        The characters that get a probability, sorted by code point.
    start : str
        The leading string given as context, never predicted.
    stop : str
        The stop token (ends :meth:`sample`).
    backoff : Backoff
        The interpolation parameters.
    """

    def __init__(self, core: Any, backoff: Backoff | None, stop: str) -> None:
        self._core = core
        self.stop = stop
        if backoff is None:
            backoff = self.default_backoff(min(DEFAULT_ORDER, self.max_order))
        if backoff.order > self.max_order:
            raise ValueError(f"backoff.order must be <= max_order = {self.max_order}, got {backoff.order}")
        self.backoff = backoff

    @property
    def alphabet(self) -> str:
        return str(self._core.alphabet)

    @property
    def start(self) -> str:
        return str(self._core.start)

    @property
    def max_order(self) -> int:
        """Longest k-gram order the copied tables hold (an upper bound of ``backoff.order``)."""
        return int(self._core.max_order)

    def __repr__(self) -> str:
        return (f"PlasticPredictor(nodes={self._core.num_nodes}, alphabet={len(self.alphabet)} chars, "
                f"order={self.backoff.order}, graph_context={self.backoff.graph_context})")

    # ------------------------------------------------------------------ parameters
    def default_backoff(self, order: int = DEFAULT_ORDER, graph_context: bool = True) -> Backoff:
        """Ney's discounts ``n1 / (n1 + 2 n2)`` of each level (from the graph's counts of counts)."""
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
            raise TypeError(f"order must be an int, got {type(order).__name__}")
        if not 0 <= order <= self.max_order:
            raise ValueError(f"order must be in [0, max_order = {self.max_order}], got {order}")
        ney = np.asarray(self._core.ney_discounts())
        return Backoff(tuple(ney[: order + 1].tolist()), graph_context, float(ney[-1]))

    def with_backoff(self, backoff: Backoff) -> PlasticPredictor:
        """The same copy of the graph with other parameters (no copy is made)."""
        if not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff, got {type(backoff).__name__}")
        return PlasticPredictor(self._core, backoff, self.stop)

    # ------------------------------------------------------------------ scoring
    def log_probs(self, samples: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forced log-likelihood of each sample.

        Returns
        -------
        log_prob : numpy.ndarray, float64 [n]
            ``sum_j log p(s[j] | s[:j])`` in nats over the predicted positions.
        chars : numpy.ndarray, int64 [n]
            Number of predicted positions (``len(s) - len(start)``).

        Raises ValueError naming the sample when it does not begin with ``start`` or holds a
        character outside the alphabet.
        """
        batch = _check_samples("samples", samples)
        logp, chars = self._core.score(batch, *self.backoff._core_args())
        return np.asarray(logp), np.asarray(chars)

    def log_prob(self, s: str) -> float:
        """Log-likelihood (nats) of one sample: the sum over its predicted characters."""
        if not isinstance(s, str):
            raise TypeError(f"s must be a str, got {type(s).__name__}")
        try:
            logp, _ = self.log_probs([s])
        except ValueError as exc:
            raise ValueError(str(exc).replace("samples[0]", "s", 1)) from None
        return float(logp[0])

    def nll(self, samples: Sequence[str]) -> float:
        """Negative log-likelihood per predicted character (nats), over all samples together."""
        logp, chars = self.log_probs(samples)
        total = int(chars.sum())
        if total == 0:
            raise ValueError("samples must hold at least one predicted character (after the start string)")
        return float(-logp.sum() / total)

    def distribution(self, prefix: str) -> dict[str, float]:
        """``{char: p(char | prefix)}`` over the whole alphabet (sums to one); prefix begins with ``start``."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        probs = self._core.distribution(prefix, *self.backoff._core_args())
        return dict(zip(self.alphabet, np.asarray(probs).tolist()))

    def graph_counts(self, prefix: str) -> dict[str, int]:
        """Votes of the graph level after ``prefix``: ``{char: summed count of the children voting for it}``."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        return {c: int(n) for c, n in self._core.graph_counts(prefix)}

    def sample(self, n: int, *, seed: int = 0, max_length: int = 50) -> list[str]:
        """``n`` strings drawn character by character from the distribution (seeded, reproducible).

        Each is ``start`` + characters until the stop token is drawn (included) or
        ``max_length`` characters were drawn.
        """
        for name, value in (("n", n), ("seed", seed), ("max_length", max_length)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        return list(self._core.sample(int(n), int(seed), int(max_length), self.stop, *self.backoff._core_args()))

    # ------------------------------------------------------------------ fitting
    def fit(self, validation: Sequence[str], *, max_order: int | None = None, graph_context: bool = True,
            sweeps: int = 2) -> PlasticPredictor:
        """Fit the order and the discounts on ``validation`` samples (never on test samples).

        For each order 0..``max_order`` (stopping two orders after the best so far), the
        discounts start at Ney's estimates and are refined by coordinate descent (a golden
        section search per discount over (0, 1], ``sweeps`` passes) on the validation NLL per
        character. Returns a predictor sharing this copy of the graph with the best parameters.
        """
        batch = _check_samples("validation", validation)
        if not batch:
            raise ValueError("validation must hold at least one sample, got none")
        top = self.max_order if max_order is None else max_order
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 0 <= top <= self.max_order:
            raise ValueError(f"max_order must be an int in [0, {self.max_order}], got {max_order!r}")
        self.with_backoff(self.default_backoff(0, graph_context)).nll(batch)  # bad samples fail here, once
        best: tuple[float, Backoff] | None = None
        for order in range(top + 1):
            backoff, loss = _fit_discounts(self, batch, self.default_backoff(order, graph_context), sweeps)
            if best is None or loss < best[0]:
                best = (loss, backoff)
            elif order >= best[1].order + 2:
                break
        assert best is not None
        return self.with_backoff(best[1])


def _fit_discounts(pred: PlasticPredictor, batch: list[str], start: Backoff, sweeps: int) -> tuple[Backoff, float]:
    """Coordinate descent on the discounts of ``start`` (the graph discount last)."""
    values = list(start.discounts) + ([start.graph_discount] if start.graph_context else [])
    n = len(start.discounts)

    def backoff(v: list[float]) -> Backoff:
        return Backoff(tuple(v[:n]), start.graph_context, v[n] if start.graph_context else start.graph_discount)

    def loss(v: list[float]) -> float:
        return pred.with_backoff(backoff(v)).nll(batch)

    current = loss(values)
    for _ in range(sweeps):
        for i in range(len(values)):
            def along(x: float, i: int = i) -> float:
                return loss(values[:i] + [x] + values[i + 1:])

            x, fx = _golden_min(along, 0.01, 1.0)
            if fx < current:
                values[i], current = x, fx
    return backoff(values), current


def _golden_min(f: Callable[[float], float], lo: float, hi: float, iterations: int = 14) -> tuple[float, float]:
    """Golden-section search of a unimodal f on [lo, hi]: (x, f(x)) of the best point seen."""
    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return (c, fc) if fc <= fd else (d, fd)
