"""The ``mnemonix`` command line (also ``python -m mnemonix``).

Every failure ends in one line ``error: ...`` on stderr, naming the flag or path, and a
non-zero exit status: 2 when the command line itself is wrong (a bad flag value or
combination, an input path that does not exist -- as argparse does), 1 when a well-formed
command fails while running (a corrupt file, an unwritable output, a model refusing a value).
``MNEMONIX_DEBUG=1`` also prints the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from mnemonix.commands._args import UsageError

# Subcommand modules under mnemonix.commands, in help order.
COMMANDS: tuple[str, ...] = (
    "demo",
    "epinet",
    "memoria",
    "plastic",
    "consolidate",
    "bench",
    "store",
)

#: Exceptions reported as one line with exit status 1 (anything else is a bug: traceback).
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError, MemoryError)

_EPILOG = ("exit status: 0 success, 1 the command failed while running, 2 the command line is wrong; "
           "MNEMONIX_DEBUG=1 prints tracebacks")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors reach :func:`main`'s handler instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    from mnemonix import __version__

    parser = _Parser(prog="mnemonix", description="Compiled kernels for biologically inspired memory.",
                     epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"mnemonix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"mnemonix.commands.{name}").add_parser(sub)
    return parser


def describe(exc: BaseException) -> str:
    """One line for an exception: OS errors as ``'path': reason``, others as their message."""
    if isinstance(exc, OSError) and exc.strerror:
        where = " -> ".join(repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None)
        text = f"{where}: {exc.strerror}" if where else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        text = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    return " ".join(text.split())  # one line, whatever the message held


def _fail(exc: BaseException, status: int) -> int:
    if os.environ.get("MNEMONIX_DEBUG", "") not in ("", "0"):
        traceback.print_exception(exc)
    print(f"error: {describe(exc)}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (``--help`` / ``--version`` exit via SystemExit)."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (UsageError, FileNotFoundError) as exc:  # the command line names something that cannot be
        return _fail(exc, 2)
    except RUNTIME_ERRORS as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
