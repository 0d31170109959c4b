"""Saving and loading an :class:`~mnemonix.epinet.EpisodicMemory`.

The file is an npz written by :func:`mnemonix._io.save_arrays` (atomic,
checksummed). Loading checks the metadata and every array before anything
is allocated or copied: types and ranges of the sizes, dtypes and shapes of
the arrays, finite values where the memory cannot hold NaN/Inf, ``r0 > 0``,
store orders unique and below ``next_seq``, and a buffer size the target
device can hold. Each failure is a :class:`mnemonix._io.FormatError` naming
the file and the field.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from mnemonix import _io
from mnemonix.epinet.clock import SalienceClock

__all__ = ["save_memory", "load_memory"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_MAX_SIZE = 2**48  # no dimension or count of a real memory comes near this


def save_memory(memory, path: str | os.PathLike[str]) -> None:
    """Write the filled part of ``memory`` (copied to the host) with its sizes, dtype, clock and device type."""
    n = len(memory)
    arrays = {
        "c": memory.c.float().cpu().numpy(),
        "z": memory.z.float().cpu().numpy(),
        "r0": memory.r0.cpu().numpy(),
        "tau": memory.tau.cpu().numpy(),
        "y": memory.y.cpu().numpy(),
        "seq": memory._seq[:n].cpu().numpy(),
    }
    if memory.x is not None:
        arrays["x"] = memory.x.float().cpu().numpy()
    meta = {
        "capacity": memory.capacity, "key_dim": memory.key_dim, "payload_dim": memory.payload_dim,
        "input_shape": None if memory.input_shape is None else list(memory.input_shape),
        "dtype": str(memory.dtype).removeprefix("torch."), "next_seq": memory._next_seq,
        "clock": memory.clock.state(), "device": memory.device.type,
    }
    _io.save_arrays(path, arrays, format=memory.FORMAT, version=memory.VERSION, meta=meta)


class _Fields:
    """Reads named fields of one file; every failure is a FormatError naming the file and the field."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.where = repr(str(path))

    def error(self, field: str, problem: str) -> _io.FormatError:
        return _io.FormatError(f"{self.where}: field {field!r} {problem}")

    def integer(self, meta: dict[str, Any], key: str, low: int) -> int:
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_SIZE:
            raise self.error(key, f"must be an int in [{low}, 2**48], got {value!r}")
        return value

    def array(self, arrays: dict[str, np.ndarray], key: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        if key not in arrays:
            raise self.error(key, "is missing")
        value = arrays[key]
        if value.dtype != dtype or value.shape != shape:
            raise self.error(key, f"must be {np.dtype(dtype).name} of shape {shape}, "
                                  f"got {value.dtype} of shape {value.shape}")
        return value


def _read_meta(fields: _Fields, meta: object) -> dict[str, Any]:
    """Sizes, dtype, clock and saved device type from the metadata, each checked."""
    if not isinstance(meta, dict):
        raise fields.error("meta", f"must be a JSON object, got {type(meta).__name__}")
    out: dict[str, Any] = {k: fields.integer(meta, k, 1) for k in ("capacity", "key_dim", "payload_dim")}
    out["next_seq"] = fields.integer(meta, "next_seq", 0)
    shape = meta.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and 0 < len(shape) <= 8 and all(
            isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= _MAX_SIZE for s in shape)):
        raise fields.error("input_shape", f"must be null or a list of 1 to 8 positive ints, got {shape!r}")
    out["input_shape"] = None if shape is None else tuple(shape)
    if not isinstance(meta.get("dtype"), str) or meta["dtype"] not in _DTYPES:
        raise fields.error("dtype", f"must be one of {sorted(_DTYPES)}, got {meta.get('dtype')!r}")
    out["dtype"] = _DTYPES[meta["dtype"]]
    clock = meta.get("clock")
    try:
        if not isinstance(clock, dict):
            raise TypeError(f"must be a JSON object, got {type(clock).__name__}")
        out["clock"] = SalienceClock.from_state({k: clock[k] for k in ("alpha", "source", "time")})
    except (KeyError, TypeError, ValueError) as exc:
        raise fields.error("clock", f"does not describe a SalienceClock ({exc})") from None
    saved_on = meta.get("device", "cpu")
    if not isinstance(saved_on, str):
        raise fields.error("device", f"must be a device type string, got {saved_on!r}")
    out["device"] = saved_on
    return out


def _read_arrays(fields: _Fields, arrays: dict[str, np.ndarray], meta: dict[str, Any], version: int):
    """The arrays as (c, z, x, r0, tau, y, seq), dtypes, shapes and values checked."""
    if "c" not in arrays or arrays["c"].ndim != 2:
        raise fields.error("c", "is missing or not a matrix")
    n = arrays["c"].shape[0]
    if n > meta["capacity"]:
        raise fields.error("c", f"holds {n} memories, more than the capacity {meta['capacity']}")
    expected = {"c", "z", "tau", "y", "seq", "r0" if version >= 2 else "log_r0"}
    c = fields.array(arrays, "c", np.float32, (n, meta["key_dim"]))
    z = fields.array(arrays, "z", np.float32, (n, meta["payload_dim"]))
    x = None
    if meta["input_shape"] is not None:
        expected.add("x")
        x = fields.array(arrays, "x", np.float32, (n, *meta["input_shape"]))
    if set(arrays) != expected:
        raise fields.error(sorted(set(arrays) ^ expected)[0],
                           f"does not belong to this layout (arrays {sorted(expected)})")
    tau = fields.array(arrays, "tau", np.float64, (n,))
    if version >= 2:
        r0 = fields.array(arrays, "r0", np.float64, (n,))
    else:  # version 1 kept log r0
        with np.errstate(over="ignore", under="ignore"):
            r0 = np.exp(fields.array(arrays, "log_r0", np.float64, (n,)))
    y = fields.array(arrays, "y", np.int64, (n,))
    seq = fields.array(arrays, "seq", np.int64, (n,))
    _check_values(fields, meta, c=c, z=z, x=x, r0=r0, tau=tau, seq=seq)
    return c, z, x, r0, tau, y, seq


def _check_values(fields: _Fields, meta: dict[str, Any], **arrays: np.ndarray | None) -> None:
    limit = float(torch.finfo(meta["dtype"]).max)
    for key in ("c", "z", "x", "tau"):
        value = arrays[key]
        if value is not None and not np.isfinite(value).all():
            raise fields.error(key, "holds NaN or Inf values")
        if key != "tau" and value is not None and value.size and float(np.abs(value).max()) > limit:
            raise fields.error(key, f"holds values beyond the range of {meta['dtype']}")
    with np.errstate(over="ignore"):
        if arrays["c"].size and not np.isfinite(np.square(np.linalg.norm(arrays["c"], axis=1))).all():
            raise fields.error("c", "holds a key whose squared norm overflows float32")
    r0 = arrays["r0"]
    if not (np.isfinite(r0).all() and (r0 > 0).all()):
        raise fields.error("r0", "must be finite and > 0 for every memory")
    seq = arrays["seq"]
    if seq.size and (seq.min() < 0 or seq.max() >= meta["next_seq"] or np.unique(seq).size != seq.size):
        raise fields.error("seq", f"must be distinct store orders in [0, next_seq = {meta['next_seq']})")


def _target_device(fields: _Fields, meta: dict[str, Any], device) -> torch.device:
    """The device to load onto, and a check that the declared buffers fit there."""
    from mnemonix.epinet.memory import buffer_bytes, checked_device, memory_available

    if device is None:
        device = "cuda" if meta["device"] == "cuda" and torch.cuda.is_available() else "cpu"
    dev = checked_device("device", device)
    need = buffer_bytes(meta["capacity"], meta["key_dim"], meta["payload_dim"], meta["input_shape"], meta["dtype"])
    available = memory_available(dev)
    if available is not None and need > available:
        raise fields.error("capacity", f"declares buffers of {need} bytes, more than {dev} has ({available})")
    return dev


def load_memory(cls, path: str | os.PathLike[str], device):
    """:meth:`EpisodicMemory.load`: read, validate, then build the memory on the target device."""
    arrays, raw_meta, version = _io.load_arrays(path, format=cls.FORMAT, max_version=cls.VERSION)
    fields = _Fields(path)
    meta = _read_meta(fields, raw_meta)
    c, z, x, r0, tau, y, seq = _read_arrays(fields, arrays, meta, version)
    dev = _target_device(fields, meta, device)
    mem = cls(meta["capacity"], meta["key_dim"], meta["payload_dim"], input_shape=meta["input_shape"],
              clock=meta["clock"], device=dev, dtype=meta["dtype"])
    n = c.shape[0]
    for name, value in (("c", c), ("z", z), ("x", x), ("r0", r0), ("tau", tau), ("y", y), ("seq", seq)):
        if value is not None:
            getattr(mem, f"_{name}")[:n] = torch.from_numpy(np.ascontiguousarray(value)).to(dev)
    mem._c_norm[:n] = torch.linalg.vector_norm(mem._c[:n].float(), dim=1)
    mem._count = n
    mem._next_seq = meta["next_seq"]
    return mem
