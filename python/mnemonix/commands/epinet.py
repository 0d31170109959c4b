"""``mnemonix epinet``: Split-digits (or local MNIST) continual learning with and without episodic memory."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    from mnemonix.epinet import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "epinet",
        help="continual learning with a salience-decayed episodic memory (forgetting table)",
        description="Train EpiNet on digits {0..4} then {5..9} (scikit-learn's bundled 8x8 digits by default, "
        "or MNIST from local IDX files with --mnist) and print accuracy on every task after each task, "
        "with and without the episodic memory.",
    )
    p.add_argument("--epochs", type=int, default=d.epochs_per_task, help="epochs per task")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--beta", type=float, default=d.beta, help="weight of the replay loss")
    p.add_argument("--capacity", type=int, default=d.memory_capacity, help="episodic memory capacity")
    p.add_argument("--top-k", type=int, default=d.top_k, help="memories recalled per query")
    p.add_argument("--alpha", type=float, default=d.alpha, help="salience decay per training step")
    p.add_argument("--store-per-step", type=int, default=d.store_per_step, help="samples memorised per step")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--mnist", type=Path, default=None, metavar="PATH",
                   help="folder with MNIST IDX files (never downloaded)")
    p.add_argument("--only", choices=["memory", "no_memory"], default=None, help="train one variant only")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _print_table(header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def run(args: argparse.Namespace) -> int:
    from mnemonix.epinet import TrainConfig, load_digits_tasks, load_mnist_tasks, train_split

    cfg = replace(
        TrainConfig(), epochs_per_task=args.epochs, batch_size=args.batch_size, lr=args.lr, beta=args.beta,
        memory_capacity=args.capacity, top_k=args.top_k, alpha=args.alpha, store_per_step=args.store_per_step,
        latent_dim=args.latent_dim, seed=args.seed,
    )
    for name in ("epochs_per_task", "batch_size", "memory_capacity", "top_k", "latent_dim"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    data = load_mnist_tasks(args.mnist) if args.mnist is not None else load_digits_tasks(cfg.seed)
    print(f"data: {'MNIST ' + str(args.mnist) if args.mnist else 'scikit-learn digits (8x8)'}, "
          f"{len(data[1])} train / {len(data[3])} test; tasks {[list(t) for t in cfg.tasks]}")
    variants = (args.only,) if args.only else ("memory", "no_memory")
    result = train_split(cfg, data=data, progress=not args.no_progress, variants=variants)
    print("accuracy on each task's test split after training on each task:")
    _print_table(*result.table())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def demo_section(ctx) -> None:
    """Forgetting table on Split-digits, and recall at alpha*dt = 1000 (float32 salience vs log space)."""
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
        result = train_split(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    print("  Split-digits: accuracy per task after each task")
    ctx.table(*result.table())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
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
