"""Crash-safe, code-free persistence for every stateful model.

Layout: a NumPy ``.npz`` (loaded with ``allow_pickle=False``, so loading can
never run code) holding the arrays plus a ``__meta__`` entry: a UTF-8 JSON
document with ``format`` (which model), ``version`` (format version), the
model's own metadata and a SHA-256 ``checksum`` over every array's name,
dtype, shape and bytes. Writes go to a temporary file in the same directory,
are fsynced and then atomically renamed over the target: a crash mid-write
leaves the old file (or none), never a torn one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_META = "__meta__"


class FormatError(ValueError):
    """A file that is not a valid mnemonix file of the expected format and version."""


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_arrays(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    *,
    format: str,
    version: int,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Save named arrays and JSON metadata atomically, with format version and checksum."""
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    for key, arr in arrays.items():
        if not isinstance(arr, np.ndarray) or arr.dtype == object:
            raise TypeError(f"array {key!r} must be a numeric numpy array")
    header = {
        "format": format,
        "version": int(version),
        "meta": dict(meta or {}),
        "checksum": _checksum(arrays),
    }
    meta_arr = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **{_META: meta_arr}, **dict(arrays))
    atomic_write_bytes(path, buf.getvalue())


def load_arrays(
    path: str | os.PathLike[str], *, format: str, max_version: int
) -> tuple[dict[str, np.ndarray], dict[str, Any], int]:
    """Load a file written by :func:`save_arrays`.

    Returns ``(arrays, meta, version)``. Raises :class:`FormatError` when the
    file is not a mnemonix file, is of another format, comes from a newer
    version than ``max_version``, or fails its checksum (corruption).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path {str(p)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{str(p)!r} is not a readable mnemonix file ({exc})") from exc
    if _META not in arrays:
        raise FormatError(f"{str(p)!r} has no mnemonix header")
    try:
        header = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{str(p)!r} has a corrupted header ({exc})") from exc
    if header.get("format") != format:
        raise FormatError(f"{str(p)!r} holds format {header.get('format')!r}, expected {format!r}")
    version = int(header.get("version", -1))
    if version > max_version:
        raise FormatError(
            f"{str(p)!r} has format version {version}, newer than this mnemonix reads "
            f"(<= {max_version}): upgrade mnemonix"
        )
    if header.get("checksum") != _checksum(arrays):
        raise FormatError(f"{str(p)!r} failed its checksum: the file is corrupted")
    return arrays, header.get("meta", {}), version
