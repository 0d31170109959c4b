"""The co-fire counts of an engram store: a sparse symmetric graph in C++ plus a directed overlay.

memoria-pytorch keeps a dense int32 ``induce_counts`` [B, M, M]. Memoria's own updates
("fire together, wire together") are symmetric and non-negative, so mnemonix keeps them in
``mnemonix._core.hebbian.HebbianGraph``: per batch row, engram uid -> sorted
(neighbour slot, count), 8 bytes per directed entry, fire counts on the nodes.

Users of the drop-in API may write any int32 matrix (``engrams.induce_counts[...] = 7``,
an asymmetric ``Engrams(data, induce_counts=...)``). Entries the symmetric graph cannot
hold (asymmetric or negative off-diagonal counts) go to a per-row *overlay*
``{(src_uid, dst_uid): count}`` that overrides the graph for that directed pair. It is
empty in normal use; while a row has overlay entries, the C++ long-term search of that
row is replaced by a dense fallback (:mod:`mnemonix.memoria._longterm`).

Every count is keyed by the engram's internal uid (int64 >= 0; -1 marks padding).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CofireGraph"]


def _core():
    from mnemonix._core import hebbian

    return hebbian


class CofireGraph:
    """Per-row co-fire counts keyed by engram uid: the C++ graph plus the directed overlay."""

    def __init__(self, batch: int) -> None:
        self.core = _core().HebbianGraph(batch)
        self.overlay: list[dict[tuple[int, int], int]] = [{} for _ in range(batch)]

    @property
    def batch(self) -> int:
        return self.core.batch

    def has_overlay(self, row: int | None = None) -> bool:
        """True when ``row`` (any row when None) holds counts outside the symmetric graph."""
        rows = self.overlay if row is None else [self.overlay[row]]
        return any(rows)

    # ------------------------------------------------------------------ reads
    def num_nodes(self, row: int) -> int:
        return self.core.num_nodes(row)

    def num_edges(self, row: int) -> int:
        """Directed entries of the symmetric graph (twice its undirected edges)."""
        return self.core.num_edges(row)

    def edges(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(src_uids, dst_uids, counts) of the symmetric graph (both directions), without the overlay."""
        return self.core.edges(row)

    def fires(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(uids, fire counts) of every engram of the row."""
        return self.core.fires(row)

    def dense(self, row: int, queries: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Counts [Q, C] int32 between uids (diagonal: fire counts; -1 uids give -1), overlay applied."""
        out = self.core.dense(row, queries, columns)
        overlay = self.overlay[row]
        if overlay:
            col_of = {int(u): j for j, u in enumerate(columns.tolist()) if u >= 0}
            for i, src in enumerate(queries.tolist()):
                if src < 0:
                    continue
                for (s, d), count in overlay.items():
                    if s == src and d in col_of:
                        out[i, col_of[d]] = count
        return out

    def directed(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every non-zero off-diagonal count (src_uids, dst_uids, counts), overlay applied."""
        src, dst, cnt = self.core.edges(row)
        overlay = self.overlay[row]
        if not overlay:
            return src, dst, cnt
        keep = np.array([(int(s), int(d)) not in overlay for s, d in zip(src, dst)], dtype=bool)
        extra = [(s, d, c) for (s, d), c in overlay.items() if c != 0]
        es, ed, ec = (np.array(v, dtype=t) for v, t in zip(zip(*extra), (np.int64, np.int64, np.int32))) if extra \
            else (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
        return np.concatenate([src[keep], es]), np.concatenate([dst[keep], ed]), np.concatenate([cnt[keep], ec])

    # ----------------------------------------------------------------- writes
    def add_nodes(self, uids: np.ndarray) -> np.ndarray:
        """Node slots [B, K] of uids (created with fire count 0 when missing; -1 gives -1)."""
        return self.core.add_nodes(uids)

    def fire_together(self, uids: np.ndarray) -> None:
        """Every pair of distinct uids of a row [B, K] co-fires once (negative ignored, duplicates once)."""
        self.core.fire_together(uids)
        for row, overlay in enumerate(self.overlay):
            if overlay:
                fired = {int(u) for u in uids[row].tolist() if u >= 0}
                for key in overlay:
                    if key[0] in fired and key[1] in fired:
                        overlay[key] += 1

    def remove(self, uids: np.ndarray) -> None:
        """Delete engrams [B, K] (negative ignored) with their counts."""
        self.core.remove(uids)
        for row, overlay in enumerate(self.overlay):
            if overlay:
                gone = {int(u) for u in uids[row].tolist() if u >= 0}
                for key in [key for key in overlay if key[0] in gone or key[1] in gone]:
                    del overlay[key]

    def set_fires(self, row: int, uids: np.ndarray, counts: np.ndarray) -> None:
        self.core.set_fires(row, np.asarray(uids, dtype=np.int64), np.asarray(counts, dtype=np.int32))

    def load_row(self, row: int, uids: np.ndarray, fires: np.ndarray, src: np.ndarray, dst: np.ndarray,
                 cnt: np.ndarray) -> None:
        """Fill an *empty* row: engrams ``uids`` with ``fires`` and directed counts ``src[i] -> dst[i]`` (uids).

        Pairs whose two directions hold one positive count go to the symmetric graph,
        the rest (asymmetric or negative counts) to the overlay. Zero counts are ignored.
        """
        uids = np.asarray(uids, dtype=np.int64)
        self.set_fires(row, uids, fires)
        src, dst, cnt = np.asarray(src, np.int64), np.asarray(dst, np.int64), np.asarray(cnt, np.int32)
        nonzero = cnt != 0
        src, dst, cnt = src[nonzero], dst[nonzero], cnt[nonzero]
        if len(src) == 0:
            return
        base = np.int64(max(int(src.max()), int(dst.max())) + 1)
        key, reverse = src * base + dst, dst * base + src
        order = np.argsort(key, kind="stable")
        where = np.minimum(np.searchsorted(key[order], reverse), len(key) - 1)
        has_reverse = key[order][where] == reverse
        reverse_cnt = np.where(has_reverse, cnt[order][where], 0)
        symmetric = has_reverse & (reverse_cnt == cnt) & (cnt > 0)
        self.core.set_edges(row, src[symmetric], dst[symmetric], cnt[symmetric])
        overlay = self.overlay[row]
        for s, d, c in zip(src[~symmetric].tolist(), dst[~symmetric].tolist(), cnt[~symmetric].tolist()):
            overlay[s, d] = c

    def load_row_dense(self, row: int, uids: np.ndarray, counts: np.ndarray) -> None:
        """Fill an *empty* row from a dense matrix [K, K] over ``uids`` (entries of -1 uids ignored)."""
        uids = np.asarray(uids, dtype=np.int64)
        real = np.flatnonzero(uids >= 0)
        sub = np.asarray(counts)[np.ix_(real, real)]
        off = sub.copy()
        np.fill_diagonal(off, 0)
        src, dst = np.nonzero(off)
        self.load_row(row, uids[real], np.diagonal(sub), uids[real][src], uids[real][dst], off[src, dst])

    def clear_row(self, row: int, uids: np.ndarray) -> None:
        """Remove the engrams ``uids`` [K] of one row (with their counts and overlay entries)."""
        every = np.full((self.batch, len(uids)), -1, dtype=np.int64)
        every[row] = uids
        self.remove(every)
        self.overlay[row].clear()

    # --------------------------------------------------------------- copying
    def entries(self, row: int, uids: np.ndarray, dense_limit: int = 1 << 22):
        """The counts among the engrams ``uids`` [K] of one row (-1: padding), by position.

        Returns ``(real, fires, src, dst, cnt)``: the positions of real engrams, their fire
        counts, and every non-zero directed count between positions ``src[i] -> dst[i]``, as
        selecting rows and columns of the dense matrix would give (a uid listed twice
        co-fires with its copy by its fire count).
        """
        uids = np.asarray(uids, dtype=np.int64)
        real = np.flatnonzero(uids >= 0)
        unique, inverse = np.unique(uids[real], return_inverse=True)
        if len(unique) < len(real) or len(unique) ** 2 <= dense_limit:
            counts = self.dense(row, unique, unique)[np.ix_(inverse, inverse)]
            fires = np.diagonal(counts).copy()
            np.fill_diagonal(counts, 0)
            src, dst = np.nonzero(counts)
            return real, fires, real[src], real[dst], counts[src, dst]
        src, dst, cnt = self.directed(row)  # no duplicates: map the entries among the selected engrams
        keep = np.isin(src, unique) & np.isin(dst, unique)
        position = real[np.argsort(inverse)]  # position of unique[j]
        src_pos = position[np.searchsorted(unique, src[keep])]
        dst_pos = position[np.searchsorted(unique, dst[keep])]
        return real, self.core.fire_count(row, uids[real]), src_pos, dst_pos, cnt[keep]

    @staticmethod
    def assemble(parts: list[tuple[CofireGraph, np.ndarray]]) -> tuple[CofireGraph, np.ndarray]:
        """A new graph over the concatenation of the engrams ``uids`` [B, K_i] of each graph.

        The engram at position p of the concatenated row gets uid p (-1 for padding); its
        counts are those of its source graph (engrams of different parts never co-fired).
        Returns ``(graph, new_uids [B, sum K_i])``.
        """
        batch = parts[0][1].shape[0]
        all_uids = np.concatenate([uids for _, uids in parts], axis=1)
        new_uids = np.where(all_uids >= 0, np.arange(all_uids.shape[1], dtype=np.int64), -1)
        out = CofireGraph(batch)
        for row in range(batch):
            collected = [[], [], [], [], []]
            offset = 0
            for graph, uids in parts:
                real, fires, src, dst, cnt = graph.entries(row, uids[row])
                for store, value in zip(collected, (real + offset, fires, src + offset, dst + offset, cnt)):
                    store.append(np.asarray(value))
                offset += uids.shape[1]
            real, fires, src, dst, cnt = (np.concatenate(c) for c in collected)
            out.load_row(row, real, fires, src, dst, cnt)
        return out, new_uids

    def row_graph(self, row: int, uids: np.ndarray) -> tuple[CofireGraph, np.ndarray]:
        """A one-row graph over the engrams ``uids`` [K] of ``row`` (see :meth:`assemble`)."""
        out = CofireGraph(1)
        out.load_row(0, *self.entries(row, uids))
        uids = np.asarray(uids)
        return out, np.where(uids >= 0, np.arange(len(uids), dtype=np.int64), -1).reshape(1, -1)

    def restricted(self, uids: np.ndarray) -> tuple[CofireGraph, np.ndarray]:
        """A new graph over the engrams ``uids`` [B, K] of this one (see :meth:`assemble`)."""
        return CofireGraph.assemble([(self, uids)])
