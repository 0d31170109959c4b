"""``hopfield_retrieve`` against SDPA (K = V) and plain torch; floor: one read of K or 4BNd flops.

The ``hopfield`` area (``bench/compare_hopfield.py``, :data:`SIZES`) adds two peers:
``hflayers`` (hflayers' unfused path, ``bmm`` -> softmax -> ``bmm`` on [heads, B, N],
re-implemented from its description) and ``research`` (the research code's one-query-at-a-time
float64 numpy retrieval ``X^T softmax(beta X q)``, over every query of the batch, only while
that stays under :data:`RESEARCH_MAX_FLOPS`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mnemonix import ops
from mnemonix.benchmark.suites import Built, Case
from mnemonix.ops.hopfield import choose_backend

# Peers that materialise [B, N] are skipped above this many bytes of scores.
PLAIN_MAX_BYTES = 2 << 30
RESEARCH_MAX_FLOPS = 4e10  # float64 numpy, one query per call: ~10 s on the 2-core machine

SIZES = {  # the hopfield area: bench/compare_hopfield.py's shapes
    "tiny": [(500, 16, 1), (500, 16, 8)],
    "quick": [(10_000, 64, 1), (10_000, 64, 16), (10_000, 128, 64), (100_000, 128, 1), (2_000, 12_288, 16)],
    "default": [(n, d, b) for n in (10_000, 100_000, 1_000_000) for d in (64, 128) for b in (1, 16, 64, 1024)]
    + [(10_000, 12_288, b) for b in (1, 16, 64, 100, 1024)],  # B = 100: the research-code target
}

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


# 16-bit CPU shapes (the C++ kernel's 16-bit rows and the flash kernel's 16-bit GEMMs, against
# SDPA and plain torch in the same dtype): a memory-bound, a narrow mid-batch and a wide call
HALF_CPU_SHAPES = {
    "quick": [(100_000, 128, 1), (10_000, 32, 16), (2_000, 12_288, 16)],
    "full": [(n, d, b) for (n, d, b) in SHAPES["full"] if n <= 1_000_000],
}
# bfloat16 only: a compute-bound call (the AMX kernel's where the CPU has the tiles; plain torch's
# 16-bit GEMMs, its fastest peer there)
BFLOAT16_CPU_SHAPES = {"quick": [(10_000, 1024, 64)], "full": [(10_000, 1024, 64), (10_000, 1024, 256)]}


def cases(suite: str, device: torch.device) -> list[Case]:
    dtypes = [torch.float32]
    if suite == "gpu":
        dtypes = [torch.float16, torch.bfloat16, torch.float32]
    found = [Case("hopfield_retrieve", {"N": n, "d": d, "B": b}, dt, _builder(n, d, b, dt))
             for (n, d, b) in SHAPES[suite] for dt in dtypes]
    if device.type == "cpu":
        found += [Case("hopfield_retrieve", {"N": n, "d": d, "B": b}, dt, _builder(n, d, b, dt))
                  for (n, d, b) in HALF_CPU_SHAPES.get(suite, ()) for dt in (torch.bfloat16, torch.float16)]
        found += [Case("hopfield_retrieve", {"N": n, "d": d, "B": b}, torch.bfloat16, _builder(n, d, b, torch.bfloat16))
                  for (n, d, b) in BFLOAT16_CPU_SHAPES.get(suite, ())]
    return found


def area_cases(size: str, device: torch.device) -> list[Case]:
    """The hopfield area at ``size``: bfloat16 on CUDA, float32 on CPU, with the area's extra peers."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return [Case("hopfield_retrieve", {"N": n, "d": d, "B": b}, dtype, _builder(n, d, b, dtype, area=True))
            for (n, d, b) in SIZES[size]]


def hflayers_unfused(q: torch.Tensor, k: torch.Tensor, beta: float) -> torch.Tensor:
    """hflayers' core on q [B, d], K = V [N, d]: [heads, B, d] x [heads, d, N], softmax, x [heads, N, d]."""
    qh, kh = q[None], k[None]
    weights = torch.softmax(torch.bmm(qh * beta, kh.transpose(1, 2)), dim=-1)
    return torch.bmm(weights, kh)[0]


def research_numpy(x64: np.ndarray, q64: np.ndarray, beta: float) -> np.ndarray:
    """The research code's retrieval, one query [B, d] row at a time, float64: ``X^T softmax(beta X q)``."""
    out = []
    for q in q64:
        logits = beta * (x64 @ q)
        p = np.exp(logits - logits.max())
        out.append(x64.T @ (p / p.sum()))
    return np.stack(out)


def _area_peers(candidates: dict, notes: dict, queries: torch.Tensor, keys: torch.Tensor, beta: float,
                device: torch.device) -> None:
    b, n, d = queries.shape[0], keys.shape[0], keys.shape[1]
    if b * n * 4 <= PLAIN_MAX_BYTES:
        candidates["peer:hflayers"] = lambda: hflayers_unfused(queries, keys, beta)
    else:
        notes["peer:hflayers"] = f"skipped: [B, N] scores would take {b * n * 4 / 2**30:.1f} GiB"
    if device.type != "cpu":
        notes["peer:research"] = "the research code is CPU numpy"
    elif 4.0 * b * n * d > RESEARCH_MAX_FLOPS:
        notes["peer:research"] = f"skipped: one query per call in float64 over B = {b} would take minutes"
    else:
        x64, q64 = keys.double().numpy(), queries.double().numpy()
        candidates["peer:research"] = lambda: torch.from_numpy(research_numpy(x64, q64, beta))


def problem(n: int, d: int, b: int, dtype: torch.dtype, device: torch.device):
    """``(queries [B, d], keys [N, d], beta)`` of a shape: uniform in [-1, 1), seeded by the shape."""
    gen = torch.Generator(device=device).manual_seed(n + d + b)
    keys = (torch.rand(n, d, generator=gen, device=device) * 2 - 1).to(dtype)
    queries = (torch.rand(b, d, generator=gen, device=device) * 2 - 1).to(dtype)
    return queries, keys, 1.0 / math.sqrt(d)


def peers(queries: torch.Tensor, keys: torch.Tensor, beta: float) -> tuple[dict, dict]:
    """``(candidates, notes)``: SDPA with K = V, and plain torch unless its [B, N] scores pass
    :data:`PLAIN_MAX_BYTES` (then a note says why it is not timed)."""
    b, n = queries.shape[0], keys.shape[0]
    q4, k4 = queries[None, None], keys[None, None]
    candidates = {"peer:sdpa": lambda: F.scaled_dot_product_attention(q4, k4, k4, scale=beta)[0, 0]}
    notes = {}
    if b * n * 4 <= PLAIN_MAX_BYTES:
        candidates["peer:plain"] = lambda: torch.softmax(beta * (queries @ keys.T), dim=-1) @ keys
    else:
        notes["peer:plain"] = f"skipped: [B, N] scores would take {b * n * 4 / 2**30:.1f} GiB"
    return candidates, notes


def _builder(n: int, d: int, b: int, dtype: torch.dtype, *, area: bool = False):
    def build(device: torch.device) -> Built:
        queries, keys, beta = problem(n, d, b, dtype, device)
        found, notes = peers(queries, keys, beta)
        candidates = {"auto": lambda: ops.hopfield_retrieve(queries, keys, beta=beta), **found}
        if area:
            _area_peers(candidates, notes, queries, keys, beta, device)
        want = candidates["peer:sdpa"]().float()
        tol = 1e-4 if dtype == torch.float32 else 2e-2

        def check(fn) -> bool:
            got = fn().float()
            return bool(torch.allclose(got, want, atol=tol * max(1.0, float(want.abs().max())), rtol=tol))

        return Built(candidates, check, bytes_read=n * d * keys.element_size(), flops=4.0 * b * n * d,
                     chosen=choose_backend(queries, keys), notes=notes)

    return build
