"""The one public door to every mnemonix kernel.

Each op checks its arguments once (names, shapes, dtypes, devices, values),
then dispatches to a backend chosen by device and capability
(:mod:`mnemonix._dispatch`): Triton on CUDA tensors, a memory-bounded torch
path or a fused C++ kernel on CPU. ``backend=`` forces one; forcing
``"triton"`` on CPU tensors works under ``TRITON_INTERPRET=1``. The backends
themselves live in :mod:`mnemonix.backends`; the plain torch ground truth of
every op is :mod:`mnemonix.reference`.
"""

from __future__ import annotations

__all__: list[str] = []

# ----------------------------------------------------------------------------
# hopfield_retrieve
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------
