"""MemoryStore: bad input is refused with a named error and changes nothing; readers and a writer in threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix import MemoryStore

D, DV = 4, 2


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _fresh(dtype=torch.float16, cls=MemoryStore):
    """Five live rows (ids 10-15 less 12) of a ``cls`` store (MemoryStore or ShardedMemoryStore)."""
    store = cls(D, value_dim=DV, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    store.add(torch.randn(6, D, generator=g), torch.randn(6, DV, generator=g), ids=torch.arange(10, 16),
              r0=torch.rand(6, generator=g) + 0.1, tau=torch.arange(6.0))
    store.remove([12])
    return store


def _state(store: MemoryStore):
    ids = store.ids()
    keys, values = store.get(ids)
    q = torch.ones(1, D)
    return (store.num_rows, len(store), ids, keys, values, store.search(q, 8), store.search(q, 8, alpha=1.0, now=9.0),
            store._next_id)


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


GOOD_KEYS = torch.ones(2, D)
GOOD_VALUES = torch.ones(2, DV)
BAD_CALLS = {
    "keys of the wrong width": (lambda s: s.add(torch.ones(2, D + 1), GOOD_VALUES), ValueError, "keys must have shape"),
    "integer keys": (lambda s: s.add(torch.ones(2, D, dtype=torch.int32), GOOD_VALUES), TypeError, "keys must have"),
    "NaN keys": (lambda s: s.add(torch.full((2, D), float("nan")), GOOD_VALUES), ValueError, "keys must be finite"),
    "Inf keys": (lambda s: s.add(torch.full((2, D), float("inf")), GOOD_VALUES), ValueError, "keys must be finite"),
    "keys overflowing float16": (lambda s: s.add(torch.full((2, D), 1e6), GOOD_VALUES), ValueError, "overflow"),
    "keys as a list": (lambda s: s.add([[1.0] * D], GOOD_VALUES), TypeError, "keys must be a torch.Tensor"),
    "object array": (lambda s: s.add(np.array([object()] * D), GOOD_VALUES), TypeError, "numeric"),
    "missing values": (lambda s: s.add(GOOD_KEYS), ValueError, "values must be given"),
    "values of the wrong width": (lambda s: s.add(GOOD_KEYS, torch.ones(2, DV + 1)), ValueError, "values must have"),
    "values of the wrong count": (lambda s: s.add(GOOD_KEYS, torch.ones(3, DV)), ValueError, "values must have 2 rows"),
    "int32 ids": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, ids=torch.tensor([1, 2], dtype=torch.int32)),
                  TypeError, "ids must have dtype"),
    "float ids": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, ids=torch.tensor([1.0, 2.0])), TypeError, "ids must have"),
    "negative ids": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, ids=torch.tensor([1, -1])), ValueError, "must be >= 0"),
    "duplicate ids": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, ids=torch.tensor([3, 3])), ValueError, "distinct"),
    "existing ids": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, ids=torch.tensor([1, 11])), ValueError, "already in"),
    "ids of the wrong count": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, ids=torch.tensor([1])), ValueError, "2 entries"),
    "r0 <= 0": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, r0=torch.tensor([1.0, 0.0])), ValueError, "r0 must be > 0"),
    "NaN tau": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, tau=float("nan")), ValueError, "tau must be a finite"),
    "r0 of the wrong shape": (lambda s: s.add(GOOD_KEYS, GOOD_VALUES, r0=torch.ones(3)), ValueError, "r0 must have"),
    "upsert without ids": (lambda s: s.upsert(None, GOOD_KEYS, GOOD_VALUES), ValueError, "ids must be given"),
    "upsert NaN keys": (lambda s: s.upsert([10, 99], torch.full((2, D), float("nan")), GOOD_VALUES),
                        ValueError, "keys must be finite"),
    "upsert duplicate ids": (lambda s: s.upsert([10, 10], GOOD_KEYS, GOOD_VALUES), ValueError, "distinct"),
    "upsert bad values": (lambda s: s.upsert([10, 11], GOOD_KEYS, torch.ones(2, 5)), ValueError, "values must have"),
    "remove float ids": (lambda s: s.remove(torch.tensor([10.0])), TypeError, "ids must have dtype"),
    "remove 2-D ids": (lambda s: s.remove(torch.tensor([[10]])), ValueError, "ids must have 1 dimensions"),
    "remove negative": (lambda s: s.remove([10, -3]), ValueError, "ids must be >= 0"),
    "remove a string": (lambda s: s.remove("10"), TypeError, "ids must be a torch.Tensor"),
}
BAD_READS = {
    "k = 0": (lambda s: s.search(torch.ones(1, D), 0), ValueError, "k must be >= 1"),
    "k float": (lambda s: s.search(torch.ones(1, D), 2.0), TypeError, "k must be an int"),
    "queries of the wrong width": (lambda s: s.search(torch.ones(1, D + 2), 2), ValueError, "queries must have shape"),
    "NaN queries": (lambda s: s.search(torch.full((1, D), float("nan")), 2), ValueError, "queries must be finite"),
    "float filter": (lambda s: s.search(torch.ones(1, D), 2, filter=torch.tensor([1.0])), TypeError, "filter"),
    "alpha without now": (lambda s: s.search(torch.ones(1, D), 2, alpha=1.0), ValueError, "alpha and now"),
    "negative alpha": (lambda s: s.search(torch.ones(1, D), 2, alpha=-1.0, now=1.0), ValueError, "alpha must be >= 0"),
    "beta = 0": (lambda s: s.retrieve(torch.ones(1, D), beta=0.0), ValueError, "beta must be a finite number > 0"),
    "update_steps with values": (lambda s: s.retrieve(torch.ones(1, D), beta=1.0, update_steps=2),
                                 ValueError, "update_steps > 0 needs"),
    "get a missing id": (lambda s: s.get([12]), ValueError, r"ids not in the store: \[12\]"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS) + sorted(BAD_READS))
def test_each_bad_input_names_the_argument_and_changes_nothing(name):
    call, error, match = {**BAD_CALLS, **BAD_READS}[name]
    store = _fresh()
    before = _state(store)
    with pytest.raises(error, match=match):
        call(store)
    assert _same(_state(store), before)


_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["add", "upsert", "remove"]),
    rows=st.integers(0, 3),
    width=st.integers(0, D + 1),
    fill=_floats,
    ids=st.one_of(st.none(), st.lists(st.integers(-3, 20), max_size=4)),
    id_dtype=st.sampled_from([torch.int64, torch.int32, torch.float32]),
    r0=st.one_of(st.none(), _floats),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int8]),
)
def test_any_failing_write_leaves_the_store_unchanged(method, rows, width, fill, ids, id_dtype, r0, dtype):
    """Random (mostly bad) arguments: a write either succeeds as the oracle rules say, or changes nothing."""
    store = _fresh(dtype)
    before = _state(store)
    keys = torch.full((rows, width), fill)
    values = torch.ones(rows, DV)
    id_arg = None if ids is None else torch.tensor(ids, dtype=id_dtype)
    try:
        if method == "add":
            store.add(keys, values, ids=id_arg, r0=r0)
        elif method == "upsert":
            store.upsert(id_arg, keys, values, r0=r0)
        else:
            store.remove(id_arg if id_arg is not None else torch.tensor([], dtype=torch.int64))
    except (ValueError, TypeError) as exc:
        assert str(exc)  # a message that says what was wrong
        assert _same(_state(store), before), f"{method} failed with {exc!r} but changed the store"
        return
    # It succeeded: then the arguments were valid.
    if method != "remove":
        assert width == D and (rows == 0 or np.isfinite(fill)) and (r0 is None or (np.isfinite(r0) and r0 > 0))
    if id_arg is not None:
        assert id_dtype == torch.int64 and all(i >= 0 for i in ids)


def test_concurrent_readers_never_see_a_half_applied_write():
    """Readers search and get while one writer upserts whole groups; every group read is uniform."""
    store = MemoryStore(8, dtype=torch.float32)
    group = torch.arange(0, 64)
    store.add(torch.zeros(64, 8), ids=group)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        step = 0
        while not stop.is_set():
            step += 1
            store.upsert(group, torch.full((64, 8), float(step)))  # one group, one value per write
            store.add(torch.randn(16, 8))
            store.remove(store.ids()[64:][:8])

    def reader():
        try:
            while not stop.is_set():
                keys, _ = store.get(group)
                assert bool((keys == keys[0, 0]).all()), "a reader saw a half-applied upsert"
                scores, ids = store.search(torch.ones(1, 8), 64, filter=group)
                assert sorted(ids[0].tolist()) == group.tolist()
                assert torch.unique(scores).numel() == 1, "a search mixed two upserts"
                assert len(store) % 8 == 0
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in threads)
    keys, _ = store.get(group)
    assert bool((keys == keys[0, 0]).all()) and float(keys[0, 0]) > 1
