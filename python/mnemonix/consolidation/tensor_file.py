"""A checksummed tensor file in the safetensors layout, read with every size checked first.

Layout (the `safetensors <https://github.com/huggingface/safetensors>`_ layout, so that the
``safetensors`` package can open the file too; mnemonix reads and writes it itself)::

    bytes [0, 8)        N: the length of the header, unsigned little-endian 64-bit
    bytes [8, 8 + N)    the header: UTF-8 JSON, padded with spaces to a multiple of 8
                        {"__metadata__": {str: str, ..., "sha256": "<64 hex digits>"},
                         "<tensor name>": {"dtype": "F32", "shape": [...],
                                           "data_offsets": [begin, end]}, ...}
    bytes [8 + N, end)  the tensors' bytes, little-endian, C order, one after the other in
                        header order; offsets count from byte 8 + N and tile the data exactly

``sha256`` is the SHA-256 of the whole file with the 64 hex digits of the checksum itself
replaced by ``"0"``: it covers the length, the metadata, every tensor's name, dtype, shape and
offsets, and every data byte.

Reading never allocates more than the file holds: the file size is checked against
:data:`MAX_FILE_BYTES`, the header length against :data:`MAX_HEADER_BYTES` and the file size,
every declared shape against its offsets and the offsets against the data actually present,
all before any tensor is built. Every problem is a :class:`mnemonix._io.FormatError` that names
the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mnemonix import _io

#: Files larger than this are refused before reading (the large VAE is ~6 MB).
MAX_FILE_BYTES = 4 << 30
#: Headers longer than this are refused before reading (a VAE header is ~4 KB).
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 4096
MAX_NDIM = 8

# safetensors dtype names <-> (torch dtype, little-endian numpy dtype)
_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "F64": (torch.float64, "<f8"), "F32": (torch.float32, "<f4"), "F16": (torch.float16, "<f2"),
    "I64": (torch.int64, "<i8"), "I32": (torch.int32, "<i4"), "I16": (torch.int16, "<i2"),
    "I8": (torch.int8, "i1"), "U8": (torch.uint8, "u1"), "BOOL": (torch.bool, "?"),
}
_NAMES = {torch_dtype: name for name, (torch_dtype, _) in _DTYPES.items()}
_PLACEHOLDER = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _fail(path: str, field: str, what: str) -> _io.FormatError:
    return _io.FormatError(f"{path!r}: field {field!r}: {what}")


def encode(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The bytes of a file holding ``tensors`` (any device; written from CPU copies) and
    ``metadata`` (str -> str; the key ``sha256`` is reserved)."""
    if "sha256" in metadata:
        raise ValueError("metadata key 'sha256' is reserved for the checksum")
    header: dict[str, Any] = {"__metadata__": {**{str(k): str(v) for k, v in metadata.items()},
                                               "sha256": _PLACEHOLDER}}
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        if name == "__metadata__":
            raise ValueError("tensor name '__metadata__' is reserved")
        if tensor.dtype not in _NAMES:
            raise TypeError(f"tensor {name!r} has dtype {tensor.dtype}, expected one of {sorted(map(str, _NAMES))}")
        dtype_name = _NAMES[tensor.dtype]
        arr = tensor.detach().cpu().contiguous().numpy().astype(_DTYPES[dtype_name][1], copy=False)
        data = arr.tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("ascii")
    text += b" " * (-len(text) % 8)
    blob = bytearray(len(text).to_bytes(8, "little") + text + b"".join(chunks))
    marker = b'"sha256":"' + _PLACEHOLDER.encode()
    pos = blob.index(marker) + len(marker) - 64
    blob[pos : pos + 64] = hashlib.sha256(blob).hexdigest().encode()
    return bytes(blob)


def write(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write :func:`encode`'s bytes atomically (temp file + fsync + rename)."""
    _io.atomic_write_bytes(path, encode(tensors, metadata))


def _read_bounded(path: str) -> bytes:
    """The file's bytes, after checking its size against :data:`MAX_FILE_BYTES`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"path {path!r} does not exist")
    if not os.path.isfile(path):
        raise _io.FormatError(f"{path!r} is not a regular file (a directory?)")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise _fail(path, "file size", f"{size} bytes, more than the limit of {MAX_FILE_BYTES}")
    with open(path, "rb") as fh:
        blob = fh.read(size)  # exactly the size checked above (read(n) allocates n bytes up front)
        if len(blob) != size or fh.read(1):
            raise _fail(path, "file size", "the file changed while it was read")
    return blob


def _parse_header(path: str, blob: bytes) -> tuple[dict[str, Any], int]:
    """(header dict, start of the data) after checking the header length against the file."""
    if len(blob) < 8:
        raise _fail(path, "header length", f"the file holds {len(blob)} bytes, fewer than the 8 of the length")
    n = int.from_bytes(blob[:8], "little")
    if n > MAX_HEADER_BYTES or n > len(blob) - 8:
        raise _fail(path, "header length", f"declares {n} bytes but the limit is {MAX_HEADER_BYTES} and the file "
                                           f"holds {len(blob) - 8} after the length")

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise _fail(path, "header", "a key appears twice")
        return out

    def no_constants(name: str) -> object:
        raise _fail(path, "header", f"holds the non-JSON constant {name}")

    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"), object_pairs_hook=unique_keys,
                            parse_constant=no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _fail(path, "header", f"is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _fail(path, "header", f"must be a JSON object, got {type(header).__name__}")
    return header, 8 + n


def _verify_checksum(path: str, blob: bytes, header: dict[str, Any], header_end: int) -> dict[str, str]:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _fail(path, "__metadata__", "must be an object of strings")
    digest = meta.get("sha256")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise _fail(path, "__metadata__.sha256", f"must be 64 lowercase hex digits, got {digest!r}")
    marker = b'"sha256":"' + digest.encode()
    head = blob[8:header_end]
    if head.count(marker) != 1:
        raise _fail(path, "__metadata__.sha256", "the checksum must appear exactly once in the header")
    pos = 8 + head.index(marker) + len(marker) - 64
    h = hashlib.sha256()
    view = memoryview(blob)
    h.update(view[:pos])
    h.update(_PLACEHOLDER.encode())
    h.update(view[pos + 64 :])
    if h.hexdigest() != digest:
        raise _fail(path, "__metadata__.sha256", "the checksum does not match the file: it is corrupted")
    return {k: v for k, v in meta.items() if k != "sha256"}


def _entry(path: str, name: str, spec: object) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype name, shape, begin, end) of one header entry, with the declared size checked."""
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise _fail(path, name, "must be an object with exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in _DTYPES:
        raise _fail(path, f"{name}.dtype", f"must be one of {sorted(_DTYPES)}, got {dtype!r}")

    def is_count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(is_count(s) for s in shape):
        raise _fail(path, f"{name}.shape", f"must be a list of at most {MAX_NDIM} ints >= 0, got {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_count(o) for o in offsets):
        raise _fail(path, f"{name}.data_offsets", f"must be [begin, end] with ints >= 0, got {offsets!r}")
    nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype][1]).itemsize  # Python ints: no overflow
    if offsets[1] - offsets[0] != nbytes:
        raise _fail(path, f"{name}.data_offsets", f"span {offsets[1] - offsets[0]} bytes but shape {shape} of "
                                                  f"{dtype} needs {nbytes}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def read(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a file written by :func:`write` -> (tensors on the CPU, metadata without ``sha256``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    mnemonix._io.FormatError
        Anything else wrong with the file; the message names the file and the field.
    """
    p = os.fspath(path)
    blob = _read_bounded(p)
    header, data_start = _parse_header(p, blob)
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > MAX_TENSORS:
        raise _fail(p, "header", f"lists {len(entries)} tensors, more than the limit of {MAX_TENSORS}")
    specs = {name: _entry(p, name, spec) for name, spec in entries.items()}
    data_len = len(blob) - data_start
    expected = 0  # the offsets must tile [0, data_len) in header order: no gap, no overlap, no tail
    for name, (_, _, begin, end) in specs.items():
        if begin != expected:
            raise _fail(p, f"{name}.data_offsets", f"begins at {begin}, expected {expected} (tensors follow each "
                                                   "other with no gap)")
        expected = end
    if expected != data_len:
        raise _fail(p, "data", f"the header declares {expected} data bytes but the file holds {data_len}")
    meta = _verify_checksum(p, blob, header, data_start)
    tensors = {}
    for name, (dtype, shape, begin, end) in specs.items():
        arr = np.frombuffer(blob, dtype=_DTYPES[dtype][1], count=(end - begin) // np.dtype(_DTYPES[dtype][1]).itemsize,
                            offset=data_start + begin)
        tensors[name] = torch.from_numpy(arr.reshape(shape).astype(arr.dtype.newbyteorder("="), copy=True))
    return tensors, meta
