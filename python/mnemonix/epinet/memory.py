"""The episodic memory: a fixed-capacity buffer of ``(z, c, r0, tau, y[, x])`` with salience admission."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from mnemonix import _checks, _types
from mnemonix.epinet import batch as _batch
from mnemonix.epinet.admission import plan_admission
from mnemonix.epinet.clock import SalienceClock, real_number

__all__ = ["EpisodicMemory", "checked_device"]

# Tensor attributes of EpisodicMemory, in the order to_/save use them. Each has capacity + 1 rows:
# row `capacity` is a scratch row that absorbs the writes of rejected items (no boolean mask, no sync).
TENSOR_FIELDS = ("_c", "_c_norm", "_z", "_x", "_r0", "_tau", "_y", "_seq")


def checked_device(name: str, device: object) -> torch.device:
    """A concrete device (``torch.device``, str such as ``"cuda:0"`` or a CUDA index); meta and unknown refused."""
    return _checks.device(name, device)


def buffer_bytes(capacity: int, key_dim: int, payload_dim: int, input_shape: tuple[int, ...] | None,
                 dtype: torch.dtype) -> int:
    """Bytes of the buffers of a memory of these sizes (capacity + 1 rows, see TENSOR_FIELDS)."""
    row = (key_dim + payload_dim + math.prod(input_shape or (0,))) * dtype.itemsize
    return (capacity + 1) * (row + 4 + 4 * 8)  # + c_norm float32, r0 / tau float64, y / seq int64


def memory_available(device: torch.device) -> int | None:
    """Free bytes on a CUDA device, physical memory for the CPU (None when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _moved(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; from host memory without making the host wait (a device-to-host copy blocks)."""
    return tensor.to(device, non_blocking=tensor.device.type == "cpu" and device.type != "cpu")


def _shape(name: str, value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(value).__name__}")
    return tuple(_checks.positive_int(f"{name}[{i}]", s) for i, s in enumerate(value))


class EpisodicMemory:
    """Fixed-capacity buffer of memories ``(z, c, r0, tau, y)`` (and optionally the input x).

    Slots ``[0, len(self))`` are filled; the rest are empty. Salience is kept
    as ``r0`` and ``tau`` in float64 and evaluated in log space with
    :func:`mnemonix._types.log_salience`, so it never underflows.

    Admission rule (the notebook's, applied to each item in order): while
    there is room a newcomer is appended; once full, a newcomer with initial
    salience ``r0`` replaces the memory of lowest current salience if and only
    if ``r0`` is strictly larger than that salience (otherwise it is
    rejected). Among equal lowest saliences the most recently stored one is
    evicted. :meth:`add` applies this rule to a whole batch at once, with
    vectorised operations, and gives exactly the state that adding the items
    one at a time would give (items of one batch share the store time).

    Only time differences matter: the recall ranks by salience relative to the
    latest store time (:meth:`relative_log_salience`), so its results do not
    depend on ``now`` nor on the origin of the times (epoch timestamps of
    ~1e15 give the same weights as small ones).

    Parameters
    ----------
    capacity : int >= 1
    key_dim : int >= 1
        Size of the content keys ``c`` (and of ``z`` unless ``payload_dim``).
    payload_dim : int >= 1, optional
        Size of the stored latents ``z``; default ``key_dim``.
    input_shape : sequence of int >= 1, optional
        Shape of one raw input x to keep for replay; None stores no inputs.
    clock : SalienceClock, optional
        Default ``SalienceClock(1e-3)`` (step counter).
    device : torch.device or str
        Where every buffer lives (default CPU).
    dtype : torch.float32, float16 or bfloat16
        How ``z``, ``c`` and x are stored (salience and times are float64, labels int64).
    """

    FORMAT = "mnemonix.epinet.EpisodicMemory"
    VERSION = 2  # 2: "r0" instead of "log_r0", "device" in the metadata (version 1 files still load)

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
        self.input_shape = None if input_shape is None else _shape("input_shape", input_shape)
        if not isinstance(dtype, torch.dtype) or dtype not in _checks.FLOAT_DTYPES:
            raise TypeError(f"dtype must be one of {[str(d) for d in _checks.FLOAT_DTYPES]}, got {dtype!r}")
        if clock is not None and not isinstance(clock, SalienceClock):
            raise TypeError(f"clock must be a SalienceClock, got {type(clock).__name__}")
        self.device = checked_device("device", device)
        self.clock = clock if clock is not None else SalienceClock()
        self.dtype = dtype
        rows, dev = self.capacity + 1, self.device
        sizes = f"capacity={capacity}, key_dim={key_dim}, payload_dim={self.payload_dim}, input_shape={input_shape}"
        need = buffer_bytes(capacity, key_dim, self.payload_dim, self.input_shape, dtype)
        available = memory_available(dev)
        if available is not None and need > available:  # refuse before torch tries (and the OS kills us)
            raise ValueError(f"{sizes}: the buffers need {need} bytes, more than {dev} has ({available})")
        with _checks.building(sizes):
            self._c = torch.zeros(rows, self.key_dim, dtype=dtype, device=dev)
            self._z = torch.zeros(rows, self.payload_dim, dtype=dtype, device=dev)
            self._x = None if self.input_shape is None else torch.zeros(rows, *self.input_shape, dtype=dtype,
                                                                        device=dev)
            self._c_norm = torch.zeros(rows, dtype=torch.float32, device=dev)  # cached ||c||
            self._r0 = torch.ones(rows, dtype=torch.float64, device=dev)
            self._tau = torch.zeros(rows, dtype=torch.float64, device=dev)
            self._y = torch.zeros(rows, dtype=torch.int64, device=dev)
            self._seq = torch.zeros(rows, dtype=torch.int64, device=dev)
        self.device = self._c.device  # "cuda" -> "cuda:<current>": comparable with a parameter's device
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
        return self._r0[: self._count]

    @property
    def tau(self) -> torch.Tensor:
        """Store times [len] float64 (clock units)."""
        return self._tau[: self._count]

    def log_salience(self, now: float | None = None) -> torch.Tensor:
        """``log r0 - alpha * (now - tau)`` [len] float64 at ``now`` (default: the clock's time)."""
        now = self.clock.now() if now is None else real_number("now", now)
        return _types.log_salience(self.r0, self.tau, self.clock.alpha, now)

    def relative_log_salience(self) -> torch.Tensor:
        """Log-salience [len] float64 at the latest store time: ``log_salience(now)`` minus a common constant.

        Ranking and normalised weights are the same at every ``now`` (the constant
        ``alpha * (now - max tau)`` cancels), and this form never mixes a huge absolute
        time into ``log r0``: the values depend only on ``max(tau) - tau``. No host sync.
        """
        tau = self.tau
        if self._count == 0:
            return tau
        return _types.log_salience(self.r0, tau - tau.max(), self.clock.alpha, 0.0)

    # -- admission -------------------------------------------------------------
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
        z : Tensor [n, payload_dim] (or [payload_dim]), floating
        c : Tensor [n, key_dim] (or [key_dim]), floating; every row's norm below 1.8e19
        r0 : Tensor [n] (or 0-dim) floating, > 0, or one real number for all
        y : labels [n] of any integer dtype (tensor, numpy array, sequence), stored as int64;
            bool, float and complex labels are refused (TypeError)
        x : Tensor [n, *input_shape], required when the memory stores inputs
        now : float, optional
            Store time of the batch; default the clock's time.

        Inputs may live on any device; they are copied to the memory's device and dtype.

        Returns
        -------
        slots : Tensor [n] int64
            Slot where each item now lives, -1 when it was rejected or evicted
            by a later item of the same batch.

        Raises
        ------
        TypeError, ValueError
            Bad input (the message names the argument). Everything is checked and
            converted before the first write: a failed call leaves the memory
            bit-identical.

        Notes
        -----
        Host syncs per call: 1 while the batch fits in the free slots (the
        validity check of the inputs), at most 3 when the memory overflows
        (plus the two of :mod:`~mnemonix.epinet.admission`); none per item.
        """
        return self._add(z, c, r0, y, x=x, now=now, names=_batch.DEFAULT_NAMES)

    def _add(self, z, c, r0, y, *, x, now, names: dict[str, str]) -> torch.Tensor:
        """:meth:`add` with the caller's argument names in error messages."""
        now = self.clock.now() if now is None else real_number("now", now)
        batch = _batch.checked_batch(self, z, c, r0, y, x, names)
        if batch.n == 0:
            return torch.full((0,), -1, dtype=torch.int64, device=self.device)
        log_r0 = torch.log(batch.r0)  # log-salience of a newcomer at its store time
        # The current salience of the stored memories matters only when the batch overflows.
        pool = self.log_salience(now) if self._count + batch.n > self.capacity else None
        slots = plan_admission(pool, self._seq[: self._count], self._count, self.capacity, log_r0, self._next_seq)
        # Nothing above changed the memory. Rejected items write the scratch row `capacity`.
        target = torch.where(slots >= 0, slots, self.capacity)
        seq = torch.arange(self._next_seq, self._next_seq + batch.n, device=self.device)
        self._z[target] = batch.z
        self._c[target] = batch.c
        self._c_norm[target] = batch.c_norm
        if self._x is not None:
            self._x[target] = batch.x
        self._r0[target] = batch.r0
        self._tau[target] = now
        self._y[target] = batch.y
        self._seq[target] = seq
        self._count = min(self.capacity, self._count + batch.n)
        self._next_seq += batch.n  # count and store order are host ints: no sync to update them
        return slots

    # -- placement -------------------------------------------------------------
    def to(self, device: torch.device | str) -> EpisodicMemory:
        """A copy of this memory on ``device`` (same clock object; this memory is unchanged)."""
        device = checked_device("device", device)
        new = EpisodicMemory.__new__(EpisodicMemory)
        new.__dict__.update(self.__dict__)
        for name in TENSOR_FIELDS:
            value = getattr(self, name)
            setattr(new, name, None if value is None else value.to(device, copy=True))
        new.device = new._c.device
        return new

    def move_(self, device: torch.device | str) -> EpisodicMemory:
        """Move every buffer to ``device`` in place and return ``self`` (no copy when already there).

        All buffers are copied first and swapped in together: a failure (e.g. out of
        memory on the target) leaves the memory where it was.
        """
        device = checked_device("device", device)
        if device == self.device:
            return self
        moved = {name: None if getattr(self, name) is None else _moved(getattr(self, name), device)
                 for name in TENSOR_FIELDS}
        self.__dict__.update(moved)
        self.device = self._c.device
        return self

    def clear(self) -> None:
        """Forget every memory (capacity, clock and buffers stay). Takes no argument, cannot fail."""
        self._count = 0
        self._next_seq = 0

    # -- persistence ----------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the filled part of the buffer atomically (npz with format, version, checksum)."""
        from mnemonix.epinet import persist

        persist.save_memory(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: torch.device | str | None = None) -> EpisodicMemory:
        """Read a file written by :meth:`save`, validating every field.

        Parameters
        ----------
        path : path of the file
        device : torch.device or str, optional
            Where to put the memory. None (default): the device type it was saved
            from when this machine has it (a memory saved from CUDA comes back on
            the current CUDA device), else the CPU.

        Raises
        ------
        mnemonix._io.FormatError
            Not a valid file (corrupted, newer format, inconsistent or impossible
            contents); the message names the file and the field.
        FileNotFoundError
            ``path`` does not exist.
        """
        from mnemonix.epinet import persist

        return persist.load_memory(cls, path, device)

    def __repr__(self) -> str:
        return (f"EpisodicMemory({len(self)}/{self.capacity}, key_dim={self.key_dim}, "
                f"payload_dim={self.payload_dim}, device={self.device}, clock={self.clock!r})")
