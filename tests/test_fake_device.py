"""The fake CUDA device (mnemonix.testing.fake_cuda) itself: tags, violations, sync counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnemonix.testing import FakeDeviceError, fake_cuda, is_fake_cuda


def test_moves_and_factories_report_cuda():
    with fake_cuda() as fc:
        assert torch.cuda.is_available() and torch.cuda.get_device_properties(0).multi_processor_count == 132
        for x in (torch.ones(3).cuda(), torch.ones(3).to("cuda"), torch.ones(3).to(torch.device("cuda", 0)),
                  torch.zeros(3, device="cuda"), torch.arange(4, device=torch.device("cuda"))):
            assert is_fake_cuda(x) and x.is_cuda and x.device == torch.device("cuda", 0)
        y = torch.ones(2, 2, device="cuda")
        derived = [y + 1, y.sum(), y[0], torch.empty_like(y), y.to(torch.float16), torch.topk(y, 1, dim=1).values]
        assert all(t.device.type == "cuda" for t in derived)
        assert torch.zeros(2).device.type == "cpu" and not is_fake_cuda(y.cpu())
        assert torch.zeros_like(y, device="cpu").device.type == "cpu"
        with torch.cuda.device(y.device):
            pass
    assert not fc.violations
    assert torch.ones(1).device.type == "cpu"  # nothing leaks out of the block


def test_modules_parameters_buffers_and_grads_move():
    with fake_cuda():
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).to("cuda")
        assert all(p.is_cuda for p in net.parameters()) and all(b.is_cuda for b in net.buffers())
        x = torch.randn(5, 3, device="cuda")
        net(x).square().mean().backward()
        assert all(p.grad.is_cuda for p in net.parameters())
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9).step()


def test_device_mix_raises_and_names_the_operation():
    with fake_cuda() as fc:
        x = torch.ones(4, device="cuda")
        _ = x * torch.tensor(2.0)  # a 0-dim CPU tensor mixes into CUDA ops, as in PyTorch
        with pytest.raises(FakeDeviceError, match=r"mul.*CPU tensors of shape \(4,\)"):
            _ = x * torch.ones(4)
        with pytest.raises(FakeDeviceError, match="cat"):
            torch.cat([x, -torch.ones(2)])
        with pytest.raises(FakeDeviceError, match="CPU tensor with a CUDA index"):
            torch.arange(5)[torch.zeros(1, dtype=torch.long, device="cuda")]
        assert len(fc.violations) == 3 and "test_fake_device.py" in fc.violations[0]
        fc.violations.clear()  # raised and expected here: not to be raised again on exit


def test_numpy_of_cuda_data_raises():
    with fake_cuda() as fc:
        x = torch.ones(3, device="cuda")
        with pytest.raises(FakeDeviceError, match="numpy"):
            x.numpy()
        with pytest.raises(FakeDeviceError, match="__array__"):
            np.asarray(x)
        assert x.cpu().numpy().tolist() == [1.0, 1.0, 1.0]
        fc.violations.clear()


def test_generators_must_live_on_the_output_device():
    with fake_cuda() as fc:
        cpu_gen = torch.Generator().manual_seed(0)
        cuda_gen = torch.Generator(device="cuda").manual_seed(0)
        assert cuda_gen.device.type == "cuda" and isinstance(cpu_gen, torch.Generator)
        assert torch.randn(3, device="cuda", generator=cuda_gen).is_cuda
        assert not torch.randn(3, generator=cpu_gen).is_cuda
        with pytest.raises(FakeDeviceError, match="CUDA tensor with a CPU generator"):
            torch.randn(3, device="cuda", generator=cpu_gen)
        with pytest.raises(FakeDeviceError, match="CUDA tensor with a CPU generator"):
            torch.empty(3, device="cuda").uniform_(generator=cpu_gen)
        with pytest.raises(FakeDeviceError, match="CPU tensor with a CUDA generator"):
            torch.rand(3, generator=cuda_gen)
        fc.violations.clear()


def test_every_host_sync_is_counted():
    with fake_cuda() as fc:
        x = torch.arange(6.0, device="cuda")
        fc.reset()
        _ = (x * 2 + 1).cumsum(0).sort().values.topk(2).values.where(x[:2] > 0, 0.0)
        assert fc.syncs == 0, fc.describe()
        kinds = []
        for action, kind in [
            (lambda: x[0].item(), "item"), (lambda: bool(x[0] > 1), "bool"), (lambda: float(x[1]), "float"),
            (lambda: int(x[2]), "int"), (lambda: x.tolist(), "tolist"), (lambda: x.nonzero(), "nonzero"),
            (lambda: x[x > 2], "mask"), (lambda: x.cpu(), "d2h"), (lambda: torch.tensor([1.0], device="cuda"), "h2d"),
            (lambda: x[torch.tensor([0, 1])], "h2d"), (lambda: torch.equal(x, x), "equal"),
            (lambda: torch.cuda.synchronize(), "synchronize"), (lambda: torch.ones(2).cuda(), "h2d"),
        ]:
            fc.reset()
            action()
            kinds.append(kind)
            assert [e.kind for e in fc.sync_events] == [kind], (kind, fc.describe())
        assert "test_fake_device.py" in fc.sync_events[0].where
    cpu = torch.arange(3.0)
    with fake_cuda() as fc:
        _ = cpu.sum().item(), bool(cpu[0]), cpu.tolist()  # CPU data: no sync
        assert fc.syncs == 0


def test_lenient_mode_records_and_strict_mode_reraises_a_swallowed_violation():
    with fake_cuda(strict=False) as fc:
        _ = torch.ones(2, device="cuda") + torch.ones(2)
    assert len(fc.violations) == 1
    with pytest.raises(FakeDeviceError, match="device violations under fake_cuda"):
        with fake_cuda():
            try:
                _ = torch.ones(2, device="cuda") + torch.ones(2)
            except FakeDeviceError:
                pass  # code that swallows errors does not hide the bug


def test_backward_of_a_custom_function_mixes_engine_gradients_freely():
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * 2

        @staticmethod
        def backward(ctx, grad):
            (a,) = ctx.saved_tensors
            return grad * 2 + 0 * a  # ``grad`` was made by the autograd engine in C++: untagged

    with fake_cuda():
        w = torch.randn(3, device="cuda", requires_grad=True)
        Double.apply(w).sum().backward()
        assert w.grad.is_cuda and torch.equal(w.grad.cpu(), torch.full((3,), 2.0))


def test_triton_launch_with_a_cpu_tensor_is_a_violation(fake_device):
    from mnemonix import _triton
    from mnemonix._types import ENGRAM_LONGTERM, ENGRAM_SHORTTERM, ENGRAM_WORKING

    kernels = _triton.load_kernels("lifespan")
    codes = (ENGRAM_WORKING, ENGRAM_SHORTTERM, ENGRAM_LONGTERM)
    life = torch.ones(1, 4, device="cuda")
    idx, delta = torch.zeros(1, 1, dtype=torch.long, device="cuda"), torch.ones(1, 1, device="cuda")
    out = kernels.lifespan_step(life, torch.ones(1, 4, dtype=torch.uint8, device="cuda"), None, idx, delta, 2,
                                codes=codes)
    assert out[0].is_cuda and out[0].cpu().tolist() == [[1.0, 0.0, 0.0, 0.0]]
    with pytest.raises(FakeDeviceError, match="Triton kernel _lifespan_step_kernel launched with a CPU tensor"):
        kernels.lifespan_step(life, torch.ones(1, 4, dtype=torch.uint8), None, idx, delta, 2, codes=codes)
    fake_device.violations.clear()
