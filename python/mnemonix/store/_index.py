"""id -> row map of a :class:`~mnemonix.store.MemoryStore`: a few sorted runs, log-structured.

Each run holds distinct ids in ascending order and the row of each (``rows=None``: the
run is a block's own id column, row = ``base + position``). A lookup binary-searches
every run and keeps the hit whose row is live: removal only clears the row's live bit
and never touches the runs (O(removed)), and a re-added id lives in a newer run. Adding
a batch appends a run; the last two runs merge while the older one is at most twice the
newer one's size, dropping the entries of dead rows, so there are O(log N) runs and each
entry is copied O(log N) times (amortised). Runs can be memory-mapped tensors of a
loaded store: a lookup touches O(log N) of their pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Run:
    """Distinct ids ascending, and their rows (or ``base + position`` when ``rows`` is None)."""

    ids: torch.Tensor
    rows: torch.Tensor | None
    base: int = 0
    verify: Callable[[], None] | None = field(default=None, compare=False)
    """Checks the run's segment file before its first lookup (lazy verification)."""

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def row_at(self, pos: torch.Tensor) -> torch.Tensor:
        return pos + self.base if self.rows is None else self.rows[pos]

    def all_rows(self) -> torch.Tensor:
        n = len(self)
        return torch.arange(self.base, self.base + n, device=self.ids.device) if self.rows is None else self.rows


def make_run(ids: torch.Tensor, rows: torch.Tensor) -> Run:
    """A run of distinct ``ids`` at ``rows`` (any order); no row tensor when already a sorted range."""
    if ids.numel() == 0:
        return Run(ids, rows)
    contiguous = bool((rows[1:] - rows[:-1] == 1).all()) if rows.numel() > 1 else True
    if contiguous and (ids.numel() < 2 or bool((ids[1:] > ids[:-1]).all())):
        return Run(ids, None, int(rows[0]))
    order = torch.argsort(ids)
    return Run(ids[order], rows[order])


class IdIndex:
    """The id -> row map (see the module docstring). Not thread-safe: the store locks."""

    def __init__(self, runs: list[Run] | None = None) -> None:
        self.runs: list[Run] = [r for r in (runs or []) if len(r)]

    def lookup(self, ids: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Rows [n] int64 of ``ids`` [n] int64 among live rows; -1 where absent."""
        found = torch.full(ids.shape, -1, dtype=torch.int64, device=ids.device)
        if ids.numel() == 0:
            return found
        for run in self.runs:
            if run.verify is not None:
                run.verify()
            pos = torch.searchsorted(run.ids, ids).clamp(max=len(run) - 1)
            row = run.row_at(pos)
            hit = (run.ids[pos] == ids) & live[row]
            found = torch.where(hit, row, found)
        return found

    def with_run(self, run: Run, live: torch.Tensor) -> IdIndex:
        """A new index with ``run`` appended and the tail merged (log-structured); self unchanged."""
        runs = [*self.runs, run] if len(run) else list(self.runs)
        while len(runs) >= 2 and len(runs[-2]) <= 2 * len(runs[-1]):
            newer = runs.pop()
            older = runs.pop()
            runs.append(merge_runs(older, newer, live))
        return IdIndex(runs)


def merge_runs(older: Run, newer: Run, live: torch.Tensor) -> Run:
    """One run of the live entries of two runs (an id is live in at most one of them)."""
    for run in (older, newer):
        if run.verify is not None:
            run.verify()
    ids = torch.cat([older.ids, newer.ids])
    rows = torch.cat([older.all_rows(), newer.all_rows()])
    keep = live[rows]
    ids, rows = ids[keep], rows[keep]
    order = torch.argsort(ids)
    return Run(ids[order], rows[order])
