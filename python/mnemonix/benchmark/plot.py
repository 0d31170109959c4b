"""``mnemonix bench plot``: one PNG per op, time and % of floor over the runs of the history."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from mnemonix.benchmark import history

MAX_PANELS = 12


def plot_history(rows: list[dict[str, Any]], out_dir: str | os.PathLike[str], *,
                 device_name: str | None = None) -> list[Path]:
    """Write ``<op>.png`` per op: a panel per shape, a line per backend (median) with its
    p20-p80 band over the runs, and the floor as % of the automatic choice's median."""
    from mnemonix._plotting import pyplot

    plt = pyplot()
    rows = [r for r in rows if r.get("p50") is not None]
    if device_name is None and rows:
        device_name = rows[-1].get("device_name")
    rows = [r for r in rows if r.get("device_name") == device_name]
    order = history.runs(rows)
    labels = {}
    for r in rows:
        labels.setdefault(r["run_id"], str(r.get("commit", r["run_id"]))[:12])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    by_op: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_op[r["op"]].append(r)
    for op, op_rows in sorted(by_op.items()):
        panels = _panels(op_rows)
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
        for ax, (shape_label, shape_rows) in zip(axes[:, 0], panels):
            _draw(ax, shape_label, shape_rows, order, labels)
        fig.suptitle(f"{op} on {device_name}")
        fig.tight_layout()
        path = out / f"{op}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _panels(op_rows):
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in op_rows:
        dims = " ".join(f"{k}={v}" for k, v in (r.get("shape") or {}).items())
        groups[f"{dims} {r.get('dtype', '')}"].append(r)
    return list(groups.items())[:MAX_PANELS]


def _draw(ax, title, shape_rows, order, labels):
    by_backend: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in shape_rows:
        by_backend[r["backend"]].append(r)
    for backend, rs in sorted(by_backend.items()):
        rs = sorted(rs, key=lambda r: order.index(r["run_id"]))
        x = [order.index(r["run_id"]) for r in rs]
        p50 = [r["p50"] * 1e3 for r in rs]
        ax.plot(x, p50, marker="o", label=backend, linestyle="--" if backend.startswith("peer:") else "-")
        ax.fill_between(x, [r["p20"] * 1e3 for r in rs], [r["p80"] * 1e3 for r in rs], alpha=0.2)
    auto = sorted((r for r in by_backend.get("auto", []) if r.get("floor_s")), key=lambda r: order.index(r["run_id"]))
    if auto:
        twin = ax.twinx()
        twin.plot([order.index(r["run_id"]) for r in auto], [100 * r["floor_s"] / r["p50"] for r in auto],
                  color="black", alpha=0.4, linewidth=1, marker="x")
        twin.set_ylabel("auto: % of floor", fontsize=7)
        twin.set_ylim(0, 105)
    ax.set_title(title, fontsize=8)
    ax.set_ylabel("ms (p50, p20-p80)", fontsize=7)
    ax.set_yscale("log")
    used = sorted({order.index(r["run_id"]) for r in shape_rows})
    ax.set_xticks(used, [labels[order[i]] for i in used], fontsize=6, rotation=30)
    ax.legend(fontsize=6, loc="upper left")
