"""The C++ engines under threads: concurrent readers, exclusive writers (issue 10, item 1).

Before the engines had a reader-writer lock, several threads learning into one
``PlasticMemory`` crashed the interpreter (segfault / "double free or corruption"),
a reader next to a writer raised spurious ``IndexError`` / ``RuntimeError``, and two
threads firing into one ``HebbianGraph`` aborted ("corrupted double-linked list").
Each test here hammers one engine with writer and reader threads for about a second,
checks every read for torn state, and compares the final state with the sequential
result of the same writes (order-independent invariants: the writes commute).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mnemonix._core import hebbian
from mnemonix.plastic import PlasticMemory, tokenize

NAMES_PATH = Path(__file__).resolve().parents[1] / "data" / "names.txt"
DEADLINE_S = 20.0  # a hung lock fails the test instead of hanging CI


@pytest.fixture(autouse=True)
def _fast_thread_switches():
    """Switch Python threads often, so that the pure-Python parts interleave too."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


def run_threads(writers: list[Callable[[], None]], readers: list[Callable[[], None]]) -> list[str]:
    """Run writers once and readers in a loop until the writers are done; return every error."""
    errors: list[str] = []
    done = threading.Event()
    start = threading.Barrier(len(writers) + len(readers))

    def guarded(body: Callable[[], None], loop: bool) -> Callable[[], None]:
        def run() -> None:
            try:
                start.wait()
                body()
                while loop and not done.is_set():
                    body()
            except BaseException as exc:  # noqa: BLE001 - every escape is a failure
                errors.append(f"{type(exc).__name__}: {exc}")

        return run

    threads = [threading.Thread(target=guarded(w, False)) for w in writers]
    readers_threads = [threading.Thread(target=guarded(r, True)) for r in readers]
    for t in threads + readers_threads:
        t.start()
    deadline = time.monotonic() + DEADLINE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    done.set()
    for t in readers_threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [t for t in threads + readers_threads if t.is_alive()]
    assert not hung, f"{len(hung)} threads still running after {DEADLINE_S} s (deadlock?)"
    return errors


@pytest.fixture(scope="module")
def samples() -> list[str]:
    names = [line.strip() for line in NAMES_PATH.read_text().splitlines() if line.strip()]
    return [tokenize(n) for n in names[:3000]]


def check_graph(nodes: list[tuple[str, int, int]], edges: list[tuple[str, str]]) -> None:
    """A graph read in one piece: unique nodes, edges between them, each from a proper substring."""
    strings = [s for s, _, _ in nodes]
    assert len(set(strings)) == len(strings), "duplicate node string"
    known = set(strings)
    for u, v in edges:
        assert u in known and v in known, f"edge {u!r} -> {v!r} leaves the node set"
        assert u in v and len(u) < len(v), f"edge {u!r} -> {v!r} is not substring -> longer string"


def test_plastic_writers_and_readers_match_sequential(samples: list[str]) -> None:
    mem = PlasticMemory(exact_counts=True)
    chunks = [samples[i::3] for i in range(3)]

    def writer(chunk: list[str], batched: bool) -> Callable[[], None]:
        def run() -> None:
            if batched:
                for j in range(0, len(chunk), 25):
                    mem.learn_many(chunk[j : j + 25], progress=False)
            else:
                for s in chunk:
                    mem.learn(s)

        return run

    def graph_reader() -> None:
        nodes, edges = mem._engine.graph()
        check_graph(nodes, edges)
        stats = mem.stats()
        assert sum(stats["nodes_per_level"].values()) == stats["nodes"]
        assert stats["samples"] <= len(samples)
        assert len(mem.nodes()) >= len(nodes)  # nodes are never removed
        levels = mem.levels()
        assert sum(len(v) for v in levels.values()) >= len(nodes)

    seen = samples[:50]

    def point_reader() -> None:
        before = mem.samples
        for s in seen:
            present = s in mem
            info = mem.node(s)
            assert info is not None or not present, f"{s!r} vanished"  # nodes are never removed
            # learn adds a sample's node with count 0, then potentiates it: a reader that
            # could see a half-applied learn would catch the 0 here
            assert info is None or info[0] >= 1, f"{s!r} was learned but has count {info[0]}"
        res = mem.infer(">a", mode="sample", seed=1)
        assert all(0.0 < p <= 1.0 for p in res.probabilities)
        assert len(mem) >= 0 and mem.samples >= before
        text = mem.to_dot()  # several views, one read lock: every edge joins two drawn nodes
        assert text.startswith("digraph")

    writers = [writer(chunks[0], False), writer(chunks[1], True), writer(chunks[2], False)]
    errors = run_threads(writers, [graph_reader, point_reader])
    assert errors == [], errors[:5]

    expected = PlasticMemory(exact_counts=True)
    expected.learn_many(samples, progress=False)
    assert mem.samples == expected.samples == len(samples)
    # On tokenised names the graph is a radix tree: its nodes, counts (exact_counts),
    # r_levels and edges do not depend on the order of the learns (checked in
    # test_sequential_invariants_are_order_independent), only their numbering does.
    assert sorted(mem.nodes()) == sorted(expected.nodes())
    assert sorted(mem.edges()) == sorted(expected.edges())


def test_sequential_invariants_are_order_independent(samples: list[str]) -> None:
    """The premise of the comparison above: learn order changes numbering, not the graph."""
    forward = PlasticMemory(exact_counts=True)
    forward.learn_many(samples[:1500], progress=False)
    rng = np.random.default_rng(0)
    shuffled = PlasticMemory(exact_counts=True)
    shuffled.learn_many([samples[i] for i in rng.permutation(1500)], progress=False)
    assert forward.nodes() != shuffled.nodes()  # the order did change something...
    assert sorted(forward.nodes()) == sorted(shuffled.nodes())  # ...but not the graph
    assert sorted(forward.edges()) == sorted(shuffled.edges())


def test_plastic_concurrent_potentiate_adds_up(samples: list[str]) -> None:
    base = samples[:3000]
    mem, expected = PlasticMemory(), PlasticMemory()
    mem.learn_many(base, progress=False)
    expected.learn_many(base, progress=False)
    rng = np.random.default_rng(1)
    plans = [[(base[i], int(a)) for i, a in zip(rng.integers(0, 3000, 4000), rng.integers(1, 4, 4000))]
             for _ in range(3)]

    def writer(plan: list[tuple[str, int]]) -> Callable[[], None]:
        return lambda: [mem.potentiate(s, a) for s, a in plan]

    def reader() -> None:
        nodes, edges = mem._engine.graph()
        check_graph(nodes, edges)

    errors = run_threads([writer(p) for p in plans], [reader])
    assert errors == [], errors[:5]
    for plan in plans:  # positive amounts add: any order gives the same counts
        for s, a in plan:
            expected.potentiate(s, a)
    assert mem.nodes() == expected.nodes()


def fire_groups(seed: int, count: int, batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(count):
        ids = rng.integers(0, 300, (batch, 24))
        ids[rng.random((batch, 24)) < 0.2] = -1  # padding
        groups.append(ids)
    return groups


def sorted_rows(*columns: np.ndarray) -> np.ndarray:
    """Rows (columns[0][i], columns[1][i], ...) in lexicographic order, as one [n, k] array."""
    table = np.stack(columns, axis=1)
    return table[np.lexsort(table.T[::-1])]


def edge_table(g, row: int) -> np.ndarray:
    src, dst, cnt = g.edges(row)
    return sorted_rows(src, dst, cnt.astype(np.int64))


def test_hebbian_writers_readers_and_walks_match_sequential() -> None:
    batch = 2
    graph = hebbian.HebbianGraph(batch)
    plans = [fire_groups(seed, 1000, batch) for seed in range(3)]
    ids = np.tile(np.arange(300, dtype=np.int64), (batch, 1))
    slots = graph.add_nodes(ids)  # slots stay valid: nothing is removed

    def writer(plan: list[np.ndarray]) -> Callable[[], None]:
        return lambda: [graph.fire_together(group) for group in plan]

    def edge_reader() -> None:
        for row in range(batch):
            src, dst, cnt = graph.edges(row)
            # fire_together updates both directions of an edge: a torn read breaks symmetry
            forward = sorted_rows(src, dst, cnt.astype(np.int64))
            backward = sorted_rows(dst, src, cnt.astype(np.int64))
            assert np.array_equal(forward, backward), "asymmetric co-fire counts"
            fire_ids, fire_counts = graph.fires(row)
            assert len(fire_ids) == len(fire_counts) == graph.num_nodes(row)

    def search_reader() -> None:
        dense = graph.dense(0, ids[0, :40], ids[0, :40])
        assert (dense == dense.T).all()
        ltm = slots[:, :50]
        positions = np.tile(np.arange(50, dtype=np.int64), (batch, 1))
        initial = graph.initial_ltm(slots[:, :8], ltm, positions, 50, 7)
        assert ((initial >= -1) & (initial < 50)).all()
        walked = graph.walk(np.sort(initial, axis=1), ltm, 3)
        assert walked.shape == (batch, 4 * 8)

    errors = run_threads([writer(p) for p in plans], [edge_reader, search_reader])
    assert errors == [], errors[:5]

    expected = hebbian.HebbianGraph(batch)
    for plan in plans:
        for group in plan:
            expected.fire_together(group)
    for row in range(batch):  # co-fire counts are sums: the order of the fires does not matter
        assert np.array_equal(edge_table(graph, row), edge_table(expected, row))
        ids_now, fires_now = graph.fires(row)
        ids_then, fires_then = expected.fires(row)
        assert np.array_equal(sorted_rows(ids_now, fires_now.astype(np.int64)),
                              sorted_rows(ids_then, fires_then.astype(np.int64)))
