"""The memoria-pytorch surface of mnemonix.memoria: alias, Engrams API, write-back views, upstream steps."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import mnemonix.memoria as mm
from mnemonix import _io
from mnemonix.memoria import Engrams, EngramType, HistoryManager, Memoria, SparseTensor

CFG = dict(num_reminded_stm=3, stm_capacity=5, ltm_search_depth=3, initial_lifespan=4, num_final_ltms=2)


def drive(m: Memoria, gen: torch.Generator, steps: int, batch: int = 2, hidden: int = 6) -> list:
    out = []
    for t in range(steps):
        m.add_working_memory(torch.rand(batch, 1 + t % 3, hidden, generator=gen))
        memories, indices = m.remind()
        out.append((memories, indices))
        delta = torch.randint(0, 4, indices.shape, generator=gen).float()
        delta[1:] *= t % 2
        m.adjust_lifespan_and_memories(indices, delta)
    return out


# --------------------------------------------------------------------------- alias
def test_alias_runs_code_written_for_memoria_pytorch() -> None:
    """``install_alias()`` in a fresh interpreter: upstream-style imports resolve to mnemonix, unchanged."""
    code = textwrap.dedent("""
        import mnemonix.memoria
        mnemonix.memoria.install_alias()
        import torch
        from memoria import Abstractor, Memoria, SparseTensor, utils
        from memoria.engram import Engrams, EngramType
        from memoria.history_manager import HistoryManager
        from memoria.types import EngramInfo
        from memoria.utils import super_unique
        import memoria.memoria
        assert memoria.memoria.Memoria is Memoria and Memoria.__module__ == "mnemonix.memoria.memoria"
        m = Memoria(num_reminded_stm=2, stm_capacity=4, ltm_search_depth=2, initial_lifespan=3, num_final_ltms=2)
        m.add_working_memory(torch.rand(1, 3, 4))
        print("ok", len(m.engrams), Engrams.__module__)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "3", "mnemonix.memoria.engram"]


def test_install_alias_refuses_to_shadow_another_module() -> None:
    name = "memoria_alias_probe"
    sys.modules[name] = type(sys)(name)
    try:
        with pytest.raises(ValueError, match="already imported"):
            mm.install_alias(name)
        assert mm.install_alias(name, replace=True) is mm
        assert sys.modules[f"{name}.engram"] is sys.modules["mnemonix.memoria.engram"]
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
    with pytest.raises(ValueError, match="identifier"):
        mm.install_alias("not a name")


# ------------------------------------------------------------------------- Engrams
def test_constructor_from_tensors_and_legacy_form() -> None:
    data = torch.rand(2, 4, 3)
    e = Engrams(data, engrams_types=EngramType.LONGTERM, lifespan=7, engram_ids=10, track_engram_id=True)
    assert e.engram_ids.tolist() == [[10, 11, 12, 13]] * 2 and e.age is None
    assert (e.engrams_types == 3).all() and (e.lifespan == 7).all() and (e.induce_counts == 0).all()
    data.zero_()
    assert e.data.abs().sum() > 0  # copied
    legacy = Engrams(3, 5)
    assert legacy.data.shape == (3, 0, 5) and len(legacy) == 0
    empty = Engrams.empty(track_age=True, track_engram_id=True)
    assert empty.age.shape == (0, 0) and empty == Engrams.empty(track_age=True, track_engram_id=True)


def test_writes_into_views_persist() -> None:
    e = Engrams(torch.rand(1, 4, 2))
    e.fire_count[0, 0] += 1  # a temporary view: written back at the next read
    assert e.fire_count.tolist() == [[1, 0, 0, 0]]
    e.induce_counts[:, 1, 2] = 7  # asymmetric
    e.induce_counts[:, 3, 0] = -2  # negative
    counts = e.induce_counts
    assert counts[0, 1, 2] == 7 and counts[0, 2, 1] == 0 and counts[0, 3, 0] == -2
    counts[0, 2, 1] = 7  # a held view keeps writing back: now symmetric, held by the C++ graph
    e.fire_count = torch.tensor([[5, 6]], dtype=torch.int32)  # upstream's setter: the first n engrams
    assert e.fire_count.tolist() == [[5, 6, 0, 0]]
    assert counts[0, 0, 0] == 5  # the held view shows the new counts
    assert e.graph.core.count(0, 1, 2) == 7 and e.graph.has_overlay()  # (1, 2) symmetric; (3, 0) negative
    e.induce_counts += 1
    dense = e.induce_counts
    assert dense[0, 1, 2] == 8 and dense[0, 3, 3] == 1 and dense[0, 3, 0] == -1
    e.induce_counts = torch.zeros(1, 4, 4, dtype=torch.int32)
    assert (e.induce_counts == 0).all() and e.num_edges() == 0 and not e.graph.has_overlay()


def test_view_held_across_fire_together_is_refreshed() -> None:
    e = Engrams(torch.rand(1, 3, 2))
    counts = e.induce_counts
    e.fire_together_wire_together(torch.tensor([[0, 2]]))
    assert counts[0].tolist() == [[1, 0, 1], [0, 0, 0], [1, 0, 1]]  # as the original's in-place update


def test_cpp_walk_equals_the_dense_walk(rng) -> None:
    """The C++ walk and its dense fallback (used while counts sit in the overlay) agree."""
    from mnemonix.memoria._longterm import walk_dense

    for _ in range(30):
        n = int(torch.randint(1, 10, (1,), generator=rng))
        counts = torch.randint(0, 4, (1, n, n), generator=rng, dtype=torch.int32)
        counts = counts + counts.transpose(1, 2)  # symmetric, >= 0: what the C++ graph holds
        e = Engrams(torch.rand(1, n, 2, generator=rng), induce_counts=counts)
        assert not e.graph.has_overlay()
        positions = torch.arange(n).unsqueeze(0)
        starts = torch.randint(-1, n, (1, int(torch.randint(1, 4, (1,), generator=rng))), generator=rng)
        depth = int(torch.randint(0, 5, (1,), generator=rng))
        for alias in (True, False):
            fast = e.walk_longterm(starts, positions, depth, alias_negative=alias)
            dense = walk_dense(e.induce_counts, positions >= 0, starts, depth, alias)
            assert torch.equal(fast, dense), (counts, starts, depth, alias)


def test_walk_beyond_its_useful_depth_finds_nothing_new(rng) -> None:
    """Memoria walks ``useful_depth`` steps: the distinct picks of any deeper walk are the same, any counts."""
    from mnemonix.memoria._longterm import useful_depth, walk_dense
    from mnemonix.memoria.utils import super_unique

    for _ in range(40):
        n = int(torch.randint(1, 7, (1,), generator=rng))
        counts = torch.randint(-3, 4, (2, n, n), generator=rng, dtype=torch.int32)  # negative: the overlay's
        reachable = torch.rand(2, n, generator=rng) < 0.8
        starts = torch.randint(-1, n, (2, int(torch.randint(1, 4, (1,), generator=rng))), generator=rng)
        for alias in (True, False):
            for depth in range(3 * n + 8):
                full = super_unique(walk_dense(counts, reachable, starts, depth, alias), dim=1)
                short = super_unique(walk_dense(counts, reachable, starts, useful_depth(depth, n), alias), dim=1)
                assert torch.equal(full, short), (counts, reachable, starts, depth, alias)


def test_status_summary_of_asymmetric_counts() -> None:
    counts = torch.tensor([[[4, 2, 0], [1, 2, 0], [3, 0, 0]]], dtype=torch.int32)
    e = Engrams(torch.rand(1, 3, 1), induce_counts=counts, engrams_types=torch.tensor([[1, 2, 3]]),
                track_engram_id=True)
    info = e.status_summary()[0]
    assert [(c.target_id, c.cofire_count) for c in info.engrams[0].outgoings] == [(1, 2)]
    assert info.engrams[0].outgoings[0].weight == pytest.approx(0.5)
    # incoming edges report count(target, source), the original's quirk; a source that never fired has weight inf
    assert [(c.source_id, c.weight, c.cofire_count) for c in info.engrams[0].incoming] == [(1, 0.5, 2),
                                                                                          (2, float("inf"), 0)]
    assert info.engrams[2].fire_count == 0 and [c.weight for c in info.engrams[2].outgoings] == [float("inf")]


# ------------------------------------------------------------------- upstream steps
class PassThrough(Memoria):
    """Overrides every step by calling the base class: must change nothing."""

    def _calculate_memory_weight(self, working_memory, key_memory):
        return super()._calculate_memory_weight(working_memory, key_memory)

    def _memorize_shortterm_memory_as_longterm_memory(self):
        super()._memorize_shortterm_memory_as_longterm_memory()


@pytest.mark.parametrize("tie_break", ["original", "random"])
@pytest.mark.parametrize("seed", range(4))
def test_step_by_step_path_equals_the_fused_path(tie_break: str, seed: int) -> None:
    cfg = dict(CFG, track_age=True, track_id=True, tie_break=tie_break)
    fused = Memoria(**cfg, generator=torch.Generator().manual_seed(seed))
    stepwise = PassThrough(**cfg, generator=torch.Generator().manual_seed(seed))
    run_a = drive(fused, torch.Generator().manual_seed(seed + 9), 10)
    run_b = drive(stepwise, torch.Generator().manual_seed(seed + 9), 10)
    for (ma, ia), (mb, ib) in zip(run_a, run_b):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
    assert fused.engrams == stepwise.engrams


def test_an_overridden_step_takes_effect() -> None:
    class NoShortTerm(Memoria):
        def _remind_shortterm_memory(self, weight, shortterm_memory_indices):
            return torch.full_like(shortterm_memory_indices, -1)

    m = NoShortTerm(**dict(CFG, stm_capacity=100))
    for _, indices in drive(m, torch.Generator().manual_seed(0), 5):
        assert set(indices.flatten().tolist()) <= {-1, 0}  # only the empty-LTM quirk's engram 0
    plain = drive(Memoria(**dict(CFG, stm_capacity=100)), torch.Generator().manual_seed(0), 5)
    assert (plain[-1][1] > 0).any()  # without the override, short-term engrams are reminded


def test_private_steps_have_upstream_semantics() -> None:
    m = Memoria(**dict(CFG, num_reminded_stm=2))
    weight = torch.tensor([[[0.5, 0.2, 0.9, 0.1]]])
    assert m._remind_shortterm_memory(weight, torch.tensor([[4, 5, 6, 7]])).tolist() == [[4, -1, 6, -1]]
    wm, keys = Engrams(torch.rand(2, 3, 4)), Engrams(torch.rand(2, 5, 4))
    ref = -((wm.data.unsqueeze(2) - keys.data.unsqueeze(1)) ** 2).sum(3)
    assert torch.equal(m._calculate_memory_weight(wm, keys), ref)
    stm = Engrams(torch.rand(1, 2, 3), engrams_types=EngramType.SHORTTERM)
    ltm = Engrams(torch.rand(1, 3, 3), engrams_types=EngramType.LONGTERM)
    m.engrams = stm + ltm
    m.engrams.induce_counts[0, 0, 3] = 4  # stm 0 co-fired most with ltm engram at position 3
    assert m._find_initial_longterm_memory(torch.tensor([[0]])).tolist() == [[3]]
    assert set(m._find_initial_longterm_memory(torch.tensor([[-1]])).tolist()[0]) <= {2, 3, 4}  # a tie at 0
    m.engrams.induce_counts[0, 2:, 2:] = torch.tensor([[1, 0, 5], [0, 1, 0], [5, 0, 1]])
    found = m._search_longterm_memories_with_initials(torch.tensor([[2]]), m.engrams.get_longterm_memory()[0])
    # depth 3 from local 0: -> 2 (count 5) -> 1 (count 0, the only one left) -> -1 (none left)
    assert sorted(found[0].tolist()) == [-1, 0, 1, 2]
    m._memorize_working_memory_as_shortterm_memory()
    m.stm_capacity = 1
    m._memorize_shortterm_memory_as_longterm_memory()
    assert m.engrams.engrams_types.tolist() == [[3, 2, 3, 3, 3]]


# ------------------------------------------------------------------ HistoryManager
def test_history_save_load_roundtrip(tmp_path) -> None:
    m = Memoria(**CFG, track_age=True, track_id=True, keep_history=True)
    drive(m, torch.Generator().manual_seed(3), 8)
    history = m.history[0]
    path = tmp_path / "history.npz"
    history.save(path)
    loaded = HistoryManager.load(path)
    assert loaded.summaries == history.summaries
    for name in ("engram_creation_times", "engram_deletion_times", "engram_durations", "firings_per_time",
                 "alive_engram_ids", "deleted_engram_ids", "engram_lastest_alive_timestep", "latest_engram_infos"):
        assert getattr(loaded, name) == getattr(history, name), name
    assert dict(loaded.engram_firings) == dict(history.engram_firings)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(_io.FormatError):
        HistoryManager.load(path)


@pytest.mark.filterwarnings("ignore:`keep_history` is True:UserWarning")
def test_history_load_validates_fields(tmp_path) -> None:
    h = HistoryManager()
    m = Memoria(**CFG, keep_history=True)
    drive(m, torch.Generator().manual_seed(1), 3, batch=1)
    h = m.history[0]
    path = tmp_path / "h.npz"
    h.save(path)
    arrays, meta, _ = _io.load_arrays(path, format="mnemonix.memoria.history", max_version=1)
    for field, value in (("engram_type", 9), ("engram_step", 99), ("conn_owner", 10**6)):
        broken = dict(arrays)
        broken[field] = broken[field].copy()
        if broken[field].size:
            broken[field][0] = value
            _io.save_arrays(path, broken, format="mnemonix.memoria.history", version=1, meta=meta)
            with pytest.raises(_io.FormatError, match=field):
                HistoryManager.load(path)


# -------------------------------------------------------------------- SparseTensor
def test_sparse_tensor_reads_like_the_dense_tensor(rng) -> None:
    for _ in range(10):
        dense = torch.randint(0, 3, (3, 4, 5), generator=rng) * (torch.rand(3, 4, 5, generator=rng) < 0.4)
        s = SparseTensor.from_tensor(dense)
        assert torch.equal(s.to_dense(), dense)
        i, j = int(torch.randint(0, 3, (1,), generator=rng)), int(torch.randint(0, 4, (1,), generator=rng))
        assert torch.equal(s[i].to_dense(), dense[i])
        assert torch.equal(s[:, j].to_dense(), dense[:, j])
        assert torch.equal(s[0:2, 1:4].to_dense(), dense[0:2, 1:4])
        rows = torch.tensor([2, 0, 2])
        assert torch.equal(s[rows].to_dense(), dense[rows])
        square = SparseTensor.from_tensor(dense[:, :, :4])  # the original's diagonal: square dims, dim2 last
        assert torch.equal(square.diagonal(1, 2).to_dense(), dense[:, :, :4].diagonal(dim1=1, dim2=2))
        assert torch.equal((s + s).to_dense(), dense * 2) and torch.equal((s + 1).to_dense(), dense + 1)
        s[i, j] = 9
        dense[i, j] = 9
        s[rows, 1:3] = 4
        dense[rows, 1:3] = 4
        assert torch.equal(s.to_dense(), dense)
        assert s.unsqueeze(1).shape == (3, 1, 4, 5)
