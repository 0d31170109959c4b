"""One way to get matplotlib's pyplot for the figures: headless (Agg) unless pyplot is in use."""

from __future__ import annotations

import sys
from types import ModuleType

_EXTRA = "pip install 'mnemonix[demo]'  (or: pip install matplotlib)"


def pyplot() -> ModuleType:
    """``matplotlib.pyplot``, with the Agg backend selected once.

    Agg is selected only if pyplot has not been imported yet: a session that already chose a
    backend (a notebook, a GUI) keeps it; figures are written with ``savefig`` either way.

    Raises
    ------
    ImportError
        matplotlib is not installed (it is an optional extra), naming what to install.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(f"figures need matplotlib, which is not installed: {_EXTRA}") from exc
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def available() -> bool:
    """Whether matplotlib can be imported (optional figures are skipped without it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
