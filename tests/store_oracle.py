"""A brute-force MemoryStore oracle: a dict of live memories, searched with the reference ops.

Independent of the store's layout: it keeps each memory as the float32 row the store
should hold (its own int8 quantisation, or the cast to the storage dtype) and answers
every query from scratch over the live memories sorted by id (so "lower index" in the
references means "lower id").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mnemonix import reference


def stored_form(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float32 rows a store of ``dtype`` holds for ``keys`` (symmetric per-row int8)."""
    x = keys.float()
    if dtype != torch.int8:
        return x.to(dtype).float()
    scale = x.abs().amax(dim=1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / safe[:, None]).clamp(-127, 127)
    return q * scale[:, None]


@dataclass
class Oracle:
    dtype: torch.dtype
    value_dtype: torch.dtype | None = None
    rows: dict[int, tuple[torch.Tensor, torch.Tensor | None, float, float]] = field(default_factory=dict)
    next_id: int = 0

    def add(self, ids, keys, values=None, r0=None, tau=None, *, replace=False):
        stored = stored_form(keys, self.dtype)
        for j, i in enumerate(ids.tolist()):
            assert replace or i not in self.rows
            v = None if values is None else values[j].to(self.value_dtype).float()
            self.rows[i] = (stored[j], v, 1.0 if r0 is None else float(r0[j]), 0.0 if tau is None else float(tau[j]))
            self.next_id = max(self.next_id, i + 1)

    def remove(self, ids) -> int:
        return sum(self.rows.pop(i, None) is not None for i in set(ids.tolist()))

    def ids(self) -> torch.Tensor:
        return torch.tensor(sorted(self.rows), dtype=torch.int64)

    def _matrix(self, allowed):
        ids = [i for i in sorted(self.rows) if allowed is None or i in allowed]
        keys = torch.stack([self.rows[i][0] for i in ids]) if ids else None
        return ids, keys

    def search(self, q, k, metric, allowed=None):
        ids, keys = self._matrix(allowed)
        B = q.shape[0]
        if not ids:
            return torch.full((B, k), float("-inf")), torch.full((B, k), -1, dtype=torch.int64)
        scores, rows = reference.search_topk(q.float(), keys, k, metric=metric)
        table = torch.tensor(ids + [-1], dtype=torch.int64)
        return scores.float(), table[rows]

    def salience(self, q, k, alpha, now, allowed=None):
        ids, keys = self._matrix(allowed)
        B = q.shape[0]
        if not ids:
            return torch.full((B, k), float("-inf")), torch.full((B, k), -1, dtype=torch.int64)
        r0 = torch.tensor([self.rows[i][2] for i in ids], dtype=torch.float64)
        tau = torch.tensor([self.rows[i][3] for i in ids], dtype=torch.float64)
        # Ranking depends only on time differences: measure ages from the latest store time.
        log_s = reference.salience_log(r0, tau, alpha, float(tau.max()))
        _, idx, _, scores = reference.salience_topk(q.float(), keys, None, k=k, log_salience=log_s)
        table = torch.tensor(ids + [-1], dtype=torch.int64)
        return scores, table[idx]

    def retrieve(self, q, beta, update_steps=0, allowed=None):
        ids, keys = self._matrix(allowed)
        values = None
        if self.value_dtype is not None:
            values = torch.stack([self.rows[i][1] for i in ids])
        return reference.hopfield_retrieve(q.float(), keys, values, beta=beta, update_steps=update_steps,
                                           return_lse=True)
