"""Pure-Python oracle of the plastic prefix memory learning rule.

Written from ``shared/specs/plastic_memory.md`` (the research rule of the
"Plastic Memory Constructor", seed 003), step for step and on purpose slow:

- the graph is held the way networkx holds a ``DiGraph``: an insertion-ordered
  dict of nodes with attribute dicts and insertion-ordered successor /
  predecessor dicts, so node order and edge order are those of the research code;
- ``levels()`` is recomputed from all nodes at the start of every ``learn`` and
  that snapshot is passed down the recursion;
- ``lift`` and ``potentiate`` walk *every path* (a node reached by k paths is
  visited k times), with an explicit stack instead of recursion.

The C++ engine (``mnemonix._core.plastic``) must reproduce this graph node for
node, attribute for attribute and edge for edge. ``exact_counts=True`` applies
the documented fix: a node created by ``place`` starts with the sum of its
children's counts instead of 1.
"""

from __future__ import annotations


class PlasticOracle:
    """The research learning rule, literally (see module docstring)."""

    def __init__(self, exact_counts: bool = False) -> None:
        self.exact_counts = exact_counts
        self.node: dict[str, dict[str, int]] = {}
        self.succ: dict[str, dict[str, None]] = {}
        self.pred: dict[str, dict[str, None]] = {}

    # -- networkx-like primitives -------------------------------------------
    def _add_node(self, n: str, count: int, r_level: int) -> None:
        if n not in self.node:
            self.node[n] = {"count": count, "r_level": r_level}
            self.succ[n] = {}
            self.pred[n] = {}

    def _add_edge(self, u: str, v: str) -> None:
        self.succ[u][v] = None
        self.pred[v][u] = None

    def _remove_edge(self, u: str, v: str) -> None:
        del self.succ[u][v]
        del self.pred[v][u]

    def has_edge(self, u: str, v: str) -> bool:
        return u in self.succ and v in self.succ[u]

    # -- views ---------------------------------------------------------------
    def nodes(self) -> list[tuple[str, int, int]]:
        return [(n, a["count"], a["r_level"]) for n, a in self.node.items()]

    def edges(self) -> list[tuple[str, str]]:
        return [(u, v) for u in self.node for v in self.succ[u]]

    def levels(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for n, a in self.node.items():
            out.setdefault(a["r_level"], []).append(n)
        return out

    # -- the rule --------------------------------------------------------------
    @staticmethod
    def _common_prefix(a: str, b: str) -> str:
        i = 0
        n = min(len(a), len(b))
        while i < n and a[i] == b[i]:
            i += 1
        return a[:i]

    def prefix_groups(self, s: str, xs: list[str]) -> dict[str, list]:
        groups: dict[str, list] = {}
        for x in xs:
            cp = self._common_prefix(x, s)
            group = groups.setdefault(cp, [0, []])
            group[0] += 1
            group[1].append(x)
        return groups

    def learn(self, s: str) -> None:
        if not self.node:
            self._add_node(s, 1, 0)
            return
        levels = self.levels()  # snapshot, not refreshed during this learn
        top = max(levels)
        self._insert(self.prefix_groups(s, levels[top]), s, top, levels)

    def _insert(self, groups: dict[str, list], s: str, level: int, levels: dict[int, list[str]]) -> None:
        ordered = sorted(groups.items(), key=lambda kv: len(kv[0]))  # stable
        m, (_, members) = ordered[-1]
        b = level - 1
        if b in levels:
            subs = [x for x in levels[b] if x in m]
            if subs:
                self._place(s, m, members, subs, b)
            elif m in levels[b]:  # unreachable (m in m), kept as in the rule
                self._place(s, m, members, [], b)
            else:
                self._insert(self.prefix_groups(s, levels[b]), s, b, levels)
        else:
            self._place(s, m, members, [], b)

    def _place(self, s: str, m: str, members: list[str], below: list[str], r: int) -> None:
        doomed = [(u, v) for u in below for v in self.succ[u] if m in v]
        for u, v in doomed:
            self._remove_edge(u, v)
        existed = m in self.node
        self._add_node(m, 1, r)
        self._add_node(s, 0, r + 1)
        if not self.has_edge(m, s) and m != s:
            self._add_edge(m, s)
        for u in members:
            if not self.has_edge(m, u) and m != u:
                self._add_edge(m, u)
        for u in below:
            if not self.has_edge(u, m) and u != m:
                self._add_edge(u, m)
        if not existed and self.exact_counts:
            self.node[m]["count"] = sum(self.node[c]["count"] for c in self.succ[m])
        if not existed:
            self.lift(m)
        self.potentiate(s, 1)

    def lift(self, m: str) -> None:
        """r_level += 1 on m and, once per path, on everything below it."""
        stack = [m]
        while stack:
            v = stack.pop()
            self.node[v]["r_level"] += 1
            stack.extend(self.succ[v])

    def potentiate(self, s: str, amount: int = 1) -> None:
        """count += amount on s and, once per path, on everything above it (floored at 0)."""
        stack = [s]
        while stack:
            v = stack.pop()
            self.node[v]["count"] = max(0, self.node[v]["count"] + amount)
            stack.extend(self.pred[v])
