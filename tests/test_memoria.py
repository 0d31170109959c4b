"""mnemonix.memoria without the oracle: divergent rows, generators, bad input, persistence, the graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnemonix import _io
from mnemonix._core import hebbian
from mnemonix.memoria import EngramType, Memoria

CFG = dict(num_reminded_stm=3, stm_capacity=6, ltm_search_depth=3, initial_lifespan=3, num_final_ltms=2)


def snapshot(m: Memoria) -> dict:
    e = m.engrams
    state = {k: getattr(e, k).clone() for k in ("data", "lifespan", "engrams_types")}
    state["uids"] = e._uids.clone()
    state["edges"] = [sorted(zip(*(a.tolist() for a in e.graph.edges(b)))) for b in range(e.batch_size)]
    state["fires"] = [sorted(zip(*(a.tolist() for a in e.graph.fires(b)))) for b in range(e.batch_size)]
    return state


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def drive(m: Memoria, gen: torch.Generator, steps: int, batch: int = 2, hidden: int = 8,
          divergent: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for _ in range(steps):
        m.add_working_memory(torch.rand(batch, 3, hidden, generator=gen))
        memories, indices = m.remind()
        out.append((memories, indices))
        delta = torch.randint(0, 4, indices.shape, generator=gen).float()
        if divergent:
            delta[1:] = 0  # row 0 earns lifespan, the other rows do not: rows diverge
        m.adjust_lifespan_and_memories(indices, delta)
    return out


def check_invariants(m: Memoria, memories: torch.Tensor, indices: torch.Tensor) -> None:
    e = m.engrams
    assert memories.shape[:2] == indices.shape
    for b in range(indices.shape[0]):
        row = indices[b][indices[b] >= 0]
        assert len(set(row.tolist())) == len(row)
    valid = indices >= 0
    gathered = e.data.gather(1, indices.clamp(min=0).unsqueeze(2).expand(-1, -1, e.hidden_dim))
    assert torch.equal(memories[valid], gathered[valid])
    assert (memories[~valid] == 0).all()


@pytest.mark.parametrize("fix_quirks", [False, True])
def test_divergent_rows_work(fix_quirks: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    m = Memoria(**CFG, track_age=True, track_id=True, fix_quirks=fix_quirks, generator=torch.Generator().manual_seed(1))
    diverged = False
    for _ in range(12):
        m.add_working_memory(torch.rand(2, 3, 8, generator=gen))
        types_before = m.engrams.engrams_types.clone()
        memories, indices = m.remind()
        check_invariants(m, memories, indices)
        if fix_quirks:  # reminded engrams are short- or long-term, never padding or working memory
            picked = types_before.gather(1, indices.clamp(min=0))[indices >= 0]
            assert ((picked == EngramType.SHORTTERM.value) | (picked == EngramType.LONGTERM.value)).all()
        delta = torch.randint(0, 4, indices.shape, generator=gen).float()
        delta[1] = 0
        m.adjust_lifespan_and_memories(indices, delta)
        diverged |= bool((m.engrams.engrams_types == EngramType.NULL.value).any())
        e = m.engrams
        null = e.engrams_types == EngramType.NULL.value
        assert (e.engram_ids[null] == -1).all()
        # padding sits at the front of each row
        for b in range(2):
            n = int(null[b].sum())
            if not (e.lifespan[b, :n] > 0).any():  # a reminded pad can survive only in the quirky mode
                assert null[b, :n].all()
        # every engram of the graph is alive and no edge reaches a dead engram
        for b in range(2):
            alive = set(e._uids[b][e._uids[b] >= 0].tolist())
            ids, _ = e.graph.fires(b)
            assert set(ids.tolist()) <= alive
            src, dst, _ = e.graph.edges(b)
            assert set(src.tolist()) <= alive and set(dst.tolist()) <= alive
    assert diverged


def test_divergent_rows_are_independent_without_quirks() -> None:
    """With fix_quirks and no long-term memory, a batch row evolves exactly as that row alone."""
    cfg = dict(CFG, stm_capacity=1000)
    gen = torch.Generator().manual_seed(3)
    batch = Memoria(**cfg, fix_quirks=True)
    rows = [Memoria(**cfg, fix_quirks=True) for _ in range(2)]
    for _ in range(8):
        data = torch.rand(2, 3, 8, generator=gen)
        batch.add_working_memory(data)
        for b, m in enumerate(rows):
            m.add_working_memory(data[b:b + 1])
        _, idx = batch.remind()
        singles = [m.remind()[1] for m in rows]
        for b, (m, single) in enumerate(zip(rows, singles)):
            pad = batch.engrams.memory_length - m.engrams.memory_length
            assert pad >= 0
            # the same engrams (shifted by the padding) are reminded
            got = sorted(i - pad for i in idx[b].tolist() if i >= 0)
            assert got == sorted(i for i in single[0].tolist() if i >= 0)
        gains = [2.0, 0.0]
        batch.adjust_lifespan_and_memories(idx, torch.tensor(gains).unsqueeze(1).expand(idx.shape).contiguous())
        for b, (m, single) in enumerate(zip(rows, singles)):
            m.adjust_lifespan_and_memories(single, torch.full(single.shape, gains[b]))
            pad = batch.engrams.memory_length - m.engrams.memory_length
            assert torch.equal(batch.engrams.lifespan[b, pad:], m.engrams.lifespan[0])
            assert torch.equal(batch.engrams.data[b, pad:], m.engrams.data[0])
    assert (batch.engrams.engrams_types == EngramType.NULL.value).any()


def test_generator_makes_runs_reproducible() -> None:
    runs = []
    for _ in range(2):
        m = Memoria(**CFG, generator=torch.Generator().manual_seed(7))
        runs.append(drive(m, torch.Generator().manual_seed(5), 10, divergent=False))
    for (ma, ia), (mb, ib) in zip(*runs):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)


def test_fix_empty_ltm() -> None:
    quirky, fixed = Memoria(**dict(CFG, stm_capacity=100)), Memoria(**dict(CFG, stm_capacity=100), fix_empty_ltm=True)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        data = torch.rand(1, 4, 8, generator=gen)
        if step == 0:
            data[0, 0] += 100.0  # engram 0 is far from every later working memory: never the nearest
        for m in (quirky, fixed):
            m.add_working_memory(data)
        _, iq = quirky.remind()
        _, ifx = fixed.remind()
        for m, idx in ((quirky, iq), (fixed, ifx)):
            m.adjust_lifespan_and_memories(idx, torch.zeros_like(idx))
        if step >= 1:
            assert 0 in iq[0].tolist()
            assert 0 not in ifx[0].tolist()


def test_bad_input_leaves_state_unchanged() -> None:
    m = Memoria(**CFG, track_id=True)
    drive(m, torch.Generator().manual_seed(0), 4)
    before = snapshot(m)
    m.add_working_memory(torch.rand(2, 2, 8))
    _, idx = m.remind()
    before = snapshot(m)
    bad_calls = [
        (lambda: m.add_working_memory(torch.rand(2, 2, 9)), ValueError, "hidden"),
        (lambda: m.add_working_memory(torch.rand(3, 2, 8)), ValueError, "batch"),
        (lambda: m.add_working_memory(torch.rand(2, 8)), ValueError, "3 dimensions"),
        (lambda: m.add_working_memory(torch.full((2, 1, 8), float("nan"))), ValueError, "finite"),
        (lambda: m.adjust_lifespan_and_memories(idx[:1], torch.ones_like(idx[:1])), ValueError, "rows"),
        (lambda: m.adjust_lifespan_and_memories(idx, torch.ones(2, 1)), ValueError, "shape of indices"),
        (lambda: m.adjust_lifespan_and_memories(idx + 1000, torch.ones_like(idx)), ValueError, "must be <"),
        (lambda: m.adjust_lifespan_and_memories(idx, torch.full(idx.shape, float("nan"))), ValueError, "finite"),
        (lambda: m.adjust_lifespan_and_memories(idx.float(), torch.ones(idx.shape)), TypeError, "indices"),
    ]
    for call, error, match in bad_calls:
        with pytest.raises(error, match=match):
            call()
        assert_same_state(before, snapshot(m))


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="stm_capacity"):
        Memoria(**dict(CFG, stm_capacity=-1))
    with pytest.raises(ValueError, match="tie_break"):
        Memoria(**CFG, tie_break="coin")
    with pytest.raises(TypeError, match="initial_lifespan"):
        Memoria(**dict(CFG, initial_lifespan="3"))


def test_save_load_roundtrip_and_errors(tmp_path) -> None:
    m = Memoria(**CFG, track_age=True, track_id=True, generator=torch.Generator().manual_seed(2))
    drive(m, torch.Generator().manual_seed(4), 9)
    path = tmp_path / "memoria.npz"
    m.save(path)
    loaded = Memoria.load(path, generator=torch.Generator().manual_seed(2))
    assert_same_state(snapshot(m), snapshot(loaded))
    assert torch.equal(m.engrams.age, loaded.engrams.age)
    assert torch.equal(m.engrams.induce_counts, loaded.engrams.induce_counts)
    assert (loaded.next_engram_id, loaded.timestep) == (m.next_engram_id, m.timestep)
    # both continue identically
    m.generator = torch.Generator().manual_seed(11)
    loaded.generator = torch.Generator().manual_seed(11)
    run_a = drive(m, torch.Generator().manual_seed(6), 4)
    run_b = drive(loaded, torch.Generator().manual_seed(6), 4)
    for (ma, ia), (mb, ib) in zip(run_a, run_b):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
    assert_same_state(snapshot(m), snapshot(loaded))

    arrays, meta, _ = _io.load_arrays(path, format="mnemonix.memoria", max_version=1)
    newer = tmp_path / "newer.npz"
    _io.save_arrays(newer, arrays, format="mnemonix.memoria", version=2, meta=meta)
    with pytest.raises(_io.FormatError, match="newer"):
        Memoria.load(newer)
    corrupted = tmp_path / "corrupted.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(raw))
    with pytest.raises(_io.FormatError):
        Memoria.load(corrupted)
    broken = dict(arrays)
    broken["lifespan"] = broken["lifespan"][:, :1]
    odd = tmp_path / "odd.npz"
    _io.save_arrays(odd, broken, format="mnemonix.memoria", version=1, meta=meta)
    with pytest.raises(_io.FormatError, match="lifespan"):
        Memoria.load(odd)


def test_keep_history_warns_through_warnings() -> None:
    with pytest.warns(UserWarning) as caught:
        Memoria(**CFG, keep_history=True)
    messages = " ".join(str(w.message) for w in caught)
    assert "track_id" in messages and "track_age" in messages


@pytest.mark.filterwarnings("ignore:`keep_history` is True:UserWarning")
def test_history_and_summary() -> None:
    m = Memoria(**CFG, keep_history=True)
    drive(m, torch.Generator().manual_seed(0), 6, divergent=False)
    assert m.track_id and m.track_age
    assert len(m.history) == 2 and len(m.history[0]) == 6
    summary = m.engrams.status_summary()[0]
    e = m.engrams
    alive = [i for i in e.engram_ids[0].tolist() if i >= 0]
    assert sorted(summary.engrams) == sorted(alive)
    counts = e.induce_counts[0]
    ids = e.engram_ids[0].tolist()
    for (src, dst), conn in summary.edges.items():
        i, j = ids.index(src), ids.index(dst)
        assert conn.cofire_count == int(counts[i, j]) > 0
        assert conn.weight == pytest.approx(int(counts[i, j]) / int(counts[i, i]))
    history = m.history[0]
    some_id = alive[0]
    info = history.inspect(some_id)
    assert info.creation_timestep <= len(history) and info.deletion_timestep is None
    assert history.deleted_engram_ids  # lifespan 3: engrams died
    with pytest.raises(ValueError, match="track_engram_id"):
        Memoria(**CFG).engrams.status_summary()


def test_induce_counts_dense_view() -> None:
    m = Memoria(**CFG)
    drive(m, torch.Generator().manual_seed(1), 6)
    counts = m.engrams.induce_counts
    real = m.engrams.engrams_types != EngramType.NULL.value
    assert torch.equal(counts, counts.transpose(1, 2))
    diag = counts.diagonal(dim1=1, dim2=2)
    assert torch.equal(diag[real], m.engrams.fire_count[real])
    assert m.engrams.num_edges() * 2 == int((counts.masked_fill(torch.eye(counts.shape[1], dtype=torch.bool), 0)
                                             > 0).sum())


def test_gemm_distances_run() -> None:
    m = Memoria(**CFG, distances="gemm")
    gen = torch.Generator().manual_seed(1)
    for memories, indices in drive(m, gen, 8):
        assert memories.shape[:2] == indices.shape


def test_reset_memory() -> None:
    m = Memoria(**CFG)
    drive(m, torch.Generator().manual_seed(0), 3)
    m.reset_memory()
    assert len(m.engrams) == 0 and m.timestep == 0
    m.add_working_memory(torch.rand(3, 2, 5))  # any batch and hidden size after a reset
    assert m.engrams.data.shape == (3, 2, 5)


def brute_walk(counts: np.ndarray, starts: list[int], depth: int) -> list[int]:
    """Reference of the greedy walk on a dense count matrix (all engrams long-term, no padding)."""
    n = counts.shape[0]
    visited = np.zeros(n, dtype=bool)
    cur = list(starts)
    out = list(cur)
    visited[[c for c in cur]] = True
    for _ in range(depth):
        picks = []
        for c in cur:
            src = c if c >= 0 else n - 1
            row = np.where(visited, -1, counts[src])
            p = int(row.argmax())
            picks.append(-1 if visited[p] else p)
        for p in picks:
            visited[p] = True  # p = -1 marks the last engram, as negative indexing does
        out += picks
        cur = picks
    return out


def test_hebbian_graph_walk_matches_dense_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 12))
        g = hebbian.HebbianGraph(1)
        for _ in range(int(rng.integers(0, 8))):
            members = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
            g.fire_together(members.reshape(1, -1).astype(np.int64))
        ids = np.arange(n, dtype=np.int64)
        counts = g.dense(0, ids, ids)
        starts = sorted(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False).tolist())
        depth = int(rng.integers(0, 5))
        slots = g.add_nodes(ids.reshape(1, -1))
        walked = g.walk(np.array([starts], dtype=np.int64), slots, depth)
        assert walked[0].tolist() == brute_walk(counts, starts, depth)


def test_hebbian_graph_basics() -> None:
    g = hebbian.HebbianGraph(2)
    g.fire_together(np.array([[1, 2, 3, -1], [5, 5, 6, -1]]))
    g.fire_together(np.array([[1, 2, -1, -1], [-1, -1, -1, -1]]))
    assert g.count(0, 1, 2) == 2 and g.count(0, 1, 3) == 1 and g.count(0, 2, 2) == 2
    assert g.count(1, 5, 6) == 1 and g.count(1, 5, 5) == 1  # duplicates fire once
    g.remove(np.array([[2], [-1]]))
    assert g.count(0, 1, 2) == 0 and g.num_nodes(0) == 2 and g.num_edges(0) == 2
    with pytest.raises(ValueError, match="rows"):
        g.fire_together(np.array([[1, 2]]))
    with pytest.raises(ValueError, match="row must be"):
        g.count(5, 1, 2)
    with pytest.raises(ValueError, match="not the slot of a live engram"):
        g.walk(np.array([[0], [-1]]), np.array([[1000], [-1]]), 2)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    """The same run on CUDA (Triton lifespan kernel, GPU distances) and on CPU."""
    runs = []
    for device in ("cpu", "cuda"):
        m = Memoria(**CFG, track_age=True, track_id=True, device=device, generator=torch.Generator().manual_seed(3))
        gen = torch.Generator().manual_seed(9)
        out = []
        for _ in range(12):
            m.add_working_memory(torch.rand(2, 4, 16, generator=gen).to(device))
            memories, indices = m.remind()
            delta = torch.randint(0, 4, indices.shape, generator=gen).float().to(device)
            m.adjust_lifespan_and_memories(indices, delta)
            out.append((memories.cpu(), indices.cpu(), m.engrams.lifespan.cpu(), m.engrams.engrams_types.cpu()))
        runs.append(out)
    for cpu_step, gpu_step in zip(*runs):
        for a, b in zip(cpu_step, gpu_step):
            assert torch.equal(a, b)
