"""The plastic memory as a sequence model: PlasticPredictor (csrc/plastic/predictor.hpp)."""

from __future__ import annotations

import math
import threading
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix.plastic import Backoff, PlasticMemory, PlasticPredictor, tokenize

NAMES_PATH = Path(__file__).resolve().parents[1] / "data" / "names.txt"


@pytest.fixture(scope="module")
def names() -> list[str]:
    return [line.strip() for line in NAMES_PATH.read_text().splitlines() if line.strip()][:600]


def memory_of(samples: list[str], exact_counts: bool = False) -> PlasticMemory:
    mem = PlasticMemory(exact_counts=exact_counts)
    mem.learn_many(samples, progress=False)
    return mem


BACKOFFS = [
    None,  # Ney's discounts, order 4
    Backoff((0.5,), graph_context=True, graph_discount=1.0),
    Backoff((0.9, 0.2, 0.7), graph_context=False),
    Backoff((0.3, 0.4, 0.5, 0.6, 0.7, 0.8), graph_context=True, graph_discount=0.05),
]


@pytest.mark.parametrize("backoff", BACKOFFS)
@pytest.mark.parametrize("exact_counts", [False, True])
def test_distribution_sums_to_one_at_every_prefix(names: list[str], backoff: Backoff | None,
                                                  exact_counts: bool) -> None:
    mem = memory_of([tokenize(n) for n in names[:400]], exact_counts)
    pred = mem.predictor(backoff, alphabet="qxz")
    assert pred.alphabet == "".join(sorted(set("".join(names[:400]) + "_qxz")))
    unseen = ["zzxq", "qq", "", "aaaaaaaaaaaaaaaaaaaaaaa", "xylophone"]
    for s in [tokenize(n) for n in names[390:420] + unseen]:
        logp = 0.0
        for j in range(1, len(s) + 1):
            dist = pred.distribution(s[:j])
            assert set(dist) == set(pred.alphabet)
            assert abs(sum(dist.values()) - 1.0) < 1e-9
            assert min(dist.values()) > 0.0  # every character, the stop token included, keeps a chance
            if j < len(s):
                logp += math.log(dist[s[j]])
        # teacher-forced scoring is the sum of the logs of the same distributions
        assert pred.log_prob(s) == pytest.approx(logp, rel=1e-12, abs=1e-12)
        assert math.isfinite(pred.log_prob(s))


def test_tiny_graph_by_hand() -> None:
    # ">ab_", ">ac_", ">ac_" make the graph ">a" (3) -> ">ab_" (1), ">ac_" (2).
    mem = memory_of([">ab_", ">ac_", ">ac_"])
    assert sorted(mem.nodes()) == [(">a", 3, 0), (">ab_", 1, 1), (">ac_", 2, 1)]
    pred = mem.predictor()
    assert pred.alphabet == "_abc"
    assert pred.graph_counts(">a") == {"b": 1, "c": 2}  # the out-edges of the deepest node, by count
    assert pred.graph_counts(">") == {"a": 3}  # no node is ">": the children of "" (the roots)
    assert pred.graph_counts(">ac") == {"_": 2}  # inside the edge ">a" -> ">ac_"
    assert pred.graph_counts(">ad") == {}
    # Discounts near zero: the count ratios themselves.
    ratio = pred.with_backoff(Backoff((1e-12, 1e-12), graph_discount=1e-12))
    assert ratio.distribution(">a")["c"] == pytest.approx(2 / 3, abs=1e-9)
    assert ratio.distribution(">a")["b"] == pytest.approx(1 / 3, abs=1e-9)
    assert ratio.log_prob(">ac_") == pytest.approx(math.log(1.0 * 2 / 3 * 1.0), abs=1e-9)
    # Discount 1/2 everywhere, worked out by hand (alphabet _abc, so uniform = 1/4):
    half = Fraction(1, 2)
    unigram = (2 - half + half * 4 * Fraction(1, 4)) / 9  # counts a3 b1 c2 _3: c has 2 of 9, 4 distinct
    bigram = (2 - half + half * 2 * unigram) / 3  # after "a": b1 c2
    graph = (2 - half + half * 2 * bigram) / 3  # the node ">a": b1 c2
    assert graph == Fraction(56, 81)
    pred = pred.with_backoff(Backoff((0.5, 0.5), graph_discount=0.5))
    assert pred.distribution(">a")["c"] == pytest.approx(float(graph), abs=1e-12)


def test_graph_votes_are_the_learned_continuations(names: list[str]) -> None:
    """With exact counts, the graph context of a prefix counts exactly the learned samples' next characters."""
    learned = [tokenize(n) for n in names[:300]]
    pred = memory_of(learned, exact_counts=True).predictor()
    for h in [">", ">a", ">em", ">emm", ">ja", ">kay", ">zz", ">olivia"]:
        expected = Counter(s[len(h)] for s in learned if s.startswith(h) and len(s) > len(h))
        assert pred.graph_counts(h) == dict(expected)
    # ... and the k-gram counts read from the edges are those of the samples: for histories no
    # longer than the order, the graph context and the anchored k-gram context coincide.
    d = (0.3, 0.4, 0.5, 0.6, 0.7)
    for h in [">", ">e", ">em", ">emm", ">ka"]:
        with_graph = pred.with_backoff(Backoff(d, True, d[len(h)])).distribution(h)
        kgrams = pred.with_backoff(Backoff(d, False)).distribution(h)
        assert max(abs(with_graph[c] - kgrams[c]) for c in with_graph) < 1e-12


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    samples=st.lists(st.text(alphabet="abé🙂\x00", min_size=1, max_size=8), min_size=1, max_size=25),
    probes=st.lists(st.text(alphabet="abé🙂\x00", max_size=10), min_size=1, max_size=5),
    order=st.integers(0, 4),
    graph=st.booleans(),
)
def test_raw_strings_sum_to_one(samples: list[str], probes: list[str], order: int, graph: bool) -> None:
    """Arbitrary strings (no start token, DAG-shaped graphs): still a distribution at every prefix."""
    mem = memory_of(samples)
    pred = mem.predictor(start="", alphabet="abé🙂\x00", max_order=4)
    pred = pred.with_backoff(pred.default_backoff(order, graph_context=graph))
    for s in probes:
        for j in range(len(s) + 1):
            probs = np.array(list(pred.distribution(s[:j]).values()))
            assert abs(probs.sum() - 1.0) < 1e-9 and probs.min() > 0
        assert math.isfinite(pred.log_prob(s))
    logp, chars = pred.log_probs(probes)
    assert chars.tolist() == [len(s) for s in probes]
    assert np.allclose(logp, [pred.log_prob(s) for s in probes], rtol=1e-12, atol=1e-12)


def test_nll_and_batch_scoring(names: list[str]) -> None:
    mem = memory_of([tokenize(n) for n in names[:500]])
    pred = mem.predictor()
    held_out = [tokenize(n) for n in names[500:600]]
    logp, chars = pred.log_probs(held_out)
    assert logp.shape == (100,) and logp.dtype == np.float64 and chars.dtype == np.int64
    assert chars.tolist() == [len(n) + 1 for n in names[500:600]]  # every character and the stop
    assert pred.nll(held_out) == pytest.approx(-logp.sum() / chars.sum())
    assert mem.nll(held_out) == pytest.approx(pred.nll(held_out))
    assert mem.log_prob(held_out[0]) == pytest.approx(logp[0])
    # The memory has seen its own names: they are far likelier than held-out ones.
    assert pred.nll([tokenize(n) for n in names[:100]]) < pred.nll(held_out) < math.log(len(pred.alphabet))


def test_fit_uses_validation_and_improves_it(names: list[str]) -> None:
    mem = memory_of([tokenize(n) for n in names[:450]])
    pred = mem.predictor()
    validation = [tokenize(n) for n in names[450:520]]
    fitted = pred.fit(validation, max_order=3, sweeps=1)
    assert isinstance(fitted, PlasticPredictor) and fitted.backoff.order <= 3
    assert fitted.backoff.graph_context
    for order in range(4):  # at least as good as Ney's discounts at every order tried
        assert fitted.nll(validation) <= pred.with_backoff(pred.default_backoff(order)).nll(validation) + 1e-12
    plain = pred.fit(validation, max_order=3, graph_context=False, sweeps=1)
    assert not plain.backoff.graph_context


def test_predictor_is_a_frozen_copy_and_the_cache_follows_learning() -> None:
    mem = memory_of([">ab_", ">ac_"])
    first = mem.predictor()
    assert mem.predictor()._core is first._core  # cached while the memory is unchanged
    before = mem.log_prob(">ad_", alphabet="d")
    mem.learn(">ad_")
    assert first.graph_counts(">a") == {"b": 1, "c": 1}  # the old copy does not change
    assert mem.predictor().graph_counts(">a") == {"b": 1, "c": 1, "d": 1}
    assert mem.log_prob(">ad_") > before
    mem.potentiate(">ad_", 5)
    assert mem.predictor().graph_counts(">a")["d"] == 6


def test_sampling_is_seeded(names: list[str]) -> None:
    pred = memory_of([tokenize(n) for n in names[:300]]).predictor()
    a = pred.sample(50, seed=7)
    assert a == pred.sample(50, seed=7) and a != pred.sample(50, seed=8)
    assert all(s.startswith(">") and (s.endswith("_") or len(s) == 51) for s in a)
    assert all(len(s) <= 4 for s in pred.sample(20, seed=1, max_length=3))


def test_empty_memory_needs_an_alphabet_and_is_uniform() -> None:
    mem = PlasticMemory()
    with pytest.raises(ValueError, match="alphabet"):
        mem.predictor()
    pred = mem.predictor(alphabet="ab_")
    assert pred.log_prob(">ab_") == pytest.approx(3 * math.log(1 / 3))


def test_threads_share_one_predictor(names: list[str]) -> None:
    pred = memory_of([tokenize(n) for n in names[:300]]).predictor()
    batch = [tokenize(n) for n in names[300:600]]
    expected = pred.log_probs(batch)[0]
    results: list[np.ndarray] = []

    def work() -> None:
        for _ in range(5):
            results.append(pred.log_probs(batch)[0])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and all(np.array_equal(r, expected) for r in results)


# ---------------------------------------------------------------------------- errors
def test_bad_samples_are_named() -> None:
    pred = memory_of([">ab_", ">ac_"]).predictor()
    with pytest.raises(ValueError, match=r"samples\[1\] holds U\+0078 'x' at index 2, which is not in the alphabet"):
        pred.log_probs([">ab_", ">ax_"])
    with pytest.raises(ValueError, match=r"^s holds U\+00EB 'ë' at index 1"):
        pred.log_prob(">ë")
    with pytest.raises(ValueError, match=r"samples\[0\] must begin with the start string"):
        pred.nll(["ab_"])
    with pytest.raises(ValueError, match="prefix must begin with the start string"):
        pred.distribution("a")
    with pytest.raises(TypeError, match=r"samples\[1\] must be a str, got int"):
        pred.log_probs([">a", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="got a single str"):
        pred.nll(">ab_")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one predicted character"):
        pred.nll([">"])


def test_bad_parameters_are_named() -> None:
    mem = memory_of([">ab_", ">ac_"])
    with pytest.raises(ValueError, match=r"discounts\[1\] must be in \(0, 1\], got 0"):
        Backoff((0.5, 0.0))
    with pytest.raises(ValueError, match=r"graph_discount must be in \(0, 1\], got 1.5"):
        Backoff((0.5,), graph_discount=1.5)
    with pytest.raises(TypeError, match=r"discounts\[0\] must be a float, got str"):
        Backoff(("a",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="discounts must hold"):
        Backoff(())
    with pytest.raises(ValueError, match="backoff.order must be <= max_order = 2"):
        mem.predictor(Backoff((0.5,) * 4), max_order=2)
    with pytest.raises(ValueError, match="stop must be one character"):
        mem.predictor(stop="__")
    with pytest.raises(TypeError, match="backoff must be a Backoff"):
        mem.predictor((0.5,))  # type: ignore[arg-type]
    pred = mem.predictor()
    with pytest.raises(ValueError, match="max_order must be an int in"):
        pred.fit([">ab_"], max_order=99)
    with pytest.raises(ValueError, match="validation must hold at least one sample"):
        pred.fit([])
    core = pred._core  # the binding names its own arguments too
    with pytest.raises(TypeError, match="discounts must be an array"):
        core.score([">ab_"], None, True, 0.5)
    with pytest.raises(ValueError, match=r"discounts\[0\] must be in \(0, 1\]"):
        core.score([">ab_"], np.array([-1.0]), True, 0.5)
    with pytest.raises(TypeError, match="graph_context must be a bool"):
        core.score([">ab_"], np.array([0.5]), "yes", 0.5)
    with pytest.raises(ValueError, match="stop U\\+0071 'q' is not in the alphabet"):
        core.sample(1, 0, 5, "q", np.array([0.5]), True, 0.5)
