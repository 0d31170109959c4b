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

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SHAPES3D_FACTORS: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
#: Number of values of each Shapes3D factor (as in the original data set).
SHAPES3D_SIZES: dict[str, int] = {
    "floor_hue": 10, "wall_hue": 10, "object_hue": 10, "scale": 8, "shape": 4, "orientation": 15,
}
SHAPE_NAMES: tuple[str, ...] = ("cube", "cylinder", "sphere", "capsule")


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
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4:
            shape = tuple(self.images.shape) if isinstance(self.images, torch.Tensor) else type(self.images).__name__
            raise ValueError(f"images must be a [N, C, H, W] tensor, got {shape}")
        if self.images.shape[0] == 0:
            raise ValueError("images must hold at least one image, got an empty dataset (N = 0)")
        if self.labels.ndim != 2 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"labels must be [N, F] with N = {self.images.shape[0]}, got {tuple(self.labels.shape)}")
        if self.labels.shape[1] != len(self.factor_names):
            raise ValueError(f"labels have {self.labels.shape[1]} columns but factor_names has "
                             f"{len(self.factor_names)} names")
        if self.class_factor not in self.factor_names:
            raise ValueError(f"class_factor must be one of {self.factor_names}, got {self.class_factor!r}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def factor(self, name: str) -> torch.Tensor:
        """Labels [N] of one factor."""
        if name not in self.factor_names:
            raise ValueError(f"factor must be one of {self.factor_names}, got {name!r}")
        return self.labels[:, self.factor_names.index(name)]

    @property
    def classes(self) -> torch.Tensor:
        """Labels [N] of :attr:`class_factor`."""
        return self.factor(self.class_factor)

    def subset(self, index: torch.Tensor | slice) -> ImageDataset:
        return ImageDataset(self.images[index], self.labels[index], self.factor_names, self.class_factor)

    def split(self, n_first: int, *, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """Shuffle with ``seed`` and split into the first ``n_first`` items and the rest."""
        n = len(self)
        if not 0 < n_first < n:
            raise ValueError(f"n_first must be in [1, {n - 1}] to leave items on both sides, got {n_first}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
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
    f = np.asarray(factors, dtype=np.int64)
    if f.shape != (6,):
        raise ValueError(f"factors must be 6 indices {SHAPES3D_FACTORS}, got shape {f.shape}")
    for name, val in zip(SHAPES3D_FACTORS, f):
        if not 0 <= val < SHAPES3D_SIZES[name]:
            raise ValueError(f"factor {name} must be in [0, {SHAPES3D_SIZES[name] - 1}], got {int(val)}")
    if not (isinstance(zoom, (int, float)) and zoom > 0):
        raise ValueError(f"zoom must be a number > 0, got {zoom!r}")
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


def sample_factors(n: int, *, seed: int = 0) -> np.ndarray:
    """Draw ``n`` factor index rows [n, 6] uniformly (int64), reproducibly from ``seed``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, SHAPES3D_SIZES[name], size=n) for name in SHAPES3D_FACTORS], axis=1)


def render_scenes(factors: np.ndarray, *, size: int = 64, zoom: float = 1.0) -> torch.Tensor:
    """Render factor rows [n, 6] -> images [n, 3, size, size] (float32, [0, 1])."""
    factors = np.asarray(factors, dtype=np.int64)
    if factors.ndim != 2 or factors.shape[1] != 6:
        raise ValueError(f"factors must be [n, 6], got shape {factors.shape}")
    out = np.stack([render_scene(row, size=size, zoom=zoom) for row in factors]) if len(factors) else np.zeros(
        (0, 3, size, size), np.float32)
    return torch.from_numpy(out)


def make_shapes3d(n: int = 1000, *, seed: int = 0, size: int = 64, zoom: float = 1.0) -> ImageDataset:
    """Procedural Shapes3D-like scenes: images [n, 3, size, size], labels [n, 6] (factor indices).

    Deterministic for a ``seed``. The class factor is ``"shape"``.
    """
    factors = sample_factors(n, seed=seed)
    images = render_scenes(factors, size=size, zoom=zoom)
    return ImageDataset(images, torch.from_numpy(factors), SHAPES3D_FACTORS, "shape")


# -- local copies of MNIST / Shapes3D ---------------------------------------------------------------
def _read_arrays(path: str | os.PathLike[str], image_keys: tuple[str, ...], label_keys: tuple[str, ...]):
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path {str(p)!r} does not exist (mnemonix never downloads data: pass a local file)")
    if p.suffix in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError as exc:
            raise ValueError(f"reading {str(p)!r} needs h5py; convert it to .npz instead") from exc
        with h5py.File(p, "r") as fh:
            data = {k: np.asarray(fh[k]) for k in fh.keys()}
    elif p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    else:
        raise ValueError(f"path must be a .npz or .h5 file, got {str(p)!r}")
    img_key = next((k for k in image_keys if k in data), None)
    lab_key = next((k for k in label_keys if k in data), None)
    if img_key is None or lab_key is None:
        raise ValueError(f"{str(p)!r} must hold images under one of {image_keys} and labels under one of "
                         f"{label_keys}, found keys {sorted(data)}")
    return data[img_key], data[lab_key]


def _to_unit(images: np.ndarray) -> np.ndarray:
    images = images.astype(np.float32)
    return images / 255.0 if images.size and images.max() > 1.0 else images


def load_mnist(path: str | os.PathLike[str], *, limit: int | None = None) -> ImageDataset:
    """MNIST from a local ``.npz`` (keys ``x_train``/``images`` and ``y_train``/``labels``,
    the layout of ``keras.datasets.mnist``'s ``mnist.npz``): images [N, 1, 28, 28] in [0, 1]."""
    images, labels = _read_arrays(path, ("x_train", "images", "x"), ("y_train", "labels", "y"))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"MNIST images must be [N, 28, 28], got shape {images.shape}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(_to_unit(images))[:, None].contiguous()
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1, 1))
    return ImageDataset(x, y, ("digit",), "digit")


def load_shapes3d(path: str | os.PathLike[str], *, limit: int | None = None) -> ImageDataset:
    """Shapes3D from a local ``3dshapes.h5`` (keys ``images`` [N, 64, 64, 3] uint8, ``labels``
    [N, 6] factor values) or an ``.npz`` with the same keys. Label values are mapped to factor
    indices (rank of each value among that factor's distinct values)."""
    images, labels = _read_arrays(path, ("images",), ("labels",))
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Shapes3D images must be [N, H, W, 3], got shape {images.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != (images.shape[0], 6):
        raise ValueError(f"Shapes3D labels must be [N, 6], got shape {labels.shape}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    idx = np.stack([np.unique(col, return_inverse=True)[1] for col in labels.T], axis=1).astype(np.int64)
    x = torch.from_numpy(_to_unit(images)).permute(0, 3, 1, 2).contiguous()
    return ImageDataset(x, torch.from_numpy(idx), SHAPES3D_FACTORS, "shape")


def load_dataset(name: str, *, n: int | None = None, seed: int = 0, path: str | os.PathLike[str] | None = None
                 ) -> ImageDataset:
    """``"digits"``, ``"shapes"`` (procedural, ``n`` scenes), ``"mnist"`` or ``"shapes3d"`` (``path``)."""
    if name == "digits":
        ds = load_digits()
        return ds if n is None else ds.subset(slice(0, n))
    if name == "shapes":
        return make_shapes3d(1000 if n is None else n, seed=seed)
    if name in ("mnist", "shapes3d"):
        if path is None:
            raise ValueError(f"data {name!r} needs path= to a local file (no download)")
        return load_mnist(path, limit=n) if name == "mnist" else load_shapes3d(path, limit=n)
    raise ValueError(f"data must be one of 'digits', 'shapes', 'mnist', 'shapes3d', got {name!r}")
