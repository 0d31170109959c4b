"""Real multi-process runs of ShardedMemoryStore for the tests: a launcher and the ranks' scenarios.

:func:`run` spawns ``world`` processes (``torch.multiprocessing``, one torch thread each)
that join a gloo group on 127.0.0.1 only: the rendezvous store listens on a port the OS
picks (port 0) in the test process, and gloo is pinned to the loopback interface. A rank
that raises fails the test with its traceback; ranks still running after a deadline are
killed and fail it too. Every scenario draws its data from a seed the test passes (fresh
per run); every rank draws the same numbers, so each rank can build the reference
MemoryStore holding the union itself.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mnemonix import MemoryStore
from mnemonix.distributed import CollectiveError, ShardedMemoryStore

DEADLINE_S = 150.0


def _entry(rank: int, world: int, port: int, pg_timeout: float, report: str, fn, args) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=pg_timeout))
    try:
        fn(rank, world, *args)
    except BaseException:
        Path(report, f"rank-{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def run(world: int, fn, *args, pg_timeout: float = 30.0) -> None:
    """Run ``fn(rank, world, *args)`` on ``world`` gloo ranks; fail with every failed rank's traceback."""
    master = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    with tempfile.TemporaryDirectory() as report:
        try:
            ctx = mp.start_processes(_entry, args=(world, master.port, pg_timeout, report, fn, args),
                                     nprocs=world, join=False, start_method="spawn")
            end = time.monotonic() + DEADLINE_S
            while not ctx.join(timeout=1.0):
                if time.monotonic() > end:
                    for p in ctx.processes:
                        p.kill()
                    raise AssertionError(f"ranks still running after {DEADLINE_S} s")
        except mp.ProcessRaisedException:
            time.sleep(1.0)  # let the other ranks write their reports
            reports = sorted(Path(report).iterdir())
            # the root cause first: a rank whose failure is not a peer's collective error
            reports.sort(key=lambda f: "CollectiveError" in f.read_text().splitlines()[-1])
            raise AssertionError("\n\n".join(f"{f.stem}:\n{f.read_text()}" for f in reports)) from None


# ---------------------------------------------------------------------- data and comparison


def _rows(g: torch.Generator, n: int, d: int, dv: int | None, pool: torch.Tensor | None):
    keys = torch.randn(n, d, generator=g)
    if pool is not None and len(pool) and n:  # exact copies of stored rows: ties only ids can break
        pick = torch.randint(len(pool), (n // 2,), generator=g)
        keys[: n // 2] = pool[pick]
    values = None if dv is None else torch.randn(n, dv, generator=g)
    r0 = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    tau = torch.randint(0, 20, (n,), generator=g).double()  # repeated times: salience ties
    return keys, values, r0, tau


def _split(counts: list[int]) -> list[slice]:
    out, at = [], 0
    for c in counts:
        out.append(slice(at, at + c))
        at += c
    return out


def _cat_opt(parts):
    return None if parts[0] is None else torch.cat(parts)


def check_same(S, R: MemoryStore, g: torch.Generator, *, rank: int, world: int) -> None:
    """Every reader of ``S`` (sharded or plain) against the reference store ``R``."""
    assert len(S) == len(R)
    ids = R.ids()
    assert torch.equal(S.ids(), ids)
    probe = torch.cat([ids[torch.randperm(len(ids), generator=g)[:7]], torch.tensor([10**12])])
    assert torch.equal(S.contains(probe), R.contains(probe))
    if len(ids):
        got, want = S.get(ids), R.get(ids)
        assert torch.equal(got[0], want[0])
        assert (got[1] is None) == (want[1] is None) and (got[1] is None or torch.equal(got[1], want[1]))
    q = torch.randn(3, R.dim, generator=g)
    if len(ids):
        q[0] = R.get(ids[:1])[0].float()[0]
    allowed = torch.cat([ids[torch.rand(len(ids), generator=g) < 0.4], torch.tensor([10**12 + 3])])
    for k in (1, 4, len(ids) + 2):
        for filt in (None, allowed):
            s, i = S.search(q, k, filter=filt)
            ws, wi = R.search(q, k, filter=filt)
            assert torch.equal(i, wi), (i, wi)
            assert torch.equal(s, ws), (s, ws)
            s, i = S.search(q, k, filter=filt, alpha=0.2, now=30.0)
            ws, wi = R.search(q, k, filter=filt, alpha=0.2, now=30.0)
            assert torch.equal(i, wi), (i, wi)
            torch.testing.assert_close(s, ws, atol=1e-6, rtol=1e-5)
    if not len(ids):
        return
    for filt in (None, allowed[:-1] if len(allowed) > 1 else None):
        out, lse = S.retrieve(q, beta=0.6, filter=filt, return_lse=True)
        wout, wlse = R.retrieve(q, beta=0.6, filter=filt, return_lse=True)
        torch.testing.assert_close(out, wout, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(lse, wlse, atol=2e-5, rtol=1e-5)
    if R.value_dim is None:
        out = S.retrieve(q, beta=2.0, update_steps=3)
        torch.testing.assert_close(out, R.retrieve(q, beta=2.0, update_steps=3), atol=2e-5, rtol=1e-4)
    if isinstance(S, ShardedMemoryStore):  # each rank its own queries, of its own batch size
        sizes = torch.randint(0, 4, (world,), generator=g).tolist()
        qs = torch.randn(sum(sizes), R.dim, generator=g)
        mine = qs[_split(sizes)[rank]]
        s, i = S.search(mine, 3, local_queries=True)
        ws, wi = R.search(mine, 3)
        assert torch.equal(i, wi) and torch.equal(s, ws)
        out = S.retrieve(mine, beta=0.6, local_queries=True)  # every rank calls, even with no query
        torch.testing.assert_close(out, R.retrieve(mine, beta=0.6), atol=2e-5, rtol=1e-4)


def _add_round(S, R, g, rank, world, *, explicit: bool) -> None:
    counts = torch.randint(0, 9, (world,), generator=g).tolist()
    pool = R.get(R.ids())[0].float() if len(R) else None
    keys, values, r0, tau = _rows(g, sum(counts), R.dim, R.value_dim, pool)
    ids = (torch.randperm(10**6, generator=g)[: sum(counts)] + 10**9) if explicit else None
    mine = _split(counts)[rank]
    pick = (lambda t: None if t is None else t[mine])
    if counts[rank] == 0 and rank % 2:  # a rank with nothing to add may pass None
        got = S.add(None)
    else:
        got = S.add(keys[mine], pick(values), ids=pick(ids), r0=r0[mine], tau=tau[mine])
    want = R.add(keys, values, ids=ids, r0=r0, tau=tau)
    assert torch.equal(got, want[mine]), (got, want[mine])


def _upsert_round(S, R, g, rank, world) -> None:
    existing = R.ids()
    old = existing[torch.randperm(len(existing), generator=g)[: min(len(existing), 2 * world)]]
    new = torch.randperm(10**6, generator=g)[:world] + 2 * 10**9
    ids = torch.cat([old, new])[torch.randperm(len(old) + world, generator=g)]
    counts = torch.multinomial(torch.ones(world), len(ids), replacement=True, generator=g).bincount(
        minlength=world).tolist()
    order = torch.argsort(torch.multinomial(torch.ones(world), len(ids), replacement=True, generator=g))
    ids = ids[order]
    keys, values, r0, tau = _rows(g, len(ids), R.dim, R.value_dim, R.get(existing)[0].float())
    mine = _split(counts)[rank]
    if counts[rank]:
        S.upsert(ids[mine], keys[mine], None if values is None else values[mine], r0=r0[mine], tau=tau[mine])
    else:
        S.upsert(None, None)
    R.upsert(ids, keys, values, r0=r0, tau=tau)


def _remove_round(S, R, g, rank, world, *, same: bool) -> None:
    existing = R.ids()
    asked = [torch.cat([existing[torch.rand(len(existing), generator=g) < 0.2], torch.tensor([10**12 + r])])
             for r in range(world)]
    if same:
        asked = [asked[0]] * world
    got = S.remove(asked[rank])
    assert got == R.remove(torch.unique(torch.cat(asked)))


# ---------------------------------------------------------------------- scenarios


CONFIGS = {"f32-ip-values": (torch.float32, "ip", 5), "int8-cos": (torch.int8, "cos", None),
           "bf16-ip": (torch.bfloat16, "ip", None), "f16-cos-values": (torch.float16, "cos", 3)}


def _build(rank: int, world: int, seed: int, name: str):
    """A sharded store and the reference holding the union, after adds, upserts and removals (checked twice)."""
    dtype, metric, dv = CONFIGS[name]
    g = torch.Generator().manual_seed(seed)
    S = ShardedMemoryStore(11, value_dim=dv, dtype=dtype, metric=metric)
    R = MemoryStore(11, value_dim=dv, dtype=dtype, metric=metric)
    check_same(S, R, g, rank=rank, world=world)  # empty
    for explicit in (False, False, True, False):
        _add_round(S, R, g, rank, world, explicit=explicit)
    check_same(S, R, g, rank=rank, world=world)
    _upsert_round(S, R, g, rank, world)
    _remove_round(S, R, g, rank, world, same=False)
    _remove_round(S, R, g, rank, world, same=True)
    check_same(S, R, g, rank=rank, world=world)
    return S, R, g


def sweep(rank: int, world: int, seed: int, configs: list[str], example_dir: str | None = None) -> None:
    """Every method of a sharded store against one MemoryStore holding the union, after every kind of write.

    Then the example (``mnemonix.examples.sharded_store``, which asserts its own results) in the same group.
    """
    for name in configs:
        _build(rank, world, seed, name)
    if example_dir is not None:
        from mnemonix.examples import sharded_store

        sharded_store.main(["--rows", "300", "--dim", "16", "--path", example_dir])


def save_and_reload(rank: int, world: int, seed: int, name: str, save_dir: str) -> None:
    """On 3 ranks: build, save; load on ranks {0, 1} and on rank {2} alone; compare, write, save from 2 ranks."""
    assert world == 3
    S, R, g = _build(rank, world, seed, name)
    path = Path(save_dir) / "sharded"
    S.save(path)
    if rank == 0:
        R.save(Path(save_dir) / "ref")
    pair, alone = dist.new_group([0, 1]), dist.new_group([2])  # every rank creates every group
    group, size, sub_rank = (pair, 2, rank) if rank < 2 else (alone, 1, 0)
    for mmap in (False, True):
        L = ShardedMemoryStore.load(path, mmap=mmap, group=group)
        assert L.world_size == size and len(L) == len(R)
        held = torch.tensor([len(L.local)])
        dist.all_reduce(held, group=group)
        assert int(held) == len(R)
        check_same(L, R, g, rank=sub_rank, world=size)
    if rank < 2:  # keep writing on two ranks: auto ids continue after the loaded store's; save again
        _add_round(L, R, g, sub_rank, size, explicit=False)
        _upsert_round(L, R, g, sub_rank, size)
        check_same(L, R, g, rank=sub_rank, world=size)
        L.save(path)
        if rank == 0:
            R.save(Path(save_dir) / "ref2")
    dist.barrier()


def _expect(exc_type, fn, *needles: str) -> BaseException:
    with pytest.raises(exc_type) as info:
        fn()
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    return info.value


def _corrupt_shard(path: Path, shard: int) -> None:
    seg = sorted(p for p in path.iterdir() if p.name.endswith(f"shard-{shard:05d}"))[0]
    file = sorted(seg.glob("seg-*.safetensors"))[0]
    data = bytearray(file.read_bytes())
    data[-3] ^= 0xFF  # a row byte: the header still parses, the SHA-256 no longer matches
    file.write_bytes(bytes(data))


def faults(rank: int, world: int, seed: int, save_dir: str) -> None:
    """One rank's failure reaches every rank as the same error class; no rank's state changes."""
    g = torch.Generator().manual_seed(seed)
    S = ShardedMemoryStore(8)
    S.add(torch.randn(20, 8, generator=g)[rank * 10:(rank + 1) * 10])
    before = S.ids()
    q = torch.randn(2, 8, generator=g)
    bad = q.clone()
    bad[0, 0] = float("nan")
    # bad input on rank 1 only: ValueError everywhere, the others' message names rank 1
    err = _expect(ValueError, lambda: S.search(bad if rank == 1 else q, 3), "finite")
    assert rank == 1 or "rank 1" in str(err)
    _expect(TypeError, lambda: S.search(q, "3" if rank == 0 else 3), "k must be an int")
    _expect(ValueError, lambda: S.search(q + rank, 3), "queries must be the same", "local_queries")
    _expect(ValueError, lambda: S.search(q, 3 + rank), "k, filter")
    _expect(RuntimeError, lambda: S.search(q, 3) if rank == 0 else S.retrieve(q, beta=1.0), "different calls")
    _expect(ValueError, lambda: S.retrieve(q, beta=1.0, filter=torch.tensor([10**9])), "filter allows no memory")
    # writes: nothing changes anywhere when one rank fails
    _expect(ValueError, lambda: S.add(torch.randn(2, 8), ids=torch.tensor([500, 501 + rank])), "distinct across ranks")
    _expect(ValueError, lambda: S.add(torch.randn(1, 8), ids=torch.tensor([3 if rank == 1 else 600])),
            "already in the store")
    upsert_keys = torch.randn(2, 8)
    if rank == 1:
        upsert_keys[1, 0] = float("inf")
    _expect(ValueError, lambda: S.upsert(torch.tensor([0, 15]) + rank, upsert_keys), "finite")
    assert torch.equal(S.ids(), before) and len(S) == 20 and len(S.local) == 10
    torch.testing.assert_close(S.get(before)[0], torch.randn(20, 8, generator=torch.Generator().manual_seed(seed)))
    # a corrupted shard: FormatError on every rank, at load (verify) or at the first scan (lazy)
    path = Path(save_dir) / "faulty"
    S.save(path)
    if rank == 0:
        _corrupt_shard(path, 1)
    dist.barrier()
    from mnemonix._io import FormatError

    _expect(FormatError, lambda: ShardedMemoryStore.load(path), "sha256")
    lazy = ShardedMemoryStore.load(path, mmap=True)
    _expect(FormatError, lambda: lazy.search(q, 3), "sha256")
    # a rank that never makes the call: the others raise CollectiveError within the group's timeout
    short = dist.new_group(ranks=list(range(world)), timeout=datetime.timedelta(seconds=2))
    T = ShardedMemoryStore(8, group=short)
    if rank == 0:
        start = time.monotonic()
        _expect(CollectiveError, lambda: T.add(torch.randn(2, 8)), "timeout")
        assert time.monotonic() - start < 60  # bounded: the group's 2 s timeout, not a hang
    else:
        time.sleep(4)  # raised elsewhere and never joined; exits after rank 0 gave up
