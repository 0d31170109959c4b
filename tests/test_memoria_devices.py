"""Memoria and devices: CUDA runs with CPU generators, load(device=None).

The host syncs and copies of a Memoria step are counted on the fake CUDA device, where only
operations on device data count: tests/test_fake_device_models.py holds their budget.
"""

from __future__ import annotations

import pytest
import torch

from mnemonix.memoria import Memoria

CFG = dict(num_reminded_stm=8, stm_capacity=20, ltm_search_depth=3, initial_lifespan=10, num_final_ltms=4)


def run_loop(device: str, generator: torch.Generator | None, tie_break: str = "original") -> list:
    m = Memoria(**CFG, track_age=True, track_id=True, device=device, generator=generator, tie_break=tie_break)
    gen = torch.Generator().manual_seed(9)
    out = []
    for _ in range(12):
        m.add_working_memory(torch.rand(2, 4, 16, generator=gen).to(device))
        memories, indices = m.remind()
        delta = torch.randint(0, 4, indices.shape, generator=gen).float().to(device)
        m.adjust_lifespan_and_memories(indices, delta)
        # clone: on the CPU, .cpu() returns the engrams' own buffers, which the next step changes in place
        out.append(tuple(t.cpu().clone() for t in (memories, indices, m.engrams.lifespan, m.engrams.engrams_types)))
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
