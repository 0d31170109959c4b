"""``mnemonix bench``: one way to measure every op against its peers and its physical floor.

- :mod:`.timing` -- repetitions interleaved across candidates, percentiles, CUDA events,
  an L2 flush between GPU repetitions, warm-up by time;
- :mod:`.environment` -- device name, versions, commit, clocks of a run;
- :mod:`.floors` -- the measured memory bandwidth and GEMM rate (the floor of a shape is the
  larger of one read of its bytes and its flops at the GEMM rate);
- :mod:`.suites` -- the cases of each suite (``smoke``, ``quick``, ``full``, ``gpu``), an op
  with its backends and baselines at given shapes, correctness checked in the same run;
- :mod:`.history` -- the append-only JSON-lines history, one line per measured candidate;
- :mod:`.gate` -- the noise-aware regression gate (``mnemonix bench compare``);
- :mod:`.plot` -- one PNG per op over commits.
"""

from __future__ import annotations

__all__: list[str] = []
