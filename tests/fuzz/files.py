"""File fuzzing of the model formats: damaged bytes, truncations, and crafted (resealed) contents.

Three kinds of damaged file, each loaded by the model's own ``load``:

- *truncations* at every section boundary of the zip container (local headers, ``.npy`` headers,
  member data, central directory, end records, the trailing digest), each +-1 byte;
- *byte flips* at random positions (the trailing SHA-256 digest covers every byte: each must be
  a ``FormatError``);
- *crafted contents*: the file's arrays and metadata decoded, one field changed (removed, another
  dtype or shape, NaN / Inf / out-of-range values, flipped data bytes, wrong metadata kinds), and
  written back as a valid, sealed file, as someone editing a file with our own writer would: the
  checksum passes, so only the loader's semantic checks stand between the file and the model.

Outcome of each load: ``FormatError``, or a model identical to the saved one (bytes and
truncations), or (crafted contents) a model that works: :attr:`Format.use` runs on it without
error. Anything else -- another exception, a model that fails when used -- is a fault.
"""

from __future__ import annotations

import json
import random
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnemonix import _io

from .harness import STATS, first_difference, snapshot


@dataclass
class Format:
    """A model format: how to make, save, load and use one object of it."""

    name: str
    make: Callable[[], Any]
    save: Callable[[Any, Path], None]
    load: Callable[[Path], Any]
    use: Callable[[Any], Any]


def section_boundaries(raw: bytes, path: Path) -> list[int]:
    """Offsets where a section of the zip container starts or ends (see the module docstring)."""
    cuts = {0, len(raw)}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name_len = len(info.filename.encode())
            extra_len = int.from_bytes(raw[info.header_offset + 28: info.header_offset + 30], "little")
            data = info.header_offset + 30 + name_len + extra_len
            npy_header = 10 + int.from_bytes(raw[data + 8: data + 10], "little")
            cuts |= {info.header_offset, info.header_offset + 30, data, data + npy_header, data + info.compress_size}
    for signature in (b"PK\x01\x02", b"PK\x06\x06", b"PK\x06\x07", b"PK\x05\x06", b"mnemonix-sha256:"):
        cuts |= {m.start() for m in re.finditer(re.escape(signature), raw)}
    return sorted(cuts)


def truncations(raw: bytes, path: Path) -> Iterator[tuple[str, bytes]]:
    for cut in section_boundaries(raw, path):
        for length in sorted({cut - 1, cut, cut + 1} & set(range(len(raw)))):
            yield f"truncated to {length} of {len(raw)} bytes", raw[:length]


def byte_flips(raw: bytes, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    for _ in range(count):
        pos, mask = rng.randrange(len(raw)), rng.randrange(1, 256)
        data = bytearray(raw)
        data[pos] ^= mask
        yield f"byte {pos} ^ {mask:#04x}", bytes(data)


# -- crafted contents ------------------------------------------------------------------------------
def decode(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of a saved file and its header (format, version, meta)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays.pop("__meta__").tobytes().decode())
    return arrays, header


def array_variants(a: np.ndarray, rng: random.Random) -> Iterator[tuple[str, np.ndarray]]:
    for dtype in ("float64", "float16", "int8", "int64", "uint32", "bool", "complex64"):
        if a.dtype != np.dtype(dtype):
            yield f"as {dtype}", a.astype(dtype)
    yield "extra leading dim", a[None]
    if a.ndim:
        yield "flattened", a.reshape(-1)
        yield "empty", a[:0]
        if a.shape[0]:
            yield "last row dropped", a[:-1]
            yield "first row repeated", np.concatenate([a, a[:1]])
    if a.ndim >= 2:
        yield "last column dropped", a[..., :-1]
        yield "transposed", a.T.copy()
    if a.size:
        flat = a.reshape(-1)
        for label, value in _bad_values(a.dtype):
            out = flat.copy()
            out[rng.randrange(flat.size)] = value
            yield label, out.reshape(a.shape)
        for _ in range(3):
            raw = bytearray(a.tobytes())
            pos = rng.randrange(len(raw))
            raw[pos] ^= rng.randrange(1, 256)
            yield f"data byte {pos} flipped", np.frombuffer(bytes(raw), dtype=a.dtype).reshape(a.shape)


def _bad_values(dtype: np.dtype) -> list[tuple[str, Any]]:
    if dtype.kind == "f":
        return [("a NaN", np.nan), ("an Inf", np.inf), ("-1e30", -1e30), ("1e30", 1e30), ("-1", -1.0)]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return [("-1", -1 if dtype.kind == "i" else 0), ("max", info.max), ("min", info.min), ("2", 2)]
    if dtype.kind == "b":
        return [("flipped bool", True)]
    return []


META_VALUES: list[tuple[str, Any]] = [
    ("None", None), ("str", "x"), ("-1", -1), ("0", 0), ("1.5", 1.5), ("True", True), ("2**63", 2**63),
    ("list", [1]), ("dict", {}), ("1e308", 1e308), ("NaN", float("nan")),
]


def crafted(arrays: dict[str, np.ndarray], header: dict[str, Any], seed: int
            ) -> Iterator[tuple[str, dict[str, np.ndarray], dict[str, Any]]]:
    """(what, arrays, header) with one field changed; the header keys are format / version / meta."""
    rng = random.Random(seed)
    for key, a in arrays.items():
        yield f"array {key!r} removed", {k: v for k, v in arrays.items() if k != key}, header
        for label, variant in array_variants(a, rng):
            yield f"array {key!r} {label}", {**arrays, key: variant}, header
    yield "an unknown array", {**arrays, "zzz": np.zeros(3)}, header
    yield "version + 1", arrays, {**header, "version": header["version"] + 1}
    yield "another format", arrays, {**header, "format": header["format"] + "x"}
    for path, _ in _meta_fields(header["meta"]):
        yield f"meta {path} removed", arrays, {**header, "meta": _set(header["meta"], path, ...)}
        for label, value in META_VALUES:
            yield f"meta {path} = {label}", arrays, {**header, "meta": _set(header["meta"], path, value)}
    yield "meta not a dict", arrays, {**header, "meta": {"x": 1}}


def _meta_fields(meta: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in meta.items():
        yield (*prefix, key), value
        if isinstance(value, dict):
            yield from _meta_fields(value, (*prefix, key))


def _set(meta: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``meta`` with ``path`` set to ``value`` (``...``: removed)."""
    out = dict(meta)
    if len(path) > 1:
        out[path[0]] = _set(out[path[0]], path[1:], value)
    elif value is ...:
        out.pop(path[0])
    else:
        out[path[0]] = value
    return out


def write(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
    """A sealed file (valid digest and array checksum) of these arrays and header."""
    _io.save_arrays(path, arrays, format=header["format"], version=header["version"], meta=header["meta"])


# -- outcomes --------------------------------------------------------------------------------------
class Outcomes:
    """Loads damaged files of one format and checks each outcome (module docstring)."""

    def __init__(self, fmt: Format, folder: Path) -> None:
        self.fmt, self.folder = fmt, folder
        self.original = folder / f"{fmt.name}.npz"
        fmt.save(fmt.make(), self.original)
        self.raw = self.original.read_bytes()
        self.expected = snapshot(fmt.load(self.original))
        self.rejected = self.identical = self.usable = 0

    def load(self, data: bytes | None, what: str, *, crafted: bool = False) -> None:
        path = self.folder / "damaged.npz"
        if data is not None:
            path.write_bytes(data)
        STATS["file mutations"] += 1
        where = f"{self.fmt.name}: {what}"
        try:
            obj = self.fmt.load(path)
        except _io.FormatError:
            self.rejected += 1
        except Exception as exc:  # the contract is broken: show what escaped
            raise AssertionError(f"{where}: load raised {type(exc).__name__}: {exc}") from exc
        else:
            difference = first_difference(self.expected, snapshot(obj))
            if difference is None:
                self.identical += 1
            elif not crafted:
                raise AssertionError(f"{where}: loaded a different state (at {difference})")
            else:
                try:
                    self.fmt.use(obj)
                except Exception as exc:
                    raise AssertionError(f"{where}: loaded, then failed when used: {type(exc).__name__}: "
                                         f"{exc}") from exc
                self.usable += 1
        STATS["file mutations good"] += 1

    def load_crafted(self, what: str, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        try:
            write(self.folder / "damaged.npz", arrays, header)
        except (TypeError, ValueError) as exc:  # our writer refuses it (e.g. a bad array name): nothing to load
            raise AssertionError(f"{self.fmt.name}: {what}: could not be written ({exc})") from exc
        self.load(None, what, crafted=True)
