"""Image data for the consolidation model, with no download.

- :func:`load_digits` -- scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): the
  quick default.
- :func:`make_shapes3d` -- a procedural, seedable generator of 64x64x3 scenes with the six
  Shapes3D factors (Burgess & Kim 2018): floor hue, wall hue, object hue, scale, shape and
  orientation, with their labels. Written from that description: a back wall and a side wall
  meeting at a corner whose position follows the orientation, a floor below the horizon and
  one shaded object (cube, cylinder, sphere or capsule) standing on the floor. ``zoom`` renders
  the same scene closer (> 1) or farther (< 1), for boundary extension / contraction.
- :func:`load_mnist` / :func:`load_shapes3d` -- read copies a user already has on disk
  (``.npz`` / ``.npy`` / ``.h5``); never download anything.

Images are float32 in [0, 1], channels first: [N, C, H, W]. Labels are int64 [N, F], one
column per factor (a single ``"digit"`` column for digits and MNIST).
"""

from __future__ import annotations

import math
import numbers
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnemonix import _io
from mnemonix.consolidation import _args

SHAPES3D_FACTORS: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
#: Number of values of each Shapes3D factor (as in the original data set).
SHAPES3D_SIZES: dict[str, int] = {
    "floor_hue": 10, "wall_hue": 10, "object_hue": 10, "scale": 8, "shape": 4, "orientation": 15,
}
SHAPE_NAMES: tuple[str, ...] = ("cube", "cylinder", "sphere", "capsule")
#: Largest side of a rendered scene, most scenes drawn at once and most bytes rendered at once.
MAX_IMAGE_SIZE = 1024
MAX_SCENES = 10**8
MAX_RENDER_BYTES = 1 << 36
#: Largest array a local data file may declare (the full 3dshapes.h5 is ~5.9 GB of pixels).
MAX_DATA_BYTES = 1 << 36


@dataclass(frozen=True)
class ImageDataset:
    """Images with factor labels.

    Attributes
    ----------
    images : Tensor [N, C, H, W], float32 in [0, 1]
    labels : Tensor [N, F], int64 (factor value indices)
    factor_names : tuple of F str
    class_factor : str
        The factor used as "class" (probe target, colours of the latent plot).
    """

    images: torch.Tensor
    labels: torch.Tensor
    factor_names: tuple[str, ...]
    class_factor: str

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor [N, F], got {type(labels).__name__}")
        if images.ndim != 4:
            raise ValueError(f"images must be a [N, C, H, W] tensor, got shape {tuple(images.shape)}")
        if images.shape[0] == 0 or 0 in images.shape:
            raise ValueError(f"images must hold at least one non-empty image, got an empty dataset of shape "
                             f"{tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer tensor (factor indices), got dtype {labels.dtype}")
        if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be [N, F] with N = {images.shape[0]} (the number of images), got "
                             f"{tuple(labels.shape)}")
        _args.movable("images", images)
        _args.movable("labels", labels)
        if images.device.type not in ("cpu", "cuda"):
            raise ValueError(f"images must be on a CPU or CUDA device, got {images.device}")
        if labels.device != images.device:
            raise ValueError(f"labels are on {labels.device} but images are on {images.device}: use one device")
        if not isinstance(self.factor_names, tuple) or not all(isinstance(f, str) for f in self.factor_names):
            raise TypeError(f"factor_names must be a tuple of str, got {self.factor_names!r}")
        if labels.shape[1] != len(self.factor_names):
            raise ValueError(f"labels have {labels.shape[1]} columns but factor_names has "
                             f"{len(self.factor_names)} names")
        if not isinstance(self.class_factor, str):
            raise TypeError(f"class_factor must be one of {self.factor_names}, got {type(self.class_factor).__name__}")
        if self.class_factor not in self.factor_names:
            raise ValueError(f"class_factor must be one of {self.factor_names}, got {self.class_factor!r}")
        lo, hi = torch.aminmax(images.detach().float())  # NaN fails both comparisons below
        if not (bool(lo >= 0) and bool(hi <= 1)):
            raise ValueError(f"images must hold finite values in [0, 1], got values in [{float(lo)}, {float(hi)}]")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def factor(self, name: str) -> torch.Tensor:
        """Labels [N] of one factor."""
        if not isinstance(name, str):
            raise TypeError(f"factor must be a str, one of {self.factor_names}, got {type(name).__name__}")
        if name not in self.factor_names:
            raise ValueError(f"factor must be one of {self.factor_names}, got {name!r}")
        return self.labels[:, self.factor_names.index(name)]

    @property
    def classes(self) -> torch.Tensor:
        """Labels [N] of :attr:`class_factor`."""
        return self.factor(self.class_factor)

    def to(self, device: str | torch.device) -> ImageDataset:
        """The same dataset with images and labels on ``device`` (``self`` when already there)."""
        dev = _args.resolve_device(device)
        if _args.same_device(self.images.device, dev):
            return self
        return ImageDataset(self.images.to(dev), self.labels.to(dev), self.factor_names, self.class_factor)

    def subset(self, index: torch.Tensor | slice) -> ImageDataset:
        """The items selected by ``index`` (a slice, or an integer / boolean tensor [k] / [N])."""
        if not isinstance(index, (slice, torch.Tensor)):
            raise TypeError(f"index must be a slice or a torch.Tensor, got {type(index).__name__}")
        if isinstance(index, torch.Tensor) and (index.is_floating_point() or index.is_complex() or index.ndim != 1):
            raise TypeError(f"index must be a 1-d integer or boolean tensor, got dtype {index.dtype} and shape "
                            f"{tuple(index.shape)}")
        if isinstance(index, torch.Tensor) and index.device.type == "meta":
            raise ValueError("index is on the meta device (it holds no data); pass a tensor with values")
        try:
            images, labels = self.images[index], self.labels[index]
        except IndexError as exc:
            raise ValueError(f"index does not fit a dataset of {len(self)} items ({exc})") from exc
        if images.shape[0] == 0:
            raise ValueError(f"index selects no items of the {len(self)}")
        return ImageDataset(images, labels, self.factor_names, self.class_factor)

    def split(self, n_first: int, *, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """Shuffle with ``seed`` and split into the first ``n_first`` items and the rest."""
        n = len(self)
        n_first = _args.integer("n_first", n_first)
        seed = _args.seed("seed", seed)
        if not 0 < n_first < n:
            raise ValueError(f"n_first must be in [1, {n - 1}] to leave items on both sides, got {n_first}")
        # cpu: drawn on the CPU whatever the data's device, so the split is the same on every device
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(self.images.device)  # cpu: above
        return self.subset(perm[:n_first]), self.subset(perm[n_first:])


# -- digits ------------------------------------------------------------------------------------
def load_digits() -> ImageDataset:
    """scikit-learn's bundled 8x8 digits: images [1797, 1, 8, 8] in [0, 1], labels ``digit``."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))[:, None]
    return ImageDataset(images.contiguous(), labels, ("digit",), "digit")


# -- procedural Shapes3D -----------------------------------------------------------------------
def _hsv_to_rgb(h: np.ndarray, s: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """Vectorised HSV -> RGB, h in [0, 1); returns [..., 3]."""
    h = np.asarray(h, dtype=np.float64)
    s = np.broadcast_to(np.asarray(s, dtype=np.float64), h.shape)
    v = np.broadcast_to(np.asarray(v, dtype=np.float64), h.shape)
    k = np.stack([(5.0 + h * 6.0) % 6.0, (3.0 + h * 6.0) % 6.0, (1.0 + h * 6.0) % 6.0], axis=-1)
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def factor_values(name: str, index: np.ndarray | int) -> np.ndarray:
    """Physical value of a Shapes3D factor index: hues in [0, 1), scale in [0.75, 1.25],
    orientation in [-30, 30] degrees, shape as its index."""
    if not isinstance(name, str) or name not in SHAPES3D_SIZES:
        raise ValueError(f"name must be one of {SHAPES3D_FACTORS}, got {name!r}")
    idx = np.asarray(index, dtype=np.float64)
    size = SHAPES3D_SIZES[name]
    if name.endswith("hue"):
        return idx / size
    if name == "scale":
        return 0.75 + 0.5 * idx / (size - 1)
    if name == "orientation":
        return -30.0 + 60.0 * idx / (size - 1)
    return idx


def render_scene(factors: np.ndarray | list[int], *, size: int = 64, zoom: float = 1.0) -> np.ndarray:
    """Render one scene from its six factor indices -> float32 [3, size, size] in [0, 1].

    ``zoom`` > 1 moves the camera closer (everything larger around the image centre).
    """
    f = _factor_table(factors, "factors", ndim=1)
    size = _args.integer("size", size, low=1, high=MAX_IMAGE_SIZE)
    zoom = _args.real("zoom", zoom, low=0.0, low_open=True)
    floor_h, wall_h, obj_h, scale, orient = (
        factor_values(n, f[i]) for i, n in enumerate(SHAPES3D_FACTORS) if n != "shape"
    )
    shape = int(f[4])
    # Scene coordinates: x, y in [-1, 1] (y down), zoomed about the centre.
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(coords / zoom, coords / zoom, indexing="ij")
    horizon = 0.1
    corner = 0.55 * float(orient) / 30.0  # where back wall meets the side wall
    img = np.empty((size, size, 3))
    floor_shade = 0.75 + 0.25 * np.clip((y - horizon) / (1.0 - horizon), 0.0, 1.0)
    floor_rgb = _hsv_to_rgb(np.full_like(x, floor_h), 0.8, floor_shade)
    side = x > corner if orient >= 0 else x < corner
    wall_rgb = _hsv_to_rgb(np.full_like(x, wall_h), 0.7, np.where(side, 0.7, 0.95))
    img[:] = np.where((y > horizon)[..., None], floor_rgb, wall_rgb)
    # Object standing on the floor at the centre: half-width w, height h.
    w = 0.28 * float(scale)
    base = 0.62
    dx, dy = x, y
    theta = np.deg2rad(float(orient))
    if shape == 0:  # cube: a square whose visible width follows the orientation, two faces
        half = w * (abs(np.cos(theta)) + abs(np.sin(theta))) / 1.1
        mask = (np.abs(dx) <= half) & (dy <= base) & (dy >= base - 2 * w)
        split = -half + 2 * half * (0.5 + 0.5 * np.sin(theta))
        shade = np.where(dx < split, 0.95, 0.7)
    elif shape == 1:  # cylinder: rectangle with an elliptic top
        body = (np.abs(dx) <= w) & (dy <= base) & (dy >= base - 2 * w)
        top = (dx / w) ** 2 + ((dy - (base - 2 * w)) / (0.3 * w)) ** 2 <= 1.0
        bottom = (dx / w) ** 2 + ((dy - base) / (0.3 * w)) ** 2 <= 1.0
        mask = body | top | bottom
        shade = np.where(top & ~body, 1.0, 0.65 + 0.35 * (1.0 - np.abs(dx) / w))
    elif shape == 2:  # sphere
        r = w
        cy = base - r
        d2 = (dx**2 + (dy - cy) ** 2) / r**2
        mask = d2 <= 1.0
        shade = 0.55 + 0.45 * np.clip(1.0 - ((dx + 0.4 * r) ** 2 + (dy - cy + 0.4 * r) ** 2) / (1.5 * r**2), 0, 1)
    else:  # capsule: a stadium (rounded rectangle), tilted by the orientation
        r = 0.6 * w
        cy = base - 2 * w + r * 0.2 + w
        u = np.cos(theta) * dx + np.sin(theta) * (dy - cy)
        v = -np.sin(theta) * dx + np.cos(theta) * (dy - cy)
        along = np.clip(v, -(w * 1.3 - r), w * 1.3 - r)
        mask = u**2 + (v - along) ** 2 <= r**2
        shade = 0.6 + 0.4 * (1.0 - np.abs(u) / r)
    obj_rgb = _hsv_to_rgb(np.full_like(x, obj_h), 0.9, np.clip(shade, 0.0, 1.0))
    img = np.where(mask[..., None], obj_rgb, img)
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def _factor_table(factors: object, name: str, *, ndim: int) -> np.ndarray:
    """Factor indices as int64, [6] (ndim 1) or [n, 6] (ndim 2), each within its factor's range;
    floats are accepted only when they hold whole numbers (2.7 is refused, not truncated)."""
    try:
        arr = np.asarray(factors)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array of factor indices, got {type(factors).__name__}") from exc
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integer factor indices, got dtype {arr.dtype}")
    want = "6 indices" if ndim == 1 else "[n, 6]"
    if arr.ndim != ndim or arr.shape[-1] != 6:
        raise ValueError(f"{name} must be {want} {SHAPES3D_FACTORS}, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise ValueError(f"{name} must hold whole-number factor indices, got non-integer values")
    sizes = np.array([SHAPES3D_SIZES[n] for n in SHAPES3D_FACTORS])
    bad = (arr < 0) | (arr >= sizes)
    if bad.any():
        col = int(np.argwhere(bad)[0][-1])
        val = arr[..., col].reshape(-1)[bad[..., col].reshape(-1)][0]
        factor = SHAPES3D_FACTORS[col]
        raise ValueError(f"{name}: factor {factor} must be in [0, {sizes[col] - 1}], got {val!r}")
    return arr.astype(np.int64)


def sample_factors(n: int, *, seed: int = 0) -> np.ndarray:
    """Draw ``n`` factor index rows [n, 6] uniformly (int64), reproducibly from ``seed``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int >= 1, got {type(n).__name__} {n!r}")
    if not 1 <= n <= MAX_SCENES:
        raise ValueError(f"n must be an int >= 1 and <= {MAX_SCENES}, got {n!r}")
    n = int(n)
    seed = _args.seed("seed", seed)
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, SHAPES3D_SIZES[name], size=n) for name in SHAPES3D_FACTORS], axis=1)


def render_scenes(factors: np.ndarray, *, size: int = 64, zoom: float = 1.0) -> torch.Tensor:
    """Render factor rows [n, 6] -> images [n, 3, size, size] (float32, [0, 1])."""
    factors = _factor_table(factors, "factors", ndim=2)
    size = _args.integer("size", size, low=1, high=MAX_IMAGE_SIZE)
    zoom = _args.real("zoom", zoom, low=0.0, low_open=True)
    if factors.shape[0] * 3 * size * size * 4 > MAX_RENDER_BYTES:
        raise ValueError(f"factors: {factors.shape[0]} scenes of {size}x{size} need more than {MAX_RENDER_BYTES} "
                         "bytes; render fewer at a time")
    out = np.stack([render_scene(row, size=size, zoom=zoom) for row in factors]) if len(factors) else np.zeros(
        (0, 3, size, size), np.float32)
    return torch.from_numpy(out)


def make_shapes3d(n: int = 1000, *, seed: int = 0, size: int = 64, zoom: float = 1.0) -> ImageDataset:
    """Procedural Shapes3D-like scenes: images [n, 3, size, size], labels [n, 6] (factor indices).

    Deterministic for a ``seed``. The class factor is ``"shape"``.
    """
    size = _args.integer("size", size, low=1, high=MAX_IMAGE_SIZE)
    zoom = _args.real("zoom", zoom, low=0.0, low_open=True)
    if isinstance(n, numbers.Integral) and not isinstance(n, bool) and n * 3 * size * size * 4 > MAX_RENDER_BYTES:
        raise ValueError(f"n: {n} scenes of {size}x{size} need more than {MAX_RENDER_BYTES} bytes")
    factors = sample_factors(n, seed=seed)
    images = render_scenes(factors, size=size, zoom=zoom)
    return ImageDataset(images, torch.from_numpy(factors), SHAPES3D_FACTORS, "shape")


# -- local copies of MNIST / Shapes3D ---------------------------------------------------------------
def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    """The arrays of a user's ``.npz`` (no pickle), with every member's declared size checked
    against :data:`MAX_DATA_BYTES` before numpy allocates it."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.file_size > MAX_DATA_BYTES:
                    raise _io.FormatError(f"{path!r}: member {info.filename!r} declares {info.file_size} bytes, more "
                                          f"than the limit of {MAX_DATA_BYTES}")
                with zf.open(info) as fh:
                    fmt = np.lib.format
                    version = fmt.read_magic(fh)
                    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, dtype = read_header(fh)
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    raise _io.FormatError(f"{path!r}: array {info.filename!r} declares shape {shape} of {dtype}, "
                                          f"more than the {info.file_size} bytes it holds")
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except _io.FormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, NotImplementedError,
            RuntimeError, struct.error, SyntaxError, TypeError) as exc:
        raise _io.FormatError(f"{path!r} is not a readable .npz file ({type(exc).__name__}: {exc})") from exc


def _read_arrays(path: str | os.PathLike[str], image_keys: tuple[str, ...], label_keys: tuple[str, ...]):
    p = Path(_args.path_like("path", path))
    if not p.exists():
        raise FileNotFoundError(f"path {str(p)!r} does not exist (mnemonix never downloads data: pass a local file)")
    if not p.is_file():
        raise ValueError(f"path {str(p)!r} is not a regular file (a directory?)")
    if p.suffix in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError as exc:
            raise ValueError(f"reading {str(p)!r} needs h5py; convert it to .npz instead") from exc
        try:
            with h5py.File(p, "r") as fh:
                data = {k: np.asarray(fh[k]) for k in fh.keys()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _io.FormatError(f"{str(p)!r} is not a readable HDF5 file ({exc})") from exc
    elif p.suffix == ".npz":
        data = _npz_arrays(str(p))
    else:
        raise ValueError(f"path must be a .npz or .h5 file, got {str(p)!r}")
    img_key = next((k for k in image_keys if k in data), None)
    lab_key = next((k for k in label_keys if k in data), None)
    if img_key is None or lab_key is None:
        raise _io.FormatError(f"{str(p)!r} must hold images under one of {image_keys} and labels under one of "
                              f"{label_keys}, found keys {sorted(data)}")
    return data[img_key], data[lab_key]


def _to_unit(images: np.ndarray, path: object) -> np.ndarray:
    """Pixels in [0, 1] (values above 1 are taken as 0..255)."""
    if images.dtype == bool or images.dtype.kind not in "iuf":
        raise _io.FormatError(f"{str(path)!r}: field 'images' must be numeric, got dtype {images.dtype}")
    images = images.astype(np.float32)
    if images.size and not np.isfinite(images).all():
        raise _io.FormatError(f"{str(path)!r}: field 'images' holds NaN or Inf values")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise _io.FormatError(f"{str(path)!r}: field 'images' must hold pixels in [0, 1] or [0, 255], got values in "
                              f"[{images.min()}, {images.max()}]")
    return images / 255.0 if images.size and images.max() > 1.0 else images


def _check_limit(limit: object) -> int | None:
    return None if limit is None else _args.integer("limit", limit, low=1)


def load_mnist(path: str | os.PathLike[str], *, limit: int | None = None) -> ImageDataset:
    """MNIST from a local ``.npz`` (keys ``x_train``/``images`` and ``y_train``/``labels``,
    the layout of ``keras.datasets.mnist``'s ``mnist.npz``): images [N, 1, 28, 28] in [0, 1].
    ``limit`` keeps at most that many (the first) items."""
    limit = _check_limit(limit)
    images, labels = _read_arrays(path, ("x_train", "images", "x"), ("y_train", "labels", "y"))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.shape[0] == 0:
        raise _io.FormatError(f"{str(path)!r}: field 'images' must be MNIST images [N, 28, 28] with N >= 1, "
                              f"got shape {images.shape}")
    labels = np.asarray(labels)
    if labels.reshape(-1).shape != (images.shape[0],) or labels.dtype == bool or labels.dtype.kind not in "iu":
        raise _io.FormatError(f"{str(path)!r}: field 'labels' must be {images.shape[0]} integers like the images, "
                              f"got shape {labels.shape} of {labels.dtype}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(_to_unit(images, path))[:, None].contiguous()
    y = torch.from_numpy(labels.astype(np.int64).reshape(-1, 1))
    return ImageDataset(x, y, ("digit",), "digit")


def load_shapes3d(path: str | os.PathLike[str], *, limit: int | None = None) -> ImageDataset:
    """Shapes3D from a local ``3dshapes.h5`` (keys ``images`` [N, 64, 64, 3] uint8, ``labels``
    [N, 6] factor values) or an ``.npz`` with the same keys. Label values are mapped to factor
    indices (rank of each value among that factor's distinct values). ``limit`` keeps at most
    that many (the first) items."""
    limit = _check_limit(limit)
    images, labels = _read_arrays(path, ("images",), ("labels",))
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise _io.FormatError(f"{str(path)!r}: field 'images' must be Shapes3D images [N, H, W, 3] with N >= 1, "
                              f"got shape {images.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != (images.shape[0], 6):
        raise _io.FormatError(f"{str(path)!r}: field 'labels' must be Shapes3D labels [N, 6], got shape "
                              f"{labels.shape}")
    if labels.dtype == bool or labels.dtype.kind not in "iuf" or not np.isfinite(labels).all():
        raise _io.FormatError(f"{str(path)!r}: field 'labels' must hold finite numbers, got dtype {labels.dtype}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    idx = np.stack([np.unique(col, return_inverse=True)[1].reshape(-1) for col in labels.T], axis=1).astype(np.int64)
    x = torch.from_numpy(_to_unit(images, path)).permute(0, 3, 1, 2).contiguous()
    return ImageDataset(x, torch.from_numpy(idx), SHAPES3D_FACTORS, "shape")


DATA_NAMES: tuple[str, ...] = ("digits", "shapes", "mnist", "shapes3d")


def load_dataset(name: str, *, n: int | None = None, seed: int = 0, path: str | os.PathLike[str] | None = None
                 ) -> ImageDataset:
    """``"digits"``, ``"shapes"`` (procedural, ``n`` scenes), ``"mnist"`` or ``"shapes3d"`` (``path``).

    ``n``: the number of items (digits: the first ``n`` of 1,797, more is a ValueError; shapes:
    that many scenes, default 1000; mnist / shapes3d: at most ``n``). ``path`` is read only for
    mnist and shapes3d.
    """
    if not isinstance(name, str) or name not in DATA_NAMES:
        raise ValueError(f"data must be one of {', '.join(map(repr, DATA_NAMES))}, got {name!r}")
    n = None if n is None else _args.integer("n", n, low=1)
    seed = _args.seed("seed", seed)
    if name == "digits":
        ds = load_digits()
        if n is not None and n > len(ds):
            raise ValueError(f"n must be <= {len(ds)} (the digits data set holds {len(ds)} images), got {n}")
        return ds if n is None else ds.subset(slice(0, n))
    if name == "shapes":
        return make_shapes3d(1000 if n is None else n, seed=seed)
    if path is None:
        raise ValueError(f"data {name!r} needs path= to a local file (no download)")
    return load_mnist(path, limit=n) if name == "mnist" else load_shapes3d(path, limit=n)
