"""Backends of each op, one module per op (``hopfield``, ``salience``, ``lifespan``).

Each backend is a small function plus a :class:`mnemonix._dispatch.Backend`
declaration of what it supports; :mod:`mnemonix.ops` picks among them.
"""

from __future__ import annotations

import functools
from types import ModuleType

import numpy as np
import torch


@functools.cache
def core_engine(name: str) -> ModuleType | None:
    """The compiled engine ``mnemonix._core.<name>`` (``retrieval``, ``search``, ``lifespan``), or None
    when the extension is not built: imported once per process."""
    try:
        from mnemonix import _core
    except ImportError:
        return None
    return getattr(_core, name, None)


def numpy_view(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor's data as a numpy array for the C++ kernels (a view: detached only when the
    tensor requires grad, which ``.numpy()`` refuses; non-contiguous data is made contiguous by
    the binding, once)."""
    return (t.detach() if t.requires_grad else t).numpy()
