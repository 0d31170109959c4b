"""EpiNet placement: the memory follows the model's device (no nn.Module._apply override), host syncs per add
are bounded (counted with a TorchFunctionMode), train_split takes a device, and on CUDA (``gpu``) training
keeps the model and its memory on the device."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from mnemonix.epinet import EpiNet, EpisodicMemory, SalienceClock, TrainConfig, train_split

HAS_CUDA = torch.cuda.is_available()
MEMORY_FIELDS = ("_c", "_c_norm", "_z", "_x", "_r0", "_tau", "_y", "_seq")


class SyncCounter(TorchFunctionMode):
    """Counts tensor operations that make the host wait for the device (scalar reads, nonzero, bool masks)."""

    SCALAR_READS = {"__bool__", "item", "__int__", "__float__", "__index__", "nonzero", "tolist", "numpy"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.SCALAR_READS:
            self.count += 1
        elif name in ("__getitem__", "__setitem__") and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            self.count += any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
        return func(*args, **(kwargs or {}))




def tiny_model(**kwargs) -> EpiNet:
    return EpiNet(**(dict(latent_dim=8, image_size=8, hidden_dim=16, num_experts=2, memory_capacity=12, top_k=3)
                     | kwargs))


def tiny_data(g: torch.Generator, n: int = 60):
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % 4
    return x[:40], y[:40].to(torch.int32), x[40:], y[40:].to(torch.uint8)  # labels of other integer dtypes


def test_epinet_does_not_override_module_internals():
    assert "_apply" not in EpiNet.__dict__ and "to" not in EpiNet.__dict__


def test_memory_keeps_its_dtypes_when_the_model_changes_dtype(rng, one_thread):
    model = tiny_model()
    x = torch.randn(5, 1, 8, 8, generator=rng)
    _, z = model(x)
    model.memorize(x, z, torch.arange(5), torch.rand(5, generator=rng) + 0.1)
    memory = model.memory
    model.double()
    assert model.memory is memory and memory.z.dtype == torch.float32 and memory.r0.dtype == torch.float64
    logits, z64 = model(x.double())  # recall in float32, decoder in float64
    assert logits.dtype == torch.float64 and z64.dtype == torch.float64
    model.memorize(x.double(), z64, torch.arange(5), torch.ones(5, dtype=torch.float64))
    assert len(model.memory) == 10
    with pytest.raises(TypeError, match="memory must be an EpisodicMemory"):
        model.memory = "elsewhere"


def test_move_in_place_and_copy(rng):
    mem = EpisodicMemory(4, 2, input_shape=(3,))
    v = torch.randn(3, 2, generator=rng)
    mem.add(v, v, 1.0, [0, 1, 2], x=torch.randn(3, 3, generator=rng))
    same = mem.move_("cpu")
    assert same is mem
    copy = mem.to("cpu")
    assert copy is not mem and copy.clock is mem.clock and torch.equal(copy.x, mem.x)
    copy.add(v[:1], v[:1], 5.0, [9], x=torch.zeros(1, 3))
    assert len(copy) == 4 and len(mem) == 3  # separate storage
    assert all(getattr(mem, f).data_ptr() != getattr(copy, f).data_ptr() for f in MEMORY_FIELDS)


@pytest.mark.parametrize("batches", [[5, 5, 2], [30, 1, 7, 200], [12, 12, 12]])
def test_host_syncs_per_add_are_bounded(rng, batches):
    """1 sync while the batch fits in the free slots, at most 3 when it overflows (as the docstring states)."""
    mem = EpisodicMemory(12, 4, clock=SalienceClock(0.3, source="timestamps"))
    for t, n in enumerate(batches):
        z = torch.randn(n, 4, generator=rng)
        fits = len(mem) + n <= mem.capacity
        with SyncCounter() as counter:
            mem.add(z, z, torch.rand(n, generator=rng) + 0.1, torch.arange(n), now=float(t))
        assert counter.count == 1 if fits else 1 <= counter.count <= 3, (n, counter.count)


def test_train_split_takes_a_device_and_checks_its_inputs(rng, one_thread):
    data = tiny_data(rng)
    cfg = TrainConfig(tasks=((0, 1), (2, 3)), epochs_per_task=1, batch_size=8, latent_dim=8, hidden_dim=16,
                      memory_capacity=10, max_steps_per_task=2)
    result = train_split(cfg, data=data, progress=False, device="cpu")
    assert result.device == "cpu" and result.as_dict()["device"] == "cpu" and result.memory_size == 10
    for bad, exc, name in [
        (dict(beta=-1.0), ValueError, "config.beta"), (dict(store_per_step=0), ValueError, "config.store_per_step"),
        (dict(lr=0.0), ValueError, "config.lr"), (dict(tasks=()), ValueError, "config.tasks"),
        (dict(tasks=((0, -1),)), ValueError, r"config.tasks\[0\]"), (dict(alpha="x"), TypeError, "config.alpha"),
        (dict(max_steps_per_task=0), ValueError, "config.max_steps_per_task"),
        (dict(tasks=((0, 1), (7,))), ValueError, r"config.tasks\[1\].*no training samples"),
    ]:
        with pytest.raises(exc, match=name):
            train_split(TrainConfig(**(cfg.__dict__ | bad)), data=data, progress=False, device="cpu")
    x_train, y_train, x_test, y_test = data
    for bad_data, exc, name in [
        ((x_train, y_train.float(), x_test, y_test), TypeError, "y_train"),
        ((x_train, y_train[:-1], x_test, y_test), ValueError, "y_train"),
        ((x_train[:, :, :4], y_train, x_test, y_test), ValueError, "x_train"),
        ((x_train, y_train, x_test[:, :, :6, :6], y_test), ValueError, "x_test"),
        ((x_train, y_train), TypeError, "data"),
    ]:
        with pytest.raises(exc, match=name):
            train_split(cfg, data=bad_data, progress=False, device="cpu")
    for device, exc in [("meta", ValueError), (1.5, TypeError), ("gpu9", ValueError)]:
        with pytest.raises(exc, match="device"):
            train_split(cfg, data=data, progress=False, device=device)
    with pytest.raises(ValueError, match="variants"):
        train_split(cfg, data=data, progress=False, variants=("both",), device="cpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error(rng):
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_split(TrainConfig(max_steps_per_task=1), data=tiny_data(rng), progress=False, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        EpisodicMemory(3, 2, device="cuda")


def _assert_memory_on(memory: EpisodicMemory, device_type: str) -> None:
    assert memory.device.type == device_type
    for name in MEMORY_FIELDS:
        value = getattr(memory, name)
        assert value is None or value.device.type == device_type, name


@pytest.mark.gpu
@pytest.mark.parametrize("backend", [None, "torch"])
def test_epinet_trains_on_cuda_and_its_memory_stays_there(backend, tmp_path):
    torch.manual_seed(0)
    model = tiny_model(recall_backend=backend).cuda()
    _assert_memory_on(model.memory, "cuda")  # moved on first access after .cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)  # a CPU generator: draws are moved to the device
    x = torch.randn(64, 1, 8, 8, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    for _ in range(8):  # 8 steps x 4 stored > capacity 12: the eviction path runs on the device
        idx = torch.randperm(64, generator=g)[:16].cuda()
        logits, z = model(x[idx])
        loss = torch.nn.functional.cross_entropy(logits, y[idx])
        replay = model.replay_batch(8, generator=g)
        if replay is not None:
            loss = loss + torch.nn.functional.cross_entropy(model(replay[0])[0], replay[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.memorize(x[idx[:4]], z[:4], y[idx[:4]], torch.rand(4, device="cuda") + 0.1)
        model.memory.clock.tick()
    assert torch.isfinite(loss)
    _assert_memory_on(model.memory, "cuda")
    assert len(model.memory) == 12
    recall = model.recaller.recall(z.detach(), model.memory)
    assert recall.device.type == "cuda" and torch.isfinite(recall).all()
    model.memory.save(tmp_path / "m.npz")
    _assert_memory_on(EpisodicMemory.load(tmp_path / "m.npz"), "cuda")  # default: where it was saved from
    snapshot = model.memory.y.cpu()
    model.cpu()
    _assert_memory_on(model.memory, "cpu")
    assert torch.equal(model.memory.y, snapshot)


@pytest.mark.gpu
def test_train_split_defaults_to_cuda(rng):
    cfg = TrainConfig(tasks=((0, 1), (2, 3)), epochs_per_task=1, batch_size=8, latent_dim=8, hidden_dim=16,
                      memory_capacity=10, max_steps_per_task=3)
    result = train_split(cfg, data=tiny_data(rng), progress=False)
    assert result.device.startswith("cuda") and result.memory_size == 10
    assert all(0.0 <= a <= 1.0 for row in result.accuracy["memory"] for a in row)
