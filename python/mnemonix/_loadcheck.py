"""Validation of what a loader read: every field checked, a bad one named in a FormatError.

A checksum proves a file is the one that was written; it does not prove that what was
written makes sense (an older writer, a hand-edited header whose checksum was recomputed, a
file of another program). Loaders therefore check the semantic invariants of every field
they use -- kind, shape, dtype, range, finiteness -- before building any state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mnemonix._io import FormatError


def array(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], name: str, *,
          ndim: int | None = None, dtypes: Sequence[str] | None = None, finite: bool = False,
          shape: Sequence[int | None] | None = None) -> np.ndarray:
    """The array ``name`` of a loaded file, checked; raises FormatError naming file and field."""
    if name not in arrays:
        raise FormatError(f"{str(path)!r}: field {name!r} is missing")
    arr = arrays[name]
    if ndim is not None and arr.ndim != ndim:
        raise FormatError(f"{str(path)!r}: field {name!r} must have {ndim} dimensions, got shape {arr.shape}")
    if shape is not None and any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        raise FormatError(f"{str(path)!r}: field {name!r} must have shape {tuple(shape)}, got {arr.shape}")
    if dtypes is not None and str(arr.dtype) not in dtypes:
        raise FormatError(f"{str(path)!r}: field {name!r} must have dtype in {list(dtypes)}, got {arr.dtype}")
    if finite and arr.dtype.kind == "f" and not bool(np.isfinite(arr).all()):
        raise FormatError(f"{str(path)!r}: field {name!r} holds NaN or Inf values")
    return arr


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_KINDS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
}


def meta(path: str | os.PathLike[str], values: Mapping[str, Any], name: str, kind: str, *,
         check: Callable[[Any], bool] | None = None, expected: str = "", default: Any = ...) -> Any:
    """The metadata value ``name`` of kind int / float / str / bool, checked.

    ``check`` is an extra predicate described by ``expected`` (e.g. ``"> 0"``); ``default``
    (when given) is used for a missing key (fields added by later format versions).
    """
    if not isinstance(values, Mapping):
        raise FormatError(f"{str(path)!r}: the metadata must be a mapping, got {type(values).__name__}")
    if name not in values:
        if default is not ...:
            return default
        raise FormatError(f"{str(path)!r}: metadata field {name!r} is missing")
    value = values[name]
    if not _KINDS[kind](value) or (check is not None and not check(value)):
        want = f"a finite {kind}" if kind == "float" else f"a {kind}"
        raise FormatError(f"{str(path)!r}: metadata field {name!r} must be {want}{' ' + expected if expected else ''}, "
                          f"got {value!r}")
    return float(value) if kind == "float" else value


def choice(path: str | os.PathLike[str], values: Mapping[str, Any], name: str, options: Sequence[str],
           default: Any = ...) -> str:
    """A string metadata value that must be one of ``options``."""
    return meta(path, values, name, "str", check=lambda v: v in options, expected=f"in {list(options)}",
                default=default)


def device(requested: Any, saved: Any) -> Any:
    """Where a loaded model goes: ``requested`` when given (checked: a device that exists here and
    holds data, else a TypeError / ValueError naming ``device``), else the device type it was
    saved from (``"cuda"`` / ``"cpu"``) when that is available here, else the CPU."""
    import torch

    if requested is not None:
        from mnemonix import _checks

        return _checks.device("device", requested)
    if saved == "cuda":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cpu")
