"""MemoryStore against a brute-force oracle: random sequences of every operation, every dtype.

After every step the store and the oracle agree exactly on ids, stored rows, search results
(ids and scores, ties to the lower id) and salience search, and to float32 rounding on
Hopfield retrieval; saves and loads (copy and mmap) happen in the middle of the sequence.
"""

from __future__ import annotations

import pytest
import torch
from store_oracle import Oracle, stored_form

from mnemonix import MemoryStore

STORAGE = [torch.float32, torch.float16, torch.bfloat16, torch.int8]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _keys(rng, n, d, *, dup_from=None):
    x = torch.randn(n, d, generator=rng)
    if dup_from is not None and n:  # exact duplicates of stored rows: ties that only ids can break
        x[: n // 2] = dup_from[: n // 2]
    return x


def check_agrees(store: MemoryStore, oracle: Oracle, rng, metric: str, *, retrieve=True) -> None:
    assert len(store) == len(oracle.rows)
    assert torch.equal(store.ids(), oracle.ids())
    d = store.dim
    ids = oracle.ids()
    if len(ids):
        keys, values = store.get(ids)
        want = torch.stack([oracle.rows[i][0] for i in ids.tolist()])
        assert torch.equal(keys.float(), want)
        if values is not None:
            assert torch.equal(values.float(), torch.stack([oracle.rows[i][1] for i in ids.tolist()]))
    q = torch.randn(3, d, generator=rng)
    if len(ids):
        q[0] = oracle.rows[int(ids[0])][0]
    allowed_ids = ids[torch.rand(len(ids), generator=rng) < 0.5]
    stranger = torch.tensor([10**9 + 7])  # not in the store: matches nothing
    for k in (1, 4, len(ids) + 2):
        for allowed in (None, torch.cat([allowed_ids, stranger])):
            got = store.search(q, k, filter=allowed)
            allow_set = None if allowed is None else set(allowed.tolist())
            want_s, want_i = oracle.search(q, k, metric, allow_set)
            assert torch.equal(got[1], want_i), (got, want_i)
            assert torch.equal(got[0], want_s)
            got = store.search(q, k, filter=allowed, alpha=0.3, now=1e3)
            want_s, want_i = oracle.salience(q, k, 0.3, 1e3, allow_set)
            assert torch.equal(got[1], want_i), (got, want_i)
            torch.testing.assert_close(got[0], want_s, atol=1e-6, rtol=1e-5)
    if retrieve and len(ids):
        out, lse = store.retrieve(q, beta=0.7, return_lse=True)
        want_out, want_lse = oracle.retrieve(q, 0.7)
        torch.testing.assert_close(out, want_out, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(lse, want_lse, atol=2e-5, rtol=1e-5)


def _random_step(step: str, store, oracle, rng, d, dv, tmp_path, counter):
    n = int(torch.randint(1, 12, (1,), generator=rng))
    existing = oracle.ids()
    values = None if dv is None else torch.randn(n, dv, generator=rng)
    r0 = torch.rand(n, generator=rng, dtype=torch.float64) + 0.1
    tau = torch.randint(0, 50, (n,), generator=rng).double()  # repeated times: salience ties
    dup = None if not len(existing) else store.get(existing[torch.randint(len(existing), (n,), generator=rng)])[0]
    keys = _keys(rng, n, d, dup_from=dup)
    if step == "add":
        ids = store.add(keys, values, r0=r0, tau=tau)
        assert torch.equal(ids, torch.arange(oracle.next_id, oracle.next_id + n))
        oracle.add(ids, keys, values, r0, tau)
    elif step == "add_ids":
        ids = torch.randperm(5000, generator=rng)[:n] + 10_000 * (1 + counter[0])
        counter[0] += 1
        assert torch.equal(store.add(keys, values, ids=ids, r0=r0, tau=tau), ids)
        oracle.add(ids, keys, values, r0, tau)
    elif step == "upsert":
        pool = torch.cat([existing, torch.tensor([oracle.next_id + 50, oracle.next_id + 51])])
        ids = pool[torch.randperm(len(pool), generator=rng)[:n]]
        keys = keys[: len(ids)]
        vals = None if values is None else values[: len(ids)]
        store.upsert(ids, keys, vals, r0=r0[: len(ids)], tau=tau[: len(ids)])
        oracle.add(ids, keys, vals, r0[: len(ids)], tau[: len(ids)], replace=True)
    elif step == "remove":
        pool = torch.cat([existing, torch.tensor([10**8, 10**8 + 1])])
        ids = pool[torch.randint(len(pool), (n,), generator=rng)]
        assert store.remove(ids) == oracle.remove(ids)
    elif step in ("load", "load_mmap"):
        path = tmp_path / f"s{int(torch.randint(2, (1,), generator=rng))}"
        store.save(path)
        store = MemoryStore.load(path, mmap=step == "load_mmap")
    return store


@pytest.mark.parametrize("dtype", STORAGE)
@pytest.mark.parametrize("metric,dv", [("ip", None), ("cos", 3)])
def test_random_sequences_match_the_oracle(rng, tmp_path, dtype, metric, dv):
    d = int(torch.randint(2, 12, (1,), generator=rng))
    store = MemoryStore(d, value_dim=dv, dtype=dtype, metric=metric)
    oracle = Oracle(dtype, None if dv is None else store.value_dtype)
    rest = ["upsert", "remove", "load", "add", "remove", "load_mmap", "add", "upsert", "remove",
            "load_mmap", "add_ids", "remove", "upsert", "load", "remove"]
    steps = ["add", "add", "add_ids"] + [rest[i] for i in torch.randperm(len(rest), generator=rng).tolist()]
    counter = [0]
    for j, step in enumerate(steps):
        store = _random_step(step, store, oracle, rng, d, dv, tmp_path, counter)
        check_agrees(store, oracle, rng, metric, retrieve=j % 3 == 0)
    check_agrees(store, oracle, rng, metric)


def test_filters_empty_all_and_fewer_than_k(rng):
    store = MemoryStore(5)
    ids = store.add(torch.randn(30, 5, generator=rng))
    q = torch.randn(2, 5, generator=rng)
    s, i = store.search(q, 4, filter=torch.empty(0, dtype=torch.int64))
    assert (i == -1).all() and torch.isneginf(s).all()
    assert all(torch.equal(a, b) for a, b in zip(store.search(q, 4, filter=ids), store.search(q, 4)))
    s, i = store.search(q, 5, filter=torch.tensor([3, 17, 999]))
    assert set(i[:, :2].flatten().tolist()) == {3, 17} and (i[:, 2:] == -1).all()
    assert torch.isneginf(s[:, 2:]).all() and torch.isfinite(s[:, :2]).all()
    with pytest.raises(ValueError, match="filter allows no memory"):
        store.retrieve(q, beta=1.0, filter=[999])
    out = store.retrieve(q, beta=1.0, filter=[3])
    torch.testing.assert_close(out, store.get([3])[0].expand(2, -1))


def test_ties_go_to_the_lower_id_after_removals_reorder_rows(rng):
    """Rows are in insertion order; ids are not. Equal rows must come back by id."""
    store = MemoryStore(4)
    v = torch.randn(1, 4, generator=rng)
    store.add(v.repeat(3, 1), ids=torch.tensor([50, 40, 30]))
    store.add(torch.randn(20, 4, generator=rng) * 0.01, ids=torch.arange(100, 120))
    store.upsert([10], v)  # replaced: a new row at the end with the lowest id
    store.remove([40])
    _, i = store.search(v, 3)
    assert i[0].tolist() == [10, 30, 50]


@pytest.mark.parametrize("dtype", STORAGE)
def test_salience_at_huge_alpha_dt(rng, dtype):
    """alpha * (now - tau) up to 1e6: float32 salience underflows; the store still ranks exactly."""
    store = MemoryStore(6, dtype=dtype)
    oracle = Oracle(dtype)
    n = 40
    keys = torch.randn(n, 6, generator=rng)
    tau = torch.linspace(0, 1e6, n, dtype=torch.float64)
    tau[5:10] = tau[4]  # equal times: ties of salience
    r0 = torch.rand(n, generator=rng, dtype=torch.float64) + 0.5
    ids = store.add(keys, r0=r0, tau=tau)
    oracle.add(ids, keys, None, r0, tau)
    q = torch.randn(4, 6, generator=rng)
    for alpha in (1e-6, 1e-3, 1.0):
        for now in (1e6, 2e6):
            got = store.search(q, 7, alpha=alpha, now=now)
            want = oracle.salience(q, 7, alpha, now)
            assert torch.equal(got[1], want[1])
            torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-5)


def test_retrieve_iterates_like_the_op(rng):
    store = MemoryStore(8, dtype=torch.float16)
    keys = torch.randn(50, 8, generator=rng)
    store.add(keys)
    oracle = Oracle(torch.float16)
    oracle.add(store.ids(), keys)
    q = keys[:3] + 0.3 * torch.randn(3, 8, generator=rng)
    out, lse = store.retrieve(q, beta=2.0, update_steps=3, return_lse=True)
    want_out, want_lse = oracle.retrieve(q, 2.0, update_steps=3)
    torch.testing.assert_close(out, want_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lse, want_lse, atol=2e-5, rtol=1e-5)


def test_get_contains_ids_and_repr(rng):
    store = MemoryStore(3, value_dim=2, dtype=torch.int8)
    keys = torch.randn(5, 3, generator=rng)
    ids = store.add(keys, torch.randn(5, 2, generator=rng), ids=torch.tensor([9, 2, 7, 4, 5]))
    assert store.ids().tolist() == [2, 4, 5, 7, 9] and 7 in store and 8 not in store and "x" not in store
    assert store.contains([7, 8]).tolist() == [True, False]
    got, vals = store.get(ids[[2, 0]])
    assert torch.equal(got, stored_form(keys[[2, 0]], torch.int8)) and vals.shape == (2, 2)
    with pytest.raises(ValueError, match=r"ids not in the store: \[8\]"):
        store.get([8])
    assert "MemoryStore(dim=3, value_dim=2, dtype=torch.int8" in repr(store)
    assert store.nbytes == 5 * (3 + 4 + 2 * 4 + 24)


def test_remove_is_amortised_and_compacts_in_memory(rng, monkeypatch):
    from mnemonix.store import _store

    monkeypatch.setattr(_store, "AUTO_COMPACT_MIN_DEAD", 4)
    store = MemoryStore(3)
    store.add(torch.randn(20, 3, generator=rng))
    assert store.remove(torch.arange(0, 8)) == 8 and store.num_rows == 20
    assert store.remove(torch.arange(8, 12)) == 4 and store.num_rows == 8  # dead > live: compacted
    assert store.ids().tolist() == list(range(12, 20))
    assert store.add(torch.randn(1, 3)).tolist() == [20]  # auto ids never reuse a removed id


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", STORAGE)
def test_cuda_store_gives_the_cpu_results(rng, dtype):
    """The same operations on a CUDA store (Triton candidate kernel) and a CPU store: identical results."""
    stores = [MemoryStore(24, dtype=dtype, device=dev, metric="cos") for dev in ("cpu", "cuda")]
    keys = torch.randn(5000, 24, generator=rng)
    keys[100:140] = keys[7]  # exact ties across many rows
    removed = torch.randperm(5000, generator=rng)[:300]
    q = torch.randn(64, 24, generator=rng)
    allowed = torch.randperm(6000, generator=rng)[:2000]
    r0 = torch.rand(5000, generator=rng) + 0.5
    results = []
    for store in stores:
        dev = store.device
        store.add(keys.to(dev), r0=r0.to(dev))
        store.remove(removed.to(dev))
        store.upsert(torch.tensor([3, 9999], device=dev), keys[:2].to(dev))
        results.append([store.search(q.to(dev), 10), store.search(q.to(dev), 50, filter=allowed.to(dev)),
                        store.search(q.to(dev), 10, alpha=0.01, now=10.0)])
    for cpu, cuda in zip(*results):
        assert torch.equal(cpu[1], cuda[1].cpu())
        torch.testing.assert_close(cpu[0], cuda[0].cpu(), atol=1e-6, rtol=1e-6)
