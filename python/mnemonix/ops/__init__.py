"""The one public door to every mnemonix kernel, a module per op.

Each op module is declared the same way (:mod:`mnemonix._dispatch`): it checks its
arguments once (names, shapes, dtypes, devices, values), builds a typed inputs record, and
calls ``dispatch(SPEC, inputs, forced)``, which picks a backend by *capability* (what each
backend of :mod:`mnemonix.backends` can run) and the op's *speed policy* (which capable one
is fastest for these inputs): Triton on CUDA tensors, a fused C++ kernel or a
memory-bounded torch path on CPU. ``backend=`` forces one; forcing ``"triton"`` on CPU
tensors works under ``TRITON_INTERPRET=1``. The plain torch ground truth of every op is
:mod:`mnemonix.reference` (used by tests and benchmarks only).

- :func:`hopfield_retrieve` (:mod:`mnemonix.ops.hopfield`)
- :func:`salience_topk`, :func:`log_salience` (:mod:`mnemonix.ops.salience`)
- :func:`lifespan_step`, :func:`compact_engrams` (:mod:`mnemonix.ops.lifespan`)
- :func:`nearest_keys` (:mod:`mnemonix.ops.nearest`)
- :func:`search_topk` (:mod:`mnemonix.ops.search`)
"""

from __future__ import annotations

from mnemonix._types import LifespanResult
from mnemonix.ops.hopfield import hopfield_retrieve
from mnemonix.ops.lifespan import compact_engrams, lifespan_step
from mnemonix.ops.nearest import nearest_keys
from mnemonix.ops.salience import log_salience, salience_topk
from mnemonix.ops.search import search_topk

__all__ = [
    "hopfield_retrieve",
    "salience_topk",
    "search_topk",
    "lifespan_step",
    "compact_engrams",
    "nearest_keys",
    "LifespanResult",
    "log_salience",
]
