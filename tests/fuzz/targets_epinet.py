"""Probe targets: EpiNet (``mnemonix.epinet``): the clock, the episodic memory, the recall, the network."""

from __future__ import annotations

import functools
import math
import os

import torch
from hypothesis import strategies as st

from mnemonix.epinet import (
    Encoder,
    EpiNet,
    EpisodicMemory,
    MoEDecoder,
    RecallEngine,
    SalienceClock,
    TrainConfig,
    load_digits_tasks,
    load_mnist_tasks,
    train_split,
)

from .harness import (
    Target,
    bad_choice,
    bad_device,
    bad_flag,
    bad_generator,
    bad_int,
    bad_path,
    bad_real,
    bad_tensor,
    scratch_dir,
)

_G = torch.Generator().manual_seed(5)
REAL = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
INTS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
Z = torch.randn(3, 4, generator=_G)
C = torch.randn(3, 3, generator=_G)
R0 = torch.rand(3, generator=_G) + 0.1
Y = torch.arange(3)
X = torch.randn(3, 1, 2, 2, generator=_G)
IMAGES = torch.rand(2, 1, 8, 8, generator=_G)
LATENT = torch.randn(2, 6, generator=_G)


def memory() -> EpisodicMemory:
    """A full memory (the next add evicts) on a timestamps clock."""
    mem = EpisodicMemory(4, 3, payload_dim=4, input_shape=(1, 2, 2), clock=SalienceClock(0.1, source="timestamps"))
    g = torch.Generator().manual_seed(1)
    mem.add(torch.randn(4, 4, generator=g), torch.randn(4, 3, generator=g), torch.rand(4, generator=g) + 0.2,
            torch.arange(4), x=torch.randn(4, 1, 2, 2, generator=g), now=1.0)
    return mem


def epinet() -> EpiNet:
    torch.manual_seed(0)
    net = EpiNet(latent_dim=6, num_classes=3, image_size=8, hidden_dim=5, num_experts=2, memory_capacity=3, top_k=2)
    with torch.no_grad():
        net.memorize(IMAGES, LATENT, torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    return net


@functools.cache
def saved_memory() -> str:
    path = os.path.join(scratch_dir(), "episodic.npz")
    memory().save(path)
    return path


@functools.cache
def digits():
    x_train, y_train, x_test, y_test = load_digits_tasks(0)
    return x_train[:40], y_train[:40], x_test[:20], y_test[:20]


@functools.cache
def mnist_dir() -> str:
    """A folder of four tiny MNIST IDX files (3 training and 2 test images)."""
    folder = os.path.join(scratch_dir(), "mnist")
    os.makedirs(folder, exist_ok=True)
    for stem, dims in (("train-images-idx3-ubyte", (3, 28, 28)), ("train-labels-idx1-ubyte", (3,)),
                       ("t10k-images-idx3-ubyte", (2, 28, 28)), ("t10k-labels-idx1-ubyte", (2,))):
        head = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        with open(os.path.join(folder, stem), "wb") as fh:
            fh.write(head + bytes(math.prod(dims)))
    return folder


def _labels_bad(good: torch.Tensor):
    return st.one_of(bad_tensor(good, dtypes=INTS, sized=(0,), skip=("type:list", "type:numpy", "type:int")),
                     st.just(("float list", [1.5, 2.0, 3.0])))


def _bad_config():
    """A TrainConfig with one field replaced by a bad value."""
    fields = dict(epochs_per_task=bad_int(), batch_size=bad_int(), lr=bad_real(), beta=bad_real(0.0, low_open=False),
                  latent_dim=bad_int(), memory_capacity=bad_int(), top_k=bad_int(), store_per_step=bad_int(),
                  alpha=bad_real(0.0, low_open=False), seed=bad_int(0), max_steps_per_task=bad_int(none_ok=True),
                  tasks=st.sampled_from([("empty", ()), ("str", "01"), ("negative label", ((0, -1),)),
                                         ("float label", ((0, 1.5),)), ("empty task", ((0,), ())),
                                         ("no samples", ((0,), (11,)))]))

    def build(name_bad):
        name, (tag, value) = name_bad
        return f"config.{name}={tag}", TrainConfig(**{name: value})

    return st.sampled_from(sorted(fields)).flatmap(lambda n: fields[n].map(lambda b: (n, b))).map(build)


class _Recall:
    """A recall engine with the memory it reads (both are state a failed recall must not change)."""

    def __init__(self) -> None:
        self.engine = RecallEngine(2)
        self.memory = memory()

    def recall(self, **kw):
        if kw.get("memory") is None:
            kw["memory"] = self.memory
        return self.engine.recall(**kw)


TARGETS = [
    Target("SalienceClock", lambda _, **kw: SalienceClock(**kw), dict(alpha=0.1, source="steps", start=0.0),
           dict(alpha=bad_real(0.0, low_open=False), source=bad_choice(("steps", "timestamps", "wall")),
                start=bad_real(None))),
    Target("SalienceClock.tick", lambda clock, **kw: clock.tick(**kw), dict(steps=1),
           dict(steps=bad_int(0)), make=lambda: SalienceClock(0.1, start=5.0)),
    Target("SalienceClock.set_time", lambda clock, **kw: clock.set_time(**kw), dict(t=6.0),
           dict(t=st.one_of(bad_real(None), st.just(("backwards", 4.0)))),
           make=lambda: SalienceClock(0.1, source="timestamps", start=5.0)),
    Target("EpisodicMemory", lambda _, **kw: EpisodicMemory(**kw),
           dict(capacity=4, key_dim=3, payload_dim=None, input_shape=None, clock=None, device="cpu",
                dtype=torch.float32),
           dict(capacity=bad_int(1, 2**40), key_dim=bad_int(1, 2**40), payload_dim=bad_int(none_ok=True),
                input_shape=st.sampled_from([("str", "12"), ("zero", (0, 2)), ("float", (2.7,)), ("int", 3),
                                             ("negative", (-1,)), ("huge", (2**62, 2**62))]),
                clock=st.sampled_from([("str", "steps"), ("float", 0.1)]), device=bad_device(none_ok=False),
                dtype=st.sampled_from([("int", torch.int64), ("str", "float32"), ("None", None),
                                       ("complex", torch.complex64)]))),
    Target("EpisodicMemory.add", lambda mem, **kw: mem.add(**kw), dict(z=Z, c=C, r0=R0, y=Y, x=X, now=2.0),
           dict(z=bad_tensor(Z, dtypes=REAL, sized=(1,), skip=("rank-1", "empty:0")),
                c=bad_tensor(C, dtypes=REAL, sized=(0, 1), skip=("rank-1",)),
                r0=st.one_of(bad_tensor(R0, dtypes=REAL, sized=(0,), skip=("rank0", "type:int", "type:float")),
                             st.sampled_from([("zero", 0.0), ("negative", -R0)])),
                y=_labels_bad(Y), x=bad_tensor(X, dtypes=REAL, sized=(0, 1)),
                now=st.one_of(bad_real(None, none_ok=True), st.just(("vector", torch.ones(2))))),
           make=memory),
    Target("EpisodicMemory.log_salience", lambda mem, **kw: mem.log_salience(**kw), dict(now=2.0),
           dict(now=bad_real(None, none_ok=True)), make=memory),
    Target("EpisodicMemory.to", lambda mem, **kw: mem.to(**kw), dict(device="cpu"),
           dict(device=bad_device(none_ok=False)), make=memory),
    Target("EpisodicMemory.move_", lambda mem, **kw: mem.move_(**kw), dict(device="cpu"),
           dict(device=bad_device(none_ok=False)), make=memory),
    Target("EpisodicMemory.save", lambda mem, **kw: mem.save(**kw),
           dict(path=os.path.join(scratch_dir(), "episodic-unused.npz")), dict(path=bad_path()), make=memory),
    Target("EpisodicMemory.load", lambda _, **kw: EpisodicMemory.load(**kw), dict(path=saved_memory(), device=None),
           dict(path=bad_path(to_read=True), device=bad_device())),
    Target("load_mnist_tasks", lambda _, **kw: load_mnist_tasks(**kw), dict(path=mnist_dir()),
           dict(path=bad_path(to_read=True).filter(lambda b: b[0] != "folder"))),
    Target("RecallEngine", lambda _, **kw: RecallEngine(**kw), dict(top_k=2, backend=None),
           dict(top_k=bad_int(), backend=bad_choice(("torch", "triton"), none_ok=True))),
    Target("RecallEngine.recall", lambda eng, **kw: eng.recall(**kw),
           dict(queries=C, memory=None, now=None, details=False),
           dict(queries=bad_tensor(C, sized=(1,), skip=("empty:0",)),
                memory=st.sampled_from([("str", "memory"), ("clock", SalienceClock())]),
                now=bad_real(None, none_ok=True), details=bad_flag()),
           make=lambda: _Recall()),
    Target("Encoder", lambda _, **kw: Encoder(**kw), dict(latent_dim=6, image_size=8, in_channels=1),
           dict(latent_dim=bad_int(1, 2**40), image_size=bad_int(4, 2**40), in_channels=bad_int(1, 2**40))),
    Target("Encoder.forward", lambda enc, **kw: enc(**kw), dict(x=IMAGES),
           # a layer propagates NaN like torch's layers (no host sync per forward): nonfinite is not probed
           dict(x=bad_tensor(IMAGES, dtypes=REAL, sized=(1, 2, 3), skip=("empty:0", "nonfinite"))),
           make=lambda: Encoder(6, image_size=8)),
    Target("MoEDecoder", lambda _, **kw: MoEDecoder(**kw),
           dict(latent_dim=6, hidden_dim=5, num_classes=3, num_experts=2),
           dict(latent_dim=bad_int(1, 2**40), hidden_dim=bad_int(1, 2**40), num_classes=bad_int(1, 2**40),
                num_experts=bad_int(1, 2**40))),
    Target("MoEDecoder.forward", lambda dec, **kw: dec(**kw), dict(z=LATENT, r=LATENT),
           # a layer propagates NaN like torch's layers (no host sync per forward): nonfinite is not probed
           dict(z=bad_tensor(LATENT, dtypes=(torch.float32,), sized=(0, 1), skip=("empty:0", "nonfinite")),
                r=bad_tensor(LATENT, dtypes=(torch.float32,), sized=(0, 1), skip=("empty:0", "nonfinite"))),
           make=lambda: MoEDecoder(6, 5, 3, 2)),
    Target("EpiNet", lambda _, **kw: EpiNet(**kw),
           dict(latent_dim=6, num_classes=3, image_size=8, hidden_dim=5, num_experts=2, memory_capacity=3, top_k=2,
                clock=None, use_memory=True, recall_backend=None),
           dict(latent_dim=bad_int(1, 2**40), num_classes=bad_int(1, 2**40), memory_capacity=bad_int(1, 2**40),
                top_k=bad_int(), clock=st.sampled_from([("str", "steps"), ("float", 1e-3)]),
                use_memory=bad_flag(), recall_backend=bad_choice(("torch", "triton"), none_ok=True))),
    Target("EpiNet.forward", lambda net, **kw: net(**kw), dict(x=IMAGES),
           dict(x=bad_tensor(IMAGES, dtypes=REAL, sized=(1, 2, 3), skip=("empty:0",))), make=epinet),
    Target("EpiNet.memorize", lambda net, **kw: net.memorize(**kw),
           dict(x=IMAGES, z=LATENT, y=torch.tensor([2, 0]), salience=torch.tensor([3.0, 0.5])),
           dict(x=bad_tensor(IMAGES, dtypes=REAL, sized=(0, 1, 2, 3)),
                z=bad_tensor(LATENT, dtypes=REAL, sized=(0, 1), skip=("rank-1",)),
                y=_labels_bad(torch.tensor([2, 0])),
                salience=st.one_of(bad_tensor(torch.tensor([3.0, 0.5]), dtypes=REAL, sized=(0,),
                                              skip=("rank0", "type:int", "type:float")),
                                   st.just(("zero", 0.0)))),
           make=epinet),
    Target("EpiNet.memory", lambda net, **kw: setattr(net, "memory", kw["memory"]),
           dict(memory=EpisodicMemory(3, 6, input_shape=(1, 8, 8))),
           dict(memory=st.sampled_from([("str", "memory"), ("None", None), ("clock", SalienceClock())])),
           make=epinet),
    Target("EpiNet.replay_batch", lambda net, **kw: net.replay_batch(**kw), dict(n=2, generator=None),
           dict(n=bad_int(), generator=bad_generator()), make=epinet),
    Target("load_digits_tasks", lambda _, **kw: load_digits_tasks(**kw), dict(seed=0, test_fraction=0.3),
           dict(seed=bad_int(0), test_fraction=st.one_of(bad_real(0.0, high=1.0), st.sampled_from(
               [("empty test split", 1e-6), ("empty training split", 1 - 1e-6)])))),
    Target("train_split", lambda _, **kw: train_split(**kw),
           dict(config=TrainConfig(epochs_per_task=1, max_steps_per_task=1, tasks=((0, 1), (2, 3)), latent_dim=8,
                                   hidden_dim=8, batch_size=8, memory_capacity=8), data=digits(),
                progress=False, variants=("no_memory",), device="cpu"),
           dict(config=_bad_config(), progress=bad_flag(), device=bad_device(none_ok=True),
                data=st.sampled_from([("str", "digits"), ("3-tuple", digits()[:3]),
                                      ("float labels", (*digits()[:1], digits()[1].float(), *digits()[2:])),
                                      ("nan images", (digits()[0] * float("nan"), *digits()[1:])),
                                      ("meta images", (digits()[0].to("meta"), *digits()[1:]))]),
                variants=st.sampled_from([("str", "memory"), ("unknown", ("memory", "x")), ("None", None)])),
           names={"config": "config"}),
]
