"""Suites of ``mnemonix bench run``: which ops, at which shapes, against which peers.

A :class:`Case` is one op at one shape and dtype; building it on a device allocates its inputs
and returns the candidates to time (``auto``: the dispatcher's choice; forced backends; peers
named ``peer:<name>``), the correctness check of the same run, and the bytes and flops that
define the shape's floor (both 0: the op has no meaningful floor, and its rows say ``floor_s``
None).

Two kinds of suite: by size (``smoke``, ``quick``, ``full``, ``gpu``: the core ops of
:mod:`.hopfield`, :mod:`.salience` and :mod:`.lifespan`) and by area (``store``, ``memoria``,
``layers``, ``hopfield``, ``salience``, ``plastic``, ``consolidation``: what each
``bench/compare_<area>.py`` compares, at the area's ``tiny`` / ``quick`` / ``default`` sizes
and any size of its own). Each area module exposes ``SIZES`` (size name -> shapes) and
``area_cases(size, device)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

from mnemonix.benchmark.settings import AREAS, SIZE_SUITES, SUITES  # noqa: E402,F401


@dataclass
class Built:
    """A case's inputs turned into timed callables.

    ``setup`` maps a candidate to a call made before each of its calls (and before its check),
    outside the timing, for ops that change their state; ``extra`` maps a candidate to more
    fields of its row (memory figures, agreement with a peer) measured once, outside the timing.
    """

    candidates: dict[str, Callable[[], Any]]
    check: Callable[[Callable[[], Any]], bool]
    bytes_read: float
    flops: float
    chosen: str | None = None  # the backend "auto" dispatches to
    notes: dict[str, str] = field(default_factory=dict)  # peers skipped, with the reason
    setup: dict[str, Callable[[], Any]] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)


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


def area_module(area: str) -> ModuleType:
    """The suite module of ``area`` (one of :data:`AREAS`)."""
    if area not in AREAS:
        raise ValueError(f"area must be one of {list(AREAS)}, got {area!r}")
    return importlib.import_module(f"mnemonix.benchmark.suites.{area}")


def sizes(suite: str) -> list[str]:
    """The sizes an area suite declares (empty for a size suite)."""
    return list(area_module(suite).SIZES) if suite in AREAS else []


def cases(suite: str, device: torch.device, size: str | None = None) -> list[Case]:
    """Every case of ``suite`` on ``device``; ``size`` picks an area suite's size (default
    ``default``) and must be None for a size suite."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {list(SUITES)}, got {suite!r}")
    if suite in AREAS:
        module = area_module(suite)
        size = size or "default"
        if size not in module.SIZES:
            raise ValueError(f"size of suite {suite!r} must be one of {list(module.SIZES)}, got {size!r}")
        return module.area_cases(size, device)
    if size is not None:
        raise ValueError(f"suite {suite!r} has no sizes (it is one); size must be None, got {size!r}")
    from mnemonix.benchmark.suites import hopfield, lifespan, salience

    out: list[Case] = []
    for module in (hopfield, salience, lifespan):
        out.extend(module.cases(suite, device))
    if suite == "full":  # the hopfield and salience areas' shapes are the full suite's own already
        for area in ("store", "memoria", "layers", "plastic", "consolidation"):
            out.extend(area_module(area).area_cases("default", device))
    return out
