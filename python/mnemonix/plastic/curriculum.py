"""Does the order of the samples matter? (``mnemonix plastic curriculum``)

The research README claims that the order in which the plastic memory sees samples matters
(curriculum learning: simpler concepts first), ideally an order in which the cumulative
information entropy rises at a constant rate with every sample. This module learns the same
names in several orders and records, at a grid of sample counts:

- the graph: nodes, edges, number of r_levels and the highest r_level;
- the held-out NLL per character of the test names (the predictor with one fixed
  :class:`~mnemonix.plastic.predictor.Backoff`, fitted once on the validation names);
- the **cumulative information entropy**: the bits each sample costs under the memory
  learned from the samples before it (prequential code length, scored block by block
  between grid points: a block is scored with the memory as it was before the block),
  summed over the samples so far. A constant rate is a straight line; the recorded
  ``rate_deviation`` is its largest distance from the chord, as a fraction of the total.

Orders: ``file`` (as in the file; names.txt is sorted by popularity), ``random`` (seeded),
``shortest`` (by length, stable) and ``entropy``: by rising entropy contribution, the
information content of each name in bits under a character bigram with add-one smoothing
counted on all the learned names (simple, frequent letter pairs first). This is our reading
of the README's rule; it states no formula.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mnemonix.plastic.baselines import AddOneNgram, CharVocab
from mnemonix.plastic.evaluation import MAKEMORE_SEED, START, STOP, split_names
from mnemonix.plastic.memory import PlasticMemory, tokenize
from mnemonix.plastic.predictor import Backoff

__all__ = ["ORDERS", "Trace", "CurriculumResult", "information_bits", "order_names", "run_curriculum"]

ORDERS: tuple[str, ...] = ("file", "random", "shortest", "entropy")


def information_bits(names: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """Bits of each name (stop included) under an add-one character bigram counted on ``reference``; [n]."""
    vocab = CharVocab(list(reference) + list(names))
    model = AddOneNgram(vocab, 1).fit(reference)
    return np.asarray([-model.log_probs([n])[0] / math.log(2.0) for n in names])


def order_names(names: Sequence[str], how: str, *, seed: int = 0, bits: np.ndarray | None = None) -> list[str]:
    """``names`` in the order ``how`` (one of :data:`ORDERS`); ties keep the file order."""
    if how == "file":
        return list(names)
    if how == "random":
        out = list(names)
        random.Random(seed).shuffle(out)
        return out
    if how == "shortest":
        return sorted(names, key=len)
    if how == "entropy":
        if bits is None:
            bits = information_bits(names, names)
        return [names[i] for i in np.argsort(bits, kind="stable")]
    raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {how!r}")


@dataclass
class Trace:
    """What one order did, at each grid point ``samples[i]``."""

    order: str
    samples: list[int] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    edges: list[int] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    max_level: list[int] = field(default_factory=list)
    test_nll: list[float] = field(default_factory=list)
    cumulative_bits: list[float] = field(default_factory=list)
    learn_seconds: float = 0.0

    @property
    def rate_deviation(self) -> float:
        """Largest distance of the cumulative-entropy curve from the straight line to its end, / its end."""
        n, bits = np.asarray(self.samples, float), np.asarray(self.cumulative_bits)
        if len(n) == 0 or bits[-1] <= 0:
            return 0.0
        return float(np.max(np.abs(bits - bits[-1] * n / n[-1])) / bits[-1])


@dataclass
class CurriculumResult:
    traces: list[Trace]
    backoff: Backoff
    sizes: dict[str, int]


def _grid(n: int, points: int) -> list[int]:
    """About ``points`` sample counts in (0, n]: half spaced geometrically (the start), half evenly."""
    geo = np.geomspace(min(10, n), n, max(2, points // 2))
    lin = np.linspace(0, n, max(2, points - points // 2) + 1)[1:]
    return sorted({int(round(x)) for x in np.concatenate([geo, lin]) if round(x) >= 1})


def run_curriculum(names: Sequence[str], *, test_size: int | None = None, seed: int = MAKEMORE_SEED,
                   orders: Sequence[str] = ORDERS, points: int = 40, exact_counts: bool = False,
                   log=print) -> CurriculumResult:
    """Learn the learned names of makemore's split (see :mod:`mnemonix.plastic.evaluation`) in each order."""
    for how in orders:
        if how not in ORDERS:
            raise ValueError(f"orders must be among {', '.join(ORDERS)}, got {how!r}")
    split = split_names(names, test_size, seed)
    alphabet = CharVocab(names).chars + STOP
    reference = PlasticMemory(exact_counts=exact_counts)
    reference.learn_many([tokenize(x) for x in split.learn], progress=False)
    backoff = reference.predictor(alphabet=alphabet, start=START, stop=STOP).fit(
        [tokenize(v) for v in split.validation], sweeps=1).backoff
    log(f"{len(split.learn)} names in each order, {len(split.test)} test names; backoff fitted on "
        f"{len(split.validation)} validation names: order {backoff.order}")
    bits = information_bits(split.learn, split.learn)
    grid = _grid(len(split.learn), points)
    test_tok = [tokenize(t) for t in split.test]
    traces = []
    for how in orders:
        sequence = order_names(split.learn, how, seed=seed, bits=bits)
        traces.append(_trace(how, sequence, grid, test_tok, backoff, alphabet, exact_counts))
        t = traces[-1]
        log(f"  {how:>8}: {t.nodes[-1]} nodes, {t.levels[-1]} levels, test NLL {t.test_nll[-1]:.4f}, "
            f"{t.cumulative_bits[-1]:.0f} bits in all, rate deviation {t.rate_deviation:.3f}")
    sizes = {"learned": len(split.learn), "validation": len(split.validation), "test": len(split.test)}
    return CurriculumResult(traces, backoff, sizes)


def _trace(how: str, sequence: list[str], grid: list[int], test_tok: list[str], backoff: Backoff, alphabet: str,
           exact_counts: bool) -> Trace:
    mem = PlasticMemory(exact_counts=exact_counts)
    trace = Trace(how)

    def predictor():
        return mem.predictor(backoff, max_order=backoff.order, alphabet=alphabet, start=START, stop=STOP)

    pred, done, bits = predictor(), 0, 0.0
    for n in grid:
        block = [tokenize(x) for x in sequence[done:n]]
        logp, _ = pred.log_probs(block)  # the memory before the block: what each sample adds
        bits += float(-logp.sum() / math.log(2.0))
        t0 = time.perf_counter()
        mem.learn_many(block, progress=False)
        trace.learn_seconds += time.perf_counter() - t0
        done = n
        pred = predictor()
        stats = mem.stats()
        trace.samples.append(n)
        trace.nodes.append(stats["nodes"])
        trace.edges.append(stats["edges"])
        trace.levels.append(stats["levels"])
        trace.max_level.append(stats["max_level"])
        trace.test_nll.append(pred.nll(test_tok))
        trace.cumulative_bits.append(bits)
    return trace
