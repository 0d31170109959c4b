"""Triton availability, checked lazily so that ``import mnemonix`` never needs Triton.

Triton picks between compiling and interpreting when a kernel is *decorated*
(``TRITON_INTERPRET=1`` read at import of the kernel module), so the kernel
modules in ``mnemonix.kernels`` are imported only through :func:`load_kernels`.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType


@functools.lru_cache(maxsize=1)
def triton_version() -> str | None:
    """Installed Triton version, or None when Triton does not import."""
    try:
        import triton
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return str(getattr(triton, "__version__", "unknown"))


def interpret_mode() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors (slowly)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def load_kernels(name: str) -> ModuleType:
    """Import ``mnemonix.kernels.<name>``; raises ImportError with the reason when it cannot."""
    if triton_version() is None:
        raise ImportError("Triton is not installed (pip install 'mnemonix[gpu]')")
    return importlib.import_module(f"mnemonix.kernels.{name}")
