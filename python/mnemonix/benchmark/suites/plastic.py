"""The ``plastic`` area: the C++ plastic prefix memory against the pure-Python rule (``bench/compare_plastic.py``).

- ``plastic.learn`` (n names, tokenised ``">" + name + "_"``, of the bundled makemore list;
  or n random strings of length 5-15 over 26 letters): a fresh
  :class:`mnemonix.plastic.PlasticMemory` learning them (``auto``) against the pure-Python
  oracle of the spec (``peer:python-rule``, ``tests/plastic_oracle.py`` of a source checkout:
  the research rule with plain dicts), which runs only up to ``oracle_max`` samples.
  Correctness: the engine's graph (nodes with count and r_level, edges, in order) is the
  oracle's, or, without it, has the samples' prefixes.
- ``plastic.score``: one batched teacher-forced ``log_probs`` call of a predictor over the
  1,000 test names of makemore's split (``auto``: graph context, order 3; ``kgrams``: k-grams
  only, order 4) against one ``log_prob`` call per name (``per_name``). Correctness: the
  batched and the per-name scores agree.

No floor (pointer chasing over a graph whose size depends on the data).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mnemonix.benchmark.suites import Built, Case

ROOT = Path(__file__).resolve().parents[4]
NAMES = ROOT / "data" / "names.txt"
ORACLE = ROOT / "tests" / "plastic_oracle.py"
ORACLE_MAX = 10_000

SIZES: dict[str, list[tuple[str, str, int]]] = {  # (op, dataset, n)
    "tiny": [("learn", "names", 200), ("learn", "random", 500)],
    "quick": [("learn", "names", 1_000), ("learn", "names", 10_000), ("learn", "random", 100_000),
              ("score", "names", 0)],
    "default": [("learn", "names", n) for n in (1_000, 3_000, 10_000, 32_033)]
    + [("learn", "random", 1_000_000), ("score", "names", 0)],
}


def area_cases(size: str, device: torch.device, *, oracle_max: int = ORACLE_MAX,
               names_path: Path = NAMES) -> list[Case]:
    """The plastic area at ``size`` (the engine runs on the CPU whatever ``device``)."""
    return [learn_case(dataset, n, oracle_max=oracle_max, names_path=names_path) if op == "learn"
            else score_case(names_path) for op, dataset, n in SIZES[size]]


def learn_case(dataset: str, n: int, *, oracle_max: int = ORACLE_MAX, names_path: Path = NAMES) -> Case:
    """``plastic.learn`` of ``n`` samples of ``dataset`` ("names" or "random")."""
    op = "plastic.learn" if dataset == "names" else "plastic.learn_random"
    return Case(op, {"n": n}, torch.float32, _learn(dataset, n, oracle_max, names_path))


def score_case(names_path: Path = NAMES) -> Case:
    """``plastic.score`` over the 1,000 test names of makemore's split."""
    return Case("plastic.score", {"names": 1_000}, torch.float32, _score(names_path))


def samples(dataset: str, n: int, names_path: Path = NAMES) -> list[str]:
    """The first ``n`` tokenised names, or ``n`` seeded random strings of length 5-15 over a-z."""
    if dataset == "names":
        names = [ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if n > len(names):
            raise ValueError(f"n must be at most the {len(names)} names in {names_path}, got {n}")
        return [">" + s + "_" for s in names[:n]]
    import numpy as np

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 16, size=n)
    letters = rng.integers(97, 123, size=int(lengths.sum()), dtype=np.uint8).tobytes().decode("ascii")
    ends = np.cumsum(lengths)
    return [letters[e - k: e] for e, k in zip(ends.tolist(), lengths.tolist())]


def oracle_class() -> tuple[Any, str]:
    """The pure-Python rule (``tests/plastic_oracle.py``), or None with the reason."""
    if not ORACLE.is_file():
        return None, f"the pure-Python rule is not here ({ORACLE} is part of a source checkout)"
    spec = importlib.util.spec_from_file_location("plastic_oracle", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PlasticOracle, ""


def _learn(dataset: str, n: int, oracle_max: int, names_path: Path) -> Callable[[torch.device], Built]:
    def build(device: torch.device) -> Built:
        from mnemonix.plastic import PlasticMemory

        data = samples(dataset, n, names_path)

        def engine():
            model = PlasticMemory()
            model.learn_many(data, progress=False)
            return model

        candidates: dict[str, Callable[[], Any]] = {"auto": engine}
        notes: dict[str, str] = {}
        oracle, why = oracle_class()
        if oracle is None or n > oracle_max:
            notes["peer:python-rule"] = why or f"skipped: {n} samples above oracle_max {oracle_max} (minutes)"
            want = None
        else:
            def rule():
                model = oracle()
                for s in data:
                    model.learn(s)
                return model

            candidates["peer:python-rule"] = rule
            reference = rule()
            want = (reference.nodes(), reference.edges())

        def check(fn) -> bool:
            model = fn()
            if want is not None:
                return (model.nodes(), model.edges()) == want
            return len(model) > 0 and len(model.nodes()) >= len({s[:1] for s in data})

        return Built(candidates, check, bytes_read=0.0, flops=0.0, chosen="cpp", notes=notes,
                     extra={"auto": {"dataset": dataset}})

    return build


def _score(names_path: Path) -> Callable[[torch.device], Built]:
    def build(device: torch.device) -> Built:
        from mnemonix.plastic import Backoff, PlasticMemory, tokenize
        from mnemonix.plastic.evaluation import split_names

        names = [ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        split = split_names(names)
        mem = PlasticMemory()
        mem.learn_many([tokenize(n) for n in split.learn], progress=False)
        test = [tokenize(n) for n in split.test]
        pred = mem.predictor(Backoff((0.5, 1.0, 0.79, 0.87), graph_discount=0.78), max_order=4)  # eval's fit
        kgrams = pred.with_backoff(Backoff((0.5, 1.0, 0.73, 0.84, 0.71), graph_context=False))
        candidates: dict[str, Callable[[], Any]] = {
            "auto": lambda: pred.log_probs(test)[0], "kgrams": lambda: kgrams.log_probs(test)[0],
            "per_name": lambda: [pred.log_prob(t) for t in test]}
        each = {"auto": lambda t: pred.log_prob(t), "kgrams": lambda t: kgrams.log_prob(t),
                "per_name": lambda t: pred.log_prob(t)}
        by_fn = {id(fn): name for name, fn in candidates.items()}

        def check(fn) -> bool:
            got = [float(v) for v in fn()]
            one = each[by_fn[id(fn)]]
            return len(got) == len(test) and all(abs(g - float(one(t))) <= 1e-6 * max(1.0, abs(g))
                                                 for g, t in zip(got[:50], test[:50]))

        return Built(candidates, check, bytes_read=0.0, flops=0.0, chosen="cpp",
                     extra={"auto": {"test_nll": float(pred.nll(test))}})

    return build
