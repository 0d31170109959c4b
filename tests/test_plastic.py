"""Plastic prefix memory: the C++ engine against the pure-Python oracle of the spec."""

from __future__ import annotations

import csv
import random
import sys
from collections import Counter
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plastic_oracle import PlasticOracle  # noqa: E402

from mnemonix import _io  # noqa: E402
from mnemonix.plastic import FORMAT, Inference, PlasticMemory, tokenize  # noqa: E402

# The makemore names list, bundled with the repository (data/README.md).
NAMES_PATH = Path(__file__).resolve().parents[1] / "data" / "names.txt"


@pytest.fixture(scope="module")
def names() -> list[str]:
    out = [line.strip() for line in NAMES_PATH.read_text().splitlines() if line.strip()]
    assert len(out) > 32_000, f"{NAMES_PATH} looks truncated ({len(out)} names)"
    return out


def learn_both(samples: list[str], exact_counts: bool = False) -> tuple[PlasticOracle, PlasticMemory]:
    oracle = PlasticOracle(exact_counts)
    mem = PlasticMemory(exact_counts=exact_counts)
    for s in samples:
        oracle.learn(s)
        mem.learn(s)
    return oracle, mem


def assert_same_graph(oracle: PlasticOracle, mem: PlasticMemory) -> None:
    assert mem.nodes() == oracle.nodes()
    assert mem.edges() == oracle.edges()
    assert mem.levels() == dict(sorted(oracle.levels().items()))


# ---------------------------------------------------------------------------- the rule
def test_worked_example_from_spec() -> None:
    mem = PlasticMemory()
    mem.learn(">emily_")
    assert mem.nodes() == [(">emily_", 1, 0)]
    mem.learn(">emma_")
    assert mem.nodes() == [(">emily_", 1, 1), (">em", 2, 0), (">emma_", 1, 1)]
    assert mem.edges() == [(">em", ">emma_"), (">em", ">emily_")]


@pytest.mark.parametrize("exact_counts", [False, True])
def test_first_300_names_identical_to_oracle(names: list[str], exact_counts: bool) -> None:
    oracle, mem = learn_both([tokenize(n) for n in names[:300]], exact_counts)
    assert len(mem) == 456
    assert_same_graph(oracle, mem)


def test_counts_quirk_reproduced_and_fixed(names: list[str]) -> None:
    samples = [tokenize(n) for n in names[:300]]
    research = PlasticMemory()
    exact = PlasticMemory(exact_counts=True)
    research.learn_many(samples, progress=False)
    exact.learn_many(samples, progress=False)
    assert [(s, r) for s, _, r in research.nodes()] == [(s, r) for s, _, r in exact.nodes()]
    assert research.edges() == exact.edges()
    undercounted = sum(a[1] < b[1] for a, b in zip(research.nodes(), exact.nodes()))
    assert undercounted == 22  # "at 300 names, 22 of 456 nodes undercount" (spec)


def test_names_make_a_radix_tree_with_exact_counts(names: list[str]) -> None:
    samples = [tokenize(n) for n in names[:3000]]
    mem = PlasticMemory(exact_counts=True)
    mem.learn_many(samples, progress=False)
    graph = mem.to_networkx()
    assert graph.number_of_edges() == graph.number_of_nodes() - 1
    assert nx.is_arborescence(graph)
    roots = [n for n in graph if graph.in_degree(n) == 0]
    assert roots == [">"]
    depth = nx.shortest_path_length(graph, ">")
    learned = Counter(samples)
    assert {n for n in graph if graph.out_degree(n) == 0} == set(learned)
    for node, data in graph.nodes(data=True):
        assert data["r_level"] == depth[node]
        below = nx.descendants(graph, node) | {node}
        assert data["count"] == sum(learned[s] for s in below), node
        for child in graph.successors(node):
            assert child.startswith(node)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alphabet=st.sampled_from(["ab", "abc", "xyz_", "aé€😀", "ab\x00"]),
    data=st.data(),
    exact_counts=st.booleans(),
)
def test_random_strings_identical_to_oracle(alphabet: str, data: st.DataObject, exact_counts: bool) -> None:
    samples = data.draw(st.lists(st.text(alphabet=alphabet, min_size=1, max_size=9), min_size=1, max_size=40))
    oracle, mem = learn_both(samples, exact_counts)
    assert_same_graph(oracle, mem)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_potentiation_identical_to_oracle(data: st.DataObject) -> None:
    samples = data.draw(st.lists(st.text(alphabet="abc", min_size=1, max_size=7), min_size=1, max_size=30))
    oracle, mem = learn_both(samples)
    for _ in range(data.draw(st.integers(0, 10))):
        target = data.draw(st.sampled_from(sorted(oracle.node)))
        amount = data.draw(st.integers(-5, 5))
        oracle.potentiate(target, amount)
        mem.potentiate(target, amount)
        extra = data.draw(st.text(alphabet="abc", min_size=1, max_size=7))
        oracle.learn(extra)
        mem.learn(extra)
    assert_same_graph(oracle, mem)
    assert all(count >= 0 for _, count, _ in mem.nodes())


def test_duplicates_identical_and_add_one() -> None:
    samples = [tokenize(n) for n in ["anna", "anne", "anna", "ann", "anna", "bob", "ann", "anne"]]
    oracle, mem = learn_both(samples * 3)
    assert_same_graph(oracle, mem)
    before = dict((s, c) for s, c, _ in mem.nodes())
    mem.learn(">anna_")
    after = dict((s, c) for s, c, _ in mem.nodes())
    assert after[">anna_"] == before[">anna_"] + 1


def test_one_character_strings() -> None:
    samples = list("abacabca") + ["ab", "a", "ba", "c"]
    oracle, mem = learn_both(samples)
    assert_same_graph(oracle, mem)


def test_very_long_strings() -> None:
    rng = random.Random(7)
    base = "".join(rng.choice("ab") for _ in range(10_000))
    samples = [base, base[:9_000] + "b" * 1_000, "a" * 10_000, "a" * 9_999 + "b", base[5_000:], base]
    samples += ["".join(rng.choice("abc") for _ in range(10_000)) for _ in range(3)]
    oracle, mem = learn_both(samples)
    assert_same_graph(oracle, mem)
    result = mem.infer(base[:20], stop="")
    assert result.completion  # a walk without the stop token ends at a leaf, no crash


def test_unicode_code_points() -> None:
    samples = ["🙂a", "🙂b", "é", "e\u0301", "日本語", "日本", "日本人", "\U0010ffff", "🙂", "a🙂b", "x\x00y"]
    oracle, mem = learn_both(samples)
    assert_same_graph(oracle, mem)
    assert "日本" in mem and "日" not in mem


# ---------------------------------------------------------------------------- argument checks
def test_empty_string_rejected_with_clear_error() -> None:
    mem = PlasticMemory()
    with pytest.raises(ValueError, match=r"s must be a non-empty str"):
        mem.learn("")
    mem.learn("ab")
    with pytest.raises(ValueError, match=r"samples\[1\] must be a non-empty str"):
        mem.learn_many(["cd", "", "ef"], progress=False)
    assert mem.nodes() == [("ab", 1, 0)]  # nothing half-applied


@pytest.mark.parametrize("bad", [5, b"ab", None, ["a"], 1.5])
def test_non_str_rejected(bad: object) -> None:
    mem = PlasticMemory()
    with pytest.raises(TypeError, match=r"s must be a str"):
        mem.learn(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"samples\[0\] must be a str"):
        mem.learn_many([bad], progress=False)  # type: ignore[list-item]
    assert len(mem) == 0


def test_other_argument_errors() -> None:
    mem = PlasticMemory()
    mem.learn_many(["ab", "ac"], progress=False)
    with pytest.raises(TypeError, match="samples must be an iterable of str"):
        mem.learn_many("abc")
    with pytest.raises(ValueError, match="lone surrogates"):
        mem.learn("a\ud800")
    with pytest.raises(ValueError, match="prefix must be valid unicode"):
        mem.infer("a\ud800")
    assert "a\ud800" not in mem and mem.node("a\ud800") is None
    with pytest.raises(ValueError, match="s must be a node"):
        mem.potentiate("zz", 1)
    with pytest.raises(TypeError, match="amount must be an int"):
        mem.potentiate("ab", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be"):
        mem.infer("a", mode="beam")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prefix must be a str"):
        mem.infer(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exact_counts must be a bool"):
        PlasticMemory(exact_counts=1)  # type: ignore[arg-type]


def test_learn_many_equals_learn_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnemonix.plastic.memory as plastic_memory  # learn_many reads its chunk size here

    monkeypatch.setattr(plastic_memory, "_CHUNK", 7)
    rng = random.Random(3)
    samples = ["".join(rng.choice("abcd") for _ in range(rng.randint(1, 8))) for _ in range(60)]
    one = PlasticMemory()
    for s in samples:
        one.learn(s)
    many = PlasticMemory()
    many.learn_many(iter(samples), progress=True)
    assert one.nodes() == many.nodes() and one.edges() == many.edges()
    assert many.samples == 60


# ---------------------------------------------------------------------------- inference
def reference_greedy(mem: PlasticMemory, prefix: str, stop: str) -> tuple[list[str], list[float]]:
    """The documented greedy walk, on the exported networkx graph."""
    graph = mem.to_networkx()
    order = {s: i for i, (s, _, _) in enumerate(mem.nodes())}
    starts = [prefix[:k] for k in range(len(prefix) + 1) if prefix[:k] in graph]
    if not starts:
        return [], []
    cur = max(starts, key=lambda s: (graph.nodes[s]["r_level"], len(s)))
    path, probs = [cur], []
    while not (stop and cur.endswith(stop)):
        cands = [c for c in graph.successors(cur) if len(list(nx.all_simple_paths(graph, cur, c))) == 1]
        if len(cur) < len(prefix):
            agree = [c for c in cands if c[: len(prefix)] == prefix[: len(c)]]
            cands = agree or cands
        if not cands:
            break
        counts = [graph.nodes[c]["count"] for c in cands]
        best = max(range(len(cands)), key=lambda i: (counts[i], -i))
        total = sum(counts)
        probs.append(counts[best] / total if total else 1 / len(cands))
        cur = cands[best]
        path.append(cur)
    assert order  # silence unused warnings on empty graphs
    return path, probs


@settings(max_examples=80, deadline=None)
@given(
    samples=st.lists(st.text(alphabet="abc_", min_size=1, max_size=7), min_size=1, max_size=25),
    prefix=st.text(alphabet="abc_", max_size=8),
)
def test_greedy_inference_matches_reference(samples: list[str], prefix: str) -> None:
    mem = PlasticMemory()
    mem.learn_many(samples, progress=False)
    result = mem.infer(prefix, stop="_")
    path, probs = reference_greedy(mem, prefix, "_")
    assert result.path == path
    assert result.probabilities == pytest.approx(probs)
    assert result.completion == (path[-1] if path else "")


def test_inference_on_names(names: list[str]) -> None:
    mem = PlasticMemory()
    mem.learn_many([tokenize(n) for n in names[:2000]], progress=False)
    greedy = mem.infer(">em")
    assert isinstance(greedy, Inference)
    assert greedy.completion.startswith(">em") and greedy.completion.endswith("_")
    assert all(0 < p <= 1 for p in greedy.probabilities)
    assert greedy == mem.infer(">em")
    draws = [mem.infer(">", mode="sample", seed=s).completion for s in range(300)]
    assert all(d.startswith(">") and d.endswith("_") for d in draws)
    assert len(set(draws)) > 30
    assert draws == [mem.infer(">", mode="sample", seed=s).completion for s in range(300)]
    assert mem.infer(">zzzzqq").completion.startswith(">z")  # prefix not a node: starts from deepest prefix
    assert mem.infer("no start token") == Inference("", [], [])


def test_sampling_follows_counts() -> None:
    mem = PlasticMemory()
    mem.learn_many([">ab_"] * 3 + [">ac_"], progress=False)
    draws = Counter(mem.infer(">a", mode="sample", seed=s).completion for s in range(4000))
    assert set(draws) == {">ab_", ">ac_"}
    assert abs(draws[">ab_"] / 4000 - 0.75) < 0.04
    result = mem.infer(">a", mode="sample", seed=11)
    assert result.probabilities == [pytest.approx(0.75 if result.completion == ">ab_" else 0.25)]


def test_zero_counts_sample_uniformly_and_stop_without_token() -> None:
    mem = PlasticMemory()
    mem.learn_many([">ab_", ">ac_"], progress=False)
    mem.potentiate(">ab_", -10)
    mem.potentiate(">ac_", -10)
    assert mem.node(">ab_") == (0, 1) and mem.node(">ac_") == (0, 1)
    result = mem.infer(">a", mode="sample", seed=0)
    assert result.probabilities == [0.5]
    assert mem.infer(">a", stop="#").completion in {">ab_", ">ac_"}  # leaf without stop: ends


# ---------------------------------------------------------------------------- persistence, export
def test_save_load_round_trip_and_continue(tmp_path: Path, names: list[str]) -> None:
    samples = [tokenize(n) for n in names[:500]] + ["日本🙂"]
    for exact in (False, True):
        mem = PlasticMemory(exact_counts=exact)
        mem.learn_many(samples, progress=False)
        path = tmp_path / f"mem{exact}.npz"
        mem.save(path)
        loaded = PlasticMemory.load(path)
        assert loaded.exact_counts == exact and loaded.samples == mem.samples
        assert loaded.nodes() == mem.nodes() and loaded.edges() == mem.edges()
        more = [tokenize(n) for n in names[500:700]]
        mem.learn_many(more, progress=False)
        loaded.learn_many(more, progress=False)
        assert loaded.nodes() == mem.nodes() and loaded.edges() == mem.edges()
    empty = PlasticMemory()
    empty.save(tmp_path / "empty.npz")
    assert len(PlasticMemory.load(tmp_path / "empty.npz")) == 0


def test_load_rejects_corrupted_newer_and_invalid(tmp_path: Path) -> None:
    mem = PlasticMemory()
    mem.learn_many(["abc", "abd", "xy"], progress=False)
    path = tmp_path / "m.npz"
    mem.save(path)
    raw = bytearray(path.read_bytes())
    payload = "abc".encode("utf-32-le")  # the first node's code points, stored uncompressed
    at = raw.index(payload)
    raw[at + 4] ^= 0x01  # 'b' -> 'c': a plausible but corrupted string
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(_io.FormatError):
        PlasticMemory.load(tmp_path / "bad.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[: len(raw) // 2])
    with pytest.raises(_io.FormatError):
        PlasticMemory.load(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a file")
    with pytest.raises(_io.FormatError):
        PlasticMemory.load(tmp_path / "junk.npz")
    arrays = {k: np.asarray(v) for k, v in mem._engine.export_arrays().items()}
    _io.save_arrays(tmp_path / "new.npz", arrays, format=FORMAT, version=99, meta={})
    with pytest.raises(_io.FormatError, match="newer"):
        PlasticMemory.load(tmp_path / "new.npz")
    broken = dict(arrays, edge_dst=np.array([0, 0], dtype=np.int64))  # self loop / duplicate
    _io.save_arrays(tmp_path / "inv.npz", broken, format=FORMAT, version=1, meta={})
    with pytest.raises(_io.FormatError, match="invalid plastic graph"):
        PlasticMemory.load(tmp_path / "inv.npz")
    with pytest.raises(FileNotFoundError):
        PlasticMemory.load(tmp_path / "missing.npz")


def test_exports(tmp_path: Path) -> None:
    mem = PlasticMemory()
    mem.learn_many([tokenize(n) for n in ["emily", "emma", "ella", 'q"uote']], progress=False)
    graph = mem.to_networkx()
    assert list(graph.nodes(data="count")) == [(s, c) for s, c, _ in mem.nodes()]
    assert list(graph.edges()) == mem.edges()
    dot = mem.to_dot()
    assert dot.startswith("digraph plastic {") and dot.count("->") == len(mem.edges())
    assert '\\"' in dot
    mem.to_csv(tmp_path / "n.csv", tmp_path / "e.csv")
    with open(tmp_path / "n.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "string", "count", "r_level"]
    assert [(r[1], int(r[2]), int(r[3])) for r in rows[1:]] == mem.nodes()
    with open(tmp_path / "e.csv", newline="", encoding="utf-8") as fh:
        edges = [(int(a), int(b)) for a, b in list(csv.reader(fh))[1:]]
    strings = [s for s, _, _ in mem.nodes()]
    assert [(strings[a], strings[b]) for a, b in edges] == mem.edges()
    stats = mem.stats()
    assert stats["nodes"] == len(mem) and stats["edges"] == len(mem.edges()) and stats["samples"] == 4
    assert sum(stats["nodes_per_level"].values()) == len(mem)
    levels = mem.levels()
    for level, row in stats["per_level"].items():
        assert row["nodes"] == len(levels[level]) == stats["nodes_per_level"][level]
        assert row["count_sum"] == sum(c for s, c, r in mem.nodes() if r == level)
    assert sum(row["leaves"] for row in stats["per_level"].values()) == stats["leaves"]
    assert stats["leaves"] == 4 and stats["memory_bytes"] > 0
    assert ">emma_" in mem and 3 not in mem
    assert "PlasticMemory(nodes=" in repr(mem)


@pytest.mark.parametrize("exact_counts", [False, True])
def test_deep_chain_has_no_recursion_limit(exact_counts: bool) -> None:
    # "a"*n, ..., "a": every sample lands above the previous one and lifts the whole chain.
    small = ["a" * k for k in range(30, 0, -1)]
    oracle, mem = learn_both(small, exact_counts)
    assert_same_graph(oracle, mem)
    n = 400
    mem = PlasticMemory(exact_counts=exact_counts)
    mem.learn_many(["a" * k for k in range(n, 0, -1)], progress=False)
    expected_nodes = [
        ("a" * (n - i), (i + 1 if exact_counts else min(i + 1, 2)), n - 1 - i) for i in range(n)
    ]
    assert mem.nodes() == expected_nodes
    assert mem.edges() == [("a" * (n - i - 1), "a" * (n - i)) for i in range(n - 1)]
    assert mem.infer("a", stop="").completion == "a" * n


def test_learn_many_releases_the_gil() -> None:
    import threading
    import time

    rng = random.Random(0)
    samples = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(5, 15))) for _ in range(40_000)]
    mem = PlasticMemory()
    window: list[float] = []

    def work() -> None:
        window.append(time.perf_counter())
        mem._engine.learn_many(samples)  # one C++ call
        window.append(time.perf_counter())

    ticks: list[float] = []
    worker = threading.Thread(target=work)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.0005)
    worker.join()
    start, end = window
    inside = [t for t in ticks if start + 0.2 * (end - start) < t < end - 0.2 * (end - start)]
    assert inside, "the main thread never ran while learn_many was in C++: the GIL was held"
    assert mem.samples == len(samples)
