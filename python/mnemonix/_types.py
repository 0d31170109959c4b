"""Types and constants shared by the ops, their backends, the models and the reference.

One definition of each: the engram type codes (Memoria), the result record of
one lifespan step. Kernels (``mnemonix.kernels``) cannot import this module
(device code imports only torch and triton): the launchers receive the codes
as arguments.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import torch


class EngramType(IntEnum):
    """Kind of a Memoria engram, stored as uint8 codes in ``types`` tensors."""

    NULL = 0
    WORKING = 1
    SHORTTERM = 2
    LONGTERM = 3


ENGRAM_NULL = int(EngramType.NULL)
ENGRAM_WORKING = int(EngramType.WORKING)
ENGRAM_SHORTTERM = int(EngramType.SHORTTERM)
ENGRAM_LONGTERM = int(EngramType.LONGTERM)


class LifespanResult(NamedTuple):
    """Result of one engram lifespan step (see :func:`mnemonix.ops.lifespan_step`).

    lifespan : [B, M] float32 -- after deltas and decay (not yet compacted)
    types : [B, M] uint8 -- after WORKING -> SHORTTERM -> LONGTERM transitions
    age : [B, M] int32 or None -- age + 1
    keep : [B, M] bool -- lifespan > 0
    rank : [B, M] int64 -- position of the engram among the kept engrams of its row
        (exclusive prefix sum of ``keep``), -1 for dropped engrams
    num_kept : [B] int64 -- kept engrams per row
    """

    lifespan: torch.Tensor
    types: torch.Tensor
    age: torch.Tensor | None
    keep: torch.Tensor
    rank: torch.Tensor
    num_kept: torch.Tensor


def log_salience(r0: torch.Tensor, tau: torch.Tensor, alpha: float, now: float | torch.Tensor) -> torch.Tensor:
    """EpiNet's salience in log space, float64 [N]: ``log r0_m - alpha * (now - tau_m)``.

    The logarithm of ``r0 * exp(-alpha * (now - tau))``: it never underflows,
    whatever the age of a memory. The one production definition (the reference
    restates it on purpose). ``now`` may be a 0-dim tensor on the device (no host sync).
    """
    now = now.double() if isinstance(now, torch.Tensor) else float(now)
    return torch.log(r0.double()) - float(alpha) * (now - tau.double())
