"""Data for the Split-task experiments: scikit-learn's bundled digits, or MNIST from local IDX files.

Both loaders return CPU tensors ``(x_train, y_train, x_test, y_test)`` with
x float32 [n, 1, H, W] and y int64 [n]; :func:`~mnemonix.epinet.train_split`
moves them to its device once. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from mnemonix import _checks, _io

__all__ = ["load_digits_tasks", "load_mnist_tasks", "read_idx"]

Tasks = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def load_digits_tasks(seed: int = 0, test_fraction: float = 0.3) -> Tasks:
    """scikit-learn's bundled 8x8 digits as ``(x_train, y_train, x_test, y_test)``; x in [0, 1], [n, 1, 8, 8].

    Parameters
    ----------
    seed : int >= 0
        Seed of the train/test split (a CPU generator: the same split on every machine).
    test_fraction : float in (0, 1)
    """
    from sklearn.datasets import load_digits

    _checks.nonneg_int("seed", seed)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise TypeError(f"test_fraction must be a float, got {type(test_fraction).__name__}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32, device="cpu").unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64, device="cpu")
    g = torch.Generator(device="cpu").manual_seed(seed)
    perm = torch.randperm(len(y), generator=g, device="cpu")
    n_test = int(round(test_fraction * len(y)))
    if not 0 < n_test < len(y):
        raise ValueError(f"test_fraction={test_fraction!r} leaves {len(y) - n_test} of {len(y)} samples for training "
                         f"and {n_test} for testing: both must be non-empty")
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


#: Largest IDX body :func:`read_idx` accepts (MNIST's training images are 47 MB).
MAX_IDX_BYTES = 1 << 32


def read_idx(path: Path, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """An IDX file of unsigned bytes (optionally gzipped) as a uint8 array of its declared shape.

    Reads the header first and then exactly the declared body (at most ``max_bytes``): a small
    gzip that inflates to gigabytes is refused after a few bytes, never held in memory.
    Raises ``_io.FormatError`` naming the file and the field (magic, dims, body) when it is not one.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            return _read_idx_stream(fh, path, max_bytes)
    except (gzip.BadGzipFile, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise _io.FormatError(f"{str(path)!r} cannot be read as an IDX file ({exc})") from None


def _read_exactly(fh, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = fh.read(min(left, 1 << 24))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_idx_stream(fh, path: Path, max_bytes: int) -> np.ndarray:
    magic = _read_exactly(fh, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != 8:
        raise _io.FormatError(f"{str(path)!r} is not an IDX file of unsigned bytes (field 'magic')")
    ndim = magic[3]
    head = _read_exactly(fh, 4 * ndim)
    if ndim == 0 or len(head) < 4 * ndim:
        raise _io.FormatError(f"{str(path)!r}: field 'dims' declares {ndim} dimensions but the header is "
                              f"{len(head)} bytes long")
    dims = [int.from_bytes(head[4 * i: 4 + 4 * i], "big") for i in range(ndim)]
    size = math.prod(dims)
    if size > max_bytes:
        raise _io.FormatError(f"{str(path)!r}: field 'dims' declares {dims} = {size} bytes, above the limit of "
                              f"{max_bytes} (read_idx(max_bytes=...) raises it)")
    body = _read_exactly(fh, size + 1)  # one byte more: trailing data is an error too
    if len(body) != size:
        got = f"{len(body)}" if len(body) < size else "more"
        raise _io.FormatError(f"{str(path)!r}: field 'body' holds {got} values, the header says {dims}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_root(path: str | os.PathLike[str]) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"path {str(path)!r} is not a folder (expected one holding MNIST IDX files)")
    for candidate in (root, root / "MNIST" / "raw", root / "raw"):
        if any(candidate.glob("train-images-idx3-ubyte*")):
            return candidate
    raise FileNotFoundError(f"no MNIST IDX files (train-images-idx3-ubyte[.gz]) under {str(path)!r}")


def load_mnist_tasks(path: str | os.PathLike[str]) -> Tasks:
    """MNIST from local IDX files (``train-images-idx3-ubyte[.gz]`` etc. under ``path``, or its ``MNIST/raw``).

    Never downloads. Returns ``(x_train, y_train, x_test, y_test)``, x normalised, [n, 1, 28, 28].
    Raises FileNotFoundError when the files are missing, ``_io.FormatError`` when one is not a
    valid IDX file or images and labels disagree.
    """
    root = _find_root(_io.checked_path(path))  # TypeError / ValueError naming path ('' is not the cwd)

    def find(stem: str) -> Path:
        for suffix in ("", ".gz"):
            p = root / f"{stem}{suffix}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"{stem}[.gz] missing under {str(root)!r}")

    def images(stem: str) -> torch.Tensor:
        p = find(stem)
        raw = read_idx(p)
        if raw.ndim != 3:
            raise _io.FormatError(f"{str(p)!r}: field 'dims' must be [n, rows, cols] for images, got {raw.shape}")
        x = torch.from_numpy(raw.astype(np.float32) / 255.0).unsqueeze(1)
        return (x - 0.1307) / 0.3081

    def labels(stem: str, n: int) -> torch.Tensor:
        p = find(stem)
        raw = read_idx(p)
        if raw.shape != (n,):
            raise _io.FormatError(f"{str(p)!r}: field 'dims' must be [{n}] (one label per image), got {raw.shape}")
        return torch.from_numpy(raw.astype(np.int64))

    x_train = images("train-images-idx3-ubyte")
    x_test = images("t10k-images-idx3-ubyte")
    return (x_train, labels("train-labels-idx1-ubyte", len(x_train)),
            x_test, labels("t10k-labels-idx1-ubyte", len(x_test)))
