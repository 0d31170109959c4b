"""Plain, readable torch versions of every op: the ground truth of the tests
and the baseline of the benchmarks. Never optimise this file: clarity is its
only job. Inputs are upcast to float32 (float64 where stated) and the math is
written as in the papers.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------
# hopfield_retrieve
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# salience_topk
# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# lifespan_step
# ----------------------------------------------------------------------------
