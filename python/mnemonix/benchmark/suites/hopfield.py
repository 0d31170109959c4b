"""``hopfield_retrieve`` against SDPA (K = V) and plain torch; floor: one read of K or 4BNd flops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mnemonix import ops
from mnemonix.benchmark.suites import Built, Case
from mnemonix.ops.hopfield import choose_backend

# Peers that materialise [B, N] are skipped above this many bytes of scores.
PLAIN_MAX_BYTES = 2 << 30

SHAPES = {  # (N, d, B)
    "smoke": [(10_000, 64, 1), (100_000, 128, 1), (10_000, 128, 64)],
    "quick": [(2_000, 64, 1), (10_000, 64, 16), (10_000, 128, 64), (100_000, 128, 1), (100_000, 128, 16),
              (1_000_000, 128, 1), (2_000, 12_288, 16)],
    "full": [(n, d, b) for n in (1_000, 10_000, 100_000, 1_000_000, 10_000_000) for d in (32, 128)
             for b in (1, 16, 64, 1024, 4096) if n * d <= 1_280_000_000 // 4 and b * n <= 4_096 * 1_000_000]
    + [(10_000, 12_288, b) for b in (1, 16, 100, 1024)],
    "gpu": [(n, d, b) for n in (100_000, 1_000_000) for d in (64, 128) for b in (1, 16, 64, 1024)]
    + [(10_000, 12_288, b) for b in (1, 64, 1024)],
}


def cases(suite: str, device: torch.device) -> list[Case]:
    dtypes = [torch.float32]
    if suite == "gpu":
        dtypes = [torch.float16, torch.bfloat16, torch.float32]
    return [Case("hopfield_retrieve", {"N": n, "d": d, "B": b}, dt, _builder(n, d, b, dt))
            for (n, d, b) in SHAPES[suite] for dt in dtypes]


def _builder(n: int, d: int, b: int, dtype: torch.dtype):
    def build(device: torch.device) -> Built:
        gen = torch.Generator(device=device).manual_seed(n + d + b)
        keys = (torch.rand(n, d, generator=gen, device=device) * 2 - 1).to(dtype)
        queries = (torch.rand(b, d, generator=gen, device=device) * 2 - 1).to(dtype)
        beta = 1.0 / math.sqrt(d)
        candidates = {
            "auto": lambda: ops.hopfield_retrieve(queries, keys, beta=beta),
            "peer:sdpa": lambda: F.scaled_dot_product_attention(queries[None, None], keys[None, None],
                                                                keys[None, None], scale=beta)[0, 0],
        }
        notes = {}
        if b * n * 4 <= PLAIN_MAX_BYTES:
            candidates["peer:plain"] = lambda: torch.softmax(beta * (queries @ keys.T), dim=-1) @ keys
        else:
            notes["peer:plain"] = f"skipped: [B, N] scores would take {b * n * 4 / 2**30:.1f} GiB"
        want = candidates["peer:sdpa"]().float()
        tol = 1e-4 if dtype == torch.float32 else 2e-2

        def check(fn) -> bool:
            got = fn().float()
            return bool(torch.allclose(got, want, atol=tol * max(1.0, float(want.abs().max())), rtol=tol))

        return Built(candidates, check, bytes_read=n * d * keys.element_size(), flops=4.0 * b * n * d,
                     chosen=choose_backend(queries, keys), notes=notes)

    return build
