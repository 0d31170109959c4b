"""MemoryStore on disk: incremental saves, memory-mapped loads, corruption, kill -9 during save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnemonix import MemoryStore
from mnemonix._io import FormatError
from mnemonix.store._persist import MANIFEST, manifest_checksum

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


def _segment(path: Path) -> Path:
    return sorted(path.glob("seg-*.safetensors"))[0]


def _store(rng, n=500, d=16, dtype=torch.float32, **kw) -> MemoryStore:
    store = MemoryStore(d, dtype=dtype, **kw)
    store.add(torch.randn(n, d, generator=rng))
    return store


def test_incremental_save_writes_only_new_rows(rng, tmp_path):
    store = _store(rng, n=5000, d=32)
    store.save(tmp_path)
    before = _files(tmp_path)
    store.add(torch.randn(50, 32, generator=rng))  # 1% more rows
    store.remove([3, 4])
    store.save(tmp_path)
    after = _files(tmp_path)
    written = {name: data for name, data in after.items() if before.get(name) != data}
    assert set(written) == {MANIFEST} | {n for n in after if n.startswith(("seg-000002", "tomb-000002"))}
    assert sum(len(v) for v in written.values()) < 0.03 * sum(len(v) for v in after.values())
    assert not any(n.startswith("tomb-000001") for n in after)  # the older bitmap is gone
    manifest = json.loads(after[MANIFEST])
    assert manifest["generation"] == 2 and manifest["rows"] == 5050 and manifest["live"] == 5048
    loaded = MemoryStore.load(tmp_path)
    assert torch.equal(loaded.ids(), store.ids())


def test_mmap_load_reads_nothing_up_front_and_writes_do_not_touch_the_files(rng, tmp_path):
    psutil = pytest.importorskip("psutil")
    store = _store(rng, n=100_000, d=64)  # 25.6 MB of keys
    store.save(tmp_path)
    files = _files(tmp_path)
    del store
    proc = psutil.Process()
    rss = proc.memory_info().rss
    loaded = MemoryStore.load(tmp_path, mmap=True)
    assert proc.memory_info().rss - rss < 8 << 20  # the keys (25.6 MB) are not read
    q = torch.randn(2, 64, generator=rng)
    before = loaded.search(q, 5)
    loaded.add(torch.randn(10, 64, generator=rng))
    loaded.upsert([before[1][0, 0].item()], torch.randn(1, 64, generator=rng))
    loaded.remove([1, 2, 3])
    assert len(loaded) == 100_000 + 10 - 3
    assert _files(tmp_path) == files  # copy-on-write: the segments on disk are unchanged
    again = MemoryStore.load(tmp_path, mmap=True)
    assert all(torch.equal(a, b) for a, b in zip(again.search(q, 5), before))
    loaded.save(tmp_path)  # incremental: the mapped segment stays, one new segment is written
    assert _segment(tmp_path).read_bytes() == files[_segment(tmp_path).name]
    assert torch.equal(MemoryStore.load(tmp_path).ids(), loaded.ids())


def test_truncated_or_corrupted_segments_raise_format_error(rng, tmp_path):
    store = _store(rng, n=300)
    store.save(tmp_path)
    seg = _segment(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[:-100])
    for mmap in (False, True):
        with pytest.raises(FormatError, match=f"{seg.name}.*bytes"):
            MemoryStore.load(tmp_path, mmap=mmap)
    flipped = bytearray(data)
    flipped[-50] ^= 0xFF
    seg.write_bytes(bytes(flipped))
    with pytest.raises(FormatError, match=f"{seg.name}.*sha256"):
        MemoryStore.load(tmp_path)
    lazy = MemoryStore.load(tmp_path, mmap=True)  # lazy: checked before the first read of its rows
    for _ in range(2):  # fails each time, changes nothing
        with pytest.raises(FormatError, match="sha256"):
            lazy.search(torch.randn(1, 16), 3)
    assert len(lazy) == 300
    unchecked = MemoryStore.load(tmp_path, mmap=True, verify=False)
    with pytest.raises(FormatError, match="sha256"):
        unchecked.verify()


def test_bad_manifests_and_paths(rng, tmp_path):
    with pytest.raises(FileNotFoundError):
        MemoryStore.load(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FormatError, match="not a MemoryStore directory"):
        MemoryStore.load(tmp_path)
    store = _store(rng, n=20)
    with pytest.raises(ValueError, match="non-empty directory"):
        store.save(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        store.save(tmp_path / "notes.txt")
    good = tmp_path / "good"
    store.save(good)
    manifest = json.loads((good / MANIFEST).read_text())
    (good / MANIFEST).write_text(json.dumps({**manifest, "rows": 21}))
    with pytest.raises(FormatError, match="checksum"):
        MemoryStore.load(good)
    forged = {**manifest, "dtype": "float16"}
    forged["checksum"] = manifest_checksum(forged)
    (good / MANIFEST).write_text(json.dumps(forged))
    with pytest.raises(FormatError, match="'keys' is torch.float32"):
        MemoryStore.load(good, mmap=True)
    forged = {**manifest, "segments": []}
    forged["checksum"] = manifest_checksum(forged)
    (good / MANIFEST).write_text(json.dumps(forged))
    with pytest.raises(FormatError, match="'segments' covers 0 rows"):
        MemoryStore.load(good)
    (good / MANIFEST).write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        MemoryStore.load(good)
    with pytest.raises(ValueError, match="verify"):
        MemoryStore.load(good, verify="sometimes")


_CHILD = """
import sys, torch
from mnemonix import MemoryStore
torch.set_num_threads(1)
store = MemoryStore(16)
g = 0
while True:
    g += 1
    store.add(torch.randn(4000, 16, generator=torch.Generator().manual_seed(g)))
    store.remove(torch.tensor([7 * g]))
    store.save(sys.argv[1])
    print(g, flush=True)
"""


def _expected_rows(g: int) -> torch.Tensor:
    return torch.cat([torch.randn(4000, 16, generator=torch.Generator().manual_seed(j)) for j in range(1, g + 1)])


def test_kill_9_during_save_leaves_the_previous_generation_loadable(rng, tmp_path):
    path = tmp_path / "store"
    for round_ in range(2):  # round 2 overwrites the store of round 1 (a full save over it)
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "1"  # generation 1 is on disk
            time.sleep(float(torch.rand(1, generator=rng)) * 0.4)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            child.stdout.close()
        store = MemoryStore.load(path)
        g = store.num_rows // 4000
        assert g >= 1 and store.num_rows == 4000 * g and len(store) == 3999 * g, round_
        expected = _expected_rows(g)
        ids = store.ids()
        assert torch.equal(store.get(ids)[0], expected[ids])
        assert not any(7 * j in ids.tolist() for j in range(1, g + 1))
        assert MemoryStore.load(path, mmap=True, verify=True).num_rows == store.num_rows
