"""EpiNet: a classifier with a salience-decayed episodic memory (seeds/002).

An encoder maps an input to a latent ``z``; the episodic memory stores past
latents with an initial salience ``r0`` (here: the sample's loss when it was
seen) and a store time ``tau``; salience decays as
``s = r0 * exp(-alpha * (now - tau))``. A query recalls the k memories with
the largest ``cos(z, c_m) * s_m`` (:func:`mnemonix.ops.salience_topk`) and
their salience-weighted mean; a mixture-of-experts decoder classifies
``[z; recall]``. Training on a sequence of tasks replays stored inputs with
weight ``beta`` (continual learning).

Parts: :class:`SalienceClock`, :class:`EpisodicMemory`, :class:`RecallEngine`,
:class:`Encoder`, :class:`MoEDecoder`, :class:`EpiNet`, and the Split-digits
training entry point :func:`train_split`.

Differences from the notebook (see docs/epinet.md): log-space salience (no
underflow, no ``+ 1e-8``), float64 times relative to the clock's origin, an
explicit clock (training steps by default), batched vectorised admission and
eviction into preallocated buffers, and an assembly that runs end to end.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnemonix import _checks, _io, ops

__all__ = [
    "SalienceClock",
    "EpisodicMemory",
    "RecallEngine",
    "Encoder",
    "MoEDecoder",
    "EpiNet",
    "TrainConfig",
    "TrainResult",
    "load_digits_tasks",
    "load_mnist_tasks",
    "train_split",
]

_CLOCK_SOURCES = ("steps", "timestamps", "wall")


class SalienceClock:
    """Time source and decay rate of salience: ``log s = log r0 - alpha * (now - tau)``.

    Parameters
    ----------
    alpha : float >= 0
        Decay rate per time unit.
    source : {"steps", "timestamps", "wall"}
        ``"steps"`` (default): time is a counter advanced by :meth:`tick`
        (reproducible). ``"timestamps"``: time is whatever :meth:`set_time`
        last supplied. ``"wall"``: seconds since the clock was created
        (``time.time()`` relative to that origin, float64).
    start : float
        Initial time for ``"steps"`` and ``"timestamps"``.
    """

    def __init__(self, alpha: float = 1e-3, *, source: str = "steps", start: float = 0.0) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 <= alpha < math.inf):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if source not in _CLOCK_SOURCES:
            raise ValueError(f"source must be one of {_CLOCK_SOURCES}, got {source!r}")
        if not math.isfinite(float(start)):
            raise ValueError(f"start must be finite, got {start!r}")
        self.alpha = float(alpha)
        self.source = source
        self._time = float(start)
        self._origin = time.time()

    def now(self) -> float:
        """Current time (float64 Python float)."""
        if self.source == "wall":
            return time.time() - self._origin
        return self._time

    def tick(self, steps: int = 1) -> float:
        """Advance a ``"steps"`` clock; returns the new time."""
        if self.source != "steps":
            raise ValueError(f"tick() needs source='steps', this clock has source={self.source!r}")
        self._time += _checks.nonneg_int("steps", steps)
        return self._time

    def set_time(self, t: float) -> None:
        """Set the time of a ``"timestamps"`` clock (must not go backwards)."""
        if self.source != "timestamps":
            raise ValueError(f"set_time() needs source='timestamps', this clock has source={self.source!r}")
        t = float(t)
        if not math.isfinite(t) or t < self._time:
            raise ValueError(f"t must be finite and >= the current time {self._time}, got {t!r}")
        self._time = t

    def __repr__(self) -> str:
        return f"SalienceClock(alpha={self.alpha}, source={self.source!r}, now={self.now():.6g})"


class EpisodicMemory:
    """Fixed-capacity buffer of memories ``(z, c, r0, tau, y)`` (and optionally the input x).

    Slots ``[0, len(self))`` are filled; the rest are empty. Salience is kept in
    log space (``log r0`` and ``tau`` in float64), so it never underflows.

    Admission rule (the notebook's, applied to each item in order): while
    there is room a newcomer is appended; once full, a newcomer with initial
    salience ``r0`` replaces the memory of lowest current salience if and only
    if ``r0`` is strictly larger than that salience (otherwise it is
    rejected). Among equal lowest saliences the most recently stored one is
    evicted. :meth:`add` applies this rule to a whole batch at once, with
    vectorised operations, and gives exactly the state that adding the items
    one at a time would give (items of one batch share the store time).

    Parameters
    ----------
    capacity : int >= 1
    key_dim : int
        Size of the content keys ``c`` (and of ``z`` unless ``payload_dim``).
    payload_dim : int, optional
        Size of the stored latents ``z``; default ``key_dim``.
    input_shape : sequence of int, optional
        Shape of one raw input x to keep for replay; None stores no inputs.
    clock : SalienceClock, optional
        Default ``SalienceClock(1e-3)`` (step counter).
    device, dtype
        Where and how ``z``, ``c`` and x are stored.
    """

    FORMAT = "mnemonix.epinet.EpisodicMemory"
    VERSION = 1

    def __init__(
        self,
        capacity: int,
        key_dim: int,
        payload_dim: int | None = None,
        *,
        input_shape: Sequence[int] | None = None,
        clock: SalienceClock | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.capacity = _checks.positive_int("capacity", capacity)
        self.key_dim = _checks.positive_int("key_dim", key_dim)
        self.payload_dim = self.key_dim if payload_dim is None else _checks.positive_int("payload_dim", payload_dim)
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        if dtype not in _checks.FLOAT_DTYPES:
            raise TypeError(f"dtype must be one of {[str(d) for d in _checks.FLOAT_DTYPES]}, got {dtype}")
        self.clock = clock if clock is not None else SalienceClock()
        if not isinstance(self.clock, SalienceClock):
            raise TypeError(f"clock must be a SalienceClock, got {type(clock).__name__}")
        self.device = torch.device(device)
        self.dtype = dtype
        cap = self.capacity
        self._c = torch.zeros(cap, self.key_dim, dtype=dtype, device=self.device)
        self._z = torch.zeros(cap, self.payload_dim, dtype=dtype, device=self.device)
        self._x = None if self.input_shape is None else torch.zeros(cap, *self.input_shape, dtype=dtype,
                                                                    device=self.device)
        self._c_norm = torch.zeros(cap, dtype=torch.float32, device=self.device)  # cached ||c||
        self._log_r0 = torch.zeros(cap, dtype=torch.float64, device=self.device)
        self._tau = torch.zeros(cap, dtype=torch.float64, device=self.device)
        self._y = torch.zeros(cap, dtype=torch.int64, device=self.device)
        self._seq = torch.zeros(cap, dtype=torch.int64, device=self.device)
        self._count = 0
        self._next_seq = 0

    # -- views ---------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    @property
    def c(self) -> torch.Tensor:
        """Content keys [len, key_dim]."""
        return self._c[: self._count]

    @property
    def c_norms(self) -> torch.Tensor:
        """Cached key norms ``||c||`` [len] float32 (recall skips recomputing them)."""
        return self._c_norm[: self._count]

    @property
    def z(self) -> torch.Tensor:
        """Stored latents (payloads) [len, payload_dim]."""
        return self._z[: self._count]

    @property
    def x(self) -> torch.Tensor | None:
        """Stored inputs [len, *input_shape], or None."""
        return None if self._x is None else self._x[: self._count]

    @property
    def y(self) -> torch.Tensor:
        """Labels [len] int64."""
        return self._y[: self._count]

    @property
    def r0(self) -> torch.Tensor:
        """Initial saliences [len] float64."""
        return torch.exp(self._log_r0[: self._count])

    @property
    def tau(self) -> torch.Tensor:
        """Store times [len] float64 (clock units)."""
        return self._tau[: self._count]

    def log_salience(self, now: float | None = None) -> torch.Tensor:
        """``log r0 - alpha * (now - tau)`` [len] float64 at ``now`` (default: the clock's time)."""
        now = self.clock.now() if now is None else float(now)
        return self._log_r0[: self._count] - self.clock.alpha * (now - self._tau[: self._count])

    # -- admission -------------------------------------------------------------
    def _check_batch(self, z, c, r0, y, x):
        z = _checks.tensor("z", z, ndim=(1, 2))
        c = _checks.tensor("c", c, ndim=(1, 2))
        if z.ndim == 1:
            z = z.unsqueeze(0)
        if c.ndim == 1:
            c = c.unsqueeze(0)
        n = z.shape[0]
        if z.shape[1] != self.payload_dim:
            raise ValueError(f"z must have shape [n, {self.payload_dim}], got {tuple(z.shape)}")
        if c.shape != (n, self.key_dim):
            raise ValueError(f"c must have shape [{n}, {self.key_dim}] (one key per z), got {tuple(c.shape)}")
        if isinstance(r0, (int, float)) and not isinstance(r0, bool):
            r0 = torch.full((n,), float(r0), dtype=torch.float64)
        r0 = _checks.tensor("r0", r0, ndim=(0, 1), dtypes=(torch.float64, *_checks.FLOAT_DTYPES)).reshape(-1)
        if r0.shape[0] != n:
            raise ValueError(f"r0 must have shape [{n}] (one salience per z), got {tuple(r0.shape)}")
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        y = y.reshape(-1)
        if y.shape[0] != n or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"y must be an integer tensor of shape [{n}], got {tuple(y.shape)} {y.dtype}")
        if self._x is not None:
            if x is None:
                raise ValueError(f"x is required: this memory stores inputs of shape {self.input_shape}")
            x = _checks.tensor("x", x)
            if tuple(x.shape) != (n, *self.input_shape):
                raise ValueError(f"x must have shape {(n, *self.input_shape)}, got {tuple(x.shape)}")
            _finite("x", x)
        elif x is not None:
            raise ValueError("x was given but this memory was built without input_shape")
        _finite("z", z)
        _finite("c", c)
        _finite("r0", r0)
        if n and bool((r0 <= 0).any()):
            raise ValueError("r0 must be > 0 for every item (salience is kept as log r0), got values <= 0")
        return z, c, r0, y, x, n

    def add(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        r0: torch.Tensor | float,
        y: torch.Tensor,
        *,
        x: torch.Tensor | None = None,
        now: float | None = None,
    ) -> torch.Tensor:
        """Admit a batch of memories (vectorised; same result as adding them one at a time).

        Parameters
        ----------
        z : Tensor [n, payload_dim] (or [payload_dim])
        c : Tensor [n, key_dim]
        r0 : Tensor [n] > 0, or one float for all
        y : integer Tensor [n]
        x : Tensor [n, *input_shape], required when the memory stores inputs
        now : float, optional
            Store time of the batch; default the clock's time.

        Returns
        -------
        slots : Tensor [n] int64
            Slot where each item now lives, -1 when it was rejected or evicted
            by a later item of the same batch.

        Raises ValueError / TypeError on bad input, leaving the buffer unchanged.
        """
        z, c, r0, y, x, n = self._check_batch(z, c, r0, y, x)
        now = self.clock.now() if now is None else float(now)
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        dev = self.device
        log_r0 = torch.log(r0.to(dev, torch.float64))
        slots = torch.full((n,), -1, dtype=torch.int64, device=dev)
        if n == 0:
            return slots
        # 1. Free slots are filled in arrival order.
        free = min(self.capacity - self._count, n)
        if free > 0:
            slots[:free] = torch.arange(self._count, self._count + free, device=dev)
        if n > free:
            # 2. The buffer is full: the stored memories plus the batch's first `free` items form the pool.
            pool_val = self.log_salience(now)
            pool_seq = self._seq[: self._count]
            pool_slot = None  # pool position == slot
            if free > 0:
                pool_val = torch.cat([pool_val, log_r0[:free]])
                pool_seq = torch.cat([pool_seq, torch.arange(self._next_seq, self._next_seq + free, device=dev)])
                pool_slot = torch.cat([torch.arange(self._count, device=dev), slots[:free]])
            new_slots, evicted_pool = _admit_into_full(pool_val, pool_seq, pool_slot, log_r0[free:],
                                                          self._next_seq + free)
            slots[free:] = new_slots
            # Items of this batch placed in free slots and evicted again by later items.
            evicted_batch = evicted_pool[evicted_pool >= self._count] - self._count
            slots[evicted_batch] = -1
        # 3. Write the surviving items (nothing above changed the buffer).
        keep = slots >= 0
        target = slots[keep]
        seq = torch.arange(self._next_seq, self._next_seq + n, device=dev)[keep]
        self._z[target] = z.to(dev, self.dtype)[keep]
        self._c[target] = c.to(dev, self.dtype)[keep]
        self._c_norm[target] = torch.linalg.vector_norm(self._c[target].float(), dim=1)
        if self._x is not None:
            self._x[target] = x.to(dev, self.dtype)[keep]
        self._log_r0[target] = log_r0[keep]
        self._tau[target] = now
        self._y[target] = y.to(dev)[keep]
        self._seq[target] = seq
        self._count += free
        self._next_seq += n
        return slots

    def to(self, device: torch.device | str) -> EpisodicMemory:
        """A copy of this memory on ``device`` (same clock object)."""
        new = EpisodicMemory(self.capacity, self.key_dim, self.payload_dim, input_shape=self.input_shape,
                             clock=self.clock, device=device, dtype=self.dtype)
        for name in ("_c", "_c_norm", "_z", "_x", "_log_r0", "_tau", "_y", "_seq"):
            if getattr(self, name) is not None:
                setattr(new, name, getattr(self, name).to(new.device))
        new._count, new._next_seq = self._count, self._next_seq
        return new

    def clear(self) -> None:
        """Forget every memory (capacity, clock and buffers stay)."""
        self._count = 0
        self._next_seq = 0

    # -- persistence ----------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the filled part of the buffer atomically (npz with format, version, checksum)."""
        arrays = {
            "c": self.c.float().cpu().numpy(),
            "z": self.z.float().cpu().numpy(),
            "log_r0": self._log_r0[: self._count].cpu().numpy(),
            "tau": self.tau.cpu().numpy(),
            "y": self.y.cpu().numpy(),
            "seq": self._seq[: self._count].cpu().numpy(),
        }
        if self._x is not None:
            arrays["x"] = self.x.float().cpu().numpy()
        meta = {
            "capacity": self.capacity, "key_dim": self.key_dim, "payload_dim": self.payload_dim,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "dtype": str(self.dtype).removeprefix("torch."), "next_seq": self._next_seq,
            "clock": {"alpha": self.clock.alpha, "source": self.clock.source, "time": self.clock._time},
        }
        _io.save_arrays(path, arrays, format=self.FORMAT, version=self.VERSION, meta=meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> EpisodicMemory:
        """Read a file written by :meth:`save` (raises ``_io.FormatError`` if corrupted or newer)."""
        arrays, meta, _ = _io.load_arrays(path, format=cls.FORMAT, max_version=cls.VERSION)
        try:
            clock_meta = meta["clock"]
            clock = SalienceClock(clock_meta["alpha"], source=clock_meta["source"], start=clock_meta["time"])
            mem = cls(
                meta["capacity"], meta["key_dim"], meta["payload_dim"], input_shape=meta["input_shape"],
                clock=clock, device=device, dtype=getattr(torch, meta["dtype"]),
            )
            n = arrays["c"].shape[0]
            if n > mem.capacity or arrays["z"].shape[0] != n:
                raise _io.FormatError(f"{str(path)!r}: {n} memories do not fit capacity {mem.capacity}")
            names = ["c", "z", "log_r0", "tau", "y", "seq"] + (["x"] if mem._x is not None else [])
            for name in names:
                getattr(mem, f"_{name}")[:n] = torch.from_numpy(arrays[name]).to(device)
            mem._c_norm[:n] = torch.linalg.vector_norm(mem._c[:n].float(), dim=1)
        except (KeyError, TypeError, RuntimeError) as exc:
            raise _io.FormatError(f"{str(path)!r} has an inconsistent EpisodicMemory layout ({exc})") from exc
        mem._count = n
        mem._next_seq = int(meta["next_seq"])
        return mem

    def __repr__(self) -> str:
        return (f"EpisodicMemory({len(self)}/{self.capacity}, key_dim={self.key_dim}, "
                f"payload_dim={self.payload_dim}, clock={self.clock!r})")



def _admit_into_full(
    pool_val: torch.Tensor,
    pool_seq: torch.Tensor,
    pool_slot: torch.Tensor | None,
    log_r0: torch.Tensor,
    next_seq: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Admit R newcomers into a full pool, as if one at a time; vectorised.

    ``pool_val`` [cap] log-saliences now, ``pool_seq`` [cap] store order,
    ``pool_slot`` [cap] slot of each pool entry (None: the position); ``log_r0`` [R] newcomers
    (newer than every pool entry, in arrival order). Returns ``(slots [R]``
    (-1: rejected, or admitted then evicted by a later newcomer),
    ``evicted [E]`` pool positions that were evicted).

    Worth order: (log-salience, descending; store order, ascending). One at a
    time, a newcomer enters iff fewer than ``cap`` older entries are worth at
    least as much (the pool is always the ``cap`` worthiest seen so far), and
    each entry evicts the least worthy entry present; so the evicted entries,
    in time order, are the least worthy of all, in ascending worth. Newcomer
    ``a_t`` (t-th admitted) takes the slot of the t-th evicted entry: a pool
    entry, or an earlier newcomer whose slot it inherits (pointer jumping).
    """
    dev = pool_val.device
    R = log_r0.shape[0]
    cap = pool_val.shape[0]
    # A batch of R can only evict the R least worthy pool entries.
    m = min(R, cap)
    worst = _least_worthy(pool_val, pool_seq, m)  # pool positions, ascending worth
    worst_val = pool_val[worst]
    # Newcomer i enters iff #(pool below r_i) > #(earlier newcomers with r_j >= r_i);
    # the left count matters only up to R, so the m least worthy suffice.
    pool_below = torch.searchsorted(torch.sort(worst_val).values, log_r0, right=False)
    admitted = pool_below > _count_earlier_at_least(log_r0)
    slots = torch.full((R,), -1, dtype=torch.int64, device=dev)
    adm_pos = admitted.nonzero().squeeze(1)  # arrival positions of admitted newcomers
    T = adm_pos.shape[0]
    if T == 0:
        return slots, torch.empty(0, dtype=torch.int64, device=dev)
    # Eviction candidates: the m least worthy pool entries, then the admitted newcomers (newer).
    cand_val = torch.cat([worst_val, log_r0[adm_pos]])
    cand_seq = torch.cat([pool_seq[worst], next_seq + adm_pos])
    evicted = _ascending_worth(cand_val, cand_seq)[:T]  # in eviction (time) order
    from_pool = evicted < m
    evicted_pos = worst[evicted.clamp(max=m - 1)]
    evicted_slot = evicted_pos if pool_slot is None else pool_slot[evicted_pos]
    slot_of = torch.where(from_pool, evicted_slot, torch.full_like(evicted, -1))
    parent = torch.where(from_pool, torch.arange(T, device=dev), evicted - m)
    for _ in range(T.bit_length() + 1):
        unresolved = slot_of < 0
        if not bool(unresolved.any()):
            break
        slot_of = torch.where(unresolved, slot_of[parent], slot_of)
        parent = parent[parent]
    survives = torch.ones(T, dtype=torch.bool, device=dev)
    survives[evicted[~from_pool] - m] = False
    slots[adm_pos[survives]] = slot_of[survives]
    return slots, worst[evicted[from_pool]]

def _finite(name: str, t: torch.Tensor) -> None:
    """Raise unless ``t`` is finite: one sum (NaN/Inf propagate), element-wise only to confirm."""
    if t.numel() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got NaN or Inf values")


def _ascending_worth(value: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """Permutation putting items in ascending worth: lower value first; equal values: newer (higher seq) first."""
    by_seq = torch.sort(seq, descending=True, stable=True).indices
    by_val = torch.sort(value[by_seq], stable=True).indices
    return by_seq[by_val]


def _least_worthy(value: torch.Tensor, seq: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of the m least worthy items (exact at ties), via topk when the boundary is not tied."""
    n = value.shape[0]
    if m < n:
        vals = torch.topk(value, m + 1, largest=False)
        if vals.values[m] != vals.values[m - 1]:
            picked = vals.indices[:m]
            return picked[_ascending_worth(value[picked], seq[picked])]
    return _ascending_worth(value, seq)[:m]


def _count_earlier_at_least(values: torch.Tensor) -> torch.Tensor:
    """``out[i] = #{j < i : values[j] >= values[i]}`` in O(R log^2 R), vectorised.

    Merge-sort counting: at the level with blocks of ``2h``, every element of
    a right half counts the elements of its left half that are >= it (sorted
    left halves, batched ``searchsorted``). Each earlier j meets i in exactly
    one level. Values must be finite (padding is -inf).
    """
    R = values.shape[0]
    out = torch.zeros(R, dtype=torch.int64, device=values.device)
    if R < 2:
        return out
    size = 1 << (R - 1).bit_length()
    padded = torch.full((size,), float("-inf"), dtype=values.dtype, device=values.device)
    padded[:R] = values
    half = 1
    while half < size:
        blocks = padded.view(-1, 2, half)
        left_sorted = torch.sort(blocks[:, 0, :], dim=1).values  # [nb, half]
        right = blocks[:, 1, :].contiguous()  # [nb, half]
        below = torch.searchsorted(left_sorted, right, right=False)  # left elements < right value
        at_least = (half - below).reshape(-1)  # one entry per right-half position
        pos = (torch.arange(size // (2 * half), device=values.device)[:, None] * 2 * half + half
               + torch.arange(half, device=values.device)[None, :]).reshape(-1)
        keep = pos < R
        out[pos[keep]] += at_least[keep]
        half *= 2
    return out


class RecallEngine:
    """Top-k salience recall over an :class:`EpisodicMemory` (via :func:`mnemonix.ops.salience_topk`).

    ``recall(z)``: the salience-weighted mean of the ``top_k`` stored latents
    whose ``cos(z, c_m) * s_m`` is largest; zeros when the memory is empty;
    all stored memories when fewer than ``top_k`` are stored.
    """

    def __init__(self, top_k: int = 5, *, backend: str | None = None) -> None:
        self.top_k = _checks.positive_int("top_k", top_k)
        self.backend = backend

    def recall(
        self, queries: torch.Tensor, memory: EpisodicMemory, *, now: float | None = None, details: bool = False
    ):
        """Recall embeddings [B, payload_dim] (float32); with ``details=True`` also (indices, weights, scores)."""
        _checks.tensor("queries", queries, ndim=2)
        B = queries.shape[0]
        n = len(memory)
        if n == 0:
            out = torch.zeros(B, memory.payload_dim, dtype=torch.float32, device=queries.device)
            if details:
                empty = torch.empty(B, 0, device=queries.device)
                return out, empty.long(), empty, empty
            return out
        k = min(self.top_k, n)
        q = queries.detach().to(memory.device, memory.dtype)
        recall, idx, w, scores = ops.salience_topk(
            q, memory.c, memory.z, k=k, log_salience=memory.log_salience(now), key_norms=memory.c_norms,
            backend=self.backend,
        )
        recall = recall.to(queries.device)
        return (recall, idx, w, scores) if details else recall


class Encoder(nn.Module):
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool) and a linear projection to ``latent_dim``.

    Input [B, in_channels, image_size, image_size]; output z [B, latent_dim].
    """

    def __init__(self, latent_dim: int = 128, *, image_size: int = 28, in_channels: int = 1) -> None:
        super().__init__()
        _checks.positive_int("latent_dim", latent_dim)
        if _checks.positive_int("image_size", image_size) < 4:
            raise ValueError(f"image_size must be >= 4 (two 2x2 poolings), got {image_size}")
        self.image_size = image_size
        self.in_channels = _checks.positive_int("in_channels", in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        side = image_size // 4
        self.project = nn.Linear(64 * side * side, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))


class MoEDecoder(nn.Module):
    """Mixture of experts over ``h = [z; r]``: ``logits = sum_e softmax(G h)_e * expert_e(h)``.

    Each expert is Linear(2d, hidden) -> ReLU -> Linear(hidden, num_classes).
    """

    def __init__(self, latent_dim: int, hidden_dim: int, num_classes: int, num_experts: int = 4) -> None:
        super().__init__()
        for name, value in [("latent_dim", latent_dim), ("hidden_dim", hidden_dim),
                            ("num_classes", num_classes), ("num_experts", num_experts)]:
            _checks.positive_int(name, value)
        self.gate = nn.Linear(2 * latent_dim, num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes))
            for _ in range(num_experts)
        )

    def forward(self, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, r], dim=1)
        gate = torch.softmax(self.gate(h), dim=1)  # [B, E]
        expert_logits = torch.stack([expert(h) for expert in self.experts], dim=1)  # [B, E, C]
        return (gate.unsqueeze(-1) * expert_logits).sum(dim=1)


class EpiNet(nn.Module):
    """Encoder + episodic memory + recall + MoE decoder, assembled.

    ``forward(x) -> (logits, z)``: ``z = encoder(x)``; the recall of ``z``
    from the memory (zeros when ``use_memory`` is False or the memory is
    empty); ``logits = decoder(z, recall)``. :meth:`memorize` stores a batch
    (inputs kept for replay); :meth:`replay_batch` samples stored inputs.
    """

    def __init__(
        self,
        *,
        latent_dim: int = 128,
        num_classes: int = 10,
        image_size: int = 28,
        in_channels: int = 1,
        hidden_dim: int = 256,
        num_experts: int = 4,
        memory_capacity: int = 1000,
        top_k: int = 5,
        clock: SalienceClock | None = None,
        use_memory: bool = True,
        recall_backend: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(latent_dim, image_size=image_size, in_channels=in_channels)
        self.decoder = MoEDecoder(latent_dim, hidden_dim, num_classes, num_experts)
        self.memory = EpisodicMemory(
            memory_capacity, latent_dim, input_shape=(in_channels, image_size, image_size),
            clock=clock if clock is not None else SalienceClock(1e-3),
        )
        self.recaller = RecallEngine(top_k, backend=recall_backend)
        self.use_memory = bool(use_memory)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        if self.use_memory:
            r = self.recaller.recall(z.detach().float(), self.memory).to(z.dtype)
        else:
            r = torch.zeros_like(z)
        return self.decoder(z, r), z

    def _apply(self, fn, *args, **kwargs):
        """Keep the episodic memory on the parameters' device (``.to``, ``.cuda``, ``.cpu``)."""
        out = super()._apply(fn, *args, **kwargs)
        device = next(self.parameters()).device
        if device != self.memory.device:
            self.memory = self.memory.to(device)
        return out

    @torch.no_grad()
    def memorize(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, salience: torch.Tensor) -> torch.Tensor:
        """Store a batch: key and payload = z, initial salience = ``salience`` (> 0). Returns slots."""
        z = z.detach().float()
        return self.memory.add(z, z, salience.detach().double(), y, x=x.detach())

    def replay_batch(self, n: int, generator: torch.Generator | None = None):
        """Up to n stored (x, y) pairs drawn uniformly without replacement, or None when empty."""
        m = len(self.memory)
        if m == 0:
            return None
        pick = torch.randperm(m, generator=generator)[: min(n, m)].to(self.memory.device)
        return self.memory.x[pick], self.memory.y[pick]


# ----------------------------------------------------------------------------
# Split-task continual learning
# ----------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Settings of :func:`train_split` (defaults: Split-digits, a few seconds on a CPU)."""

    tasks: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    epochs_per_task: int = 5
    batch_size: int = 32
    lr: float = 2e-3
    beta: float = 1.0
    latent_dim: int = 64
    hidden_dim: int = 128
    num_experts: int = 4
    memory_capacity: int = 300
    top_k: int = 5
    alpha: float = 1e-3
    store_per_step: int = 4
    seed: int = 0
    max_steps_per_task: int | None = None


@dataclass
class TrainResult:
    """Accuracy on every task's test split after each task, per variant ("memory", "no_memory")."""

    config: TrainConfig
    accuracy: dict[str, list[list[float]]] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)
    memory_size: int = 0

    def table(self) -> tuple[list[str], list[list[object]]]:
        """(header, rows) of the forgetting table."""
        n_tasks = len(self.config.tasks)
        header = ["variant", "after task"] + [f"acc task {t} {list(self.config.tasks[t])}" for t in range(n_tasks)]
        rows = []
        for variant, per_stage in self.accuracy.items():
            for stage, accs in enumerate(per_stage):
                rows.append([variant, stage] + [round(a, 3) for a in accs])
        return header, rows

    def as_dict(self) -> dict[str, object]:
        return {"config": asdict(self.config), "accuracy": self.accuracy, "final_loss": self.final_loss,
                "memory_size": self.memory_size}


def load_digits_tasks(seed: int = 0, test_fraction: float = 0.3):
    """scikit-learn's bundled 8x8 digits as ``(x_train, y_train, x_test, y_test)``; x in [0, 1], [n, 1, 8, 8]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def _read_idx(path: Path) -> np.ndarray:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{str(path)!r} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{str(path)!r} holds {body.size} values, header says {dims}")
    return body.reshape(dims)


def load_mnist_tasks(path: str | os.PathLike[str]):
    """MNIST from local IDX files (``train-images-idx3-ubyte[.gz]`` etc. under ``path``, or its ``MNIST/raw``).

    Never downloads. Returns ``(x_train, y_train, x_test, y_test)``, x normalised, [n, 1, 28, 28].
    """
    root = Path(path)
    for candidate in (root, root / "MNIST" / "raw", root / "raw"):
        if any(candidate.glob("train-images-idx3-ubyte*")):
            root = candidate
            break
    else:
        raise FileNotFoundError(f"no MNIST IDX files (train-images-idx3-ubyte[.gz]) under {str(path)!r}")

    def find(stem: str) -> Path:
        for suffix in ("", ".gz"):
            p = root / f"{stem}{suffix}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"{stem}[.gz] missing under {str(root)!r}")

    def images(stem: str) -> torch.Tensor:
        x = torch.from_numpy(_read_idx(find(stem)).astype(np.float32) / 255.0).unsqueeze(1)
        return (x - 0.1307) / 0.3081

    def labels(stem: str) -> torch.Tensor:
        return torch.from_numpy(_read_idx(find(stem)).astype(np.int64))

    return (images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"),
            images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"))


@torch.no_grad()
def _accuracy(model: EpiNet, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(y), batch):
        logits, _ = model(x[start:start + batch])
        correct += int((logits.argmax(1) == y[start:start + batch]).sum())
    model.train()
    return correct / max(1, len(y))


def _train_variant(cfg: TrainConfig, data, use_memory: bool, progress: bool) -> tuple[list[list[float]], float, int]:
    from tqdm.auto import tqdm

    x_train, y_train, x_test, y_test = data
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    clock = SalienceClock(cfg.alpha, source="steps")
    model = EpiNet(
        latent_dim=cfg.latent_dim, num_classes=int(max(max(t) for t in cfg.tasks)) + 1,
        image_size=x_train.shape[-1], in_channels=x_train.shape[1], hidden_dim=cfg.hidden_dim,
        num_experts=cfg.num_experts, memory_capacity=cfg.memory_capacity, top_k=cfg.top_k, clock=clock,
        use_memory=use_memory,
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    accuracy: list[list[float]] = []
    last_loss = float("nan")
    test_sets = [torch.isin(y_test, torch.tensor(t)) for t in cfg.tasks]
    name = "memory" if use_memory else "no memory"
    for t_idx, classes in enumerate(cfg.tasks):
        in_task = torch.isin(y_train, torch.tensor(classes)).nonzero().squeeze(1)
        steps_per_epoch = math.ceil(len(in_task) / cfg.batch_size)
        total = cfg.epochs_per_task * steps_per_epoch
        if cfg.max_steps_per_task is not None:
            total = min(total, cfg.max_steps_per_task)
        bar = tqdm(total=total, desc=f"{name}: task {t_idx} {list(classes)}", disable=not progress, leave=False)
        step = 0
        while step < total:
            perm = in_task[torch.randperm(len(in_task), generator=g)]
            for start in range(0, len(perm), cfg.batch_size):
                if step >= total:
                    break
                batch = perm[start:start + cfg.batch_size]
                xb, yb = x_train[batch], y_train[batch]
                logits, z = model(xb)
                per_sample = F.cross_entropy(logits, yb, reduction="none")
                loss = per_sample.mean()
                if use_memory:
                    replay = model.replay_batch(cfg.batch_size, generator=g)
                    if replay is not None:
                        logits_m, _ = model(replay[0])
                        loss = loss + cfg.beta * F.cross_entropy(logits_m, replay[1])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if use_memory:
                    store = torch.randperm(len(batch), generator=g)[: cfg.store_per_step]
                    model.memorize(xb[store], z[store], yb[store], per_sample[store].detach() + 1e-6)
                clock.tick()
                last_loss = float(loss.detach())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.3f}", memory=len(model.memory))
        bar.close()
        accuracy.append([_accuracy(model, x_test[m], y_test[m]) for m in test_sets])
    return accuracy, last_loss, len(model.memory)


def train_split(
    config: TrainConfig | None = None, *, data=None, progress: bool = True, variants: Sequence[str] = ("memory",
                                                                                                      "no_memory")
) -> TrainResult:
    """Continual learning on a sequence of class subsets, with and without the episodic memory.

    Trains on task 0's classes, then task 1's, ... (default: digits {0..4}
    then {5..9}). With memory: each step adds ``beta`` x the cross-entropy on
    a replay sample from the memory, then stores ``store_per_step`` samples of
    the batch with initial salience = their loss; the decoder sees the recall.
    Without memory: the same network and schedule, recall zeros, no replay.

    Parameters
    ----------
    config : TrainConfig, optional
    data : (x_train, y_train, x_test, y_test), optional
        Default: scikit-learn's bundled digits (:func:`load_digits_tasks`).
    progress : bool
        Show tqdm progress bars.
    variants : subset of ("memory", "no_memory")

    Returns
    -------
    TrainResult with ``accuracy[variant][after_task][task]``.
    """
    cfg = config or TrainConfig()
    for v in variants:
        if v not in ("memory", "no_memory"):
            raise ValueError(f"variants must be among ('memory', 'no_memory'), got {v!r}")
    if data is None:
        data = load_digits_tasks(cfg.seed)
    result = TrainResult(config=cfg)
    for v in variants:
        acc, loss, size = _train_variant(cfg, data, v == "memory", progress)
        result.accuracy[v] = acc
        result.final_loss[v] = loss
        if v == "memory":
            result.memory_size = size
    return result
