"""Row storage of a :class:`~mnemonix.store.MemoryStore`: blocks of columns, int8 quantisation.

A store's rows live in a list of blocks, each a contiguous range of global rows
``[start, start + n)`` with one tensor per column: ``keys`` [n, d] in the storage dtype,
``scales`` [n] float32 (int8 only), ``values`` [n, dv] (optional), ``ids`` [n] int64,
``r0`` [n] float64 and ``tau`` [n] float64. Every block but the last is *frozen*
(read-only; a memory-mapped segment of a loaded store); the last one, the *tail*,
grows by doubling its capacity, so adding copies each row O(1) times (amortised).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

COLUMNS = ("keys", "scales", "values", "ids", "r0", "tau")
STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8)
INT8_MAX = 127.0


def quantize_int8(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``scale = max|x| / 127``, ``q = round(x / scale)`` in [-127, 127].

    Returns ``(q [n, d] int8, scale [n] float32)``; an all-zero row has scale 0. The stored
    row is ``float32(q * scale)`` (:func:`mnemonix.backends.search_exact.dequantize`).
    """
    x = rows.float()
    scale = x.abs().amax(dim=1) / INT8_MAX if x.shape[1] else torch.zeros(x.shape[0], device=x.device)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / safe[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


@dataclass
class Block:
    """Rows ``[start, start + n)``; the column tensors may have spare capacity past ``n``."""

    start: int
    n: int
    columns: dict[str, torch.Tensor | None]
    frozen: bool = False
    verify: Callable[[], None] | None = field(default=None, compare=False)
    """Checks the block's segment file once before its rows are first read (lazy verification)."""
    checker: Callable[[], None] | None = field(default=None, compare=False)
    """Checks the block's segment file once when asked (:meth:`MemoryStore.verify`)."""

    @property
    def stop(self) -> int:
        return self.start + self.n

    @property
    def capacity(self) -> int:
        return int(self.columns["ids"].shape[0])

    def col(self, name: str) -> torch.Tensor | None:
        """Column ``name`` over the block's ``n`` rows (a view), or None when the store has none."""
        t = self.columns.get(name)
        if t is None:
            return None
        if self.verify is not None:
            self.verify()
        return t[: self.n]


def empty_columns(capacity: int, spec, device) -> dict[str, torch.Tensor | None]:
    """Zero-capacity-safe allocation of every column of a store described by ``spec``."""
    out: dict[str, torch.Tensor | None] = {
        "keys": torch.empty(capacity, spec.dim, dtype=spec.dtype, device=device),
        "scales": torch.empty(capacity, dtype=torch.float32, device=device) if spec.dtype == torch.int8 else None,
        "values": None,
        "ids": torch.empty(capacity, dtype=torch.int64, device=device),
        "r0": torch.empty(capacity, dtype=torch.float64, device=device),
        "tau": torch.empty(capacity, dtype=torch.float64, device=device),
    }
    if spec.value_dim is not None:
        out["values"] = torch.empty(capacity, spec.value_dim, dtype=spec.value_dtype, device=device)
    return out


def grown_tail(tail: Block, extra: int, spec, device) -> Block:
    """The tail with room for ``extra`` more rows: itself, or a copy in a doubled buffer."""
    need = tail.n + extra
    if need <= tail.capacity and not tail.frozen:
        return tail
    capacity = max(need, 2 * tail.capacity, 64)
    columns = empty_columns(capacity, spec, device)
    for name, t in columns.items():
        if t is not None and tail.n:
            t[: tail.n] = tail.col(name)
    return replace(tail, columns=columns, frozen=False, verify=None, checker=None)


def write_rows(tail: Block, rows: dict[str, torch.Tensor | None]) -> None:
    """Append prepared rows (every column, storage dtypes) to a tail with room for them."""
    n = rows["ids"].shape[0]
    for name, t in tail.columns.items():
        if t is not None:
            t[tail.n: tail.n + n] = rows[name]
    tail.n += n


def row_bytes(spec) -> int:
    """Bytes of one stored row over every column."""
    key = spec.dim * torch.empty(0, dtype=spec.dtype).element_size()
    value = 0 if spec.value_dim is None else spec.value_dim * torch.empty(0, dtype=spec.value_dtype).element_size()
    return key + value + (4 if spec.dtype == torch.int8 else 0) + 8 + 8 + 8
