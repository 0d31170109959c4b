"""Memoria and devices: host syncs per step (counted on the CPU), CUDA runs with CPU generators, load(device=None)."""

from __future__ import annotations

import collections
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

from mnemonix.memoria import Memoria

CFG = dict(num_reminded_stm=8, stm_capacity=20, ltm_search_depth=3, initial_lifespan=10, num_final_ltms=4)
# Calls that make the host wait for the device (or copy device data to the host) when the data is on CUDA.
SYNCS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy", "unique", "bincount"}


class SyncCounter(TorchFunctionMode):
    """Counts host syncs and device->host copies issued from mnemonix code (CPU tensors stand in for CUDA ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCS or name == "cpu":
            frame = [f for f in traceback.extract_stack()[:-1] if "mnemonix" in f.filename][-1]
            if name != "numpy" or "cpu" not in frame.line:  # `.cpu().numpy()` is one copy
                self.events[f"{name}@{frame.filename.rsplit('mnemonix/', 1)[-1]}:{frame.lineno}"] += 1
        return func(*args, **(kwargs or {}))


def counted_step(m: Memoria, gen: torch.Generator) -> dict[str, int]:
    counts = {}
    with SyncCounter() as c:
        m.add_working_memory(torch.rand(1, 6, 16, generator=gen))
    counts["add"] = sum(c.events.values())
    with SyncCounter() as c:
        _, idx = m.remind()
    counts["remind"] = sum(c.events.values())
    with SyncCounter() as c:
        m.adjust_lifespan_and_memories(idx, torch.ones_like(idx, dtype=torch.float32))
    counts["adjust"] = sum(c.events.values())
    return counts


# The budgets stated in mnemonix.memoria.memoria's docstring (B = 1): no sync per engram, none per item.
BUDGET = {"original": {"add": 1, "remind": 20, "adjust": 4}, "random": {"add": 1, "remind": 20, "adjust": 4}}


@pytest.mark.parametrize("tie_break", ["original", "random"])
def test_host_syncs_per_step_stay_within_the_stated_budget(tie_break: str) -> None:
    m = Memoria(**CFG, tie_break=tie_break, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    worst = collections.Counter()
    for step in range(14):  # long-term memory forms after a few steps: the long-term search runs
        counts = counted_step(m, gen)
        if step >= 4:
            for phase, n in counts.items():
                worst[phase] = max(worst[phase], n)
    assert (m.engrams.engrams_types == 3).any()
    for phase, budget in BUDGET[tie_break].items():
        assert worst[phase] <= budget, (phase, worst[phase])


def run_loop(device: str, generator: torch.Generator | None, tie_break: str = "original") -> list:
    m = Memoria(**CFG, track_age=True, track_id=True, device=device, generator=generator, tie_break=tie_break)
    gen = torch.Generator().manual_seed(9)
    out = []
    for _ in range(12):
        m.add_working_memory(torch.rand(2, 4, 16, generator=gen).to(device))
        memories, indices = m.remind()
        delta = torch.randint(0, 4, indices.shape, generator=gen).float().to(device)
        m.adjust_lifespan_and_memories(indices, delta)
        out.append((memories.cpu(), indices.cpu(), m.engrams.lifespan.cpu(), m.engrams.engrams_types.cpu()))
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("tie_break", ["original", "random"])
def test_cuda_with_a_cpu_generator_matches_the_cpu_run(tie_break: str) -> None:
    """The original's tie-break noise is drawn on the generator's device (CPU), then moved to CUDA."""
    cpu = run_loop("cpu", torch.Generator().manual_seed(3), tie_break)
    cuda = run_loop("cuda", torch.Generator().manual_seed(3), tie_break)
    for a, b in zip(cpu, cuda):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


@pytest.mark.gpu
def test_readme_loop_on_cuda_and_load_to_the_saved_device(tmp_path) -> None:
    torch.manual_seed(42)
    m = Memoria(num_reminded_stm=4, stm_capacity=16, ltm_search_depth=5, initial_lifespan=3, num_final_ltms=4)
    for _ in range(12):
        m.add_working_memory(torch.rand(2, 8, 64, device="cuda"))
        memories, indices = m.remind()  # the global CUDA generator breaks ties, as the original on CUDA
        assert memories.device.type == "cuda" and indices.device.type == "cuda"
        m.adjust_lifespan_and_memories(indices, torch.randint_like(indices, 0, 6).float())
    assert (m.engrams.engrams_types == 3).any()
    path = tmp_path / "m.npz"
    m.save(path)
    loaded = Memoria.load(path)  # device=None: where it was saved from
    assert loaded.engrams.device.type == "cuda" and loaded.engrams == m.engrams
    assert Memoria.load(path, device="cpu").engrams.device.type == "cpu"
