"""``mnemonix._io``: container version 2 (every byte digested), version-1 reading, malformed
headers, decompression bombs, and the save side (temp names, stale temps, modes, symlinks)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix import _io

FMT = "test.fmt"


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((5, 3)).astype(np.float32),
        "ids": np.arange(7, dtype=np.int64),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "empty": np.zeros((0, 2), dtype=np.float32),
        "mask": np.array([True, False, True, True]),
        "scalar": np.array(2.5),
    }


def assert_same(arrays: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(arrays) == sorted(expected)
    for key, value in expected.items():
        assert arrays[key].dtype == value.dtype and arrays[key].shape == value.shape, key
        np.testing.assert_array_equal(arrays[key], value)


def write_zip(path: Path, members: dict[str, bytes], *, digest: bool) -> None:
    """A zip of raw members (``name.npy`` -> bytes), with or without the trailing mnemonix digest."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
        if digest:
            zf.comment = b"mnemonix-sha256:" + b"0" * 64
    raw = buf.getvalue()
    if digest:
        raw = raw[:-64] + hashlib.sha256(raw[:-64]).hexdigest().encode()
    path.write_bytes(raw)


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_with_header(path: Path, header: object, arrays: dict[str, np.ndarray], *, digest: bool) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    members = {"__meta__": npy(np.frombuffer(raw, np.uint8))} | {k: npy(v) for k, v in arrays.items()}
    write_zip(path, members, digest=digest)


# -- format ---------------------------------------------------------------------------------------
def test_round_trip_keeps_dtype_shape_order_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    meta = {"beta": 1.5, "shape": (2, 3), "name": "é", "nested": {"k": [1, None]}}
    _io.save_arrays(path, sample_arrays(), format=FMT, version=3, meta=meta)
    arrays, loaded, version = _io.load_arrays(path, format=FMT, max_version=3)
    assert version == 3 and loaded == json.loads(json.dumps(meta))
    assert_same(arrays, sample_arrays())
    assert arrays["fortran"].flags.f_contiguous and all(a.flags.writeable for a in arrays.values())
    assert path.read_bytes()[-80:-64] == b"mnemonix-sha256:"


def test_edited_meta_no_longer_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _io.save_arrays(path, sample_arrays(), format=FMT, version=1, meta={"beta": 1.5})
    raw = path.read_bytes()
    assert raw.count(b'"beta": 1.5') == 1
    path.write_bytes(raw.replace(b'"beta": 1.5', b'"beta": 9.5'))
    with pytest.raises(_io.FormatError, match="failed its checksum"):
        _io.load_arrays(path, format=FMT, max_version=1)


def v1_checksum(arrays: dict[str, np.ndarray]) -> str:
    """The version-1 array checksum exactly as mnemonix computed it before container version 2."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def test_version_1_files_still_load_and_their_arrays_are_checked(tmp_path: Path) -> None:
    arrays = sample_arrays()
    assert _io._checksum(arrays) == v1_checksum(arrays)
    header = {"format": FMT, "version": 1, "meta": {"beta": 2.0}, "checksum": v1_checksum(arrays)}
    old = tmp_path / "v1.npz"  # exactly what mnemonix wrote before container version 2
    np.savez(old, __meta__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    loaded, meta, version = _io.load_arrays(old, format=FMT, max_version=1)
    assert_same(loaded, arrays) and meta == {"beta": 2.0} and version == 1
    compressed = tmp_path / "v1z.npz"  # deflated members (np.savez_compressed) read too
    np.savez_compressed(compressed, __meta__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    assert_same(_io.load_arrays(compressed, format=FMT, max_version=1)[0], arrays)
    bad = dict(arrays, ids=arrays["ids"] + 1)
    np.savez(old, __meta__=np.frombuffer(json.dumps(header).encode(), np.uint8), **bad)
    with pytest.raises(_io.FormatError, match="failed its checksum"):
        _io.load_arrays(old, format=FMT, max_version=1)


def test_version_2_files_stay_readable_by_a_version_1_reader(tmp_path: Path) -> None:
    """What mnemonix <= container 1 did on load: np.load, then the array checksum."""
    path = tmp_path / "m.npz"
    _io.save_arrays(path, sample_arrays(), format=FMT, version=1, meta={"beta": 1.0})
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays.pop("__meta__").tobytes())
    assert header["format"] == FMT and header["checksum"] == v1_checksum(arrays)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"\xff\xfe not utf-8", "corrupted header"),
        (b"{not json", "corrupted header"),
        (b"[" * 5000, "corrupted header|must be a JSON object"),
        ([1, 2], "must be a JSON object"),
        ({"format": FMT, "version": 1, "meta": {}}, "fields"),
        ({"format": FMT, "version": 1, "meta": {}, "checksum": "x", "extra": 1}, "fields"),
        ({"format": 7, "version": 1, "meta": {}, "checksum": "x"}, "'format' must be a str"),
        ({"format": FMT, "version": "1", "meta": {}, "checksum": "x"}, "'version' must be an int"),
        ({"format": FMT, "version": True, "meta": {}, "checksum": "x"}, "'version' must be an int"),
        ({"format": FMT, "version": -1, "meta": {}, "checksum": "x"}, "'version' must be an int"),
        ({"format": FMT, "version": 1, "meta": [], "checksum": "x"}, "'meta' must be a dict"),
        ({"format": FMT, "version": 1, "meta": {}, "checksum": None}, "'checksum' must be a str"),
        ({"container": "2", "format": FMT, "version": 1, "meta": {}, "checksum": "x"}, "'container' must be"),
        ({"container": 9, "format": FMT, "version": 1, "meta": {}, "checksum": "x"}, "newer than this"),
    ],
)
def test_malformed_headers_are_format_errors(tmp_path: Path, header: object, match: str) -> None:
    path = tmp_path / "h.npz"
    write_with_header(path, header, {"a": np.zeros(2)}, digest=True)
    with pytest.raises(_io.FormatError, match=match):
        _io.load_arrays(path, format=FMT, max_version=5)


def test_container_2_without_digest_and_odd_members(tmp_path: Path) -> None:
    arrays = {"a": np.zeros(2)}
    header = {"container": 2, "format": FMT, "version": 1, "meta": {}, "checksum": _io._checksum(arrays)}
    path = tmp_path / "x.npz"
    write_with_header(path, header, arrays, digest=False)
    with pytest.raises(_io.FormatError, match="without its trailing digest"):
        _io.load_arrays(path, format=FMT, max_version=1)
    write_with_header(path, header, arrays, digest=True)
    assert_same(_io.load_arrays(path, format=FMT, max_version=1)[0], arrays)
    write_zip(path, {"__meta__": npy(np.zeros(3))}, digest=True)
    with pytest.raises(_io.FormatError, match="1-D uint8"):
        _io.load_arrays(path, format=FMT, max_version=1)
    write_zip(path, {"a": npy(np.zeros(2))}, digest=True)
    with pytest.raises(_io.FormatError, match="no mnemonix header"):
        _io.load_arrays(path, format=FMT, max_version=1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", b"hello")
    path.write_bytes(buf.getvalue())
    with pytest.raises(_io.FormatError, match="not a unique .npy member"):
        _io.load_arrays(path, format=FMT, max_version=1)


def test_object_and_structured_dtypes_are_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "o.npz"
    obj = np.lib.format.header_data_from_array_1_0(np.array([1, 2], dtype=object))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, obj)
    write_zip(path, {"x": buf.getvalue() + b"\x80\x04N." * 4}, digest=True)
    with pytest.raises(_io.FormatError, match="dtype object"):
        _io.load_arrays(path, format=FMT, max_version=1)
    with pytest.raises(TypeError, match="numeric numpy array"):
        _io.save_arrays(path, {"x": np.zeros(2, dtype=[("a", "f4")])}, format=FMT, version=1)


def test_paths_directory_missing_and_not_regular(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory"):
        _io.load_arrays(tmp_path, format=FMT, max_version=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _io.load_arrays(tmp_path / "missing.npz", format=FMT, max_version=1)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(_io.FormatError, match="not a regular file"):
        _io.load_arrays(fifo, format=FMT, max_version=1)


# -- decompression bombs and lying sizes ----------------------------------------------------------
def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_deflate_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    count = 64 << 20 >> 3  # 64 MiB of float64 zeros deflate to ~64 KiB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (count,)})
            zeros = bytes(1 << 20)
            for _ in range(64):
                fh.write(zeros)
    assert path.stat().st_size < 1 << 20

    def load() -> None:
        with pytest.raises(_io.FormatError, match="refusing to inflate"):
            _io.load_arrays(path, format=FMT, max_version=1)

    assert _peak_bytes(load) < 4 << 20


def test_npy_header_lying_about_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "lie.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (1 << 40,)})
    write_zip(path, {"x": buf.getvalue() + bytes(64)}, digest=True)

    def load() -> None:
        with pytest.raises(_io.FormatError, match=r"member 'x.npy' declares shape \(1099511627776,\)"):
            _io.load_arrays(path, format=FMT, max_version=1)

    assert _peak_bytes(load) < 1 << 20


def test_directory_sizes_beyond_the_file_and_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _io.save_arrays(path, {"a": np.zeros(1000)}, format=FMT, version=1)
    with pytest.raises(_io.FormatError, match="above the limit of 1000"):
        _io.load_arrays(path, format=FMT, max_version=1, max_bytes=1000)
    assert len(_io.load_arrays(path, format=FMT, max_version=1, max_bytes=10_000)[0]["a"]) == 1000
    # A central directory claiming a huge stored member (sizes patched, digest recomputed).
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a.npy")
    assert info.file_size == info.compress_size
    entry = raw.index(b"PK\x01\x02", raw.rindex(b"__meta__.npy"))  # the central entry after the header's
    assert raw[entry + 46: entry + 51] == b"a.npy"
    raw[entry + 20: entry + 28] = (1 << 31).to_bytes(4, "little") * 2  # central directory: csize, usize
    raw[-64:] = hashlib.sha256(bytes(raw[:-64])).hexdigest().encode()
    path.write_bytes(bytes(raw))
    with pytest.raises(_io.FormatError, match="beyond the file's"):
        _io.load_arrays(path, format=FMT, max_version=1)


# -- save side -------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [242, 250, 255])
def test_names_up_to_255_bytes_save(tmp_path: Path, length: int) -> None:
    path = tmp_path / ("n" * (length - 4) + ".npz")
    _io.save_arrays(path, {"a": np.ones(3)}, format=FMT, version=1)
    assert_same(_io.load_arrays(path, format=FMT, max_version=1)[0], {"a": np.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_too_long_name_names_the_target(tmp_path: Path) -> None:
    path = tmp_path / ("n" * 300 + ".npz")
    with pytest.raises(OSError, match="n" * 300) as info:
        _io.save_arrays(path, {"a": np.ones(3)}, format=FMT, version=1)
    assert info.value.errno == errno.ENAMETOOLONG and list(tmp_path.iterdir()) == []


def test_directory_target_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory"):
        _io.save_arrays(tmp_path, {"a": np.ones(3)}, format=FMT, version=1)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        _io.atomic_write_bytes(tmp_path, b"x")
    assert list(tmp_path.iterdir()) == [] and list(tmp_path.parent.glob(f".{tmp_path.name}*")) == []


def test_unwritable_folder_error_names_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refuse(path, flags, mode=0o777, *, dir_fd=None):  # what a read-only folder answers (even as root)
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", refuse)
    target = tmp_path / "m.npz"
    with pytest.raises(PermissionError, match="Permission denied") as info:
        _io.save_arrays(target, {"a": np.ones(3)}, format=FMT, version=1)
    assert info.value.filename == str(target)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_honour_the_umask_and_old_files_keep_their_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        path = tmp_path / "m.npz"
        _io.save_arrays(path, {"a": np.ones(3)}, format=FMT, version=1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
        path.chmod(0o640)
        _io.atomic_write_bytes(path, b"new")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_bytes() == b"new"
    finally:
        os.umask(old)


def test_saving_through_a_symlink_writes_its_target(tmp_path: Path) -> None:
    real = tmp_path / "data" / "real.npz"
    real.parent.mkdir()
    _io.save_arrays(real, {"a": np.zeros(2)}, format=FMT, version=1)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    _io.save_arrays(link, {"a": np.ones(2)}, format=FMT, version=1)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert_same(_io.load_arrays(real, format=FMT, max_version=1)[0], {"a": np.ones(2)})
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "data" / "new.npz")
    _io.atomic_write_bytes(dangling, b"x")
    assert dangling.is_symlink() and (tmp_path / "data" / "new.npz").read_bytes() == b"x"


def test_failed_save_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _io.save_arrays(path, {"a": np.zeros(2)}, format=FMT, version=1)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="JSON serializable"):
        _io.save_arrays(path, {"a": np.ones(2)}, format=FMT, version=1, meta={"x": object()})
    with pytest.raises(TypeError, match="format must be a str"):
        _io.save_arrays(path, {"a": np.ones(2)}, format=1, version=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="version must be an int"):
        _io.save_arrays(path, {"a": np.ones(2)}, format=FMT, version=-2)
    with pytest.raises(ValueError, match="NUL"):
        _io.save_arrays(path, {"a\0b": np.ones(2)}, format=FMT, version=1)
    with pytest.raises(ValueError, match="UTF-8"):
        _io.save_arrays(path, {"\ud800": np.ones(2)}, format=FMT, version=1)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_writers_are_removed_on_the_next_save(tmp_path: Path) -> None:
    target = tmp_path / "m.npz"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead_tmp = _io._temp_path(target).with_name(_io._temp_path(target).name.replace(
            f".{os.getpid()}.", f".{_dead_pid()}."))
        live_tmp = dead_tmp.with_name(dead_tmp.name.replace(dead_tmp.name.split(".")[-3], str(live.pid)))
        other = tmp_path / (dead_tmp.name.replace(".tmp", ".tmpx"))  # not our pattern: left alone
        for p in (dead_tmp, live_tmp, other):
            p.write_bytes(b"partial")
        _io.save_arrays(target, {"a": np.ones(2)}, format=FMT, version=1)
        assert not dead_tmp.exists() and live_tmp.exists() and other.exists()
        assert len(_io._temp_path(target).name) < 120
    finally:
        live.kill()
        live.wait()


# -- properties ------------------------------------------------------------------------------------
_DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "uint32", "bool", "complex64"]
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def _array(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    raw = draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize, max_size=int(np.prod(shape)) * dtype.itemsize))
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return np.asfortranarray(arr) if draw(st.booleans()) else arr


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k != "__meta__" and "\0" not in k),
                              _array(),
                              max_size=4),
       meta=st.dictionaries(st.text(max_size=6), _json, max_size=4), version=st.integers(0, 2**40))
def test_any_arrays_and_json_meta_round_trip_bit_exact(tmp_path: Path, arrays, meta, version) -> None:
    path = tmp_path / "p.npz"
    _io.save_arrays(path, arrays, format=FMT, version=version, meta=meta)
    loaded, loaded_meta, loaded_version = _io.load_arrays(path, format=FMT, max_version=version)
    assert loaded_meta == meta and loaded_version == version and sorted(loaded) == sorted(arrays)
    for key, value in arrays.items():  # bytes, not values: NaN payloads and -0.0 survive too
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        assert np.ascontiguousarray(loaded[key]).tobytes() == np.ascontiguousarray(value).tobytes()
