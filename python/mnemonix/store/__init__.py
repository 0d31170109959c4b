"""``MemoryStore``: millions of memories with ids, updates, filters, salience and Hopfield retrieval.

Exact search (inner product, cosine, or EpiNet's salience rule) and modern Hopfield
retrieval over int64-identified rows stored in float32, float16, bfloat16 or int8; O(removed)
removal; id filters applied inside the scan; a reader-writer contract; persistence as a
directory of immutable safetensors segments with an atomically swapped manifest and
memory-mapped loading. See docs/store.md.
"""

from __future__ import annotations

from mnemonix.store._store import MemoryStore

__all__ = ["MemoryStore"]
