"""``mnemonix epinet``: Split-digits (or local MNIST) continual learning with and without episodic memory."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from mnemonix import _plotting as plotting
from mnemonix._io import atomic_write_bytes
from mnemonix._table import print_table
from mnemonix.commands._args import (
    UsageError,
    add_device_argument,
    check_output_file,
    finite_float,
    positive_int,
    resolve_device,
    seed_int,
)

# flag (argparse dest) -> TrainConfig field; unset flags keep TrainConfig's default.
_CONFIG_FIELDS: dict[str, str] = {
    "epochs": "epochs_per_task", "batch_size": "batch_size", "lr": "lr", "beta": "beta",
    "capacity": "memory_capacity", "top_k": "top_k", "alpha": "alpha", "store_per_step": "store_per_step",
    "latent_dim": "latent_dim", "seed": "seed",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    # No model import here: building the parser (mnemonix --help) must not import torch.
    p = sub.add_parser(
        "epinet",
        help="continual learning with a salience-decayed episodic memory (forgetting table)",
        description="Train EpiNet on digits {0..4} then {5..9} (scikit-learn's bundled 8x8 digits by default, "
        "or MNIST from local IDX files with --mnist) and print accuracy on every task after each task, "
        "with and without the episodic memory. Unset numbers keep mnemonix.epinet.TrainConfig's defaults.",
    )
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs per task")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=finite_float(0.0, strict=True), default=None, help="learning rate (> 0)")
    p.add_argument("--beta", type=finite_float(0.0), default=None, help="weight of the replay loss (>= 0)")
    p.add_argument("--capacity", type=positive_int, default=None, help="episodic memory capacity")
    p.add_argument("--top-k", type=positive_int, default=None, help="memories recalled per query")
    p.add_argument("--alpha", type=finite_float(0.0), default=None, help="salience decay per training step (>= 0)")
    p.add_argument("--store-per-step", type=positive_int, default=None, help="samples memorised per step")
    p.add_argument("--latent-dim", type=positive_int, default=None)
    p.add_argument("--seed", type=seed_int, default=None)
    p.add_argument("--mnist", type=Path, default=None, metavar="PATH",
                   help="folder with MNIST IDX files (never downloaded)")
    p.add_argument("--only", choices=["memory", "no_memory"], default=None, help="train one variant only")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnemonix.epinet import TrainConfig, load_digits_tasks, load_mnist_tasks, train_split

    device = resolve_device(args.device)
    cfg = replace(TrainConfig(), **{field: getattr(args, flag) for flag, field in _CONFIG_FIELDS.items()
                                    if getattr(args, flag) is not None})
    if cfg.top_k > cfg.memory_capacity:
        raise UsageError(f"--top-k ({cfg.top_k}) must be <= --capacity ({cfg.memory_capacity})")
    if args.mnist is not None and not args.mnist.is_dir():
        raise FileNotFoundError(f"--mnist {str(args.mnist)!r} is not a folder")
    check_output_file("--json", args.json)
    data = load_mnist_tasks(args.mnist) if args.mnist is not None else load_digits_tasks(cfg.seed)
    print(f"data: {'MNIST ' + str(args.mnist) if args.mnist else 'scikit-learn digits (8x8)'}, "
          f"{len(data[1])} train / {len(data[3])} test; tasks {[list(t) for t in cfg.tasks]}; device {device}")
    variants = (args.only,) if args.only else ("memory", "no_memory")
    # device=: the parameter the EpiNet owner adds to train_split (issue 16).
    result = train_split(cfg, data=data, progress=not args.no_progress, variants=variants, device=device)
    print("accuracy on each task's test split after training on each task:")
    print_table(*result.table())
    if args.json is not None:
        atomic_write_bytes(args.json, (json.dumps(result.as_dict(), indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    return 0


def demo_section(ctx) -> None:
    """Forgetting table on Split-digits, and recall at alpha*dt = 1000 (float32 salience vs log space)."""
    import torch

    from mnemonix import ops
    from mnemonix.epinet import TrainConfig, train_split

    # 1. Log-space salience: the notebook's float32 recall is 0 once alpha * (now - tau) > ~100.
    g = torch.Generator().manual_seed(ctx.seed)
    keys = torch.randn(1000, 16, generator=g)
    payloads = torch.randn(1000, 16, generator=g)
    query = keys[:4] + 0.1 * torch.randn(4, 16, generator=g)
    r0 = torch.rand(1000, generator=g) + 0.5
    tau = torch.zeros(1000, dtype=torch.float64)
    rows = []
    first: dict[str, torch.Tensor] = {}
    for dt in (1.0, 30.0, 1000.0):
        sal32 = r0 * torch.exp(torch.tensor(-dt, dtype=torch.float32))
        cos = torch.nn.functional.cosine_similarity(query[:, None], keys[None], dim=-1)
        top = torch.topk(cos * sal32, 5, dim=1).indices
        w = sal32[top] / (sal32[top].sum(1, keepdim=True) + 1e-8)
        notebook = (w.unsqueeze(-1) * payloads[top]).sum(1)
        ours, idx, _, _ = ops.salience_topk(query, keys, payloads, k=5, r0=r0, tau=tau, alpha=1.0, now=dt)
        first.setdefault("notebook", top)
        first.setdefault("ours", idx)
        rows.append([dt, float(notebook.norm(dim=1).mean()), float(ours.norm(dim=1).mean()),
                     bool(torch.equal(top, first["notebook"])), bool(torch.equal(idx, first["ours"]))])
    # Every memory has the same age, so neither the top 5 nor the recall should change with dt.
    ctx.table(["alpha*dt", "notebook |recall|", "mnemonix |recall|", "notebook top-5 = at dt=1",
               "mnemonix top-5 = at dt=1"], rows)

    # 2. Continual learning: forgetting table with and without the episodic memory.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(epochs_per_task=3 if ctx.quick else 5, seed=ctx.seed,
                          latent_dim=32 if ctx.quick else 64, hidden_dim=64 if ctx.quick else 128)
        result = train_split(cfg, progress=False, device=ctx.device)
    finally:
        torch.set_num_threads(threads)
    print("  Split-digits: accuracy per task after each task")
    ctx.table(*result.table())
    if not plotting.available():  # figures are optional in the demo
        return
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    for variant, per_stage in result.accuracy.items():
        ax.plot(range(len(per_stage)), [a[0] for a in per_stage], marker="o", label=f"task 0, {variant}")
    ax.set_xlabel("after task")
    ax.set_ylabel("accuracy on task 0")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    path = ctx.out_dir / "epinet_forgetting.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    ctx.figures.append(path)
