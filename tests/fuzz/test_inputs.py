"""File fuzzing of the data files mnemonix reads but does not write: MNIST IDX files (EpiNet) and the
``.npz`` copies of MNIST / Shapes3D (consolidation).

They carry no checksum, so a flipped pixel is a valid file; the contract is the loaders': a
``FormatError`` naming the file, or data of the documented shapes and dtypes -- never another
exception -- with bounded memory, also for a gzip that inflates far beyond what its header
declares (a decompression bomb).
"""

from __future__ import annotations

import gzip
import io
import math
import random
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from mnemonix import _io
from mnemonix.consolidation import load_mnist, load_shapes3d
from mnemonix.epinet.data import read_idx

from . import files
from .harness import STATS


def _idx(dims: list[int], seed: int = 0) -> bytes:
    head = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return head + np.random.default_rng(seed).integers(0, 256, math.prod(dims), dtype=np.uint8).tobytes()


def _check(load, path: Path, data: bytes, valid) -> str:
    """Load damaged ``data``; 'rejected' or 'loaded' (then ``valid(result)`` holds)."""
    path.write_bytes(data)
    STATS["file mutations"] += 1
    try:
        out = load(path)
    except _io.FormatError:
        outcome = "rejected"
    except Exception as exc:
        raise AssertionError(f"{path.name} ({len(data)} bytes): {type(exc).__name__}: {exc}") from exc
    else:
        assert valid(out), f"{path.name}: loaded something invalid"
        outcome = "loaded"
    STATS["file mutations good"] += 1
    return outcome


def _cuts(raw: bytes, header: int) -> list[int]:
    return sorted({0, 1, 3, 4, 5, header - 1, header, header + 1, len(raw) - 1} & set(range(len(raw))))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_truncations_and_flips(tmp_path: Path, gz: bool) -> None:
    raw = _idx([3, 4, 5])
    pack = gzip.compress if gz else (lambda b: b)
    path = tmp_path / ("f-idx3-ubyte.gz" if gz else "f-idx3-ubyte")
    valid = lambda a: a.dtype == np.uint8 and a.ndim >= 1  # noqa: E731
    outcomes = [_check(read_idx, path, pack(raw[:cut]), valid) for cut in _cuts(raw, 16)]
    assert outcomes.count("rejected") == len(outcomes)
    packed = pack(raw)
    for _, data in files.byte_flips(packed, 150, seed=5):
        _check(read_idx, path, data, valid)


def test_idx_gzip_bomb_is_refused_after_its_header(tmp_path: Path) -> None:
    """A 100 KiB gzip whose header declares 60 bytes but which inflates to 100 MiB."""
    comp, out = zlib.compressobj(9, zlib.DEFLATED, 31), io.BytesIO()  # wbits 31: a gzip stream
    out.write(comp.compress(_idx([60])))
    zeros = bytes(1 << 20)
    for _ in range(100):
        out.write(comp.compress(zeros))
    out.write(comp.flush())
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(out.getvalue())
    tracemalloc.start()
    try:
        with pytest.raises(_io.FormatError, match="field 'body'"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    big = tmp_path / "big-idx3-ubyte"
    big.write_bytes(bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") * 3)
    with pytest.raises(_io.FormatError, match="above the limit"):  # declared 2**93 bytes: refused unread
        read_idx(big)


def _mnist(path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(path, x_train=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), y_train=np.array([1, 7, 3]))


def _shapes(path: Path) -> None:
    rng = np.random.default_rng(2)
    np.savez(path, images=rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), labels=rng.random((2, 6)))


LOADERS = [("mnist", _mnist, load_mnist, (1, 28, 28)), ("shapes3d", _shapes, load_shapes3d, (3, 8, 8))]


@pytest.mark.parametrize("name,write,load,shape", LOADERS, ids=[x[0] for x in LOADERS])
def test_dataset_npz_damaged_and_crafted(tmp_path: Path, name, write, load, shape) -> None:
    original = tmp_path / f"{name}.npz"
    write(original)
    raw = original.read_bytes()
    valid = lambda ds: ds.image_shape == shape and len(ds) >= 1  # noqa: E731
    path = tmp_path / "damaged.npz"
    for _, data in [*files.truncations(raw, original), *files.byte_flips(raw, 150, seed=len(name))]:
        _check(load, path, data, valid)
    with np.load(original) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in arrays.items():
        for _, variant in files.array_variants(value, random.Random(key)):
            buf = io.BytesIO()
            np.savez(buf, **{**arrays, key: variant})
            _check(load, path, buf.getvalue(), valid)
