"""ShardedMemoryStore pieces without spawning: the exact merges, packing, a directory of shards
loaded by row ranges, its corruption, and a one-rank process group in this process (bad inputs
raise what MemoryStore raises and change nothing; save targets; crash-safe generations).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store_inputs import BAD_CALLS, BAD_READS, DV, D, _fresh

from mnemonix import MemoryStore
from mnemonix._io import FormatError
from mnemonix.backends.search_exact import rank_select
from mnemonix.distributed import ShardedMemoryStore, _comm, _merge
from mnemonix.store import _persist, _shards

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def world1():
    """A one-rank gloo group in this process (an in-memory rendezvous: no port)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------- merges and packing


@settings(max_examples=40, deadline=None)
@given(P=st.integers(1, 4), B=st.integers(1, 3), n=st.integers(0, 30), k=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_merge_topk_equals_one_selection_over_the_union(P, B, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-3, 3, (B, n), generator=g).double()  # many ties: only ids break them
    ids = torch.randperm(10 * n + 1, generator=g)[:n]
    owner = torch.randint(P, (n,), generator=g)
    local_s, local_i = [], []
    for r in range(P):
        cols = (owner == r).nonzero().flatten()
        s = torch.full((B, k), float("-inf"), dtype=torch.float64)
        i = torch.full((B, k), -1, dtype=torch.int64)
        if len(cols):
            rid = ids[cols].expand(B, -1).contiguous()
            top_s, top_i = rank_select(scores[:, cols], rid, rid, min(k, len(cols)))
            s[:, : top_s.shape[1]], i[:, : top_i.shape[1]] = top_s, top_i
        local_s.append(s)
        local_i.append(i)
    got_s, got_i = _merge.merge_topk(torch.stack(local_s), torch.stack(local_i), k)
    all_ids = ids.expand(B, -1).contiguous()
    want_s, want_i = rank_select(scores, all_ids, all_ids, min(k, n))
    assert torch.equal(got_i[:, : want_i.shape[1]], want_i)
    assert torch.equal(got_s[:, : want_s.shape[1]], want_s.float())
    assert bool((got_i[:, want_i.shape[1]:] == -1).all()) and bool((got_s[:, want_s.shape[1]:] == float("-inf")).all())


@settings(max_examples=40, deadline=None)
@given(P=st.integers(1, 4), B=st.integers(1, 3), n=st.integers(1, 40), dv=st.integers(1, 5),
       scale=st.sampled_from([0.1, 10.0, 300.0]), seed=st.integers(0, 2**31))
def test_merge_retrieval_equals_one_softmax(P, B, n, dv, scale, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, n, generator=g) * scale
    values = torch.randn(n, dv, generator=g)
    owner = torch.randint(P, (n,), generator=g)
    outs, lses = [], []
    for r in range(P):  # a rank may hold nothing: lse -inf, weight 0
        cols = (owner == r).nonzero().flatten()
        if len(cols):
            part = logits[:, cols]
            outs.append(torch.softmax(part, dim=1) @ values[cols])
            lses.append(torch.logsumexp(part, dim=1))
        else:
            outs.append(torch.zeros(B, dv))
            lses.append(torch.full((B,), float("-inf")))
    out, lse = _merge.merge_retrieval(torch.stack(outs), torch.stack(lses))
    want = torch.softmax(logits.double(), dim=1) @ values.double()
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lse.double(), torch.logsumexp(logits.double(), dim=1), atol=1e-4, rtol=1e-5)


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def test_pack_unpack_round_trip_every_dtype():
    parts = [torch.randn(3, 2), torch.tensor([True, False]), torch.arange(4), torch.empty(0, 5),
             torch.randn(2, 3).half()[:, 1], torch.tensor([float("-inf"), float("nan")], dtype=torch.float64)]
    specs = [(tuple(t.shape), t.dtype) for t in parts]
    buf = _comm.pack(parts, torch.device("cpu"))
    assert buf.dtype == torch.uint8 and buf.numel() == _comm.nbytes(specs)
    for a, b in zip(parts, _comm.unpack(buf, specs)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert _bytes(a) == _bytes(b)  # bit-exact, NaN payloads included
    assert _comm.hash64(torch.ones(2)) != _comm.hash64(torch.ones(2, 1))  # shape is part of the hash
    assert _comm.hash64(torch.ones(2)) == _comm.hash64(torch.ones(2))


def test_without_a_process_group_the_error_says_what_to_do():
    with pytest.raises(RuntimeError, match="init_process_group"):
        ShardedMemoryStore(4)


# ---------------------------------------------------------------------- a directory of shards, by row ranges


def _shard_stores(rng, n_shards=3, d=6, min_rows=0):
    """Stores as ranks would hold them: several segments each, upserts (unsorted id runs), removals.

    Each rank adds ``min_rows`` to 39 rows (0: a rank may hold none, and then no segment).
    """
    stores, next_id = [], 0
    for _ in range(n_shards):
        s = MemoryStore(d, value_dim=2)
        n = int(torch.randint(min_rows, 40, (1,), generator=rng))
        s.add(torch.randn(n, d, generator=rng), torch.randn(n, 2, generator=rng),
              ids=torch.arange(next_id, next_id + n))
        next_id += n
        stores.append(s)
    for s in stores:
        ids = s.ids()
        if len(ids):
            pick = ids[torch.randperm(len(ids), generator=rng)[:5]]
            s.upsert(pick, torch.randn(len(pick), d, generator=rng), torch.randn(len(pick), 2, generator=rng))
            s.remove(ids[torch.randperm(len(ids), generator=rng)[:4]])
    return stores, next_id


def _write_sharded(path: Path, stores, next_id: int) -> None:
    """A sharded directory as ShardedMemoryStore.save writes it, from stores held in one process."""
    entries = []
    for rank, s in enumerate(stores):
        name = _shards.shard_dir_name(1, "0" * 16, rank)
        s._next_id = next_id
        s.save(path / name)
        data = (path / name / _persist.MANIFEST).read_bytes()
        entries.append({"dir": name, "rows": s.num_rows, "live": len(s),
                        "manifest_sha256": hashlib.sha256(data).hexdigest()})
    first = json.loads((path / entries[0]["dir"] / _persist.MANIFEST).read_bytes())
    _shards.write_manifest(path, {
        "generation": 1, "uid": "0" * 16, **{f: first[f] for f in _shards.SPEC_FIELDS},
        "rows": sum(e["rows"] for e in entries), "live": sum(e["live"] for e in entries), "next_id": next_id,
        "max_norm": max(s._max_norm for s in stores), "shards": entries})


@pytest.mark.parametrize("mmap", [False, True])
def test_any_split_of_the_rows_loads_disjoint_stores_whose_union_is_the_whole(tmp_path, rng, monkeypatch, mmap):
    monkeypatch.setattr(_persist, "SEGMENT_MAX_BYTES", 7 * 64)  # several segments per shard
    stores, next_id = _shard_stores(rng)
    _write_sharded(tmp_path, stores, next_id)
    whole = MemoryStore.load(tmp_path, mmap=mmap)
    assert len(whole) == sum(len(s) for s in stores) and whole._next_id == next_id
    sharded = _shards.read_sharded(tmp_path)
    q = torch.randn(2, 6, generator=rng)
    for _ in range(4):
        cuts = sorted(torch.randint(0, sharded.rows + 1, (int(torch.randint(0, 4, (1,), generator=rng)),),
                                    generator=rng).tolist())
        bounds = [0, *cuts, sharded.rows]
        parts = [_shards.load_rows(MemoryStore, sharded, a, z, mmap=mmap, device=torch.device("cpu"),
                                   verify="lazy" if mmap else True) for a, z in zip(bounds, bounds[1:])]
        got = torch.cat([p.ids() for p in parts])
        assert len(torch.unique(got)) == len(got) and torch.equal(torch.sort(got).values, whole.ids())
        for p in parts:
            if len(p):
                assert torch.equal(p.get(p.ids())[0], whole.get(p.ids())[0])
        k = 5
        local = [p.search(q, k) if len(p) else (torch.full((2, k), float("-inf")), torch.full((2, k), -1))
                 for p in parts]
        merged = _merge.merge_topk(torch.stack([s.double() for s, _ in local]), torch.stack([i for _, i in local]), k)
        assert torch.equal(merged[1], whole.search(q, k)[1])


def test_a_damaged_sharded_directory_is_a_format_error_naming_the_field(tmp_path, rng):
    stores, next_id = _shard_stores(rng, n_shards=2, min_rows=8)  # shard 1 must have a segment to damage
    _write_sharded(tmp_path, stores, next_id)
    manifest = tmp_path / _persist.MANIFEST
    good = manifest.read_bytes()

    def rewrite(edit, *, checksum=True):
        m = json.loads(good)
        edit(m)
        if checksum:
            m["checksum"] = _persist.manifest_checksum(m)
        manifest.write_text(json.dumps(m))

    cases = [
        (lambda m: m.update(rows=m["rows"] + 1), False, "checksum"),
        (lambda m: m.update(rows=m["rows"] + 1), True, "rows"),
        (lambda m: m.update(dim=7), True, "'dim'"),
        (lambda m: m["shards"][1].update(manifest_sha256="0" * 64), True, "manifest_sha256"),
        (lambda m: m["shards"][0].update(dir="../elsewhere"), True, "shards[0].dir"),
        (lambda m: m.update(shards=[]), True, "'shards'"),
        (lambda m: m.update(next_id=0), True, "next_id"),
    ]
    for edit, checksum, field in cases:
        rewrite(edit, checksum=checksum)
        with pytest.raises(FormatError, match=re.escape(field)):
            MemoryStore.load(tmp_path)
    manifest.write_bytes(good)
    MemoryStore.load(tmp_path)
    shard = tmp_path / json.loads(good)["shards"][1]["dir"]
    seg = sorted(shard.glob("seg-*.safetensors"))[0]
    seg.write_bytes(seg.read_bytes()[:-1] + bytes([seg.read_bytes()[-1] ^ 1]))
    with pytest.raises(FormatError, match="sha256"):
        MemoryStore.load(tmp_path)


# ---------------------------------------------------------------------- one rank in this process


def _fresh_sharded(dtype=torch.float16) -> ShardedMemoryStore:
    return _fresh(dtype, ShardedMemoryStore)  # the same rows as test_store_inputs' MemoryStore


def _state(store: ShardedMemoryStore):
    ids = store.ids()
    q = torch.ones(1, D)
    return (store.local.num_rows, len(store), ids, store.get(ids), store.search(q, 8),
            store.search(q, 8, alpha=1.0, now=9.0), store._next_id, store.local._next_id)


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("name", sorted(BAD_CALLS) + sorted(BAD_READS))
def test_bad_input_raises_what_memorystore_raises_and_changes_nothing(world1, name):
    call, error, match = {**BAD_CALLS, **BAD_READS}[name]
    store = _fresh_sharded()
    before = _state(store)
    with pytest.raises(error, match=match):
        call(store)
    assert _same(_state(store), before)
    assert store.search(torch.ones(1, D), 2)[1].shape == (1, 2)  # the ranks are still in step


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["add", "upsert", "remove"]), rows=st.integers(0, 3), width=st.integers(0, D + 1),
       fill=st.floats(allow_nan=True, allow_infinity=True, width=32),
       ids=st.one_of(st.none(), st.lists(st.integers(-3, 20), max_size=4)),
       id_dtype=st.sampled_from([torch.int64, torch.int32, torch.float32]))
def test_a_failing_collective_write_changes_nothing(world1, method, rows, width, fill, ids, id_dtype):
    store = _fresh_sharded()
    plain = MemoryStore(D, value_dim=DV, dtype=torch.float16)
    g = torch.Generator().manual_seed(0)
    plain.add(torch.randn(6, D, generator=g), torch.randn(6, DV, generator=g), ids=torch.arange(10, 16))
    plain.remove([12])
    before = _state(store)
    keys, values = torch.full((rows, width), fill), torch.ones(rows, DV)
    id_arg = None if ids is None else torch.tensor(ids, dtype=id_dtype)
    outcomes = []
    for s in (store, plain):
        try:
            if method == "add":
                s.add(keys, values, ids=id_arg)
            elif method == "upsert":
                s.upsert(id_arg, keys, values)
            else:
                s.remove(id_arg if id_arg is not None else torch.tensor([], dtype=torch.int64))
            outcomes.append(None)
        except (ValueError, TypeError) as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]  # the sharded store fails exactly when one store fails
    if outcomes[0] is not None:
        assert _same(_state(store), before)
    else:
        assert torch.equal(store.ids(), plain.ids()) and len(store) == len(plain)


def test_save_refuses_targets_that_are_not_sharded_stores(world1, tmp_path):
    store = _fresh_sharded()
    (tmp_path / "file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    MemoryStore(D).save(tmp_path / "plain")
    for target, match in (("file", "not a directory"), ("foreign", "holds no sharded store"),
                          ("plain", "not sharded")):
        before = sorted(p.name for p in (tmp_path / target).iterdir()) if (tmp_path / target).is_dir() else None
        with pytest.raises(ValueError, match=match):
            store.save(tmp_path / target)
        if before is not None:
            assert sorted(p.name for p in (tmp_path / target).iterdir()) == before


def test_a_crashed_save_leaves_the_previous_generation_loadable(world1, tmp_path, monkeypatch):
    store = _fresh_sharded()
    store.save(tmp_path / "s")
    first = sorted(p.name for p in (tmp_path / "s").iterdir())
    store.add(torch.ones(1, D), torch.ones(1, DV))

    def crash(path, manifest):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(_shards, "write_manifest", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(tmp_path / "s")
    assert len(MemoryStore.load(tmp_path / "s")) == len(store) - 1  # the old generation, whole
    monkeypatch.undo()
    store.save(tmp_path / "s")  # the next save drops the crashed generation's shard too
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert len(names) == 2 and names[0] not in first and names[0].startswith("000003-")
    loaded = ShardedMemoryStore.load(tmp_path / "s")
    assert torch.equal(loaded.ids(), store.ids()) and loaded.add(torch.ones(1, D), torch.ones(1, DV)).item() == 17


def test_a_plain_store_directory_loads_sharded(world1, tmp_path, rng):
    plain = MemoryStore(5, dtype=torch.bfloat16)
    plain.add(torch.randn(50, 5, generator=rng))
    plain.remove(torch.arange(0, 50, 3))
    plain.save(tmp_path / "p")
    store = ShardedMemoryStore.load(tmp_path / "p", mmap=True)
    q = torch.randn(3, 5, generator=rng)
    assert torch.equal(store.search(q, 7)[1], plain.search(q, 7)[1]) and len(store) == len(plain)
    stats = store.last_call
    assert stats.method == "search" and stats.collectives == 2 and stats.bytes_received == 0


def test_stage_then_unstage_leaves_a_store_as_it_was(rng):
    store = MemoryStore(4)
    store.add(torch.randn(10, 4, generator=rng))
    before = (store.ids(), store.search(torch.ones(1, 4), 10), len(store), store.num_rows)
    rows = store._prepare(torch.randn(3, 4, generator=rng), None, torch.tensor([2, 5, 77]), None, None,
                          must_be_new=False)
    old = store._index.lookup(rows["ids"], store._live)
    staged = store._stage(rows, old[old >= 0])
    store._unstage(staged)
    assert _same((store.ids(), store.search(torch.ones(1, 4), 10), len(store), store.num_rows), before)
    store._apply(store._stage(rows, old[old >= 0]))
    assert len(store) == 11 and 77 in store
