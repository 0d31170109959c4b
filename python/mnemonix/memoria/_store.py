"""The per-engram arrays of :class:`mnemonix.memoria.Engrams`: padded [B, M, ...] tensors with spare columns.

Appending L engrams copies L columns, not the whole store (amortised growth); the public
attributes are views of the first M columns. Shorter rows are padded at the *front* with
NULL engrams (memoria-pytorch's layout): data 0, lifespan -1, type NULL, age -1, id -1,
uid -1, slot -1.

The graph keys of the engrams (``_uids``, ``_slots``) are also kept on the host: the C++
co-fire graph reads them there every step, and the store knows them without asking the
device (appends make them on the host; a compaction recomputes them from its keep-mask).
:meth:`EngramArrays.host_keys` returns that copy, and makes it with one device-to-host
copy only after an operation that rebuilt the keys on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from mnemonix._types import ENGRAM_NULL
from mnemonix.memoria._engram_checks import field_value
from mnemonix.memoria.utils import gather_rows

FIELDS = ("data", "lifespan", "engrams_types", "_age", "_ids", "_uids", "_slots")
PADS: dict[str, float | int] = {"data": 0.0, "lifespan": -1.0, "engrams_types": ENGRAM_NULL, "_age": -1, "_ids": -1,
                                "_uids": -1, "_slots": -1}
DTYPES = {"data": torch.float32, "lifespan": torch.float32, "engrams_types": torch.uint8, "_age": torch.int32,
          "_ids": torch.int32, "_uids": torch.int64, "_slots": torch.int64}
GROWTH_MIN = 16  # smallest spare capacity of a buffer that grows
COMPACT_SPARE = 64  # spare columns kept after a compaction (the next append needs no copy)


def _field(name: str, doc: str, public: bool) -> property:
    def get(self: EngramArrays) -> torch.Tensor:
        return self._bufs[name][:, :self._length]

    def set_(self: EngramArrays, value: torch.Tensor) -> None:
        self._replace_field(name, value, checked=public)

    return property(get, set_, doc=doc)


class EngramArrays:
    """Buffers of the per-engram fields; the subclass adds the graph and the public API."""

    _bufs: dict[str, torch.Tensor]
    _length: int
    _host: tuple[np.ndarray, np.ndarray] | None = None  # (uids, slots) [B, M] on the host; None: stale

    data = _field("data", "[B, M, H] float32 engram data", True)
    lifespan = _field("lifespan", "[B, M] float32 lifespans", True)
    engrams_types = _field("engrams_types", "[B, M] uint8 EngramType codes", True)
    _age = _field("_age", "[B, M] int32 ages (kept even when not tracked)", False)
    _ids = _field("_ids", "[B, M] int32 public engram ids (-1 when not tracked)", False)
    _uids = _field("_uids", "[B, M] int64 keys of the engrams in the co-fire graph (-1: padding)", False)
    _slots = _field("_slots", "[B, M] int64 node slots of the engrams in the C++ graph (-1: padding)", False)

    def _set_arrays(self, arrays: dict[str, torch.Tensor]) -> None:
        """Replace every field at once (all [B, M, ...] with one M)."""
        self._bufs = {name: arrays[name].to(DTYPES[name]) for name in FIELDS}
        self._length = arrays["lifespan"].shape[1]
        self._host = None

    def _replace_field(self, name: str, value: torch.Tensor, *, checked: bool) -> None:
        """Set a field; ``checked``: a caller's value (validated, same [B, M], same device)."""
        if checked:
            want = self._bufs[name][:, :self._length]
            shape = tuple(want.shape[:2]) + ((value.shape[2],) if name == "data" and getattr(value, "ndim", 0) == 3
                                             else ())
            public = name.lstrip("_").replace("ids", "engram_ids")
            value = field_value(public, value, shape, want.device)
        self._bufs[name] = value.to(DTYPES[name])
        if name in ("_uids", "_slots"):
            self._host = None

    def host_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The engrams' graph keys on the host: (uids, slots), each [B, M] int64 (-1: padding).

        Shared arrays: read them, never write into them. Cached: one device-to-host copy after an
        operation that rebuilt the keys on the device, none in Memoria's steps.
        """
        if self._host is None:
            both = torch.stack([self._uids, self._slots]).cpu().numpy()
            self._set_host_keys(both[0], both[1])
        assert self._host is not None
        return self._host

    def _set_host_keys(self, uids: np.ndarray, slots: np.ndarray) -> None:
        """Install the host copy of the keys (copied: it never aliases a device buffer)."""
        self._host = (np.array(uids, dtype=np.int64), np.array(slots, dtype=np.int64))

    @property
    def batch_size(self) -> int:
        return self._bufs["lifespan"].shape[0]

    @property
    def memory_length(self) -> int:
        return self._length

    @property
    def hidden_dim(self) -> int:
        return self._bufs["data"].shape[2]

    @property
    def device(self) -> torch.device:
        return self._bufs["data"].device

    def _append_arrays(self, values: dict[str, torch.Tensor]) -> None:
        """Append [B, L, ...] to every field (amortised O(L) copies)."""
        added = values["lifespan"].shape[1]
        new_length = self._length + added
        for name in FIELDS:
            buf = self._bufs[name]
            if buf.shape[1] < new_length:
                capacity = max(new_length, self._length + self._length // 2 + added, GROWTH_MIN)
                grown = torch.empty((buf.shape[0], capacity, *buf.shape[2:]), dtype=buf.dtype, device=buf.device)
                grown[:, :self._length] = buf[:, :self._length]
                self._bufs[name] = buf = grown
            buf[:, self._length:new_length] = values[name]
        self._length = new_length
        self._host = None  # the caller that knows the new keys on the host installs them

    def _compact_arrays(self, step, replaced: dict[str, torch.Tensor], width: int) -> None:
        """Keep the engrams of ``step.keep`` (a LifespanResult; ``width`` = max kept per row), fields in
        ``replaced`` taken from there: one gather index for every field, no host sync."""
        batch, length = step.keep.shape
        dev = step.keep.device
        # where each kept engram goes (front padding, order kept); dropped ones to distinct spare columns
        positions = torch.arange(length, device=dev).expand(batch, length)
        dest = torch.where(step.keep, step.rank + (width - step.num_kept).unsqueeze(1), positions + width)
        source = torch.full((batch, width + length), -1, dtype=torch.long, device=dev)
        source.scatter_(1, dest, positions)
        source = source[:, :width]
        missing, safe = source < 0, source.clamp(min=0)
        capacity = width + max(width // 2, COMPACT_SPARE)
        for name in FIELDS:
            values = replaced.get(name, self._bufs[name][:, :self._length])
            trailing = values.shape[2:]
            out = torch.empty((batch, capacity, *trailing), dtype=values.dtype, device=values.device)
            view = out[:, :width]
            shape = (*safe.shape, *([1] * len(trailing)))
            if length:
                torch.gather(values, 1, safe.view(shape).expand(*safe.shape, *trailing), out=view)
            view.masked_fill_(missing.view(shape), PADS[name])
            self._bufs[name] = out
        self._length = width
        self._host = None  # the caller that knows the keep-mask on the host installs the new keys

    def _gathered(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every field at ``index`` [B, K] (negative: padding), as new tensors."""
        return {name: gather_rows(self._bufs[name][:, :self._length], index, PADS[name]) for name in FIELDS}


def compact_host(values: np.ndarray, keep: np.ndarray, width: int) -> np.ndarray:
    """:meth:`EngramArrays._compact_arrays` of one [B, M] integer array on the host (padding -1).

    The kept entries of each row in order, front-padded with -1 to ``width`` columns.
    """
    out = np.full((keep.shape[0], width), -1, dtype=values.dtype)
    rows, cols = np.nonzero(keep)
    rank = np.cumsum(keep, axis=1)[rows, cols] - 1
    out[rows, rank + width - keep.sum(axis=1)[rows]] = values[rows, cols]
    return out
