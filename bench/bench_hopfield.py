"""pytest-benchmark suite of modern Hopfield retrieval (CPU sizes; CUDA sizes when a GPU is present).

    python -m pytest bench/bench_hopfield.py --benchmark-only --benchmark-json bench/results/bench_hopfield.json
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mnemonix import ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
SHAPES = [(100_000, 128, 1), (100_000, 128, 16), (100_000, 128, 64), (10_000, 12_288, 16)]
if DEVICE == "cuda":
    SHAPES += [(1_000_000, 128, 1), (1_000_000, 128, 16), (1_000_000, 128, 64), (1_000_000, 128, 1024)]


def _inputs(n, d, b):
    gen = torch.Generator().manual_seed(0)
    keys = (torch.rand(n, d, generator=gen) * 2 - 1).to(DEVICE, DTYPE)
    queries = (torch.rand(b, d, generator=gen) * 2 - 1).to(DEVICE, DTYPE)
    return queries, keys, 1.0 / math.sqrt(d)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _ids(shape):
    return "N{}-d{}-B{}".format(*shape)


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_ours_auto(benchmark, shape):
    q, k, beta = _inputs(*shape)
    benchmark(lambda: (ops.hopfield_retrieve(q, k, beta=beta), _sync()))


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_sdpa_k_equals_v(benchmark, shape):
    q, k, beta = _inputs(*shape)
    benchmark(lambda: (F.scaled_dot_product_attention(q[None, None], k[None, None], k[None, None], scale=beta),
                       _sync()))


@pytest.mark.parametrize("backend", ["torch", "cpp"] if DEVICE == "cpu" else ["triton", "torch"])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=_ids)
def test_forced_backend(benchmark, shape, backend):
    q, k, beta = _inputs(*shape)
    benchmark(lambda: (ops.hopfield_retrieve(q, k, beta=beta, backend=backend), _sync()))
