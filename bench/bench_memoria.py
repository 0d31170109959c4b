"""pytest-benchmark suite: the fused lifespan step, the nearest-key search and one Memoria loop step.

Not collected by the test run.
"""

from __future__ import annotations

import pytest
import torch

from mnemonix import ops
from mnemonix.memoria import Memoria


@pytest.mark.parametrize("length", [10_000, 100_000])
def test_lifespan_step_torch(benchmark, length: int) -> None:
    gen = torch.Generator().manual_seed(0)
    lifespan = torch.randint(1, 50, (1, length), generator=gen).float()
    types = torch.randint(1, 4, (1, length), generator=gen).to(torch.uint8)
    age = torch.zeros(1, length, dtype=torch.int32)
    indices = torch.randint(0, length, (1, 48), generator=gen)
    delta = torch.ones(1, 48)
    benchmark(ops.lifespan_step, lifespan, types, age, indices, delta, 512)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("length", [1_000_000])
def test_lifespan_step_triton(benchmark, length: int) -> None:
    gen = torch.Generator().manual_seed(0)
    lifespan = torch.randint(1, 50, (1, length), generator=gen).float().cuda()
    types = torch.randint(1, 4, (1, length), generator=gen).to(torch.uint8).cuda()
    age = torch.zeros(1, length, dtype=torch.int32, device="cuda")
    indices = torch.randint(0, length, (1, 48), generator=gen).cuda()
    delta = torch.ones(1, 48, device="cuda")

    def step() -> None:
        ops.lifespan_step(lifespan, types, age, indices, delta, 512)
        torch.cuda.synchronize()

    benchmark(step)


@pytest.mark.parametrize("backend", ["certified", "exact", "gemm"])
@pytest.mark.parametrize("num_keys", [512, 10_000])
def test_nearest_keys(benchmark, backend: str, num_keys: int) -> None:
    """Memoria's short-term search: 64 working-memory engrams against the keys, H = 256, k = 32."""
    gen = torch.Generator().manual_seed(0)
    queries = torch.rand(1, 64, 256, generator=gen)
    keys = torch.rand(1, num_keys, 256, generator=gen)
    benchmark(ops.nearest_keys, queries, keys, 32, reduce="mean", backend=backend)


@pytest.mark.parametrize("tie_break", ["original", "random"])
def test_memoria_step_2k(benchmark, tie_break: str) -> None:
    memoria = Memoria(num_reminded_stm=32, stm_capacity=512, ltm_search_depth=5, initial_lifespan=10**6,
                      num_final_ltms=16, generator=torch.Generator().manual_seed(0), tie_break=tie_break)
    gen = torch.Generator().manual_seed(0)
    while len(memoria.engrams) < 2000:
        memoria.add_working_memory(torch.rand(1, 256, 256, generator=gen))
        _, idx = memoria.remind()
        memoria.adjust_lifespan_and_memories(idx, torch.ones_like(idx, dtype=torch.float32))

    def step() -> None:
        memoria.add_working_memory(torch.rand(1, 64, 256, generator=gen))
        _, idx = memoria.remind()
        memoria.adjust_lifespan_and_memories(idx, torch.ones_like(idx, dtype=torch.float32))

    benchmark.pedantic(step, rounds=5, iterations=1)
