"""Helpers of the fast-path tests: switch an op's fast path off, or record what it answered.

Each op's fast path is one module function (``ops._hopfield_fast.cpu_fast_retrieve``, ...) that
returns None to decline; patching it shows the general path alone, or spies on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from unittest import mock


@contextmanager
def general_path_only(module: ModuleType, name: str) -> Iterator[None]:
    """The op runs its general path: ``module.name`` declines every call."""
    with mock.patch.object(module, name, lambda *a, **k: None):
        yield


@contextmanager
def counting_fast_calls(module: ModuleType, name: str) -> Iterator[list[bool]]:
    """Record, per call, whether ``module.name`` answered (returned something other than None)."""
    real, answered = getattr(module, name), []

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        answered.append(out is not None)
        return out

    with mock.patch.object(module, name, spy):
        yield answered
