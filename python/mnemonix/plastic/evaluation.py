"""Held-out likelihood of the plastic memory against makemore's baselines (``mnemonix plastic eval``).

Protocol (makemore's split, plus a validation split for hyper-parameters):

1. ``torch.randperm`` with a generator seeded by ``seed`` (makemore's default 3407) shuffles
   the names; the last ``min(1000, 10%)`` are the **test** names (makemore's rule), the last
   ``min(1000, 10%)`` of the rest the **validation** names, the others are **learned**.
2. Every model learns the same names and is scored on the same test names, in nats per
   character, the stop token included (a name of length L is L + 1 predictions):
   the plastic memory (its predictor's order and discounts fitted on the validation names),
   a counting bigram and trigram with add-one smoothing, and a Bengio et al. (2003) MLP trained
   for a bounded time (its parameters of best validation loss kept). Test names are never used
   to choose anything.
3. The same is done after the first 100, 300, 1,000, ... learned names (the learning curve).
4. 1,000 names are sampled from each model: the fraction that are novel (not learned) and
   the fraction that are exact learned names.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mnemonix import _io
from mnemonix.plastic.baselines import AddOneNgram, BengioMLP, CharVocab, MLPConfig
from mnemonix.plastic.memory import PlasticMemory, tokenize
from mnemonix.plastic.predictor import Backoff, PlasticPredictor

__all__ = ["START", "STOP", "MAKEMORE_SEED", "Split", "split_names", "check_names", "ModelRow",
           "EvalResult", "evaluate", "default_test_size"]

START, STOP = ">", "_"
MAKEMORE_SEED = 3407
CHECKPOINTS = (100, 300, 1_000, 3_000, 10_000)


def check_names(names: Sequence[str], path: str | Path) -> list[str]:
    """Names fit to be tokenised as ``">" + name + "_"``; a bad file raises :class:`mnemonix._io.FormatError`.

    Refused: no names at all, and names holding the start or stop token or a control character.
    """
    if not names:
        raise _io.FormatError(f"FILE {str(path)!r} holds no names (only blank lines or nothing)")
    for line, name in enumerate(names, 1):
        for i, c in enumerate(name):
            if c in (START, STOP) or unicodedata.category(c) == "Cc":
                what = "the start token" if c == START else "the stop token" if c == STOP else "a control character"
                raise _io.FormatError(
                    f"FILE {str(path)!r}: name {line} ({name!r}) holds {c!r} at index {i}, {what}; names are "
                    f"tokenised as {START!r} + name + {STOP!r} and must not hold {START!r}, {STOP!r} "
                    "or control characters")
    return list(names)


def default_test_size(n: int) -> int:
    """makemore's test-set size: ``min(1000, int(0.1 * n))``."""
    return min(1000, int(n * 0.1))


@dataclass
class Split:
    """Learned, validation and test names (see the module docstring)."""

    learn: list[str]
    validation: list[str]
    test: list[str]


def split_names(names: Sequence[str], test_size: int | None = None, seed: int = MAKEMORE_SEED) -> Split:
    """makemore's split (``torch.randperm`` seeded by ``seed``), then a validation split of the rest."""
    import torch

    n = len(names)
    test = default_test_size(n) if test_size is None else test_size
    if test < 1 or test > n - 2:
        got = f"{test_size}" if test_size is not None else f"min(1000, 10% of {n}) = {test}"
        raise ValueError(f"test_size must be in [1, number of names - 2] = [1, {n - 2}] (the rest is learned and "
                         f"validated), got {got}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    rest = [names[i] for i in perm[:-test]]
    val = max(1, default_test_size(len(rest)))
    return Split(learn=rest[:-val], validation=rest[-val:], test=[names[i] for i in perm[-test:]])


@dataclass
class ModelRow:
    """One line of the results table."""

    model: str
    test_nll: float | None
    novel: float | None = None     # fraction of 1,000 samples that are not learned names
    learned: float | None = None   # fraction that are exact learned names
    seconds: float = 0.0           # time to learn / fit / train
    detail: str = ""


@dataclass
class EvalResult:
    rows: list[ModelRow]
    curves: dict[str, list[tuple[int, float]]]  # model -> [(names learned, test NLL)]
    sizes: dict[str, int]
    score_ms: float                             # scoring the test names with the plastic predictor
    samples: dict[str, list[str]] = field(default_factory=dict)  # a few samples per model


def _checkpoints(n: int, quick: bool) -> list[int]:
    points = [c for c in CHECKPOINTS if c < n and (not quick or c in (100, 1_000))]
    return points + [n]


def _sample_stats(samples: Sequence[str], learned: set[str]) -> tuple[float, float]:
    known = sum(s in learned for s in samples)
    return 1.0 - known / len(samples), known / len(samples)


def _strip(s: str) -> str:
    s = s[len(START):]
    return s[:-len(STOP)] if s.endswith(STOP) else s


def _fit_plastic(mem: PlasticMemory, split: Split, alphabet: str, *, graph_context: bool = True,
                 sweeps: int = 1) -> PlasticPredictor:
    pred = mem.predictor(alphabet=alphabet, start=START, stop=STOP)
    return pred.fit([tokenize(v) for v in split.validation], graph_context=graph_context, sweeps=sweeps)


def _describe(b: Backoff) -> str:
    graph = f", graph D={b.graph_discount:.2f}" if b.graph_context else ", no graph context"
    return f"order {b.order}, D=" + "/".join(f"{d:.2f}" for d in b.discounts) + graph


def evaluate(names: Sequence[str], *, test_size: int | None = None, seed: int = MAKEMORE_SEED,
             mlp_seconds: float = 60.0, n_samples: int = 1000, quick: bool = False, progress: bool = True,
             log=print) -> EvalResult:
    """Run the protocol of the module docstring on ``names`` (untokenised, checked by :func:`check_names`).

    Parameters
    ----------
    test_size : int or None
        Number of test names (default makemore's ``min(1000, 10%)``).
    seed : int
        Seed of the split, of the MLP and of the samples.
    mlp_seconds : float
        Training time of the MLPs, shared by the learning-curve points in proportion to their sizes.
    quick : bool
        Fewer learning-curve points (for tests and smoke runs).
    log : callable
        Receives progress lines (``print`` by default).
    """
    split = split_names(names, test_size, seed)
    vocab = CharVocab(names)
    alphabet = vocab.chars + STOP
    points = _checkpoints(len(split.learn), quick)
    test_tok = [tokenize(t) for t in split.test]
    learned = set(split.learn)
    log(f"{len(split.learn)} names learned, {len(split.validation)} validation, {len(split.test)} test; "
        f"{len(alphabet)} outcomes (characters + stop)")
    mem, pred, curve, seconds = _plastic_curve(split, alphabet, points, test_tok, log)
    score_ms = _time_scoring(pred, test_tok)
    plastic_samples = [_strip(s) for s in pred.sample(n_samples, seed=seed)]
    rows = [ModelRow("plastic memory", curve[-1][1], *_sample_stats(plastic_samples, learned), seconds,
                     _describe(pred.backoff))]
    curves = {"plastic memory": curve}
    samples = {"plastic memory": plastic_samples[:10]}
    rows += _plastic_variants(mem, split, alphabet, test_tok)
    walk = [_strip(mem.infer(START, stop=STOP, mode="sample", seed=seed + i).completion) for i in range(n_samples)]
    rows.append(ModelRow("plastic graph walk (infer)", None, *_sample_stats(walk, learned), 0.0,
                         "sampled walk down the graph: ends at a learned leaf"))
    samples["plastic graph walk (infer)"] = walk[:10]
    for context, label in ((1, "bigram (add-one)"), (2, "trigram (add-one)")):
        row, curves[label], samples[label] = _ngram(vocab, context, split, points, learned, n_samples, seed, label)
        rows.append(row)
    row, curves["MLP (Bengio 2003)"], samples["MLP (Bengio 2003)"] = _mlp(
        vocab, split, points, learned, n_samples, seed, mlp_seconds, progress, log)
    rows.append(row)
    sizes = {"names": len(names), "learned": len(split.learn), "validation": len(split.validation),
             "test": len(split.test), "test_chars": sum(len(t) + 1 for t in split.test)}
    return EvalResult(rows, curves, sizes, score_ms, samples)


def _plastic_curve(split: Split, alphabet: str, points: list[int], test_tok: list[str], log):
    mem = PlasticMemory()
    curve: list[tuple[int, float]] = []
    learn_s = fit_s = 0.0
    done = 0
    pred = None
    for n in points:
        t0 = time.perf_counter()
        mem.learn_many([tokenize(x) for x in split.learn[done:n]], progress=False)
        t1 = time.perf_counter()
        pred = _fit_plastic(mem, split, alphabet)
        learn_s += t1 - t0
        fit_s = time.perf_counter() - t1  # the fit of the final model only
        done = n
        curve.append((n, pred.nll(test_tok)))
        log(f"  plastic memory, {n} names: test NLL {curve[-1][1]:.4f} ({_describe(pred.backoff)})")
    assert pred is not None
    return mem, pred, curve, learn_s + fit_s


def _time_scoring(pred: PlasticPredictor, test_tok: list[str], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred.nll(test_tok)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _plastic_variants(mem: PlasticMemory, split: Split, alphabet: str, test_tok: list[str]) -> list[ModelRow]:
    """The ablation (k-grams read from the graph, without its own context) and exact counts."""
    t0 = time.perf_counter()
    kgram = _fit_plastic(mem, split, alphabet, graph_context=False)
    rows = [ModelRow("plastic, k-grams only", kgram.nll(test_tok), seconds=time.perf_counter() - t0,
                     detail=_describe(kgram.backoff))]
    t0 = time.perf_counter()
    exact = PlasticMemory(exact_counts=True)
    exact.learn_many([tokenize(x) for x in split.learn], progress=False)
    pred = _fit_plastic(exact, split, alphabet)
    rows.append(ModelRow("plastic, exact_counts=True", pred.nll(test_tok), seconds=time.perf_counter() - t0,
                         detail=_describe(pred.backoff)))
    return rows


def _ngram(vocab: CharVocab, context: int, split: Split, points: list[int], learned: set[str], n_samples: int,
           seed: int, label: str):
    model = AddOneNgram(vocab, context)
    curve, done, seconds = [], 0, 0.0
    for n in points:
        t0 = time.perf_counter()
        model.fit(split.learn[done:n])
        seconds += time.perf_counter() - t0
        done = n
        curve.append((n, model.nll(split.test)))
    drawn = model.sample(n_samples, seed)
    row = ModelRow(label, curve[-1][1], *_sample_stats(drawn, learned), seconds, f"{context}-character context")
    return row, curve, drawn[:10]


def _mlp(vocab: CharVocab, split: Split, points: list[int], learned: set[str], n_samples: int, seed: int,
         mlp_seconds: float, progress: bool, log):
    config = MLPConfig()
    total = sum(points)
    curve, seconds, model = [], 0.0, None
    for n in points:
        budget = max(mlp_seconds * n / total, 0.02 * mlp_seconds)
        model = BengioMLP(vocab, config, seed=seed)
        t0 = time.perf_counter()
        model.train(split.learn[:n], split.validation, budget, progress=progress, desc=f"MLP, {n} names")
        seconds = time.perf_counter() - t0
        curve.append((n, model.nll(split.test)))
        log(f"  MLP, {n} names: test NLL {curve[-1][1]:.4f} ({model.steps} steps in {seconds:.1f} s)")
    assert model is not None
    drawn = model.sample(n_samples, seed)
    detail = (f"block {config.block}, emb {config.embedding}, hidden {config.hidden}, "
              f"{model.steps} steps in {seconds:.0f} s")
    row = ModelRow("MLP (Bengio 2003)", curve[-1][1], *_sample_stats(drawn, learned), seconds, detail)
    return row, curve, drawn[:10]
