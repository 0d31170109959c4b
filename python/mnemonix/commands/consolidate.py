"""``mnemonix consolidate``: the generative consolidation simulation end to end.

Stores items in a modern Hopfield network, replays them from noise to train a VAE, runs the
analyses and the extended model's threshold sweep, and writes figures, ``history.csv``,
``summary.json``, ``vae.safetensors`` and ``hopfield.npz`` into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mnemonix.commands._args import (
    UsageError,
    add_device_argument,
    check_input_file,
    check_output_dir,
    nonneg_int,
    resolve_device,
    seed_int,
)
from mnemonix.commands.demo import DemoContext


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("consolidate", help="Hopfield replay trains a VAE (generative consolidation), with analyses")
    p.add_argument("--data", choices=("digits", "shapes", "mnist", "shapes3d"), default="digits",
                   help="digits (bundled 8x8), shapes (procedural 64x64x3), or mnist/shapes3d from --path")
    p.add_argument("--path", type=Path, default=None, help="local MNIST .npz or Shapes3D .h5/.npz (never downloaded)")
    p.add_argument("--epochs", type=nonneg_int, default=None, help="training epochs (default: preset of --data)")
    p.add_argument("--out", type=Path, default=Path("mnemonix-consolidation"), help="output folder")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--seed", type=seed_int, default=0)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnemonix.consolidation.pipeline import run_pipeline

    device = resolve_device(args.device)
    if args.data in ("mnist", "shapes3d") and args.path is None:
        raise UsageError(f"--data {args.data} needs --path (a local file; nothing is downloaded)")
    check_input_file("--path", args.path)
    check_output_dir("--out", args.out)
    t0 = time.perf_counter()
    # device=: the parameter the consolidation owner adds to run_pipeline (issue 16).
    res = run_pipeline(args.data, args.out, epochs=args.epochs, quick=args.quick, seed=args.seed, path=args.path,
                       progress=True, device=device)
    s = res.summary
    print(f"stored {s['n_stored']} items ({s['image_shape']}), replayed {s['n_replay']} from noise in "
          f"{s['replay_seconds']:.2f} s (exact {s['replay_exact_fraction']:.1%}, distinct {s['replay_coverage']:.1%})")
    print(f"VAE ({s['vae']}, latent {s['latent_dim']}): held-out MSE {s['heldout_mse_untrained']:.4f} -> "
          f"{s['heldout_mse_final']:.4f}; probe accuracy {s['probe_accuracy_untrained']:.3f} -> "
          f"{s['probe_accuracy_final']:.3f} (chance {s['probe_chance']:.3f}); {s['seconds_per_epoch']:.2f} s/epoch")
    factors = [k[len("probe_"):] for k in s if k.startswith("probe_") and k.endswith("_chance")
               and k != "probe_chance"]
    factors = [f[: -len("_chance")] for f in factors]
    if len(factors) > 1:
        print("probe accuracy per factor (chance): " + ", ".join(
            f"{f} {s['probe_' + f]:.2f} ({s['probe_' + f + '_chance']:.2f})" for f in factors))
    print("extended model (threshold: features stored / item, recall MSE):")
    for row in s["threshold_sweep"]:
        print(f"  {row['threshold']:<5g} {row['mean_features']:8.1f} {row['recall_mse']:.4f}")
    print(f"wrote {len(res.files)} files to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def demo_section(ctx: DemoContext) -> None:
    """Digits: Hopfield replay from noise trains a tiny VAE; extended-model threshold sweep."""
    import torch

    from mnemonix.consolidation import analysis
    from mnemonix.consolidation.data import load_digits
    from mnemonix.consolidation.extended import threshold_sweep
    from mnemonix.consolidation.teacher_student import ConsolidationConfig, run_teacher_student

    cfg = ConsolidationConfig(n_stored=500 if ctx.quick else 1200, epochs=2 if ctx.quick else 10, seed=ctx.seed)
    res = run_teacher_student(load_digits(), cfg, device=ctx.device)  # device=: issue 16, consolidation owner
    ctx.table(["epoch", "held-out MSE", "probe accuracy"],
              [[r.epoch, r.heldout_mse, r.probe_accuracy] for r in res.history])
    s = res.summary
    print(f"  replay: {s['n_replay']} noise cues -> stored items (exact {s['replay_exact_fraction']:.1%}) in "
          f"{s['replay_seconds'] * 1e3:.0f} ms; probe chance {s['probe_chance']:.3f}")
    held = res.heldout.subset(slice(0, 200))
    with torch.no_grad():
        rows = threshold_sweep(res.vae, held.images, (0.0, 0.1, 0.3, 1.0), seed=ctx.seed)
    ctx.table(["threshold", "features / item", "recall MSE"],
              [[r.threshold, r.mean_features, r.recall_mse] for r in rows])
    ctx.figures.append(analysis.plot_history(res.history, ctx.out_dir / "consolidation_training.png",
                                             chance=float(s["probe_chance"])))
    fig = analysis.latent_space_2d(res.vae, held, path=ctx.out_dir / "consolidation_latent.png").figure
    if fig is not None:
        ctx.figures.append(fig)
