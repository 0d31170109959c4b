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


def plain_cpu_tensor(t: object, ndim: int, dtypes: torch.dtype | frozenset[torch.dtype]) -> bool:
    """A CPU tensor of the plain Tensor type (no subclass), strided, with ``ndim`` dimensions and
    ``dtypes`` (one dtype, or a set of them): what a fast path hands to a C++ kernel as is."""
    if type(t) is not torch.Tensor or t.dim() != ndim or not t.is_cpu or t.layout is not torch.strided:
        return False
    return t.dtype is dtypes if isinstance(dtypes, torch.dtype) else t.dtype in dtypes


def no_mode() -> bool:
    """Eager torch with nothing between the caller and the tensors' data: not compiling or
    exporting, no torch function mode (the fake CUDA device), dispatch mode (fake tensors) or
    functorch transform (vmap, grad). The first test of every op's fast path."""
    return not (_function_mode() or _compiling() or _exporting() or _dispatch_modes()
                or _transforms() is not None)


# no_mode's checks bound once: each module attribute read costs ~0.5 us right after a kernel
# that evicted the caches (the same function objects: dynamo still recognises is_compiling)
_function_mode = torch._C._is_torch_function_mode_enabled
_compiling = torch.compiler.is_compiling
_exporting = torch.compiler.is_exporting
_dispatch_modes = torch._C._len_torch_dispatch_stack
_transforms = torch._C._functorch.peek_interpreter_stack


def no_grad_wanted(tensors: tuple[torch.Tensor | None, ...]) -> bool:
    """No tensor needs a gradient now (a fast path's results carry no autograd history). A plain
    loop: ``any`` over a generator cost ~1 us more per call of a fast path."""
    if not torch.is_grad_enabled():
        return True
    for t in tensors:
        if t is not None and t.requires_grad:
            return False
    return True
