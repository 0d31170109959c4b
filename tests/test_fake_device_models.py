"""Every model on the fake CUDA device: no device mix, host syncs and copies per step within budget.

Under :func:`mnemonix.testing.fake_cuda` (the ``fake_device`` fixture) the models run their CUDA
paths on CPU data: Hopfield networks, EpiNet (memory, network, a few ``train_split`` steps),
Memoria (the README loop, both tie-breaks, a CPU generator), consolidation (a tiny
teacher-student run and the analyses). Each scenario must leave no violation (device mix,
``.numpy()`` of CUDA data, a CPU generator drawing for CUDA tensors) and stay within the host
syncs (and, for Memoria, the host <-> device copies) stated below and in docs/gpu.md. Results
must equal the same scenario on the CPU.

The ops' own syncs are counted apart (:class:`OpMeter` wraps the ``mnemonix.ops`` entry
points): ``MODEL_BUDGET`` holds what the model code adds, ``OP_BUDGET`` the ops' share per call
(``hopfield_retrieve`` is being rewritten elsewhere: its line is an upper bound).
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from mnemonix import ops

# Host syncs (and copies) a model step adds on CUDA, valid inputs, its ops excluded. Also in docs/gpu.md.
MODEL_BUDGET = {
    "ModernHopfield.retrieve": 0,  # was 1 (the energy's float(M)) + 1 (re-check of its own states)
    "ModernHopfield.energy": 1,  # the states' finite check
    "ModernHopfield.add": 1,  # the patterns' finite check
    "ModernHopfield.load": 1,  # the patterns' copy to the device (was 2: + a re-check of checked data)
    "ClassicalHopfield.retrieve": 1,  # the cues' +-1 check (was 2: + a re-check of its own states) ...
    "ClassicalHopfield.retrieve per update": 1,  # ... + the convergence test of each synchronous update
    "DenseHopfield.retrieve": 2,  # the cues' check + the energy range warning (was 3) ...
    "DenseHopfield.retrieve per sweep": 1,  # ... + the convergence test of each sweep (was 2 synchronous)
    "EpisodicMemory.add": 1,  # the inputs' validity, folded into one read
    "EpisodicMemory.add overflowing": 3,  # + the admission: a tie test and the number admitted
    "RecallEngine.recall": 0,
    "EpiNet.forward": 0,
    "EpiNet.replay_batch": 0,  # a CPU generator's permutation: copied without a host wait (was 1)
    "train_split step": 3,  # memorize (1) + admission (2) when the memory overflows; was 3 + 3 copies
    "train_split evaluation": 0,  # per task: the accuracies are read once per stage (was 1 + masks)
    "Memoria.add_working_memory": 1,  # the data's finite check (was 3: + 2 blocking key copies)
    "Memoria.remind": 3,  # types, short-term picks, long-term picks to the host graph (was 18-20)
    "Memoria.remind, noise on CUDA": 4,  # + the tie-break picks drawn with CUDA noise
    "Memoria.adjust_lifespan_and_memories": 1,  # checks + verdicts + keep-mask in one copy (was 3)
    "train_vae per batch": 0,
    "train_vae per epoch": 6,  # the epoch's loss sums (1) + evaluate: MSE, probe (finite, classes), accuracy
    "replay_from_noise": 1,  # torch.cuda.synchronize for the timing (the op's own: per batch)
    "ExtendedModel.recall": 1,  # the cues' finite check (was 2: + a re-check of its own outputs)
    "latent_space_2d": 3,  # coordinates, labels and ratios to the host (the figure and PCA numbers)
    "interpolation": 3,  # the two images' finite checks + one read of both errors
    "vector_arithmetic": 7,  # the classes (2), three boolean selections, two rates
    "prototypical_distortion": 2,  # the classes + one read of the three numbers
    "boundary_extension": 1,  # one read of every zoom's result (was 4: + blocking render copies)
}
# Host <-> device copies of a Memoria step (the C++ graph is on the host; docs/memoria.md).
MEMORIA_COPIES = {"Memoria.add_working_memory": 1, "Memoria.remind": 6, "Memoria.adjust_lifespan_and_memories": 1}
# The ops' share, per call on CUDA (tests/test_fake_device_ops.py holds salience_topk and lifespan_step).
OP_BUDGET = {
    "hopfield_retrieve": 1,  # the inputs' value checks and the result's finite flag, read together ...
    "hopfield_retrieve per update step": 2,  # ... + a convergence mask and a result check per extra update
    "salience_topk": 1,
    "nearest_keys": 1,  # the certified backend's one read
    "lifespan_step(check_inputs=False)": 0,
}
OPS = ("hopfield_retrieve", "salience_topk", "nearest_keys", "lifespan_step", "compact_engrams")


@dataclass
class Counted:
    """What one call cost: host syncs (all, and those inside each op), copies, what it returned."""

    syncs: int
    op_syncs: dict[str, int]
    op_calls: dict[str, int]
    copies: int
    op_copies: int = 0
    out: object = None
    where: str = field(default="", repr=False)

    @property
    def own(self) -> int:
        """Syncs the model code made itself (outside the ops)."""
        return self.syncs - sum(self.op_syncs.values())

    @property
    def own_copies(self) -> int:
        """Host <-> device copies the model code made itself (outside the ops)."""
        return self.copies - self.op_copies


class OpMeter:
    """Counts the syncs made inside each ``mnemonix.ops`` entry point (models call them as ``ops.name``)."""

    def __init__(self, fc, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fc = fc
        self.syncs: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()
        self.copies = 0
        for name in OPS:
            monkeypatch.setattr(ops, name, self._wrapped(name, getattr(ops, name)))

    def _wrapped(self, name: str, fn):
        def run(*args, **kwargs):
            before, copies = self.fc.syncs, self.fc.copies
            try:
                return fn(*args, **kwargs)
            finally:
                self.syncs[name] += self.fc.syncs - before
                self.copies += self.fc.copies - copies
                self.calls[name] += 1
        return run

    def __call__(self, call) -> Counted:
        self.fc.reset()
        self.syncs.clear()
        self.calls.clear()
        self.copies = 0
        out = call()
        return Counted(self.fc.syncs, dict(self.syncs), dict(self.calls), self.fc.copies, self.copies, out,
                       self.fc.describe())


@pytest.fixture
def meter(fake_device, monkeypatch):
    return OpMeter(fake_device, monkeypatch)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def within(c: Counted, budget: int, op_budget: dict[str, int] | None = None) -> None:
    assert c.own <= budget, f"{c.own} own syncs > {budget}:\n{c.where}"
    for name, syncs in c.op_syncs.items():
        limit = (op_budget or {}).get(name, OP_BUDGET.get(name, 0)) * max(1, c.op_calls[name])
        assert syncs <= limit, f"{name}: {syncs} syncs in {c.op_calls[name]} calls > {limit}:\n{c.where}"


def same(a, b) -> None:
    """Equal up to float32 rounding (the CUDA paths run Triton kernels, the CPU ones BLAS)."""
    torch.testing.assert_close(a.cpu() if isinstance(a, torch.Tensor) else a, b, rtol=1e-4, atol=1e-5)


# -- Hopfield -----------------------------------------------------------------------------------

def test_hopfield_models_on_fake_cuda(meter, rng, tmp_path):
    from mnemonix.hopfield import ClassicalHopfield, DenseHopfield, ModernHopfield

    x = torch.randn(24, 12, generator=rng)
    q = x[:5] + 0.3 * torch.randn(5, 12, generator=rng)
    bits = torch.where(torch.randn(6, 40, generator=rng) > 0, 1.0, -1.0)
    cues = bits[:4] * torch.where(torch.rand(4, 40, generator=rng) < 0.15, -1.0, 1.0)
    want = ModernHopfield(x, beta=2.0, max_iter=3).retrieve(q)
    want_classical = ClassicalHopfield(bits, max_iter=5).retrieve(cues)
    want_dense = {u: DenseHopfield(bits, update=u, max_iter=4).retrieve(cues) for u in ("sequential", "synchronous")}

    xc, qc, bc, cc = x.cuda(), q.cuda(), bits.cuda(), cues.cuda()
    net = ModernHopfield(xc, beta=2.0, max_iter=3)
    got = meter(lambda: net.retrieve(qc))
    update_op = OP_BUDGET["hopfield_retrieve"] + 2 * OP_BUDGET["hopfield_retrieve per update step"]
    within(got, MODEL_BUDGET["ModernHopfield.retrieve"], {"hopfield_retrieve": update_op})  # + the energy call
    assert got.op_calls == {"hopfield_retrieve": 2}
    r = got.out
    assert r.states.is_cuda and r.nearest.is_cuda and r.energy.is_cuda
    same(r.states, want.states)
    same(r.energy, want.energy)
    assert torch.equal(r.nearest.cpu(), want.nearest)
    within(meter(lambda: net.energy(qc)), MODEL_BUDGET["ModernHopfield.energy"])
    within(meter(lambda: net.add(xc[:2])), MODEL_BUDGET["ModernHopfield.add"])
    net.save(tmp_path / "modern.npz")
    loaded = meter(lambda: ModernHopfield.load(tmp_path / "modern.npz"))  # device=None: back to CUDA
    within(loaded, MODEL_BUDGET["ModernHopfield.load"])
    assert loaded.out.patterns.is_cuda and len(loaded.out) == 26

    classical = meter(lambda: ClassicalHopfield(bc, max_iter=5).retrieve(cc))
    updates = min(5, int(classical.out.steps.max()) + 1)
    within(classical, MODEL_BUDGET["ClassicalHopfield.retrieve"] + 1  # the store's check of the patterns
           + updates * MODEL_BUDGET["ClassicalHopfield.retrieve per update"])
    assert torch.equal(classical.out.states.cpu(), want_classical.states)
    for update, expected in want_dense.items():
        dense = DenseHopfield(bc, update=update, max_iter=4)
        res = meter(functools.partial(dense.retrieve, cc))
        sweeps = min(4, int(res.out.steps.max()) + 1)
        within(res, MODEL_BUDGET["DenseHopfield.retrieve"] + sweeps * MODEL_BUDGET["DenseHopfield.retrieve per sweep"])
        assert torch.equal(res.out.states.cpu(), expected.states) and torch.equal(res.out.energy.cpu(),
                                                                                  expected.energy)


# -- EpiNet -------------------------------------------------------------------------------------

def tiny_epinet():
    from mnemonix.epinet import EpiNet

    torch.manual_seed(0)
    return EpiNet(latent_dim=8, image_size=8, hidden_dim=16, num_experts=2, memory_capacity=6, top_k=3)


def test_episodic_memory_and_epinet_on_fake_cuda(meter, rng):
    from mnemonix.epinet import EpisodicMemory, RecallEngine

    z = torch.randn(4, 6, generator=rng)
    r0 = torch.rand(4, generator=rng) + 0.1
    xb = torch.randn(5, 1, 8, 8, generator=rng)
    cpu_net = tiny_epinet()
    cpu_logits, cpu_z = cpu_net(xb)
    cpu_net.memorize(xb, cpu_z, torch.arange(5), torch.rand(5, generator=torch.Generator().manual_seed(1)) + 0.1)
    cpu_after, _ = cpu_net(xb)

    zc, r0c, yc = z.cuda(), r0.cuda(), torch.arange(4).cuda()
    mem = EpisodicMemory(6, 6, device="cuda")
    within(meter(lambda: mem.add(zc, zc, r0c, yc)), MODEL_BUDGET["EpisodicMemory.add"])
    within(meter(lambda: mem.add(zc, zc, r0c, yc)), MODEL_BUDGET["EpisodicMemory.add overflowing"])
    recall = meter(lambda: RecallEngine(3).recall(zc, mem))
    within(recall, MODEL_BUDGET["RecallEngine.recall"])
    assert recall.op_calls == {"salience_topk": 1} and recall.out.is_cuda

    net = tiny_epinet().to("cuda")
    xc = xb.cuda()
    logits, zz = net(xc)  # the memory follows the model on first access (a one-time move)
    same(logits, cpu_logits)
    salience = (torch.rand(5, generator=torch.Generator().manual_seed(1)) + 0.1).cuda()
    labels = torch.arange(5).cuda()
    within(meter(lambda: net.memorize(xc, zz, labels, salience)),
           MODEL_BUDGET["EpisodicMemory.add"])
    forward = meter(lambda: net(xc))
    within(forward, MODEL_BUDGET["EpiNet.forward"])
    same(forward.out[0], cpu_after)
    replay = meter(lambda: net.replay_batch(3, generator=torch.Generator().manual_seed(2)))
    within(replay, MODEL_BUDGET["EpiNet.replay_batch"])
    assert replay.copies == 1 and replay.out[0].is_cuda and replay.out[0].shape == (3, 1, 8, 8)


def test_train_split_steps_on_fake_cuda(meter, rng, monkeypatch):
    from mnemonix.epinet import TrainConfig, train_split, training

    steps, evaluations = [], []

    def counted(record, fn):
        def run(*args, **kwargs):
            before = (meter.fc.syncs, sum(meter.syncs.values()))
            out = fn(*args, **kwargs)
            record.append((meter.fc.syncs - before[0], sum(meter.syncs.values()) - before[1]))
            return out
        return run

    x = torch.randn(48, 1, 8, 8, generator=rng)
    y = torch.arange(48) % 4
    cfg = TrainConfig(tasks=((0, 1), (2, 3)), epochs_per_task=1, batch_size=6, latent_dim=8, hidden_dim=16,
                      num_experts=2, memory_capacity=5, top_k=3, store_per_step=3, max_steps_per_task=3)
    data = (x[:36], y[:36], x[36:], y[36:])
    want = train_split(cfg, data=data, progress=False, device="cpu", variants=("memory",))
    monkeypatch.setattr(training, "_step", counted(steps, training._step))
    monkeypatch.setattr(training, "_correct_fraction", counted(evaluations, training._correct_fraction))
    got = meter(lambda: train_split(cfg, data=data, progress=False, device="cuda", variants=("memory",)))
    assert got.out.device.startswith("cuda") and got.out.memory_size == 5
    for a, b in zip(got.out.accuracy["memory"], want.accuracy["memory"]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(steps) == 6 and len(evaluations) == 4
    for total, in_ops in steps:  # two forwards (the batch, the replay): one salience_topk each
        assert total - in_ops <= MODEL_BUDGET["train_split step"], steps
        assert in_ops <= 2 * OP_BUDGET["salience_topk"], steps
    assert all(total - in_ops <= MODEL_BUDGET["train_split evaluation"] for total, in_ops in evaluations), evaluations


# -- Memoria ------------------------------------------------------------------------------------

MEMORIA_CFG = dict(num_reminded_stm=4, stm_capacity=6, ltm_search_depth=3, initial_lifespan=4, num_final_ltms=3)


def memoria_loop(where: str, steps: int, meter: OpMeter | None = None, **kwargs) -> tuple[list, list, object]:
    """The README loop; returns the per-step outputs (on the CPU), with a meter each phase's cost, the memory."""
    from mnemonix.memoria import Memoria

    m = Memoria(**MEMORIA_CFG, track_age=True, track_id=True, **kwargs)
    gen = torch.Generator().manual_seed(7)
    run = meter or (lambda call: Counted(0, {}, {}, 0, 0, call()))
    outs, costs = [], []
    for _ in range(steps):
        data = torch.rand(2, 3, 16, generator=gen).to(where)
        add = run(functools.partial(m.add_working_memory, data))
        remind = run(m.remind)
        memories, indices = remind.out
        delta = torch.randint(0, 4, indices.shape, generator=gen).float().to(where)
        adjust = run(functools.partial(m.adjust_lifespan_and_memories, indices, delta))
        outs.append([t.cpu().clone() for t in (memories, indices, m.engrams.lifespan, m.engrams.engrams_types)])
        costs.append({"Memoria.add_working_memory": add, "Memoria.remind": remind,
                      "Memoria.adjust_lifespan_and_memories": adjust})
    assert (m.engrams.engrams_types == 3).any(), "the loop must reach the long-term search"
    return outs, costs, m


@pytest.mark.parametrize("tie_break", ["original", "random"])
def test_memoria_readme_loop_on_fake_cuda(meter, tie_break):
    want, _, cpu = memoria_loop("cpu", 9, generator=torch.Generator().manual_seed(3), tie_break=tie_break)
    got, costs, cuda = memoria_loop("cuda", 9, meter, generator=torch.Generator().manual_seed(3), tie_break=tie_break)
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert cuda.engrams == cpu.engrams  # co-fire counts included
    for phase, cost in costs[-1].items():  # a step with long-term engrams: every part of the search runs
        assert cost.own == MODEL_BUDGET[phase], f"{phase}: {cost.own} syncs\n{cost.where}"
        assert cost.own_copies == MEMORIA_COPIES[phase], f"{phase}: {cost.own_copies} copies"
        within(cost, MODEL_BUDGET[phase], {"lifespan_step": OP_BUDGET["lifespan_step(check_inputs=False)"]})
    assert costs[-1]["Memoria.remind"].op_calls == {"nearest_keys": 2}


def test_memoria_variants_on_fake_cuda(meter, tmp_path):
    """CUDA tie-break noise (no generator), the fixes, the step-by-step path and persistence: no device mix."""
    from mnemonix.memoria import Memoria

    _, costs, _ = memoria_loop("cuda", 8, meter, device="cuda")  # the original's stream: the global CUDA generator
    assert costs[-1]["Memoria.remind"].own == MODEL_BUDGET["Memoria.remind, noise on CUDA"], costs[-1]
    want, _, cpu = memoria_loop("cpu", 8, generator=torch.Generator().manual_seed(4), fix_quirks=True)
    got, _, cuda = memoria_loop("cuda", 8, generator=torch.Generator().manual_seed(4), fix_quirks=True)
    assert all(torch.equal(x, y) for a, b in zip(got, want) for x, y in zip(a, b)) and cuda.engrams == cpu.engrams

    class Stepwise(Memoria):  # overriding a step runs the original's structure: slower, but on the device
        def _select_final_ltms(self, working_memory, found):
            return super()._select_final_ltms(working_memory, found)

    m = Stepwise(**MEMORIA_CFG, generator=torch.Generator().manual_seed(4))
    ref = Memoria(**MEMORIA_CFG, generator=torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(5)
    for _ in range(7):
        data = torch.rand(1, 3, 16, generator=gen)
        m.add_working_memory(data.cuda())
        ref.add_working_memory(data)
        (mem, idx), (mem_ref, idx_ref) = m.remind(), ref.remind()
        assert torch.equal(idx.cpu(), idx_ref) and torch.equal(mem.cpu(), mem_ref)
        m.adjust_lifespan_and_memories(idx, torch.ones_like(idx, dtype=torch.float32))
        ref.adjust_lifespan_and_memories(idx_ref, torch.ones_like(idx_ref, dtype=torch.float32))
    m.save(tmp_path / "m.npz")
    loaded = Memoria.load(tmp_path / "m.npz")  # device=None: back where it was saved from
    assert loaded.engrams.device.type == "cuda" and loaded.engrams == ref.engrams
    with pytest.raises(ValueError, match="lifespan_delta must be finite"):  # checked in the step's one read
        loaded.adjust_lifespan_and_memories(idx, torch.full(idx.shape, float("nan"), device="cuda"))
    with pytest.raises(ValueError, match=r"indices must be < \d+ \(the number of engrams per row\)"):
        loaded.adjust_lifespan_and_memories(idx.clamp(min=0) + 1000, torch.ones(idx.shape, device="cuda"))
    assert loaded.engrams == ref.engrams  # the refused calls changed nothing


# -- consolidation ------------------------------------------------------------------------------

def test_consolidation_teacher_student_on_fake_cuda(meter):
    from mnemonix.consolidation import ConsolidationConfig, load_digits, run_teacher_student, train_vae

    data = load_digits().subset(slice(0, 48))
    cfg = ConsolidationConfig(n_stored=36, epochs=1, batch_size=12, hopfield_batch=16)
    run = meter(lambda: run_teacher_student(data, cfg, device="cuda"))
    res = run.out
    assert res.vae.device.type == "cuda" and res.replay.images.is_cuda and res.summary["device"].startswith("cuda")
    assert run.op_calls["hopfield_retrieve"] == 3  # 36 cues, 16 per fused call
    # train_vae alone: no sync between batches, a fixed number per epoch
    marks = []
    epoch = meter(lambda: train_vae(res.vae, res.replay.images, res.stored.classes[res.replay.nearest],
                                    res.heldout, epochs=1, batch_size=6,
                                    on_batch=lambda: marks.append(meter.fc.syncs)))
    assert len(marks) == 6 and len(set(marks)) == 1, marks  # six batches, not one sync between them
    evaluate_once = epoch.syncs - marks[0]  # the epoch's read + its evaluation
    assert evaluate_once <= MODEL_BUDGET["train_vae per epoch"], epoch.where


def test_consolidation_analyses_on_fake_cuda(meter, rng):
    from mnemonix.consolidation import (
        ExtendedModel,
        LargeVAE,
        TinyVAE,
        boundary_extension,
        interpolation,
        latent_space_2d,
        load_digits,
        prototypical_distortion,
        replay_from_noise,
        sample_factors,
        threshold_sweep,
        vector_arithmetic,
    )
    from mnemonix.consolidation.teacher_student import build_hopfield

    torch.manual_seed(0)
    vae = TinyVAE().to("cuda").eval()
    data = load_digits().subset(slice(0, 30)).to(vae.device)
    replay = meter(lambda: replay_from_noise(build_hopfield(data.images), 20, data.image_shape, batch_size=8))
    within(replay, MODEL_BUDGET["replay_from_noise"] + 2)  # + build_hopfield's checks of the images
    assert replay.out.images.is_cuda and replay.op_calls["hopfield_retrieve"] == 3
    for name, call in [
        ("latent_space_2d", lambda: latent_space_2d(vae, data)),
        ("interpolation", lambda: interpolation(vae, data.images[0], data.images[1], steps=4)),
        ("vector_arithmetic", lambda: vector_arithmetic(vae, data)),
        ("prototypical_distortion", lambda: prototypical_distortion(vae, data)),
    ]:
        within(meter(call), MODEL_BUDGET[name])
    ext = ExtendedModel(vae, threshold=0.2).store(data.images[:10])
    cues = ext.noisy_cues(0.05)
    assert cues.is_cuda
    recall = meter(lambda: ext.recall(cues))
    within(recall, MODEL_BUDGET["ExtendedModel.recall"])
    assert recall.out.images.is_cuda and recall.op_calls == {"hopfield_retrieve": 1}
    rows = meter(lambda: threshold_sweep(vae, data.images[:8], [0.1, 0.5]))
    assert len(rows.out) == 2 and rows.op_calls == {"hopfield_retrieve": 2}
    large = LargeVAE(latent_dim=4).to("cuda").eval()
    shift = meter(lambda: boundary_extension(large, sample_factors(1, seed=1), zooms=(0.9, 1.1), grid=(0.8, 1.2)))
    within(shift, MODEL_BUDGET["boundary_extension"])
    assert len(shift.out.output_zooms) == 2


# -- plastic ------------------------------------------------------------------------------------

def test_plastic_memory_is_host_only_and_refuses_tensors(fake_device):
    """PlasticMemory is a C++ engine over strings: it takes no tensor and never touches a device."""
    from mnemonix.plastic import PlasticMemory, tokenize

    mem = PlasticMemory()
    mem.learn_many([tokenize(n) for n in ["emily", "emma", "ella"]], progress=False)
    fake_device.reset()
    assert mem.infer(">em").completion in {">emily_", ">emma_"}
    assert fake_device.syncs == 0 and fake_device.copies == 0
    sample = torch.ones(3, device="cuda")
    for call in (lambda: mem.learn(sample), lambda: mem.infer(sample), lambda: mem.potentiate(sample)):
        with pytest.raises(TypeError, match="must be a str, got Tensor"):
            call()
    with pytest.raises(TypeError, match="must be a str"):
        mem.learn_many([sample], progress=False)
    assert len(mem) > 0 and mem.samples == 3  # the refused calls changed nothing


def test_memoria_host_keys_follow_every_change_of_the_engrams(rng):
    """The host copy of the graph keys (what the steps read instead of the device) always equals the device's."""
    from mnemonix.memoria import Memoria

    def check(e) -> None:
        uids, slots = e.host_keys()
        assert np.array_equal(uids, e._uids.cpu().numpy()) and np.array_equal(slots, e._slots.cpu().numpy())

    m = Memoria(**MEMORIA_CFG, generator=torch.Generator().manual_seed(1))
    for step in range(8):
        m.add_working_memory(torch.rand(2, 3, 16, generator=rng))
        check(m.engrams)
        _, idx = m.remind()
        m.adjust_lifespan_and_memories(idx, torch.randint(0, 3, idx.shape, generator=rng).float())
        check(m.engrams)
        e = m.engrams
        if step == 3:
            e.delete(torch.tensor([[0], [1]]))
        elif step == 4:
            e.retain(e.lifespan > 1)
        elif step == 5:
            counts = e.induce_counts
            counts[0, 0, 1] = 5  # an asymmetric count: the row is rebuilt, its slots change
            e.induce_counts = counts
        elif step == 6:
            m.engrams = e.select(torch.arange(e.memory_length - 1, -1, -1).expand(2, -1).contiguous())
        check(m.engrams)
    check(m.engrams + m.engrams.select(torch.tensor([0])))
    for row in m.engrams:
        check(row)
