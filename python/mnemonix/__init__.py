"""mnemonix: compiled kernels for biologically inspired memory.

Public entry points:

- :mod:`mnemonix.ops` -- the one door to every kernel (argument checks + backend dispatch).
- :mod:`mnemonix.reference` -- plain torch versions of every op (ground truth, baselines).
- model modules (``hopfield``, ``epinet``, ``memoria``, ``plastic``, ``consolidation``)
  built on ``ops``.

Importing mnemonix never imports Triton; kernels load lazily when a Triton backend runs.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
