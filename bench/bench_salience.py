"""pytest-benchmark suite for salience_topk and EpisodicMemory.add (run: pytest bench/bench_salience.py).

Not collected by the normal test run (bench/ is outside testpaths). Sizes are
moderate so that the suite runs in seconds on a CPU; the side-by-side table
with baselines is bench/compare_salience.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mnemonix import ops
from mnemonix.epinet import EpisodicMemory, SalienceClock

N, D, B, K = 50_000, 128, 64, 5


@pytest.fixture(scope="module")
def store():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(N, D, generator=g)
    return {
        "queries": torch.randn(B, D, generator=g),
        "keys": keys,
        "payloads": keys,
        "log_s": torch.randn(N, generator=g, dtype=torch.float64),
        "norms": torch.linalg.vector_norm(keys, dim=1),
    }


@pytest.mark.benchmark(group="salience_topk")
def test_mnemonix(benchmark, store):
    benchmark(lambda: ops.salience_topk(store["queries"], store["keys"], store["payloads"], k=K,
                                        log_salience=store["log_s"]))


@pytest.mark.benchmark(group="salience_topk")
def test_mnemonix_cached_norms(benchmark, store):
    benchmark(lambda: ops.salience_topk(store["queries"], store["keys"], store["payloads"], k=K,
                                        log_salience=store["log_s"], key_norms=store["norms"]))


@pytest.mark.benchmark(group="salience_topk")
def test_plain_torch(benchmark, store):
    def plain():
        s = F.normalize(store["queries"], dim=1) @ F.normalize(store["keys"], dim=1).T
        s = s * torch.exp(store["log_s"] - store["log_s"].max()).float()
        top = s.topk(K, dim=1).indices
        w = torch.softmax(store["log_s"][top], 1).float()
        return (w.unsqueeze(-1) * store["payloads"][top]).sum(1)

    benchmark(plain)


@pytest.mark.benchmark(group="episodic_add")
def test_batched_add_into_full_buffer(benchmark):
    g = torch.Generator().manual_seed(1)
    mem = EpisodicMemory(N, D, clock=SalienceClock(1e-3, source="timestamps"))
    z = torch.randn(N, D, generator=g)
    mem.add(z, z, torch.rand(N, generator=g) + 0.1, torch.zeros(N, dtype=torch.long), now=0.0)
    new = torch.randn(1000, D, generator=g)
    r0 = torch.rand(1000, generator=g) * 2 + 0.1
    y = torch.zeros(1000, dtype=torch.long)
    t = iter(range(1, 10**9))
    benchmark(lambda: mem.add(new, new, r0, y, now=float(next(t))))
