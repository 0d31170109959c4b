"""ShardedMemoryStore with real processes: 2 and 3 gloo ranks on 127.0.0.1 (see distributed_workers.py).

Every method against one MemoryStore holding the union, on fresh random data each run;
a store saved on 3 ranks loaded on 2 ranks, on 1 rank and in one process without a
process group; one rank's failure raising on every rank. Each test spawns its ranks
once and runs all its checks inside them.
"""

from __future__ import annotations

import os

import torch
from distributed_workers import check_same, faults, run, save_and_reload, sweep

from mnemonix import MemoryStore


def _seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def test_two_ranks_every_method_matches_one_store_and_the_example_runs(tmp_path):
    run(2, sweep, _seed(), ["f32-ip-values", "int8-cos", "bf16-ip"], str(tmp_path / "example"))
    assert len(MemoryStore.load(tmp_path / "example")) == 2 * 300 - 4  # the example removed the 4 best hits


def test_three_ranks_save_load_on_two_and_on_one(tmp_path):
    seed = _seed()
    run(3, save_and_reload, seed, "f16-cos-values", str(tmp_path))
    g = torch.Generator().manual_seed(seed)
    # the 3-rank save was replaced by a 2-rank one (its generation's directories are gone)
    names = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert len(names) == 3 and names[-1] == "MANIFEST.json" and names[0].endswith("shard-00000")
    ref = MemoryStore.load(tmp_path / "ref2")
    for mmap in (False, True):  # one process, no process group: the whole sharded store as one store
        whole = MemoryStore.load(tmp_path / "sharded", mmap=mmap)
        check_same(whole, ref, g, rank=0, world=1)
        new_id = whole.add(torch.randn(1, ref.dim), torch.randn(1, ref.value_dim))
        assert new_id.item() == ref._next_id  # auto ids continue after every shard's


def test_one_rank_failing_raises_on_every_rank(tmp_path):
    run(2, faults, _seed(), str(tmp_path))
