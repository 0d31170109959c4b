"""The ``mnemonix`` command line (also ``python -m mnemonix``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand modules under mnemonix.commands, in help order.
COMMANDS: tuple[str, ...] = (
    "demo",
    "epinet",
    "memoria",
    "plastic",
    "consolidate",
    "store",
)


def build_parser() -> argparse.ArgumentParser:
    from mnemonix import __version__

    parser = argparse.ArgumentParser(
        prog="mnemonix",
        description="Compiled kernels for biologically inspired memory.",
    )
    parser.add_argument("--version", action="version", version=f"mnemonix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"mnemonix.commands.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"mnemonix {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
