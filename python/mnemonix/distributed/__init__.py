"""``ShardedMemoryStore``: a MemoryStore split over the ranks of a ``torch.distributed`` process group.

Keys never move: every rank scans its shard, and only the partial results cross the
wire (each rank's top-k with global ids, or its Hopfield partition ``(out, lse)``),
merged exactly, so every result equals that of one MemoryStore holding every row. gloo
on CPUs, NCCL on GPUs, started with ``torchrun``. See docs/distributed.md.
"""

from __future__ import annotations

from mnemonix.distributed._comm import CallStats, CollectiveError
from mnemonix.distributed._store import ShardedMemoryStore

__all__ = ["CallStats", "CollectiveError", "ShardedMemoryStore"]
