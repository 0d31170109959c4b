"""The error table of docs/architecture.md ("One error table"), checked over every public entry.

The fuzz suite (``tests/fuzz/``) registers every public op and every public model constructor
and method as a :class:`~tests.fuzz.harness.Target` with a bad-value strategy per argument, and
proves that only a TypeError / ValueError naming the argument escapes, state unchanged. This
file checks the table's finer promise on the same registries: *which* class each kind of wrong
value raises.

=========================================================  ===================================
what is wrong                                              exception (message names the arg)
=========================================================  ===================================
an argument of the wrong Python type (a list for a         TypeError
tensor, a float or a str for an int, a str for a flag)
a tensor of the wrong dtype (complex, bool, float indices)  TypeError
a wrong value: out of range, NaN/Inf, a string that is     ValueError
not one of the choices, a path that is empty or has a NUL
a wrong shape or rank, mismatched sizes, an empty axis     ValueError
a tensor on the ``meta`` device, a device that is absent   ValueError
a path that does not exist / is a folder                   FileNotFoundError / IsADirectoryError
=========================================================  ===================================

Files (``FormatError``) are checked by ``tests/fuzz/test_files.py``, the CLI by
``tests/test_cli_errors.py``, ``_core`` errors by ``tests/test_core_errors.py``.
"""

from __future__ import annotations

import inspect
import os
import re

import pytest
import torch
from fuzz.harness import Target  # tests/ is on sys.path (rootdir-relative imports)
from fuzz.test_arguments import TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix import ops

BY_NAME = {t.name: t for t in TARGETS}

# Arguments whose good value is None (optional): the kind of value they take when given.
_OPTIONAL_KIND = {
    "values": "tensor", "mask": "tensor", "bias": "tensor", "key_norms": "tensor", "valid": "tensor",
    "index": "tensor", "backend": "choice", "recall_backend": "choice", "device": "device",
    "max_iter": "int", "batch_size": "int", "payload_dim": "int", "now": "float", "generator": "generator",
}
# None is these arguments' default, "not given": leaving out one of a group that goes together (r0, tau,
# alpha, now) is a wrong combination of values, a ValueError that names the missing ones.
_NONE_MEANS_ABSENT = {("salience_topk(r0, tau)", name) for name in ("r0", "tau", "alpha", "now")}
# numbers that may also be given as tensors (one inverse temperature per head)
_TENSOR_OK = {("hopfield_retrieve", "beta")}
_NOT_A_NUMBER = (str, bytes, list, tuple, dict, set, complex, torch.Tensor, type(None))


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "int"


def _kind(target: Target, arg: str) -> str | None:
    good = target.good[arg]
    if arg == "device":
        return "device"
    if good is None:
        return _OPTIONAL_KIND.get(arg)
    if isinstance(good, torch.Tensor):
        return "tensor"
    if isinstance(good, bool):
        return "flag"
    if isinstance(good, int):
        return "int"
    if isinstance(good, float):
        return "float"
    if isinstance(good, str):
        return "str"
    return None  # configs, tuples, objects: only the fuzz contract (TypeError or ValueError, named)


# the tags of harness.bad_tensor that are wrong values of a valid type (rank, shape, NaN/Inf, ...)
_TENSOR_VALUE_TAG = re.compile(r"(rank[-+0]1?|rank0|empty:\d+|size:\d+|meta|-?(nan|inf)@\d+)$")


def _expected_tensor(good: torch.Tensor | None, tag: str, value: object) -> type[BaseException] | None:
    if not isinstance(value, torch.Tensor):
        # a non-tensor of bad_tensor; other non-tensors (a number where a scalar broadcasts) are not classified
        return TypeError if tag.startswith("type:") else None
    if value.is_meta:
        return ValueError
    if tag.startswith("dtype:"):
        return TypeError
    if good is None:  # only bad_tensor's own tags are known to be wrong values of a valid dtype
        return ValueError if _TENSOR_VALUE_TAG.match(tag) else None
    if _dtype_kind(value.dtype) != _dtype_kind(good.dtype):
        return TypeError  # e.g. float indices, a bool tensor for a float one
    return ValueError if value.dtype == good.dtype else None  # rank, shape, empty axis, NaN/Inf, range


def _expected_number(kind: str, value: object) -> type[BaseException] | None:
    if isinstance(value, bool) or isinstance(value, _NOT_A_NUMBER) or not isinstance(value, (int, float)):
        return TypeError
    if kind == "int" and isinstance(value, float):
        return TypeError  # a float for an int, even 2.0
    return ValueError


def expected(target: Target, arg: str, tag: str, value: object) -> type[BaseException] | None:
    """The class the error table promises for ``value`` at ``arg`` of ``target`` (None: not classified)."""
    kind = _kind(target, arg)
    if value is None and (target.name, arg) in _NONE_MEANS_ABSENT:
        return None
    if isinstance(value, torch.Tensor) and (target.name, arg) in _TENSOR_OK:
        return None  # a tensor is a valid type there: its shape decides (a ValueError)
    if kind == "tensor":
        return _expected_tensor(target.good[arg], tag, value)
    if kind == "flag":
        return TypeError  # anything but True / False
    if kind in ("int", "float"):
        return _expected_number(kind, value)
    if kind == "generator":
        return TypeError
    if kind in ("str", "choice"):
        if tag in ("missing", "folder"):
            return FileNotFoundError if tag == "missing" else IsADirectoryError
        return ValueError if isinstance(value, (str, os.PathLike)) else TypeError
    if kind == "device":
        return ValueError if isinstance(value, (str, torch.device)) else TypeError
    return None


CASES = [pytest.param(t.name, arg, id=f"{t.name}-{arg}") for t in TARGETS for arg in t.bad if _kind(t, arg)]


@pytest.mark.parametrize("name,arg", CASES)
@settings(max_examples=6, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_error_class_follows_the_table(name: str, arg: str, data: st.DataObject) -> None:
    target = BY_NAME[name]
    tag, value = data.draw(target.bad[arg], label=arg)
    want = expected(target, arg, tag, value)
    if want is None:
        return
    with pytest.raises(Exception) as info:
        target.call(target.make(), **{**target.good, arg: value})
    exc = info.value
    what = f"{name}({arg}=<{tag}>)"
    assert isinstance(exc, want), f"{what}: the table says {want.__name__}, got {type(exc).__name__}: {exc}"
    word = target.names.get(arg, arg)
    assert word in str(exc) or (want in (FileNotFoundError, IsADirectoryError) and str(value) in str(exc)), (
        f"{what}: the message does not name {word!r}: {exc}")


def test_every_public_op_is_in_the_table() -> None:
    """Each callable of ``mnemonix.ops.__all__`` has a fuzz target (so the table covers it)."""
    ops_names = [n for n in ops.__all__ if inspect.isfunction(getattr(ops, n))]
    covered = {t.name.split("(")[0] for t in TARGETS}
    assert sorted(set(ops_names) - covered) == []


def test_the_classifier_covers_most_arguments() -> None:
    """Guard against a registry change that silently turns the table test into a no-op."""
    pairs = [(t.name, arg) for t in TARGETS for arg in t.bad]
    assert len(CASES) >= 0.85 * len(pairs), (len(CASES), len(pairs))
