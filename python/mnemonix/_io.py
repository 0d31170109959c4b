"""Crash-safe, code-free, checksummed persistence for every stateful model.

Layout (container version 2)
----------------------------
A NumPy ``.npz`` (a zip of ``.npy`` members, stored uncompressed) holding the model's arrays
plus a ``__meta__`` member: a UTF-8 JSON header
``{"container": 2, "format": ..., "version": ..., "meta": {...}, "checksum": ...}``
(``format`` names the model, ``version`` is the model's own format version, ``meta`` its
settings, ``checksum`` a SHA-256 over every array's name, dtype, shape and bytes, kept so that
older mnemonix releases still read version-2 files). The zip comment, the file's last bytes,
is ``mnemonix-sha256:`` and the SHA-256 of every byte before the digest: every saved byte,
the JSON header included, is checked on load (an edited ``beta`` fails to load).

Version-1 files (no ``container`` key and no digest; written before the header was covered)
still load: their arrays are checked against ``checksum``, their header cannot be.

Reading is code-free (no pickle, object dtypes refused) and bounded: the zip directory and
every ``.npy`` header are checked against the file's size (stored members cannot declare
more bytes than they hold, deflated members at most :data:`MAX_DEFLATE_RATIO` times their
compressed size) and against an absolute limit (:data:`DEFAULT_MAX_BYTES`) *before* any
array is allocated. Every problem with a file's
content is a :class:`FormatError` naming the file and the member or field.

Writing goes to a short temporary name in the target's folder (``.<name prefix>.<key>.<pid>.
<random>.tmp``), is fsynced and atomically renamed over the target: a crash leaves the old
file or the new one, never a torn one. A save first removes temporary files of the same
target left by dead processes on this host (``kill -9``). New files honour the umask, a
replaced file keeps its mode, and saving through a symlink writes the link's target.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

_META = "__meta__"
#: Layout version of the container written by :func:`save_arrays` (1: header not checksummed).
CONTAINER_VERSION = 2
#: Largest total of declared (uncompressed) member sizes :func:`load_arrays` accepts by default.
DEFAULT_MAX_BYTES = 64 << 30
#: Largest uncompressed / compressed ratio accepted for a deflated member (we write stored ones;
#: real data rarely deflates 10x, a decompression bomb does ~1000x).
MAX_DEFLATE_RATIO = 64
_MAX_HEADER_BYTES = 1 << 20  # the JSON header of a model is a few KiB
_CHUNK = 1 << 20
_V1_KEYS = frozenset({"format", "version", "meta", "checksum"})
_V2_KEYS = _V1_KEYS | {"container"}
_DIGEST_TAG = b"mnemonix-sha256:"
_DIGEST_HEX = 64
# What the zip / npy parsers raise on malformed input (OSError stays an OSError: a real I/O failure).
_PARSE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, zlib.error,
                 EOFError, ValueError, TypeError, KeyError, IndexError, SyntaxError, OverflowError,
                 struct.error, UnicodeDecodeError, MemoryError)


class FormatError(ValueError):
    """A file that is not a valid mnemonix file of the expected format and version."""


def checked_path(path: object, name: str = "path") -> Path:
    """``path`` as a Path: a str or os.PathLike of str, non-empty, without NUL (TypeError /
    ValueError naming ``name`` otherwise, instead of ``os``'s "embedded null byte")."""
    if isinstance(path, (str, os.PathLike)):
        text = os.fspath(path)
        if isinstance(text, str):
            if not text:
                raise ValueError(f"{name} must be a non-empty path, got ''")
            if "\0" in text:
                raise ValueError(f"{name} must not contain a NUL character, got {text!r}")
            return Path(text)
    raise TypeError(f"{name} must be a str or os.PathLike path, got {type(path).__name__}")


# -- checksums ----------------------------------------------------------------------------------
def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over each array's name, dtype, shape and C-order bytes (the version-1 checksum)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])  # as version 1 did: a 0-d array hashes as shape (1,)
        h.update(key.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        # Hash the buffer in place (no tobytes() copy); same bytes as tobytes() in C order.
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _file_digest(fh: IO[bytes], end: int) -> str:
    """SHA-256 of the first ``end`` bytes of ``fh``, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    fh.seek(0)
    left = end
    while left > 0:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _verify_digest(fh: IO[bytes], file_size: int, p: Path) -> bool:
    """Check the trailing file digest; False when the file has none (version 1)."""
    tail_len = len(_DIGEST_TAG) + _DIGEST_HEX
    if file_size < tail_len:
        return False
    fh.seek(file_size - tail_len)
    tail = fh.read(tail_len)
    if not tail.startswith(_DIGEST_TAG):
        return False
    if _file_digest(fh, file_size - _DIGEST_HEX).encode() != tail[len(_DIGEST_TAG):]:
        raise FormatError(f"{str(p)!r} failed its checksum: the file is corrupted or was edited")
    return True


# -- writing ------------------------------------------------------------------------------------
def _os_error(exc: OSError, target: Path) -> OSError:
    """The same OS error, naming the file the caller asked for instead of our temp file."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(target))


def _write_target(path: str | os.PathLike[str]) -> Path:
    """The file a save must replace: the symlink's target for a symlink, never a folder."""
    target = checked_path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path", str(path))
    return target


def _temp_key(target: Path) -> str:
    # Keyed by host and name: a dead writer's pid is only meaningful on the host that wrote it.
    return hashlib.sha256(f"{socket.gethostname()}\0{target.name}".encode()).hexdigest()[:12]


def _temp_pattern(target: Path) -> re.Pattern[str]:
    stem = re.escape(f".{target.name[:24]}.{_temp_key(target)}.")
    return re.compile(stem + r"(\d+)\.[0-9a-f]{8}\.tmp")


def _temp_path(target: Path) -> Path:
    # Short whatever the target's length: a 255-byte name must still get a temp name.
    name = f".{target.name[:24]}.{_temp_key(target)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    return target.with_name(name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: a live process of another user
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temp files of ``path`` left by dead writers on this host; return what was removed.

    Only names matching this module's temp pattern for this target are touched, and only when
    the process id in the name is not running (a live writer's temp file is never removed).
    """
    target = checked_path(path)
    if os.name != "posix" or not target.parent.is_dir():
        return []
    pattern, removed = _temp_pattern(target), []
    with os.scandir(target.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
                continue
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:  # another saver cleaned it first
                pass
    return removed


def _existing_mode(target: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except FileNotFoundError:
        return None


def _fsync_dir(folder: Path) -> None:
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Run ``write(fh)`` on a temp file next to ``path``, fsync it and rename it over ``path``."""
    target = _write_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    mode = _existing_mode(target)
    if mode is not None and not os.access(target, os.W_OK):  # as open(path, "wb") would refuse
        raise PermissionError(errno.EACCES, "is read-only (its mode forbids writing)", str(target))
    tmp = _temp_path(target)
    try:  # mode 0o666 & ~umask, as open() would give a new file
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise _os_error(exc, target) from exc
    try:
        with os.fdopen(fd, "w+b") as fh:  # readable: a writer may digest what it wrote
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _os_error(exc, target) from exc
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename (see the module docstring)."""
    _atomic_write(path, lambda fh: fh.write(data))


def _check_save_arguments(arrays: Mapping[str, np.ndarray], format: str, version: int) -> None:
    if not isinstance(format, str):
        raise TypeError(f"format must be a str, got {type(format).__name__}")
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
        raise ValueError(f"version must be an int >= 0, got {version!r}")
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping of name -> numpy array, got {type(arrays).__name__}")
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    for key, arr in arrays.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"array names must be non-empty str, got {key!r}")
        if "\x00" in key:
            raise ValueError(f"array name {key!r} holds a NUL byte (zip member names cannot)")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"array name {key!r} is not encodable as UTF-8") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.hasobject or arr.dtype.fields is not None:
            raise TypeError(f"array {key!r} must be a numeric numpy array")


def save_arrays(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    *,
    format: str,
    version: int,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Save named arrays and JSON metadata atomically, with format version and checksums.

    Parameters
    ----------
    path : str or os.PathLike
        Target file (parents are created; a symlink is followed to its target).
    arrays : Mapping[str, numpy.ndarray]
        Numeric arrays of any shape.
    format, version : str, int
        The model's format name and format version, checked by :func:`load_arrays`.
    meta : Mapping[str, Any], optional
        JSON-serialisable settings, covered by the header checksum.
    """
    _check_save_arguments(arrays, format, version)
    header = {"container": CONTAINER_VERSION, "format": format, "version": int(version),
              "meta": dict(meta or {}), "checksum": _checksum(arrays)}
    meta_arr = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)  # TypeError before any write

    def write(fh: IO[bytes]) -> None:
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, arr in [(_META, meta_arr), *arrays.items()]:
                with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
            zf.comment = _DIGEST_TAG + b"0" * _DIGEST_HEX  # placeholder: the digest of what precedes it
        end = fh.seek(0, os.SEEK_END)
        digest = _file_digest(fh, end - _DIGEST_HEX)
        fh.seek(end - _DIGEST_HEX)
        fh.write(digest.encode())

    _atomic_write(path, write)


# -- reading ------------------------------------------------------------------------------------
def _existing_file(path: str | os.PathLike[str]) -> Path:
    p = checked_path(path)
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a mnemonix file", str(p))
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "does not exist", str(p))
    if not p.is_file():
        raise FormatError(f"{str(p)!r} is not a regular file")
    return p


def _check_directory(infos: list[zipfile.ZipInfo], p: Path, file_size: int, max_bytes: int) -> None:
    """Refuse a zip directory that declares more than the file can hold, before reading a byte."""
    seen: set[str] = set()
    total = 0
    for info in infos:
        where = f"{str(p)!r} member {info.filename!r}"
        if not info.filename.endswith(".npy") or info.filename in seen:
            raise FormatError(f"{where}: not a unique .npy member")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise FormatError(f"{where} is encrypted")
        if info.compress_size > file_size or info.header_offset > file_size:
            raise FormatError(f"{where} declares {info.compress_size} bytes at offset {info.header_offset}, "
                              f"beyond the file's {file_size} bytes")
        if info.compress_type == zipfile.ZIP_STORED:
            limit = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            limit = info.compress_size * MAX_DEFLATE_RATIO + 4096
        else:
            raise FormatError(f"{where} uses compression method {info.compress_type} (stored or deflated expected)")
        if info.file_size > limit:
            raise FormatError(f"{where} declares {info.file_size} uncompressed bytes from {info.compress_size} "
                              f"stored (limit {limit}): refusing to inflate it")
        total += info.file_size
        if total > max_bytes:
            raise FormatError(f"{where}: members declare {total} bytes in all, above the limit of {max_bytes} "
                              "(load_arrays(max_bytes=...) raises it)")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path) -> np.ndarray:
    """One ``.npy`` member, its declared shape checked against its declared size before allocating."""
    where = f"{str(p)!r} member {info.filename!r}"
    with zf.open(info) as fp:
        major_minor = np.lib.format.read_magic(fp)
        if major_minor == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif major_minor == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise FormatError(f"{where} has .npy version {major_minor} (1.0 or 2.0 expected)")
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise FormatError(f"{where} holds dtype {dtype} (a plain numeric dtype expected; nothing is unpickled)")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if fp.tell() + nbytes != info.file_size:
            raise FormatError(f"{where} declares shape {shape} of {dtype} ({nbytes} bytes) but holds "
                              f"{info.file_size - fp.tell()} data bytes")
        flat = np.empty(count, dtype=dtype)
        view = memoryview(flat.view(np.uint8)) if nbytes else memoryview(b"")
        pos = 0
        while pos < nbytes:  # chunked: never a second full-size buffer
            got = fp.readinto(view[pos:pos + _CHUNK])
            if not got:
                raise FormatError(f"{where} is truncated: {pos} of {nbytes} data bytes")
            pos += got
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _read_npz(p: Path, max_bytes: int) -> tuple[dict[str, np.ndarray], bool]:
    """The members of ``p`` and whether a trailing file digest covered the file."""
    with open(p, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        digested = _verify_digest(fh, file_size, p)  # before a single array byte is allocated
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                _check_directory(infos, p, file_size, max_bytes)
                return {info.filename[: -len(".npy")]: _read_member(zf, info, p) for info in infos}, digested
        except FormatError:
            raise
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # a real I/O failure stays an OSError
                raise
            raise FormatError(f"{str(p)!r} is not a readable mnemonix file (offsets out of range: {exc})") from exc
        except _PARSE_ERRORS as exc:
            raise FormatError(f"{str(p)!r} is not a readable mnemonix file ({type(exc).__name__}: {exc})") from exc


def _parse_header(raw: np.ndarray | None, p: Path) -> dict[str, Any]:
    if raw is None:
        raise FormatError(f"{str(p)!r} has no mnemonix header (member {_META!r})")
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > _MAX_HEADER_BYTES:
        raise FormatError(f"{str(p)!r} header {_META!r} must be a 1-D uint8 array of at most "
                          f"{_MAX_HEADER_BYTES} bytes, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{str(p)!r} has a corrupted header ({type(exc).__name__}: {exc})") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{str(p)!r} header must be a JSON object, got {type(header).__name__}")
    if "container" not in header:  # version 1: written before the header was checksummed
        container, expected = 1, _V1_KEYS
    else:
        container, expected = header["container"], _V2_KEYS
        if isinstance(container, bool) or not isinstance(container, int) or container < 2:
            raise FormatError(f"{str(p)!r} header field 'container' must be an int >= 2, got {container!r}")
        if container > CONTAINER_VERSION:
            raise FormatError(f"{str(p)!r} has container version {container}, newer than this mnemonix reads "
                              f"(<= {CONTAINER_VERSION}): upgrade mnemonix")
    if set(header) != expected:
        raise FormatError(f"{str(p)!r} header has fields {sorted(header)} for container {container}, "
                          f"expected {sorted(expected)}")
    for key, kind in (("format", str), ("meta", dict), ("checksum", str)):
        if key in header and not isinstance(header[key], kind):
            raise FormatError(f"{str(p)!r} header field {key!r} must be a {kind.__name__}, "
                              f"got {type(header[key]).__name__}")
    version = header["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise FormatError(f"{str(p)!r} header field 'version' must be an int >= 0, got {version!r}")
    return header


def load_arrays(
    path: str | os.PathLike[str], *, format: str, max_version: int, max_bytes: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any], int]:
    """Load a file written by :func:`save_arrays`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    format : str
        The format name the caller expects.
    max_version : int
        The newest model format version the caller reads.
    max_bytes : int, optional
        Largest total of array bytes to accept (default :data:`DEFAULT_MAX_BYTES`).

    Returns
    -------
    (arrays, meta, version)
        ``arrays`` maps names to numpy arrays, ``meta`` is the model's JSON metadata.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        ``path`` does not exist or is a folder.
    FormatError
        Not a mnemonix file, another format, a newer version, a malformed header, sizes beyond
        the file or the limit, or a failed checksum (arrays or header).
    """
    p = _existing_file(path)
    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    arrays, digested = _read_npz(p, limit)
    header = _parse_header(arrays.pop(_META, None), p)
    if "container" in header and not digested:
        raise FormatError(f"{str(p)!r} is a container-version-{header['container']} file without its "
                          "trailing digest: the file is truncated or was edited")
    if header["format"] != format:
        raise FormatError(f"{str(p)!r} holds format {header['format']!r}, expected {format!r}")
    if header["version"] > max_version:
        raise FormatError(
            f"{str(p)!r} has format version {header['version']}, newer than this mnemonix reads "
            f"(<= {max_version}): upgrade mnemonix"
        )
    # Also with a digest: the array checksum proves the zip parsed into what was written (a
    # crafted central directory can hide members from a digest-sealed file).
    if header["checksum"] != _checksum(arrays):
        raise FormatError(f"{str(p)!r} failed its checksum: the arrays are corrupted")
    return arrays, header["meta"], header["version"]
