"""Analyses of a consolidated VAE, after Spens & Burgess (2024): each returns numbers (a
dataclass) and, given ``path``, writes a PNG figure (matplotlib, Agg backend).

- :func:`latent_space_2d` -- the latent means projected to 2D by PCA, coloured by class.
- :func:`interpolation` -- decoding points on the line between two items' latents.
- :func:`vector_arithmetic` -- ``z(x) + (mean z of class B - mean z of class A)`` turns items of
  class A into class B (checked by a probe on the re-encoded outputs).
- :func:`prototypical_distortion` -- VAE outputs lie closer to their class prototype (the mean
  image of the class) than the inputs do.
- :func:`boundary_extension` -- on zoomed-in / zoomed-out procedural scenes, the outputs' zoom
  (the best-matching render of the same scene on a zoom grid) moves toward the typical view.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mnemonix import _checks
from mnemonix.consolidation import _args
from mnemonix.consolidation import data as _data
from mnemonix.consolidation.data import ImageDataset, render_scenes
from mnemonix.consolidation.vae import VAE

PathLike = str | os.PathLike[str]
#: Most interpolation steps / zooms an analysis draws.
MAX_STEPS = 1000


def _plt():
    from mnemonix._plotting import pyplot  # Agg selected once, in one place

    return pyplot()


def _show(ax, image: torch.Tensor) -> None:
    img = image.detach().cpu().float().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: PathLike | None) -> Path | None:
    if path is None:
        _plt().close(fig)
        return None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return p


def _check_vae(vae: object) -> VAE:
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a mnemonix.consolidation.VAE, got {type(vae).__name__}")
    return vae


def _check_path(path: object) -> None:
    if path is not None:
        _args.path_like("path", path)


def _check_data(data: ImageDataset, vae: VAE) -> ImageDataset:
    """``data`` checked against the VAE and moved to its device."""
    _check_vae(vae)
    if not isinstance(data, ImageDataset):
        raise TypeError(f"data must be an ImageDataset, got {type(data).__name__}")
    if data.image_shape != vae.image_shape:
        vae.check_images(data.images[:1].to(vae.device), "data.images")
    return data.to(vae.device)


# -- latent space -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentSpace2D:
    """coords [N, 2] (PCA of the latent means), explained_variance (of the two components),
    separation (between-class / total variance of the 2D coordinates, in [0, 1])."""

    coords: np.ndarray
    explained_variance: tuple[float, float]
    separation: float
    figure: Path | None = None


def pca(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Project rows of ``x`` [N, D] on their top ``k`` principal components -> (coords [N, k],
    explained variance ratios [k])."""
    _checks.tensor("x", x, ndim=2, dtypes=None)
    k = _args.integer("k", k, low=1, high=max(1, min(x.shape)))
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got dtype {x.dtype}")
    xc = x.double() - x.double().mean(0)
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    var = s**2
    return xc @ vh[:k].T, (var[:k] / var.sum().clamp_min(1e-30))


def latent_space_2d(vae: VAE, data: ImageDataset, *, path: PathLike | None = None) -> LatentSpace2D:
    """PCA of the latent means of ``data`` (moved to the VAE's device) coloured by its class
    factor. ``coords`` come back as a NumPy array (on the host)."""
    data = _check_data(data, vae)
    _check_path(path)
    if len(data) < 2 or vae.latent_dim < 2:
        raise ValueError(f"data must hold at least 2 items and the VAE 2 latent dimensions for a 2D PCA, got "
                         f"{len(data)} items and latent_dim {vae.latent_dim}")
    coords_dev, ratio_dev = pca(vae.latents(data.images), 2)
    # [N, 2] coordinates and [N] labels are small: one copy to the host, then plain CPU arithmetic
    coords, labels, ratio = coords_dev.cpu(), data.classes.cpu(), ratio_dev.cpu()
    total = float(((coords - coords.mean(0)) ** 2).sum())
    between = sum(
        float((labels == c).sum()) * float(((coords[labels == c].mean(0) - coords.mean(0)) ** 2).sum())
        for c in labels.unique()
    )
    figure = None
    if path is not None:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 4.5))
        classes = labels.unique()
        if classes.numel() <= 10:
            for i, c in enumerate(classes.tolist()):
                sel = labels == c
                ax.scatter(coords[sel, 0], coords[sel, 1], s=6, color=plt.get_cmap("tab10")(i), label=str(c))
            ax.legend(title=data.class_factor, fontsize=7, markerscale=2, loc="best")
        else:
            sc = ax.scatter(coords[:, 0], coords[:, 1], c=labels.numpy(), cmap="viridis", s=6)
            fig.colorbar(sc, ax=ax, label=data.class_factor)
        ax.set_xlabel(f"PC1 ({float(ratio[0]):.0%})")
        ax.set_ylabel(f"PC2 ({float(ratio[1]):.0%})")
        ax.set_title("VAE latent space (PCA)")
        figure = _save(fig, path)
    return LatentSpace2D(coords.numpy(), (float(ratio[0]), float(ratio[1])), between / max(total, 1e-30), figure)


# -- interpolation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Interpolation:
    """images [steps, C, H, W] decoded along the line; endpoint_mse (mean error of the two ends
    against the inputs); mean_step_change (mean squared change between consecutive images)."""

    images: torch.Tensor
    endpoint_mse: float
    mean_step_change: float
    figure: Path | None = None


def interpolation(vae: VAE, a: torch.Tensor, b: torch.Tensor, *, steps: int = 8,
                  path: PathLike | None = None) -> Interpolation:
    """Decode ``steps`` points from z(a) to z(b); ``a``, ``b`` are single images [C, H, W]
    (moved to the VAE's device; ``images`` come back there)."""
    _check_vae(vae)
    steps = _args.integer("steps", steps, low=2, high=MAX_STEPS)
    _check_path(path)
    for name, img in (("a", a), ("b", b)):
        _checks.tensor(name, img, ndim=3)
        if tuple(img.shape) != vae.image_shape:
            raise ValueError(f"{name} must be one image {vae.image_shape} for {type(vae).__name__}, "
                             f"got shape {tuple(img.shape)}")
        _args.finite_tensor(name, _args.movable(name, img))
    pair = torch.stack([a.to(vae.device), b.to(vae.device)])
    z = vae.latents(pair)
    w = torch.linspace(0, 1, steps, device=z.device, dtype=z.dtype)[:, None]
    images = vae.decode_eval((1 - w) * z[0] + w * z[1])
    end, change = torch.stack([((images[[0, -1]] - pair) ** 2).mean(),
                               ((images[1:] - images[:-1]) ** 2).mean()]).tolist()
    figure = None
    if path is not None:
        plt = _plt()
        fig, axes = plt.subplots(1, steps + 2, figsize=(1.2 * (steps + 2), 1.5))
        _show(axes[0], a)
        axes[0].set_title("A", fontsize=8)
        for i in range(steps):
            _show(axes[i + 1], images[i])
        _show(axes[-1], b)
        axes[-1].set_title("B", fontsize=8)
        figure = _save(fig, path)
    return Interpolation(images, end, change, figure)


# -- vector arithmetic -------------------------------------------------------------------------
@dataclass(frozen=True)
class VectorArithmetic:
    """success_rate: fraction of class-A items that, after adding ``mean z(B) - mean z(A)`` to
    their latent, decoding and re-encoding, lie closer to class B's mean latent than to class
    A's; baseline_rate: the same for the unshifted items (decoded and re-encoded)."""

    class_a: int
    class_b: int
    success_rate: float
    baseline_rate: float
    figure: Path | None = None


def vector_arithmetic(vae: VAE, data: ImageDataset, *, class_a: int | None = None, class_b: int | None = None,
                      factor: str | None = None, path: PathLike | None = None) -> VectorArithmetic:
    """Move items of class A by the difference of the class means in latent space (``data`` is
    moved to the VAE's device)."""
    data = _check_data(data, vae)
    _check_path(path)
    labels = data.factor(factor) if factor is not None else data.classes
    classes = labels.unique().tolist()
    if len(classes) < 2:
        raise ValueError("data must hold at least two classes for vector arithmetic")
    a = int(classes[0]) if class_a is None else _args.integer("class_a", class_a)
    b = int(classes[1]) if class_b is None else _args.integer("class_b", class_b)
    if a not in classes or b not in classes:
        raise ValueError(f"class_a and class_b must be classes present in data {classes}, got {a} and {b}")
    if a == b:
        raise ValueError(f"class_a and class_b must be two different classes, got {a} and {b}")
    z = vae.latents(data.images)
    mean_a, mean_b = z[labels == a].mean(0), z[labels == b].mean(0)
    za = z[labels == a]
    moved = vae.decode_eval(za + (mean_b - mean_a))

    def closer_to_b(images: torch.Tensor) -> float:
        zz = vae.latents(images)
        return float(((zz - mean_b).norm(dim=1) < (zz - mean_a).norm(dim=1)).double().mean())

    success, baseline = closer_to_b(moved), closer_to_b(vae.decode_eval(za))
    figure = None
    if path is not None:
        plt = _plt()
        k = min(6, za.shape[0])
        fig, axes = plt.subplots(2, k, figsize=(1.3 * k, 2.8), squeeze=False)
        src = data.images[labels == a]
        for i in range(k):
            _show(axes[0, i], src[i])
            _show(axes[1, i], moved[i])
        axes[0, 0].set_ylabel(f"class {a}", fontsize=8)
        axes[1, 0].set_ylabel(f"+ ({b} - {a})", fontsize=8)
        figure = _save(fig, path)
    return VectorArithmetic(a, b, success, baseline, figure)


# -- prototypical distortion -------------------------------------------------------------------
@dataclass(frozen=True)
class PrototypicalDistortion:
    """input_distance / output_distance: mean squared distance to the class prototype (the mean
    image of the item's class) before / after the VAE; fraction_closer: share of items whose
    output is closer to the prototype than the input."""

    input_distance: float
    output_distance: float
    fraction_closer: float
    figure: Path | None = None


def prototypical_distortion(vae: VAE, data: ImageDataset, *, path: PathLike | None = None) -> PrototypicalDistortion:
    """Do the VAE's outputs move toward class prototypes? (``data`` is moved to the VAE's device.)"""
    data = _check_data(data, vae)
    _check_path(path)
    x = data.images.float()
    _, inverse, counts = data.classes.unique(return_inverse=True, return_counts=True)
    # class means as one [K, N] @ [N, P] product (deterministic, unlike an atomic scatter-add on
    # CUDA), then each item's prototype by one gather: no per-item host sync
    onehot = torch.nn.functional.one_hot(inverse, counts.numel()).to(x.dtype)
    means = (onehot.T @ x.flatten(1)) / counts.to(x.dtype)[:, None]
    proto = means[inverse].reshape(x.shape)
    out = vae.reconstruct(x)
    d_in = ((x - proto) ** 2).flatten(1).mean(1)
    d_out = ((out - proto) ** 2).flatten(1).mean(1)
    figure = None
    if path is not None:
        plt = _plt()
        k = min(6, x.shape[0])
        fig, axes = plt.subplots(3, k, figsize=(1.3 * k, 4.0), squeeze=False)
        for i in range(k):
            _show(axes[0, i], x[i])
            _show(axes[1, i], out[i])
            _show(axes[2, i], proto[i])
        for r, name in enumerate(("input", "output", "prototype")):
            axes[r, 0].set_ylabel(name, fontsize=8)
        figure = _save(fig, path)
    d_in_mean, d_out_mean, closer = torch.stack([d_in.mean(), d_out.mean(), (d_out < d_in).float().mean()]).tolist()
    return PrototypicalDistortion(d_in_mean, d_out_mean, closer, figure)


# -- boundary extension ------------------------------------------------------------------------
@dataclass(frozen=True)
class BoundaryExtension:
    """For each input zoom, the mean zoom of the outputs (zoom of the best-matching render of the
    same scene on ``zoom_grid``). Extension: outputs of zoomed-in inputs (> 1) come out lower
    (wider view); contraction: the reverse for zoomed-out inputs."""

    input_zooms: list[float]
    output_zooms: list[float]
    zoom_grid: list[float] = field(default_factory=list)
    figure: Path | None = None

    @property
    def shifts(self) -> list[float]:
        """output zoom - input zoom per input zoom (negative: boundary extension)."""
        return [o - i for i, o in zip(self.input_zooms, self.output_zooms)]


def boundary_extension(vae: VAE, factors: np.ndarray, *, zooms: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.25),
                       grid: tuple[float, ...] | None = None, path: PathLike | None = None) -> BoundaryExtension:
    """Render scenes with ``factors`` [n, 6] (not used in training) at each zoom, pass them
    through the VAE (a 64x64x3 model, on its device) and estimate the zoom of each output."""
    _check_vae(vae)
    if vae.image_shape != (3, 64, 64):
        raise ValueError(f"vae must be a 64x64x3 VAE (LargeVAE) for boundary_extension, got image_shape "
                         f"{vae.image_shape}")
    factors = _data._factor_table(factors, "factors", ndim=2)
    if factors.shape[0] == 0:
        raise ValueError(f"factors must be a non-empty [n, 6] array, got shape {factors.shape}")
    zooms = _zoom_list("zooms", zooms)
    zoom_grid = tuple(np.round(np.linspace(min(zooms) - 0.15, max(zooms) + 0.15, 15), 3)) if grid is None else \
        _zoom_list("grid", grid)
    _check_path(path)
    dev = vae.device
    grid_t = torch.tensor(zoom_grid, dtype=torch.float64).to(dev, non_blocking=True)  # cpu: host data, copied
    # scenes are rendered on the host: copied to the device without making the host wait (non_blocking)
    renders = torch.stack([render_scenes(factors, zoom=float(g)) for g in zoom_grid], 1).to(
        dev, non_blocking=True)  # [n, G, 3, 64, 64]
    outs_dev = []
    examples = []
    for zoom in zooms:
        inp = render_scenes(factors, zoom=float(zoom)).to(dev, non_blocking=True)
        out = vae.reconstruct(inp)
        err = ((renders - out[:, None]) ** 2).flatten(2).mean(2)  # [n, G]
        outs_dev.append(grid_t[err.argmin(1)].mean())  # the output zoom, kept on the device
        examples.append((inp[0], out[0]))
    outs = torch.stack(outs_dev).tolist()  # one host sync for all zooms
    figure = None
    if path is not None:
        plt = _plt()
        fig, axes = plt.subplots(2, len(zooms), figsize=(1.6 * len(zooms), 3.4), squeeze=False)
        for j, (zoom, (inp, out)) in enumerate(zip(zooms, examples)):
            _show(axes[0, j], inp)
            _show(axes[1, j], out)
            axes[0, j].set_title(f"zoom {zoom:g}", fontsize=8)
            axes[1, j].set_title(f"-> {outs[j]:.2f}", fontsize=8)
        figure = _save(fig, path)
    return BoundaryExtension([float(z) for z in zooms], outs, [float(g) for g in zoom_grid], figure)


def _zoom_list(name: str, values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    out = tuple(_args.real(f"{name}[]", v, low=0.0, low_open=True) for v in values)
    if not out or len(out) > MAX_STEPS:
        raise ValueError(f"{name} must hold 1 to {MAX_STEPS} zooms, got {len(out)}")
    return out


def _check_rows(name: str, rows: object, row_type: type) -> None:
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, row_type) for r in rows):
        raise TypeError(f"{name} must be a list of {row_type.__name__}, got {type(rows).__name__}")
    if not rows:
        raise ValueError(f"{name} must hold at least one row, got none")


# -- training curves ---------------------------------------------------------------------------
def plot_history(history: list, path: PathLike, *, chance: float | None = None) -> Path:
    """Held-out reconstruction error and probe accuracy per epoch (rows of EpochLog)."""
    from mnemonix.consolidation.teacher_student import EpochLog

    _check_rows("history", history, EpochLog)
    _args.path_like("path", path)
    if chance is not None:
        _args.real("chance", chance, low=0.0, high=1.0)
    plt = _plt()
    epochs = [r.epoch for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    ax1.plot(epochs, [r.heldout_mse for r in history], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("held-out reconstruction MSE")
    ax2.plot(epochs, [r.probe_accuracy for r in history], marker="o", color="C1")
    if chance is not None:
        ax2.axhline(chance, ls="--", color="gray", label="chance")
        ax2.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("semantic decoding accuracy")
    fig.tight_layout()
    out = _save(fig, path)
    assert out is not None
    return out


def plot_threshold_sweep(rows: list, path: PathLike) -> Path:
    """Recall error and sensory features stored against the error threshold (SweepRow list)."""
    from mnemonix.consolidation.extended import SweepRow

    _check_rows("rows", rows, SweepRow)
    _args.path_like("path", path)
    plt = _plt()
    t = [r.threshold for r in rows]
    fig, ax1 = plt.subplots(figsize=(5, 3.2))
    ax1.plot(t, [r.recall_mse for r in rows], marker="o", color="C0")
    ax1.set_xlabel("error threshold")
    ax1.set_ylabel("recall MSE", color="C0")
    ax2 = ax1.twinx()
    ax2.plot(t, [r.mean_features for r in rows], marker="s", color="C1")
    ax2.set_ylabel("sensory features stored / item", color="C1")
    fig.tight_layout()
    out = _save(fig, path)
    assert out is not None
    return out
