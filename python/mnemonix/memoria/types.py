"""Summaries of engrams and their history: the records of memoria-pytorch's ``memoria.types``.

Frozen dataclasses with the same fields, so that code comparing or pickling
summaries of either library reads the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["EngramConnection", "EngramInfo", "EngramsInfo", "Firing", "EngramHistory"]


@dataclass(slots=True, frozen=True)
class EngramConnection:
    """One directed co-fire edge between two engrams."""

    #: Source engram id.
    source_id: int
    #: Target engram id.
    target_id: int
    #: Co-fire count / fire count of the source (float32 division, as the original).
    weight: float
    #: Co-fire count.
    cofire_count: int


@dataclass(slots=True, frozen=True)
class EngramInfo:
    """One engram at one step."""

    id: int
    type: Literal["WORKING", "SHORTTERM", "LONGTERM"]
    lifespan: float
    age: int | None
    fire_count: int
    outgoings: tuple[EngramConnection, ...]
    incoming: tuple[EngramConnection, ...]

    @property
    def cofire_counts(self) -> dict[int, int]:
        """Target id -> co-fire count of the outgoing edges."""
        return {edge.target_id: edge.cofire_count for edge in self.outgoings}


@dataclass(slots=True, frozen=True)
class EngramsInfo:
    """Every engram of one batch row at one step."""

    #: Engram id -> EngramInfo.
    engrams: dict[int, EngramInfo]
    #: (source id, target id) -> connection.
    edges: dict[tuple[int, int], EngramConnection]
    working: tuple[int, ...]
    shortterm: tuple[int, ...]
    longterm: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class Firing:
    """An engram firing at one step."""

    timestep: int
    engram_id: int
    #: Lifespan gained at that step (the decay of 1 added back).
    lifespan_gain: float


@dataclass(slots=True, frozen=True)
class EngramHistory:
    """The history of one engram (see :meth:`HistoryManager.inspect`)."""

    id: int
    creation_timestep: int
    deletion_timestep: int | None
    duration: int | None
    firing_times: list[int]
    firings: list[Firing]
    summaries: list[EngramsInfo]
