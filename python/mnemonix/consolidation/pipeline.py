"""The whole consolidation simulation in one call (used by ``mnemonix consolidate``).

Steps: data -> store in a modern Hopfield network -> replay from noise -> train the VAE on
the replays (history per epoch) -> analyses (latent space, interpolation, vector arithmetic,
prototypical distortion, boundary extension on the shapes data) -> extended model threshold
sweep -> write figures, ``history.csv``, ``summary.json``, ``vae.safetensors`` (the checksummed
VAE format of :func:`~mnemonix.consolidation.vae.save_vae`) and ``hopfield.npz``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mnemonix import _io
from mnemonix.consolidation import _args, analysis
from mnemonix.consolidation.data import DATA_NAMES, ImageDataset, load_dataset, sample_factors
from mnemonix.consolidation.extended import ExtendedModel, threshold_sweep
from mnemonix.consolidation.teacher_student import ConsolidationConfig, TeacherStudentResult, run_teacher_student
from mnemonix.consolidation.vae import save_vae

#: (dataset size, config) per data set and mode.
PRESETS: dict[tuple[str, bool], tuple[int | None, ConsolidationConfig]] = {
    ("digits", False): (None, ConsolidationConfig(n_stored=1200, epochs=20, batch_size=64)),
    ("digits", True): (None, ConsolidationConfig(n_stored=600, epochs=3, batch_size=64)),
    ("shapes", False): (1250, ConsolidationConfig(n_stored=1000, epochs=10, batch_size=32)),
    ("shapes", True): (160, ConsolidationConfig(n_stored=120, epochs=1, batch_size=32)),
}
THRESHOLDS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


@dataclass
class PipelineResult:
    result: TeacherStudentResult
    summary: dict[str, Any]
    files: list[Path]


#: File name of the trained VAE in the output folder.
VAE_FILE = "vae.safetensors"


def write_history_csv(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write rows (dicts with the same keys) as CSV, atomically."""
    p = Path(_args.path_like("path", path))
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise TypeError("rows must be a non-empty list of dicts")
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _io.atomic_write_bytes(p, buf.getvalue().encode("utf-8"))
    return p


def extended_examples(model_low: ExtendedModel, model_high: ExtendedModel, images: torch.Tensor,
                      path: str | os.PathLike[str], *, noise: float = 0.1) -> Path:
    """Figure: originals, recall at a low and a high error threshold, and the VAE alone."""
    plt = analysis._plt()
    k = min(6, images.shape[0])
    idx = torch.arange(k, device=model_low.vae.device)
    low = model_low.recall(model_low.noisy_cues(noise, index=idx)).images
    high = model_high.recall(model_high.noisy_cues(noise, index=idx)).images
    vae_only = model_low.vae.reconstruct(images[:k])
    fig, axes = plt.subplots(4, k, figsize=(1.3 * k, 5.4), squeeze=False)
    rows = [("original", images[:k]), (f"thr {model_low.threshold:g}", low), (f"thr {model_high.threshold:g}", high),
            ("VAE only", vae_only)]
    for r, (name, imgs) in enumerate(rows):
        for i in range(k):
            analysis._show(axes[r, i], imgs[i])
        axes[r, 0].set_ylabel(name, fontsize=8)
    out = analysis._save(fig, path)
    assert out is not None
    return out


def _check_pipeline_args(data: object, out_dir: object, epochs: object, quick: object, seed: object,
                         path: object, progress: object, dataset: object) -> Path:
    """Check every argument of :func:`run_pipeline` before anything is read or written."""
    if not isinstance(data, str) or data not in DATA_NAMES:
        raise ValueError(f"data must be one of {', '.join(map(repr, DATA_NAMES))}, got {data!r}")
    out = Path(_args.path_like("out_dir", out_dir))
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a directory")
    if epochs is not None:
        _args.integer("epochs", epochs, low=0)
    _args.flag("quick", quick)
    _args.seed("seed", seed)
    if path is not None:
        _args.path_like("path", path)
    _args.flag("progress", progress)
    if dataset is not None and not isinstance(dataset, ImageDataset):
        raise TypeError(f"dataset must be None or an ImageDataset, got {type(dataset).__name__}")
    return out


def run_pipeline(
    data: str = "digits",
    out_dir: str | os.PathLike[str] = "mnemonix-consolidation",
    *,
    epochs: int | None = None,
    quick: bool = False,
    seed: int = 0,
    path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    dataset: ImageDataset | None = None,
    device: str | torch.device | None = None,
) -> PipelineResult:
    """Run the full simulation on ``data`` (``digits``, ``shapes``, or ``mnist`` / ``shapes3d``
    from a local ``path``) and write every output into ``out_dir``.

    ``device``: where the training and analyses run; ``None`` means CUDA when available, else
    the CPU (the summary records it under ``"device"``). Every argument is checked before
    ``out_dir`` is created.
    """
    out = _check_pipeline_args(data, out_dir, epochs, quick, seed, path, progress, dataset)
    dev = _args.resolve_device(device)
    preset_key = ("shapes" if data in ("shapes", "shapes3d") else "digits", bool(quick))
    n_items, base = PRESETS[preset_key]
    cfg = ConsolidationConfig(**{**asdict(base), "seed": seed})
    if epochs is not None:
        cfg.epochs = epochs
    ds = dataset if dataset is not None else load_dataset(data, n=n_items if data == "shapes" else None, seed=seed,
                                                          path=path)
    if data in ("mnist", "shapes3d") and quick:
        ds = ds.subset(slice(0, min(len(ds), 400)))
    if len(ds) < 10:
        raise ValueError(f"data must hold at least 10 items for the pipeline, got {len(ds)}")
    cfg.n_stored = min(cfg.n_stored, int(0.8 * len(ds)))  # keep >= 20% held out for the analyses
    out.mkdir(parents=True, exist_ok=True)
    res = run_teacher_student(ds, cfg, progress=progress, device=dev)
    files: list[Path] = []
    held = res.heldout.subset(slice(0, min(len(res.heldout), 500)))

    files.append(write_history_csv(res.history_rows(), out / "history.csv"))
    files.append(analysis.plot_history(res.history, out / "training.png", chance=float(res.summary["probe_chance"])))
    lat = analysis.latent_space_2d(res.vae, held, path=out / "latent_space.png")
    interp = analysis.interpolation(res.vae, held.images[0], held.images[1], path=out / "interpolation.png")
    classes = held.classes.unique()
    arith = analysis.vector_arithmetic(res.vae, held, class_a=int(classes[0]), class_b=int(classes[-1]),
                                       path=out / "vector_arithmetic.png") if classes.numel() >= 2 else None
    proto = analysis.prototypical_distortion(res.vae, held, path=out / "prototypical_distortion.png")
    files += [f for f in (lat.figure, interp.figure, arith.figure if arith else None, proto.figure) if f]
    summary: dict[str, Any] = {"data": data, "quick": bool(quick), "seed": seed, **res.summary}
    summary["latent_pca_explained_variance"] = list(lat.explained_variance)
    summary["latent_pca_class_separation"] = lat.separation
    summary["interpolation_endpoint_mse"] = interp.endpoint_mse
    if arith is not None:
        summary["vector_arithmetic"] = {k: v for k, v in asdict(arith).items() if k != "figure"}
    summary["prototypical_distortion"] = {k: v for k, v in asdict(proto).items() if k != "figure"}
    if res.vae.image_shape == (3, 64, 64) and data == "shapes":
        be = analysis.boundary_extension(res.vae, sample_factors(8 if quick else 40, seed=seed + 12345),
                                         path=out / "boundary_extension.png")
        files.append(be.figure)  # type: ignore[arg-type]
        summary["boundary_extension"] = {"input_zooms": be.input_zooms, "output_zooms": be.output_zooms}

    sweep_items = held.images[: 40 if quick else 300]
    rows = threshold_sweep(res.vae, sweep_items, THRESHOLDS, seed=seed)
    files.append(analysis.plot_threshold_sweep(rows, out / "threshold_sweep.png"))
    summary["threshold_sweep"] = [asdict(r) for r in rows]
    low = ExtendedModel(res.vae, threshold=0.1).store(sweep_items)
    high = ExtendedModel(res.vae, threshold=0.3).store(sweep_items)
    files.append(extended_examples(low, high, sweep_items, out / "extended_recall.png"))

    save_vae(res.vae, out / VAE_FILE)
    res.hopfield.save(out / "hopfield.npz")
    files += [out / VAE_FILE, out / "hopfield.npz"]
    summary_path = out / "summary.json"
    _io.atomic_write_bytes(summary_path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    files.append(summary_path)
    return PipelineResult(res, summary, files)
