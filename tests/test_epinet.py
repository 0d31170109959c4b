"""EpiNet: clock, episodic memory (batched admission = sequential rule), recall, persistence, training."""

from __future__ import annotations

import math

import pytest
import torch

from mnemonix import _io, ops, reference
from mnemonix.epinet import (
    Encoder,
    EpiNet,
    EpisodicMemory,
    MoEDecoder,
    RecallEngine,
    SalienceClock,
    TrainConfig,
    load_mnist_tasks,
    train_split,
)


def sequential_rule(capacity, items, alpha):
    """The notebook's add(), one item at a time, in plain Python (ties: evict the newest).

    ``items``: (time, r0, ident). Returns the ident held by each slot.
    """
    slots: list[tuple[int, float, float, int]] = []  # (ident, log r0, tau, seq)
    for seq, (t, r0, ident) in enumerate(items):
        if len(slots) < capacity:
            slots.append((ident, math.log(r0), t, seq))
            continue
        worth = [(lr0 - alpha * (t - tau), -s, j) for j, (_, lr0, tau, s) in enumerate(slots)]
        lowest, _, j = min(worth)
        if math.log(r0) > lowest:
            slots[j] = (ident, math.log(r0), t, seq)
    return [s[0] for s in slots]


def _fill(mem, rng, batches, *, ties):
    items, ident = [], 0
    for b, n in enumerate(batches):
        t = float(b)
        if ties:
            r0 = torch.randint(1, 4, (n,), generator=rng).double()
        else:
            r0 = torch.rand(n, generator=rng, dtype=torch.float64) * 3 + 0.01
        ids = torch.arange(ident, ident + n)
        z = torch.randn(n, mem.payload_dim, generator=rng)
        mem.add(z, z[:, : mem.key_dim], r0, ids, now=t)
        items += [(t, float(r0[i]), ident + i) for i in range(n)]
        ident += n
    return items


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_batched_add_equals_sequential_rule(rng, ties, alpha):
    for _ in range(40):
        cap = int(torch.randint(1, 9, (1,), generator=rng))
        batches = torch.randint(1, 12, (int(torch.randint(1, 5, (1,), generator=rng)),), generator=rng).tolist()
        mem = EpisodicMemory(cap, 3, clock=SalienceClock(alpha, source="timestamps"))
        items = _fill(mem, rng, batches, ties=ties)
        assert mem.y.tolist() == sequential_rule(cap, items, alpha)


def test_batched_add_equals_one_at_a_time(rng):
    """Same items, same store time: one add() of the batch == n add() calls of one item."""
    cap, n = 16, 60
    z = torch.randn(n, 4, generator=rng)
    r0 = torch.rand(n, generator=rng, dtype=torch.float64) + 0.05
    y = torch.arange(n)
    a = EpisodicMemory(cap, 4, clock=SalienceClock(0.1, source="timestamps"))
    b = EpisodicMemory(cap, 4, clock=SalienceClock(0.1, source="timestamps"))
    warm = torch.randn(cap, 4, generator=rng)
    for m in (a, b):
        m.add(warm, warm, torch.linspace(0.2, 1.5, cap), torch.arange(100, 100 + cap), now=0.0)
    slots = a.add(z, z, r0, y, now=3.0)
    for i in range(n):
        b.add(z[i : i + 1], z[i : i + 1], r0[i : i + 1], y[i : i + 1], now=3.0)
    for name in ("z", "c", "y", "r0", "tau"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    kept = slots >= 0
    assert torch.equal(a.y[slots[kept]], y[kept])


def test_eviction_order_follows_salience():
    clock = SalienceClock(1.0, source="timestamps")
    mem = EpisodicMemory(3, 2, clock=clock)
    z = torch.eye(2).repeat(2, 1)[:3]
    mem.add(z, z, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 1, 2]), now=0.0)
    # At t = 1 the saliences are e^-1 * [1, 2, 3]: a newcomer of r0 = 0.5 beats 0.37 only.
    clock.set_time(1.0)
    slots = mem.add(torch.ones(3, 2), torch.ones(3, 2), torch.tensor([0.5, 0.5, 0.3]), torch.tensor([7, 8, 9]))
    # saliences now e^-1 * [1, 2, 3] = [0.37, 0.74, 1.10]: 7 (0.5) evicts slot 0; 8 (0.5) does not beat
    # 7's 0.5 (strictly larger is needed); 9 (0.3) is rejected.
    assert slots.tolist() == [0, -1, -1]
    assert mem.y.tolist() == [7, 1, 2]
    # A newcomer beating everything evicts the least salient one: 7 (0.5 at t=1, now 0.5 e^-1).
    clock.set_time(2.0)
    assert mem.add(torch.ones(1, 2), torch.ones(1, 2), 10.0, torch.tensor([5])).tolist() == [0]
    assert mem.y.tolist() == [5, 1, 2]
    torch.testing.assert_close(mem.log_salience(), torch.tensor([math.log(10.0), math.log(2) - 2, math.log(3) - 2],
                                                                dtype=torch.float64))


def test_capacity_one():
    mem = EpisodicMemory(1, 2, clock=SalienceClock(0.0, source="timestamps"))
    v = torch.ones(4, 2)
    slots = mem.add(v, v, torch.tensor([1.0, 3.0, 2.0, 3.0]), torch.tensor([0, 1, 2, 3]), now=0.0)
    assert slots.tolist() == [-1, 0, -1, -1] and mem.y.tolist() == [1] and len(mem) == 1


def test_full_buffer_rejects_lower_salience_newcomers(rng):
    mem = EpisodicMemory(5, 3, clock=SalienceClock(0.0, source="timestamps"))
    v = torch.randn(5, 3, generator=rng)
    mem.add(v, v, torch.full((5,), 2.0), torch.arange(5), now=0.0)
    before = {n: getattr(mem, n).clone() for n in ("z", "c", "y", "r0", "tau")}
    w = torch.randn(4, 3, generator=rng)
    slots = mem.add(w, w, torch.tensor([0.5, 1.0, 2.0, 1.9]), torch.arange(10, 14), now=1.0)
    assert (slots == -1).all()
    for name, value in before.items():
        assert torch.equal(getattr(mem, name), value)


def test_large_batch_mixed_fill_and_evict(rng):
    """Free slots and evictions in one batch, including batch items evicted by later ones."""
    cap = 50
    mem = EpisodicMemory(cap, 4, clock=SalienceClock(0.05, source="timestamps"))
    items = _fill(mem, rng, [30, 500, 7, 300], ties=False)
    assert mem.y.tolist() == sequential_rule(cap, items, 0.05)
    assert len(mem) == cap


def test_bad_input_raises_and_leaves_buffer_unchanged(rng):
    mem = EpisodicMemory(4, 3, payload_dim=5, clock=SalienceClock(0.1, source="timestamps"))
    mem.add(torch.randn(2, 5), torch.randn(2, 3), torch.tensor([1.0, 2.0]), torch.tensor([0, 1]), now=0.0)
    state = {n: getattr(mem, n).clone() for n in ("z", "c", "y", "r0", "tau")}
    z, c, r0, y = torch.randn(3, 5), torch.randn(3, 3), torch.ones(3), torch.tensor([4, 5, 6])
    nan_z = z.clone()
    nan_z[1, 2] = float("nan")
    bad_calls = [
        (dict(z=torch.randn(3, 4)), ValueError, r"z must have shape \[n, 5\]"),
        (dict(c=torch.randn(2, 3)), ValueError, r"c must have shape \[3, 3\]"),
        (dict(r0=torch.tensor([1.0, 0.0, 1.0])), ValueError, "r0 must be > 0"),
        (dict(r0=torch.tensor([1.0, -2.0, 1.0])), ValueError, "r0 must be > 0"),
        (dict(r0=torch.ones(2)), ValueError, r"r0 must have shape \[3\]"),
        (dict(z=nan_z), ValueError, "z must be finite"),
        (dict(r0=torch.tensor([1.0, float("nan"), 1.0])), ValueError, "r0 must be finite"),
        (dict(y=torch.tensor([1.0, 2.0, 3.0])), TypeError, "y must be an integer tensor"),  # was ValueError
        (dict(z=z.numpy()), TypeError, "z must be a torch.Tensor"),
    ]
    for override, exc, msg in bad_calls:
        args = dict(z=z, c=c, r0=r0, y=y) | override
        with pytest.raises(exc, match=msg):
            mem.add(args["z"], args["c"], args["r0"], args["y"], now=1.0)
        assert len(mem) == 2
        for name, value in state.items():
            assert torch.equal(getattr(mem, name), value), name
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        EpisodicMemory(0, 3)
    with pytest.raises(ValueError, match="x was given"):
        mem.add(z, c, r0, y, x=torch.zeros(3, 1, 2, 2))


def test_save_load_round_trip(tmp_path, rng):
    clock = SalienceClock(0.2, source="steps")
    mem = EpisodicMemory(6, 3, payload_dim=2, input_shape=(1, 2, 2), clock=clock)
    for _ in range(3):
        mem.add(torch.randn(4, 2, generator=rng), torch.randn(4, 3, generator=rng),
                torch.rand(4, generator=rng) + 0.1, torch.randint(10, (4,), generator=rng),
                x=torch.randn(4, 1, 2, 2, generator=rng))
        clock.tick()
    path = tmp_path / "memory.npz"
    mem.save(path)
    back = EpisodicMemory.load(path)
    assert len(back) == len(mem) == 6 and back.capacity == 6 and back.input_shape == (1, 2, 2)
    for name in ("z", "c", "x", "y", "tau"):
        assert torch.equal(getattr(back, name), getattr(mem, name)), name
    torch.testing.assert_close(back.log_salience(), mem.log_salience(), rtol=0, atol=0)
    assert back.clock.now() == clock.now() and back.clock.alpha == 0.2
    # The loaded memory keeps applying the same rule.
    z = torch.randn(5, 2, generator=rng)
    c = torch.randn(5, 3, generator=rng)
    args = (z, c, torch.rand(5, generator=rng) * 2 + 0.1, torch.arange(5))
    x = torch.randn(5, 1, 2, 2, generator=rng)
    assert torch.equal(mem.add(*args, x=x), back.add(*args, x=x))
    assert torch.equal(mem.y, back.y)
    # Corruption is detected.
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(_io.FormatError):
        EpisodicMemory.load(path)


def test_clear_and_len():
    mem = EpisodicMemory(3, 2)
    mem.add(torch.ones(2, 2), torch.ones(2, 2), 1.0, torch.tensor([0, 1]))
    assert len(mem) == 2
    mem.clear()
    assert len(mem) == 0 and mem.z.shape == (0, 2)


def test_clock_sources():
    steps = SalienceClock(0.5)
    assert steps.now() == 0.0 and steps.tick() == 1.0 and steps.tick(3) == 4.0
    stamps = SalienceClock(0.5, source="timestamps", start=10.0)
    stamps.set_time(12.5)
    assert stamps.now() == 12.5
    with pytest.raises(ValueError, match="must be finite and >="):
        stamps.set_time(1.0)
    with pytest.raises(ValueError, match=r"tick\(\) needs source='steps'"):
        stamps.tick()
    wall = SalienceClock(0.5, source="wall")
    assert 0.0 <= wall.now() < 60.0  # seconds since the clock was made, float64
    with pytest.raises(ValueError, match="source must be one of"):
        SalienceClock(0.5, source="sundial")
    with pytest.raises(ValueError, match="alpha must be"):
        SalienceClock(-1.0)


def test_recall_engine_matches_op_and_handles_small_memories(rng):
    mem = EpisodicMemory(20, 6, clock=SalienceClock(0.3, source="timestamps"))
    engine = RecallEngine(top_k=5)
    q = torch.randn(4, 6, generator=rng)
    assert torch.equal(engine.recall(q, mem), torch.zeros(4, 6))  # empty memory
    v = torch.randn(3, 6, generator=rng)
    mem.add(v, v, torch.tensor([1.0, 2.0, 3.0]), torch.arange(3), now=0.0)
    out, idx, w, _ = engine.recall(q, mem, now=1.0, details=True)
    assert idx.shape == (4, 3)  # fewer memories than top_k: all of them
    ref = reference.salience_topk(q, mem.c, mem.z, k=3, log_salience=mem.log_salience(1.0))
    torch.testing.assert_close(out, ref[0], atol=1e-5, rtol=1e-5)
    more = torch.randn(17, 6, generator=rng)
    mem.add(more, more, torch.rand(17, generator=rng) + 0.1, torch.arange(17), now=2.0)
    out = engine.recall(q, mem, now=5000.0)  # alpha * dt = 1500: float32 salience would be 0
    ref = ops.salience_topk(q, mem.c, mem.z, k=5, log_salience=mem.log_salience(5000.0), backend="torch")
    torch.testing.assert_close(out, ref[0])
    assert out.abs().sum() > 0


def test_encoder_decoder_shapes():
    assert Encoder(32, image_size=8)(torch.randn(5, 1, 8, 8)).shape == (5, 32)
    assert Encoder(16, image_size=28, in_channels=3)(torch.randn(2, 3, 28, 28)).shape == (2, 16)
    dec = MoEDecoder(16, 32, 10, num_experts=3)
    assert dec(torch.randn(4, 16), torch.randn(4, 16)).shape == (4, 10)
    with pytest.raises(ValueError, match="image_size must be >= 4"):
        Encoder(8, image_size=3)


def test_epinet_forward_memorize_replay(rng):
    model = EpiNet(latent_dim=16, image_size=8, hidden_dim=32, memory_capacity=10, top_k=3)
    x = torch.randn(6, 1, 8, 8, generator=rng)
    logits, z = model(x)
    assert logits.shape == (6, 10) and z.shape == (6, 16)
    slots = model.memorize(x, z, torch.arange(6), torch.rand(6, generator=rng) + 0.1)
    assert (slots >= 0).all() and len(model.memory) == 6
    xr, yr = model.replay_batch(4, generator=rng)
    assert xr.shape == (4, 1, 8, 8) and set(yr.tolist()) <= set(range(6))
    logits2, _ = model(x)  # the recall now contributes
    assert not torch.allclose(logits, logits2)
    logits.sum().backward()  # gradients flow through encoder and decoder


def test_split_digits_training_end_to_end():
    """Short CI configuration: accuracy on the current task well above chance (0.2 among 5 classes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster on a shared 2-core box
    try:
        torch.manual_seed(0)
        cfg = TrainConfig(epochs_per_task=4, lr=2e-3, latent_dim=32, hidden_dim=64, memory_capacity=150)
        result = train_split(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    for variant in ("memory", "no_memory"):
        acc = result.accuracy[variant]
        assert len(acc) == 2 and all(len(row) == 2 for row in acc)
        assert acc[0][0] > 0.5, acc  # task 0 after task 0
        assert acc[1][1] > 0.5, acc  # task 1 after task 1
    # Replay from the episodic memory keeps part of task 0; without it task 0 is forgotten.
    assert result.accuracy["memory"][1][0] > result.accuracy["no_memory"][1][0] + 0.05, result.accuracy
    assert result.memory_size == 150
    header, rows = result.table()
    assert len(rows) == 4 and header[0] == "variant"


def test_mnist_path_is_local_only(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MNIST IDX files"):
        load_mnist_tasks(tmp_path)


def test_cli_epinet_prints_forgetting_table(tmp_path, capsys):
    from mnemonix.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out_json = tmp_path / "epinet.json"
        rc = main(["epinet", "--epochs", "1", "--capacity", "40", "--latent-dim", "16", "--only", "memory",
                   "--no-progress", "--json", str(out_json)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    text = capsys.readouterr().out
    assert "acc task 0" in text and "memory" in text and out_json.is_file()
    assert main(["epinet", "--epochs", "0"]) == 2
    assert main(["epinet", "--mnist", str(tmp_path)]) == 2  # no IDX files there: clear error, no download


def test_epinet_to_moves_memory_with_the_model(rng):
    model = EpiNet(latent_dim=8, image_size=8, hidden_dim=16, memory_capacity=4)
    x = torch.randn(3, 1, 8, 8, generator=rng)
    _, z = model(x)
    model.memorize(x, z, torch.arange(3), torch.ones(3))
    moved = model.to(torch.float32).to("cpu")
    assert moved.memory.device == torch.device("cpu") and len(moved.memory) == 3
    copy = model.memory.to("cpu")
    assert copy is not model.memory and torch.equal(copy.z, model.memory.z)


def test_count_earlier_at_least_matches_brute_force(rng):
    from mnemonix.epinet import _count_earlier_at_least

    for R in (1, 2, 3, 7, 64, 100, 257):
        v = torch.randint(0, 6, (R,), generator=rng).double()  # many ties
        want = torch.tensor([int((v[:i] >= v[i]).sum()) for i in range(R)], dtype=torch.int64)
        assert torch.equal(_count_earlier_at_least(v), want)
