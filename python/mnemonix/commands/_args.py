"""Shared argument types and checks of the CLI subcommands.

Bad values are refused while parsing (argparse ``type=`` callables raising
``ArgumentTypeError``, reported as ``argument --flag: ...``); what depends on several flags or
on the file system is checked by :func:`check_output_file` / :func:`check_output_dir` before a
command starts its work, so a bad ``--save`` never costs a whole training run.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class UsageError(ValueError):
    """A command line that cannot run as typed (exit code 2, like argparse's own errors)."""


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def finite_float(minimum: float | None = None, *, strict: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float, ``> minimum`` (``strict``) or ``>= minimum``."""
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a finite number{bound}, got {text!r}") from None
        too_small = minimum is not None and (value <= minimum if strict else value < minimum)
        if not math.isfinite(value) or too_small:
            raise argparse.ArgumentTypeError(f"must be a finite number{bound}, got {text}")
        return value

    parse.__name__ = f"finite number{bound}"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)
seed_int = int_at_least(0)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device {auto,cpu,cuda}``; ``auto`` (the default) is CUDA when available."""
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to compute (default: auto = CUDA when torch.cuda.is_available(), else the CPU)")


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``--device`` value; ``cuda`` without CUDA is a usage error."""
    import torch

    if name not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available here (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")
    return torch.device(name)


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_name_lengths(flag: str, path: Path, folder: Path) -> None:
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise UsageError(f"{flag} {str(path)!r}: the name {part[:20]!r}... is {len(os.fsencode(part))} bytes, "
                             f"longer than the {name_max} this file system allows")


def _check_writable_from(flag: str, path: Path, folder: Path) -> None:
    if not folder.is_dir():
        raise UsageError(f"{flag} {str(path)!r}: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {str(path)!r}: cannot create files in {str(folder)!r}")


def check_output_file(flag: str, path: Path | None) -> None:
    """Refuse an output file path that cannot be written, before any work is done."""
    if path is None:
        return
    path = Path(path)
    folder = _existing_ancestor(path.parent)
    _check_name_lengths(flag, path, folder)  # first: stat() of a too-long name fails
    if path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a directory; give a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{flag} {str(path)!r} is read-only")
    _check_writable_from(flag, path, folder)


def check_output_dir(flag: str, path: Path) -> None:
    """Refuse an output folder that is a file or cannot be created / written."""
    path = Path(path)
    _check_name_lengths(flag, path, _existing_ancestor(path.parent))
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} exists and is not a folder")
    folder = _existing_ancestor(path)
    _check_writable_from(flag, path, folder)


def check_input_file(flag: str, path: Path | None) -> None:
    """An input path must name an existing file (FileNotFoundError -> exit code 2).

    The errors carry only a message (no errno): the flag is part of what the user must read.
    """
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {str(path)!r} is a directory, expected a file")
    if not path.exists():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist")
