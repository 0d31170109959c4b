"""Memoria engram memory, drop-in for memoria-pytorch 1.1.0, with a sparse co-fire graph.

Memoria (Park & Bak, "Memoria: Resolving Fateful Forgetting Problem through Human-Inspired
Memory Architecture", ICML 2024, arXiv:2310.03052) keeps engrams in working, short-term and
long-term memory, reminds short-term engrams by distance to the working memory, walks
long-term engrams along co-fire ("fire together, wire together") counts, and ages engrams
by a lifespan.

The package mirrors memoria-pytorch's modules and public names, so code written for it
runs unchanged, either through ``from mnemonix.memoria import Memoria, EngramType`` or,
unmodified, through an alias of the ``memoria`` package::

    import mnemonix.memoria
    mnemonix.memoria.install_alias()   # now ``import memoria`` / ``from memoria.engram import ...`` load mnemonix

============================  =================================================
``memoria.engram``            :class:`Engrams`, :class:`EngramType`
``memoria.memoria``           :class:`Memoria`
``memoria.history_manager``   :class:`HistoryManager`
``memoria.types``             EngramConnection, EngramInfo, EngramsInfo, Firing, EngramHistory
``memoria.utils``             :func:`super_unique` (and mnemonix's layout helpers)
``memoria.abstractor``        :class:`Abstractor`
``memoria.sparse_tensor``     :class:`SparseTensor`
============================  =================================================

What differs inside (``docs/memoria.md``): co-fire counts are a sparse graph in C++
(``Engrams.induce_counts`` is a dense view with write-back, O(M^2) per access); the
per-engram bookkeeping is one fused :func:`mnemonix.ops.lifespan_step`; distances rank
engrams through :func:`mnemonix.ops.nearest_keys` (GEMM, certified against the original's
float32 arithmetic); random tie-breaks take a ``generator`` and reproduce the original's
stream by default (``tie_break="original"``); quirks of the original are kept by default,
each with a ``fix_*`` option.
"""

from __future__ import annotations

import sys
from types import ModuleType

from mnemonix._types import EngramType
from mnemonix.memoria import utils
from mnemonix.memoria.abstractor import Abstractor
from mnemonix.memoria.engram import Engrams
from mnemonix.memoria.history_manager import HistoryManager
from mnemonix.memoria.memoria import Memoria
from mnemonix.memoria.sparse_tensor import SparseTensor
from mnemonix.memoria.types import EngramConnection, EngramHistory, EngramInfo, EngramsInfo, Firing

__all__ = [
    "utils",
    "Abstractor",
    "Engrams",
    "EngramType",
    "HistoryManager",
    "Memoria",
    "SparseTensor",
    "EngramConnection",
    "EngramHistory",
    "EngramInfo",
    "EngramsInfo",
    "Firing",
    "install_alias",
]
__version__ = "1.0.0"  # the value memoria-pytorch 1.1.0 reports as its __version__

SUBMODULES = ("abstractor", "engram", "history_manager", "memoria", "sparse_tensor", "types", "utils")


def install_alias(name: str = "memoria", *, replace: bool = False) -> ModuleType:
    """Make ``import memoria`` (and its submodules) load mnemonix's Memoria: one ``sys.modules`` entry each.

    Parameters
    ----------
    name : str
        The package name to alias (default ``"memoria"``).
    replace : bool
        Replace a *different* module already imported under that name (e.g. the real
        memoria-pytorch). Default False: refuse with a ValueError.

    Returns
    -------
    The ``mnemonix.memoria`` package.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Python identifier, got {name!r}")
    package = sys.modules[__name__]
    present = sys.modules.get(name)
    if present is not None and present is not package and not replace:
        raise ValueError(f"a module {name!r} is already imported ({getattr(present, '__file__', present)!r}); "
                         f"pass replace=True to replace it")
    sys.modules[name] = package
    for sub in SUBMODULES:
        sys.modules[f"{name}.{sub}"] = sys.modules[f"{__name__}.{sub}"]
    return package
