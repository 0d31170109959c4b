"""Plastic prefix memory: :class:`PlasticMemory`, a C++ graph engine for the research rule.

The research code (seed 003, "Plastic Memory Constructor", class
``PlasticPrefixNetwork``; rule restated in ``shared/specs/plastic_memory.md``)
learns strings into a directed graph of more and more abstract common
prefixes ("non-local refactoring") and strengthens the path of each learned
sample ("synaptic potentiation"). This module wraps the C++ engine
``mnemonix._core.plastic.Engine``, which reproduces that rule node for node
and edge for edge (order, ``count`` and ``r_level`` included) with per-level
ordered indexes, substring hashing and path-counting lift/potentiate passes
instead of scans and per-path recursion.

Example
-------
>>> from mnemonix.plastic import PlasticMemory, tokenize
>>> mem = PlasticMemory()
>>> mem.learn_many([tokenize(n) for n in ["emily", "emma", "ella"]], progress=False)
>>> mem.infer(">em").completion in {">emily_", ">emma_"}
True
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from mnemonix import _io, _loadcheck
from mnemonix.plastic.predictor import MAX_ORDER, Backoff, PlasticPredictor

__all__ = ["PlasticMemory", "Inference", "tokenize", "FORMAT", "FORMAT_VERSION"]

FORMAT = "mnemonix.plastic"
FORMAT_VERSION = 1
_CHUNK = 8192


def _engine_class() -> Any:
    from mnemonix._core import plastic as _plastic  # compiled extension

    return _plastic.Engine


def tokenize(s: str, start: str = ">", stop: str = "_") -> str:
    """Wrap a sample as the research notebook does: ``start + s + stop`` (``">" + s + "_"``)."""
    for name, value in (("s", s), ("start", start), ("stop", stop)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return f"{start}{s}{stop}"


def _encodable(s: str) -> bool:
    """True unless ``s`` holds lone surrogates (which have no UTF-32 form)."""
    try:
        s.encode("utf-32")
    except UnicodeEncodeError:
        return False
    return True


def _check_sample(name: str, s: object) -> str:
    if not isinstance(s, str):
        raise TypeError(f"{name} must be a str, got {type(s).__name__}")
    if not s:
        raise ValueError(f"{name} must be a non-empty str, got ''")
    if not _encodable(s):
        raise ValueError(f"{name} must be valid unicode (no lone surrogates), got {s!r}")
    return s


class Inference(NamedTuple):
    """Result of :meth:`PlasticMemory.infer`.

    Attributes
    ----------
    completion : str
        The string of the node where the walk ended ('' when no node is a prefix of the prompt).
    probabilities : list[float]
        Probability of each step among the candidate children, len = len(path) - 1.
    path : list[str]
        Visited nodes, starting node first.
    """

    completion: str
    probabilities: list[float]
    path: list[str]


class PlasticMemory:
    """Plastic prefix memory (the research learning rule, in C++).

    Parameters
    ----------
    exact_counts : bool, default False
        ``False`` reproduces the research rule exactly, including its counts quirk:
        a node that ``place`` creates above an existing subtree starts at count 1
        whatever was learned below it. ``True`` changes only that step: the new
        node starts at the sum of the counts of its children (taken after its edges
        are added, before the sample is potentiated). Everything else, graph shape,
        order and r_levels included, is identical. On tree-shaped graphs (always the
        case on tokenised names) every count then equals the number of samples
        learned at or below the node, plus explicit (de)potentiation amounts; where
        a node reaches a sample by k paths it counts it k times, as potentiation does.

    Notes
    -----
    Nodes have a string, an int64 ``count`` and an int64 ``r_level``; node order
    and edge order are insertion order, as in the research code (networkx).

    Thread safety: concurrent readers, exclusive writers. The engine holds a
    reader-writer lock: ``learn``, ``learn_many`` and ``potentiate`` are writers and
    apply each call whole (``learn_many`` one chunk of 8192 samples at a time when it
    shows a progress bar, else the whole batch), so a reader never sees a
    half-applied learn; every other method is a reader and may run in any number of
    threads at once. Methods that return several views (``stats``, ``save``,
    ``to_networkx``, ``to_dot``, ``to_csv``) take them under one read lock, so they
    agree with each other. No call holds the GIL while it waits for the lock, and
    calls longer than a lookup release it while they run. Concurrent learns are
    applied one after the other in some order: the resulting graph is that of
    learning the samples sequentially in that order.
    """

    def __init__(self, exact_counts: bool = False) -> None:
        if not isinstance(exact_counts, bool):
            raise TypeError(f"exact_counts must be a bool, got {type(exact_counts).__name__}")
        self._engine = _engine_class()(exact_counts)
        self._predictors: dict[tuple, tuple[int, Any]] = {}  # (max_order, alphabet, start) -> (version, core)
        self._predictors_lock = threading.Lock()

    # ------------------------------------------------------------------ learning
    @property
    def exact_counts(self) -> bool:
        return bool(self._engine.exact_counts)

    @property
    def samples(self) -> int:
        """Number of samples learned (each ``learn`` call, duplicates included)."""
        return int(self._engine.samples)

    def learn(self, s: str) -> None:
        """Learn one sample (apply the rule once). ``s`` must be a non-empty str."""
        self._engine.learn(_check_sample("s", s))

    def learn_many(self, samples: Iterable[str], progress: bool = True) -> None:
        """Learn samples in order; same result as calling :meth:`learn` on each.

        All samples are checked before any is learned (a bad one leaves the memory
        unchanged). The C++ loop runs without the GIL, under the engine's write lock
        (readers see the whole batch or none of it); with ``progress`` and more than
        8192 samples it runs in chunks of 8192 under a tqdm progress bar, each chunk
        applied whole.
        """
        if isinstance(samples, str):
            raise TypeError("samples must be an iterable of str, got a single str (use learn)")
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {type(progress).__name__} {progress!r}")
        if not isinstance(samples, Iterable):
            raise TypeError(f"samples must be an iterable of str, got {type(samples).__name__}")
        batch = list(samples)
        for i, s in enumerate(batch):
            _check_sample(f"samples[{i}]", s)
        if not progress or len(batch) <= _CHUNK:  # one chunk takes milliseconds: no bar
            self._engine.learn_many(batch)
            return
        from tqdm.auto import tqdm

        with tqdm(total=len(batch), unit="sample", desc="learn", leave=False) as bar:
            for start in range(0, len(batch), _CHUNK):
                chunk = batch[start : start + _CHUNK]
                self._engine.learn_many(chunk)
                bar.update(len(chunk))

    def potentiate(self, s: str, amount: int = 1) -> None:
        """Add ``amount`` to the count of node ``s`` and, once per path, of every node above it.

        A node reached from ``s`` by k paths (walking in-edges) changes by ``k * amount``,
        as in the research rule. Negative amounts de-potentiate; counts never go below 0.
        """
        if not isinstance(s, str):
            raise TypeError(f"s must be a str, got {type(s).__name__}")
        if isinstance(amount, bool) or not isinstance(amount, (int, np.integer)):
            raise TypeError(f"amount must be an int, got {type(amount).__name__}")
        if not -(2**63) <= int(amount) < 2**63:  # the engine's counts are int64 (same words as _core)
            raise ValueError(f"amount must be an integer in [-2**63, 2**63 - 1] (int64), got {amount}")
        if s not in self:
            raise ValueError(f"s must be a node of the memory, got {s!r}")
        self._engine.potentiate(s, int(amount))

    # ------------------------------------------------------------------ inference
    def infer(
        self,
        prefix: str,
        stop: str = "_",
        mode: Literal["greedy", "sample"] = "greedy",
        seed: int | None = None,
    ) -> Inference:
        """Complete ``prefix`` by walking down the graph.

        The walk starts at the node that is a prefix of ``prefix`` (possibly ``prefix``
        itself) with the highest ``r_level``, ties going to the longest string. At each
        step it moves to a child, weighting children by ``count``: ``"greedy"`` takes the
        largest (ties: first in edge order), ``"sample"`` draws in proportion to counts
        with a splitmix64 stream seeded by ``seed`` (uniformly when every candidate has
        count 0). Children reachable from the current node by more than one path are
        skipped (as in the research code). While the walk is shorter than ``prefix``,
        children that agree with ``prefix`` are preferred when there are any. The walk
        ends when the string ends with ``stop`` (``stop=''`` never matches) or when no
        candidate child is left (a leaf without the stop token simply ends the walk).

        Parameters
        ----------
        prefix : str
            Any string ('' starts from the deepest node that is a prefix of '', i.e. '' itself if present).
        stop : str
            Stop token.
        mode : {"greedy", "sample"}
        seed : int or None
            Seed of ``"sample"``; ``None`` draws one from the OS. Same seed, same result.

        Returns
        -------
        Inference
            ``(completion, probabilities, path)``; completion is '' when no node is a
            prefix of ``prefix``.
        """
        for name, value in (("prefix", prefix), ("stop", stop)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
            if not _encodable(value):
                raise ValueError(f"{name} must be valid unicode (no lone surrogates), got {value!r}")
        if not isinstance(mode, str):
            raise TypeError(f"mode must be 'greedy' or 'sample', got {type(mode).__name__}")
        if mode not in ("greedy", "sample"):
            raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        path, probs = self._engine.infer(prefix, stop, mode == "sample", int(seed) % (1 << 64))
        return Inference(path[-1] if path else "", list(probs), list(path))

    # ------------------------------------------------------------------ prediction
    def predictor(
        self,
        backoff: Backoff | None = None,
        *,
        max_order: int | None = None,
        alphabet: str = "",
        start: str = ">",
        stop: str = "_",
    ) -> PlasticPredictor:
        """The next-character distribution read from the graph, as a frozen copy.

        See :mod:`mnemonix.plastic.predictor` for exactly how the distribution is read
        (the deepest node that is a prefix of the history, its out-edges weighted by counts,
        interpolated with shorter contexts read from the same graph).

        Parameters
        ----------
        backoff : Backoff or None
            Interpolation parameters; None: order ``DEFAULT_ORDER`` (4) with Ney's discounts.
        max_order : int or None
            Longest k-gram order the copy can serve (for :meth:`PlasticPredictor.fit`);
            default ``max(backoff.order, MAX_ORDER)``.
        alphabet : str
            Characters to add to the alphabet (those the graph predicts are always in it):
            give every character the scored samples may hold.
        start, stop : str
            Start string (context, never predicted) and stop token (ends sampling, one character).

        The copy is taken under one read lock and cached until the memory changes.
        """
        for name, value in (("alphabet", alphabet), ("start", start), ("stop", stop)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
            if not _encodable(value):
                raise ValueError(f"{name} must be valid unicode (no lone surrogates), got {value!r}")
        if len(stop) != 1:
            raise ValueError(f"stop must be one character, got {stop!r}")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff or None, got {type(backoff).__name__}")
        if max_order is None:
            max_order = max(MAX_ORDER, backoff.order if backoff is not None else 0)
        if isinstance(max_order, bool) or not isinstance(max_order, (int, np.integer)):
            raise TypeError(f"max_order must be an int or None, got {type(max_order).__name__}")
        core = self._predictor_core(int(max_order), alphabet, start)
        if not core.alphabet:
            raise ValueError("the memory predicts no character yet (nothing learned past the start string) "
                             "and alphabet is empty: learn samples or pass alphabet=")
        return PlasticPredictor(core, backoff, stop)

    def _predictor_core(self, max_order: int, alphabet: str, start: str) -> Any:
        key = (max_order, alphabet, start)
        version = int(self._engine.version)
        with self._predictors_lock:
            cached = self._predictors.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
        core = self._engine.predictor(start, max_order, alphabet)  # GIL released while it copies
        with self._predictors_lock:
            # The version read before the copy: a learn in between only makes the entry stale.
            self._predictors = {k: v for k, v in self._predictors.items() if v[0] == version}
            self._predictors[key] = (version, core)
        return core

    def log_prob(self, s: str, *, backoff: Backoff | None = None, alphabet: str = "", start: str = ">") -> float:
        """Log-likelihood (nats) of sample ``s`` (as learned: ``">emma_"``) under :meth:`predictor`.

        Sums ``log p(s[j] | s[:j])`` over the characters after ``start``, the stop token included.
        """
        return self.predictor(backoff, alphabet=alphabet, start=start).log_prob(s)

    def nll(self, samples: Sequence[str], *, backoff: Backoff | None = None, alphabet: str = "",
            start: str = ">") -> float:
        """Negative log-likelihood per predicted character (nats) of ``samples`` under :meth:`predictor`."""
        return self.predictor(backoff, alphabet=alphabet, start=start).nll(samples)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self._engine.num_nodes)

    def __contains__(self, s: object) -> bool:
        return isinstance(s, str) and _encodable(s) and s in self._engine

    def __repr__(self) -> str:
        return (
            f"PlasticMemory(nodes={len(self)}, edges={self._engine.num_edges}, "
            f"samples={self.samples}, exact_counts={self.exact_counts})"
        )

    def node(self, s: str) -> tuple[int, int] | None:
        """``(count, r_level)`` of node ``s``, or None."""
        if not isinstance(s, str):
            raise TypeError(f"s must be a str, got {type(s).__name__}")
        return self._engine.node(s) if _encodable(s) else None

    def nodes(self) -> list[tuple[str, int, int]]:
        """All nodes as ``(string, count, r_level)`` in insertion order."""
        return self._engine.nodes()

    def edges(self) -> list[tuple[str, str]]:
        """All edges ``(parent, child)`` in networkx order (by parent node, then insertion)."""
        return self._engine.edges()

    def levels(self) -> dict[int, list[str]]:
        """``r_level -> node strings`` (node order within a level), levels ascending."""
        return self._engine.levels()

    def stats(self) -> dict[str, Any]:
        """Counts per level and totals.

        Returns a dict with ``nodes``, ``edges``, ``samples``, ``levels`` (number of
        distinct r_levels), ``max_level``, ``nodes_per_level`` (``{level: n}``),
        ``per_level`` (``{level: {"nodes", "leaves", "count_sum", "max_count", "mean_length"}}``),
        ``leaves``, ``max_out_degree``, ``mean_length`` and ``memory_bytes`` (engine estimate).
        """
        state = self._engine.export_state()  # one read lock: every figure below agrees
        arrays = state["arrays"]
        levels = arrays["r_level"]
        src = arrays["edge_src"]
        n = len(levels)
        out_degree = np.bincount(src, minlength=n) if n else np.zeros(0, dtype=np.int64)
        lv, cnt = np.unique(levels, return_counts=True)
        lengths = np.diff(arrays["offsets"])
        counts = arrays["count"]
        leaf = out_degree == 0
        per_level = {}
        for level in lv.tolist():
            at = levels == level
            per_level[int(level)] = {
                "nodes": int(at.sum()),
                "leaves": int((leaf & at).sum()),
                "count_sum": int(counts[at].sum()),
                "max_count": int(counts[at].max()),
                "mean_length": float(lengths[at].mean()),
            }
        return {
            "nodes": n,
            "edges": int(state["num_edges"]),
            "samples": int(state["samples"]),
            "levels": int(len(lv)),
            "max_level": int(lv[-1]) if n else None,
            "nodes_per_level": {int(a): int(b) for a, b in zip(lv, cnt)},
            "per_level": per_level,
            "leaves": int((out_degree == 0).sum()),
            "max_out_degree": int(out_degree.max()) if n else 0,
            "mean_length": float(lengths.mean()) if n else 0.0,
            "memory_bytes": int(state["memory_bytes"]),
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to ``path`` (npz via :func:`mnemonix._io.save_arrays`: versioned, checksummed, atomic).

        Layout: ``codepoints`` uint32 (all node strings concatenated), ``offsets`` int64
        [n + 1], ``count`` and ``r_level`` int64 [n], ``edge_src`` / ``edge_dst`` int64
        [e] in edge order.
        """
        state = self._engine.export_state()  # arrays and samples under one read lock
        arrays = {k: np.asarray(v) for k, v in state["arrays"].items()}
        _io.save_arrays(
            path, arrays, format=FORMAT, version=FORMAT_VERSION,
            meta={"exact_counts": self.exact_counts, "samples": int(state["samples"])},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlasticMemory:
        """Load a memory saved by :meth:`save`. Raises :class:`mnemonix._io.FormatError` on a bad file."""
        arrays, meta, _version = _io.load_arrays(path, format=FORMAT, max_version=FORMAT_VERSION)
        # exactly what save writes: 1-d arrays of these dtypes (no silent casts of float/complex data)
        for key, dtype in (("codepoints", "uint32"), ("offsets", "int64"), ("count", "int64"), ("r_level", "int64"),
                           ("edge_src", "int64"), ("edge_dst", "int64")):
            _loadcheck.array(path, arrays, key, ndim=1, dtypes=(dtype,))
        exact = _loadcheck.meta(path, meta, "exact_counts", "bool", default=False)
        samples = _loadcheck.meta(path, meta, "samples", "int", check=lambda v: 0 <= v < 2**63,
                                  expected="in [0, 2**63)", default=0)
        try:
            engine = _engine_class().import_arrays(
                exact, samples, arrays["codepoints"], arrays["offsets"], arrays["count"],
                arrays["r_level"], arrays["edge_src"], arrays["edge_dst"],
            )
        except (ValueError, TypeError) as exc:
            raise _io.FormatError(f"{str(path)!r} holds an invalid plastic graph ({exc})") from exc
        mem = cls.__new__(cls)
        mem._engine = engine
        mem._predictors = {}
        mem._predictors_lock = threading.Lock()
        return mem

    # ------------------------------------------------------------------ export
    def to_networkx(self) -> Any:
        """A ``networkx.DiGraph`` with node attributes ``count`` and ``r_level`` (same orders)."""
        import networkx as nx

        nodes, edges = self._engine.graph()  # one read lock: the edges join these nodes
        graph = nx.DiGraph()
        for s, count, level in nodes:
            graph.add_node(s, count=count, r_level=level)
        graph.add_edges_from(edges)
        return graph

    def to_dot(self) -> str:
        """GraphViz DOT text; nodes are labelled ``string\\ncount (r_level)`` and ranked by level."""

        def quote(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

        nodes, edges = self._engine.graph()  # one read lock: the edges join these nodes
        lines = ["digraph plastic {", "  rankdir=TB;", "  node [shape=box, fontname=monospace];"]
        by_level: dict[int, list[int]] = {}
        for i, (s, count, level) in enumerate(nodes):
            lines.append(f"  n{i} [label={quote(f'{s}' + chr(10) + f'{count} (r{level})')}];")
            by_level.setdefault(level, []).append(i)
        index = {s: i for i, (s, _, _) in enumerate(nodes)}
        for u, v in edges:
            lines.append(f"  n{index[u]} -> n{index[v]};")
        for level in sorted(by_level):
            ids = " ".join(f"n{i};" for i in by_level[level])
            lines.append(f"  {{ rank=same; {ids} }}  // r_level {level}")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_csv(self, nodes_path: str | os.PathLike[str], edges_path: str | os.PathLike[str]) -> None:
        """Write ``id,string,count,r_level`` and ``source,target`` (node ids) CSV files."""
        nodes_path = _io.checked_path(nodes_path, "nodes_path")
        edges_path = _io.checked_path(edges_path, "edges_path")
        nodes, edges = self._engine.graph()  # one read lock: the edges join these nodes
        index = {s: i for i, (s, _, _) in enumerate(nodes)}
        Path(nodes_path).parent.mkdir(parents=True, exist_ok=True)
        Path(edges_path).parent.mkdir(parents=True, exist_ok=True)
        with open(nodes_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "string", "count", "r_level"])
            for i, (s, count, level) in enumerate(nodes):
                writer.writerow([i, s, count, level])
        with open(edges_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["source", "target"])
            for u, v in edges:
                writer.writerow([index[u], index[v]])
