"""mnemonix.memoria against a dense pure-torch Memoria written from memoria-pytorch's documented behaviour.

The oracle (tests/memoria_oracle.py) needs no third-party package: these tests run everywhere.
Identical means bit for bit: indices, memories, lifespans, types, data, ages, ids, co-fire counts.
"""

from __future__ import annotations

import pytest
import torch
from memoria_oracle import NULL, DenseEngrams, DenseMemoria, front_indices

from mnemonix.memoria import Abstractor, Engrams, EngramType, Memoria
from mnemonix.memoria.utils import super_unique


def compare_engrams(theirs: DenseEngrams, ours: Engrams, where: str) -> None:
    assert torch.equal(theirs.data, ours.data), where
    assert torch.equal(theirs.lifespan, ours.lifespan), where
    assert torch.equal(theirs.types, ours.engrams_types), where
    for name, want in (("age", theirs.age), ("engram_ids", theirs.ids)):
        have = getattr(ours, name)
        assert (want is None) == (have is None) and (want is None or torch.equal(want, have)), (where, name)
    if len(ours):  # padding that fired holds other counts in the original; every real pair is identical
        real = ours.engrams_types != NULL
        pairs = real.unsqueeze(2) & real.unsqueeze(1)
        assert torch.equal(theirs.counts[pairs], ours.induce_counts[pairs]), where


def run_tutorial(memoria) -> list[torch.Tensor]:
    """memoria-pytorch's README tutorial (global seed 42), every value it shows."""
    out = []
    torch.manual_seed(42)
    memoria.add_working_memory(torch.rand(2, 8, 64))
    out += [memoria.engrams.lifespan.clone()]
    for step in range(12):
        if step:
            memoria.add_working_memory(torch.rand(2, 8, 64))
        memories, indices = memoria.remind()
        delta = (torch.zeros_like(indices) if step == 0 else torch.full_like(indices, 5) if step == 1
                 else torch.randint_like(indices, 0, 6).float())
        memoria.adjust_lifespan_and_memories(indices, delta)
        out += [memories, indices, memoria.engrams.lifespan.clone(), memoria.engrams.data.clone()]
    return out


def test_readme_tutorial_identical_to_the_oracle() -> None:
    cfg = dict(num_reminded_stm=4, stm_capacity=16, ltm_search_depth=5, initial_lifespan=3, num_final_ltms=4)
    want = run_tutorial(DenseMemoria(**cfg))
    got = run_tutorial(Memoria(**cfg))  # the default tie_break is the original's random stream
    assert len(want) == len(got)
    for i, (a, b) in enumerate(zip(want, got)):
        assert a.shape == b.shape and torch.equal(a, b), i


def random_config(gen: torch.Generator) -> dict:
    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=gen))

    return dict(num_reminded_stm=draw(0, 6), stm_capacity=draw(0, 10), ltm_search_depth=draw(0, 4),
                initial_lifespan=draw(1, 5), num_final_ltms=draw(0, 4), track_age=bool(draw(0, 2)),
                track_id=bool(draw(0, 2)))


@pytest.mark.parametrize("seed", range(10))
def test_random_configurations_identical_to_the_oracle(seed: int) -> None:
    """Random sizes, divergent rows, long-term memory and ties; a seeded generator in both."""
    gen = torch.Generator().manual_seed(seed)
    cfg = random_config(gen)
    batch, hidden = int(torch.randint(1, 4, (1,), generator=gen)), int(torch.randint(1, 13, (1,), generator=gen))
    theirs = DenseMemoria(**cfg, generator=torch.Generator().manual_seed(seed + 100))
    ours = Memoria(**cfg, generator=torch.Generator().manual_seed(seed + 100))
    for t in range(9):
        width = int(torch.randint(1, 6, (1,), generator=gen))
        data = torch.rand(batch, width, hidden, generator=gen)
        if t % 3 == 2:
            data = (data * 2).round()  # integer data: exact distance ties
        theirs.add_working_memory(data)
        ours.add_working_memory(data)
        mem_a, idx_a = theirs.remind()
        mem_b, idx_b = ours.remind()
        assert torch.equal(idx_a, idx_b), (t, idx_a, idx_b)
        assert torch.equal(mem_a, mem_b), t
        delta = torch.randint(0, 4, idx_a.shape, generator=gen).float()
        delta[1:] *= t % 2  # rows diverge every other step
        theirs.adjust_lifespan_and_memories(idx_a, delta)
        ours.adjust_lifespan_and_memories(idx_b, delta)
        compare_engrams(theirs.engrams, ours.engrams, f"step {t}")


def random_dense(gen: torch.Generator, batch: int, length: int, hidden: int) -> DenseEngrams:
    data = torch.rand(batch, length, hidden, generator=gen)
    counts = torch.randint(-2, 4, (batch, length, length), generator=gen, dtype=torch.int32)  # any int32 matrix
    types = torch.randint(0, 4, (batch, length), generator=gen).to(torch.uint8)
    lifespan = torch.randint(-3, 9, (batch, length), generator=gen).float()
    age = torch.randint(0, 50, (batch, length), generator=gen, dtype=torch.int32)
    ids = torch.randint(0, 1000, (batch, length), generator=gen, dtype=torch.int32)
    return DenseEngrams(data, counts, types, lifespan, age, ids)


def as_ours(d: DenseEngrams) -> Engrams:
    return Engrams(d.data, induce_counts=d.counts, engrams_types=d.types, lifespan=d.lifespan, age=d.age,
                   engram_ids=d.ids, track_age=True, track_engram_id=True)


@pytest.mark.parametrize("seed", range(12))
def test_engram_operations_identical_to_the_oracle(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    batch, length, hidden = (int(torch.randint(1, n, (1,), generator=gen)) for n in (4, 9, 5))
    dense = random_dense(gen, batch, length, hidden)
    ours = as_ours(dense)
    compare_engrams(dense, ours, "constructor")
    assert torch.equal(ours.induce_counts, dense.counts)
    assert torch.equal(ours.fire_count, dense.counts.diagonal(dim1=1, dim2=2))
    index = torch.randint(-1, length, (batch, int(torch.randint(0, 7, (1,), generator=gen))), generator=gen)
    picked = dense.select(index)
    compare_engrams(picked, ours.select(index), "select")
    assert torch.equal(ours.select(index).induce_counts, picked.counts)  # padding included: -1 rows and columns
    mask = torch.rand(batch, length, generator=gen) < 0.6
    kept = dense.select(front_indices(mask))
    assert torch.equal(ours.mask_select(mask).induce_counts, kept.counts)
    other = random_dense(gen, batch, int(torch.randint(1, 5, (1,), generator=gen)), hidden)
    joined = dense + other
    assert torch.equal((ours + as_ours(other)).induce_counts, joined.counts)
    fired = torch.randint(-3, length, (batch, 5), generator=gen)
    dense.fire(fired)
    ours.fire_together_wire_together(fired)
    assert torch.equal(ours.induce_counts, dense.counts)
    gone = torch.randint(-1, length, (batch, 3), generator=gen)
    keep = torch.ones(batch, length + 1, dtype=torch.bool)
    keep[torch.arange(batch).unsqueeze(1), torch.where(gone < 0, length, gone)] = False
    rest = dense.select(front_indices(keep[:, :-1]))
    ours.delete(gone)
    compare_engrams(rest, ours, "delete")
    assert torch.equal(ours.induce_counts, rest.counts)


def test_super_unique_matches_the_oracle(rng) -> None:
    for _ in range(20):
        t = torch.randint(-3, 8, (int(torch.randint(1, 4, (1,), generator=rng)), 9), generator=rng)
        from memoria_oracle import distinct

        assert torch.equal(super_unique(t, dim=1), distinct(t))
        assert torch.equal(super_unique(t.T.contiguous(), dim=0), distinct(t).T)


class PlainAbstractor(torch.nn.Module):
    """The Abstractor as documented: learned queries attend (softmax, no scaling) over the inputs."""

    def __init__(self, num_memories: int, hidden: int, ff: int) -> None:
        super().__init__()
        q = torch.empty(1, num_memories, hidden)
        torch.nn.init.normal_(q, std=0.02)
        self.q = torch.nn.Parameter(q)
        self.k, self.v = torch.nn.Linear(hidden, hidden), torch.nn.Linear(hidden, hidden)
        self.ff, self.out = torch.nn.Linear(hidden, ff), torch.nn.Linear(ff, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(self.q @ self.k(x).transpose(-2, -1), dim=-1)
        return self.out(self.ff(attention @ self.v(x)))


@pytest.mark.parametrize("seed", range(4))
def test_abstractor_identical_to_the_documented_module(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    memories, hidden, ff = (int(torch.randint(1, n, (1,), generator=gen)) for n in (5, 17, 9))
    torch.manual_seed(seed)
    theirs = PlainAbstractor(memories, hidden, ff)
    torch.manual_seed(seed)
    ours = Abstractor(memories, hidden, ff)
    assert [n for n, _ in ours.named_parameters()] == [
        "query_embeddings", "key_transform.weight", "key_transform.bias", "value_transform.weight",
        "value_transform.bias", "feedforward.weight", "feedforward.bias", "output.weight", "output.bias"]
    for (_, a), (_, b) in zip(theirs.named_parameters(), ours.named_parameters()):
        assert torch.equal(a, b)
    x = torch.randn(3, int(torch.randint(1, 7, (1,), generator=gen)), hidden, generator=gen, requires_grad=True)
    want, got = theirs(x), ours(x)
    assert got.shape == (3, memories, hidden) and torch.equal(want, got)
    got.sum().backward()
    assert ours.query_embeddings.grad is not None


def test_engram_type_is_one_definition() -> None:
    from mnemonix import _types

    assert EngramType is _types.EngramType and EngramType.LONGTERM.value == 3
