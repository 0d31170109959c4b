"""``mnemonix demo``: every model on embedded data, no download.

Each model contributes a section: a function ``demo_section(ctx)`` in its
command module, listed in :data:`SECTIONS`. A section prints a short table and
may write figures into ``ctx.out_dir``.
"""

from __future__ import annotations

import argparse
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

# (title, module under mnemonix.commands) in demo order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("Hopfield networks: classical, dense, modern on 8x8 digits", "hopfield"),
    ("Hopfield layers: attention-MIL on bags of digits (mnemonix.nn)", "nn"),
    ("EpiNet: salience top-k recall and continual learning", "epinet"),
    ("Memoria engram memory", "memoria"),
    ("Plastic prefix memory", "plastic"),
    ("Generative consolidation: Hopfield replay trains a VAE", "consolidate"),
)


@dataclass
class DemoContext:
    out_dir: Path
    quick: bool = False
    seed: int = 0
    names_path: Path | None = None
    figures: list[Path] = field(default_factory=list)

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        """Print an aligned text table."""
        cells = [header] + [[_fmt(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        for i, row in enumerate(cells):
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
            if i == 0:
                print("  " + "  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    return str(value)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run every model on embedded data and write figures")
    p.add_argument("--out", type=Path, default=Path("mnemonix-demo"), help="output folder")
    p.add_argument("--quick", action="store_true", help="smaller sizes (seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--names", type=Path, default=None, help="names list for the plastic demo")
    p.add_argument(
        "--only", action="append", default=None, metavar="SECTION",
        help="run only these sections (repeatable): " + ", ".join(m for _, m in SECTIONS),
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = DemoContext(out_dir=args.out, quick=args.quick, seed=args.seed, names_path=args.names)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only) if args.only else None
    unknown = (wanted or set()) - {m for _, m in SECTIONS}
    if unknown:
        raise ValueError(f"--only must name sections among {[m for _, m in SECTIONS]}, got {sorted(unknown)}")
    for title, module in SECTIONS:
        if wanted is not None and module not in wanted:
            continue
        print(f"\n== {title} ==")
        t0 = time.perf_counter()
        importlib.import_module(f"mnemonix.commands.{module}").demo_section(ctx)
        print(f"  ({time.perf_counter() - t0:.1f} s)")
    if ctx.figures:
        print("\nfigures:")
        for path in ctx.figures:
            print(f"  {path}")
    return 0
