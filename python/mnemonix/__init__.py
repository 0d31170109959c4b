"""mnemonix: compiled kernels for biologically inspired memory.

Public entry points:

- :mod:`mnemonix.ops` -- the one door to every kernel (argument checks + backend dispatch).
- :mod:`mnemonix.reference` -- plain torch versions of every op (ground truth, baselines).
- :class:`MemoryStore` (:mod:`mnemonix.store`) -- exact vector memory with ids, filters,
  salience search, Hopfield retrieval and memory-mapped persistence.
- model modules (``hopfield``, ``epinet``, ``memoria``, ``plastic``, ``consolidation``)
  built on ``ops``.

Importing mnemonix never imports Triton; kernels load lazily when a Triton backend runs.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "MemoryStore"]


def __getattr__(name: str):
    # Lazy, so that ``import mnemonix`` stays light (the store pulls in safetensors).
    if name == "MemoryStore":
        from mnemonix.store import MemoryStore

        return MemoryStore
    raise AttributeError(f"module 'mnemonix' has no attribute {name!r}")
