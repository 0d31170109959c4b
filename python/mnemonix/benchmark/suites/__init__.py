"""Suites of ``mnemonix bench run``: which ops, at which shapes, against which peers.

A :class:`Case` is one op at one shape and dtype; building it on a device allocates its inputs
and returns the candidates to time (``auto``: the dispatcher's choice; forced backends; peers
named ``peer:<name>``), the correctness check of the same run, and the bytes and flops that
define the shape's floor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mnemonix.benchmark.settings import SUITES  # noqa: E402


@dataclass
class Built:
    """A case's inputs turned into timed callables."""

    candidates: dict[str, Callable[[], Any]]
    check: Callable[[Callable[[], Any]], bool]
    bytes_read: float
    flops: float
    chosen: str | None = None  # the backend "auto" dispatches to
    notes: dict[str, str] = field(default_factory=dict)  # peers skipped, with the reason


@dataclass(frozen=True)
class Case:
    op: str
    shape: dict[str, int]
    dtype: torch.dtype
    build: Callable[[torch.device], Built]

    @property
    def label(self) -> str:
        dims = " ".join(f"{k}={v}" for k, v in self.shape.items())
        return f"{self.op} {dims} {str(self.dtype).removeprefix('torch.')}"


def cases(suite: str, device: torch.device) -> list[Case]:
    """Every case of ``suite`` on ``device``."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {list(SUITES)}, got {suite!r}")
    from mnemonix.benchmark.suites import hopfield, lifespan, salience

    out: list[Case] = []
    for module in (hopfield, salience, lifespan):
        out.extend(module.cases(suite, device))
    return out
