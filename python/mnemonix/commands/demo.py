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

from mnemonix._table import print_table
from mnemonix.commands._args import (
    add_device_argument,
    check_input_file,
    check_output_dir,
    resolve_device,
    seed_int,
)

# (title, module under mnemonix.commands) in demo order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("Hopfield networks: classical, dense, modern on 8x8 digits", "hopfield"),
    ("Hopfield layers: attention-MIL on bags of digits (mnemonix.nn)", "nn"),
    ("EpiNet: salience top-k recall and continual learning", "epinet"),
    ("Memoria engram memory", "memoria"),
    ("Plastic prefix memory", "plastic"),
    ("Generative consolidation: Hopfield replay trains a VAE", "consolidate"),
    ("MemoryStore: ids, removal, filters, salience, save and mmap reload", "store"),
)


@dataclass
class DemoContext:
    """What every demo section gets: output folder, size, seed, device and the figure list."""

    out_dir: Path
    quick: bool = False
    seed: int = 0
    names_path: Path | None = None
    figures: list[Path] = field(default_factory=list)
    device: str = "cpu"

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        """Print an aligned text table (:func:`mnemonix._table.print_table`)."""
        print_table(header, rows)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run every model on embedded data and write figures")
    p.add_argument("--out", type=Path, default=Path("mnemonix-demo"), help="output folder")
    p.add_argument("--quick", action="store_true", help="smaller sizes (seconds)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--names", type=Path, default=None, help="names list for the plastic demo")
    p.add_argument(
        "--only", action="append", default=None, metavar="SECTION", choices=[m for _, m in SECTIONS],
        help="run only these sections (repeatable): " + ", ".join(m for _, m in SECTIONS),
    )
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    check_input_file("--names", args.names)
    check_output_dir("--out", args.out)
    ctx = DemoContext(out_dir=args.out, quick=args.quick, seed=args.seed, names_path=args.names,
                      device=str(device))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only) if args.only else None
    print(f"device: {device}")
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
