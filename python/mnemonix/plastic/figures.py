"""Figures of ``mnemonix plastic eval`` and ``mnemonix plastic curriculum`` (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from mnemonix import _plotting as plotting
from mnemonix.plastic.curriculum import CurriculumResult
from mnemonix.plastic.evaluation import EvalResult

__all__ = ["plot_eval", "plot_curriculum"]


def plot_eval(result: EvalResult, path: str | Path) -> Path:
    """Held-out NLL per character against the number of names learned, one line per model."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for model, curve in result.curves.items():
        xs, ys = zip(*curve)
        ax.plot(xs, ys, marker="o", markersize=3, label=model)
    ax.set_xscale("log")
    ax.set_xlabel("names learned")
    ax.set_ylabel("test NLL (nats / character, stop included)")
    ax.set_title(f"held-out likelihood, {result.sizes['test']} test names")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curriculum(result: CurriculumResult, path: str | Path) -> Path:
    """Graph size, levels, held-out NLL and cumulative information entropy per order (2 x 2 panels)."""
    plt = plotting.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("nodes", "graph nodes", False),
        ("levels", "number of r_levels", False),
        ("test_nll", "test NLL (nats / character)", True),
        ("cumulative_bits", "cumulative information (bits)", False),
    ]
    for ax, (attr, label, log_x) in zip(axes.flat, panels):
        for trace in result.traces:
            ax.plot(trace.samples, getattr(trace, attr), label=trace.order)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("samples learned")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    last = axes.flat[3]
    total = result.traces[0].samples[-1]
    for trace in result.traces:  # the constant-rate line of each order, dotted
        last.plot([0, total], [0, trace.cumulative_bits[-1]], linestyle=":", color="grey", linewidth=0.8)
    axes.flat[0].legend()
    fig.suptitle(f"curriculum: the same {total} names in {len(result.traces)} orders")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
