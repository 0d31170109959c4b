"""EpiNet: a classifier with a salience-decayed episodic memory (seeds/002).

An encoder maps an input to a latent ``z``; the episodic memory stores past
latents with an initial salience ``r0`` (here: the sample's loss when it was
seen) and a store time ``tau``; salience decays as
``s = r0 * exp(-alpha * (now - tau))``. A query recalls the k memories with
the largest ``cos(z, c_m) * s_m`` (:func:`mnemonix.ops.salience_topk`) and
their salience-weighted mean; a mixture-of-experts decoder classifies
``[z; recall]``. Training on a sequence of tasks replays stored inputs with
weight ``beta`` (continual learning).

Modules, one job each:

- :mod:`~mnemonix.epinet.clock` -- :class:`SalienceClock` (time source, decay rate)
- :mod:`~mnemonix.epinet.memory` -- :class:`EpisodicMemory`; its input checks in
  :mod:`~mnemonix.epinet.batch`, the vectorised admission rule in
  :mod:`~mnemonix.epinet.admission`, save/load in :mod:`~mnemonix.epinet.persist`
- :mod:`~mnemonix.epinet.recall` -- :class:`RecallEngine`
- :mod:`~mnemonix.epinet.model` -- :class:`Encoder`, :class:`MoEDecoder`, :class:`EpiNet`
- :mod:`~mnemonix.epinet.training` -- :class:`TrainConfig`, :class:`TrainResult`, :func:`train_split`
- :mod:`~mnemonix.epinet.data` -- :func:`load_digits_tasks`, :func:`load_mnist_tasks` (local IDX files)

Differences from the notebook (see docs/epinet.md): log-space salience (no
underflow, no ``+ 1e-8``) that depends only on time differences, an explicit
clock (training steps by default), batched vectorised admission and eviction
into preallocated buffers (checked before the first write), and an assembly
that runs end to end on the CPU or a CUDA device.
"""

from __future__ import annotations

from mnemonix.epinet.admission import admit_into_full as _admit_into_full
from mnemonix.epinet.admission import ascending_worth as _ascending_worth
from mnemonix.epinet.admission import count_earlier_at_least as _count_earlier_at_least
from mnemonix.epinet.admission import least_worthy as _least_worthy
from mnemonix.epinet.clock import CLOCK_SOURCES as _CLOCK_SOURCES
from mnemonix.epinet.clock import SalienceClock
from mnemonix.epinet.data import load_digits_tasks, load_mnist_tasks
from mnemonix.epinet.data import read_idx as _read_idx
from mnemonix.epinet.memory import EpisodicMemory
from mnemonix.epinet.model import Encoder, EpiNet, MoEDecoder
from mnemonix.epinet.recall import RecallEngine
from mnemonix.epinet.training import TrainConfig, TrainResult, _accuracy, _train_variant, train_split

__all__ = [
    "SalienceClock",
    "EpisodicMemory",
    "RecallEngine",
    "Encoder",
    "MoEDecoder",
    "EpiNet",
    "TrainConfig",
    "TrainResult",
    "load_digits_tasks",
    "load_mnist_tasks",
    "train_split",
]

# Private names importable from the old single-module layout (tests and benches used some of them).
_LEGACY_PRIVATE = (_admit_into_full, _ascending_worth, _count_earlier_at_least, _least_worthy, _CLOCK_SOURCES,
                   _read_idx, _accuracy, _train_variant)
