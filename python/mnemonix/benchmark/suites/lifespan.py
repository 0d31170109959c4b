"""``lifespan_step`` against the plain definition; floor: one read and write of the engram arrays."""

from __future__ import annotations

import torch

from mnemonix import ops, reference
from mnemonix.backends import lifespan as lifespan_backends
from mnemonix.benchmark.suites import Built, Case

SHAPES = {  # (B, M engrams per row, R reminded per row)
    "smoke": [(4, 10_000, 64)],
    "quick": [(4, 10_000, 64), (16, 100_000, 256)],
    "full": [(b, m, r) for b in (1, 16) for m in (1_000, 100_000, 1_000_000) for r in (16, 256)],
    "gpu": [(b, m, 256) for b in (1, 16, 64) for m in (100_000, 1_000_000)],
}


def cases(suite: str, device: torch.device) -> list[Case]:
    return [Case("lifespan_step", {"B": b, "M": m, "R": r}, torch.float32, _builder(b, m, r))
            for (b, m, r) in SHAPES[suite]]


def _builder(b: int, m: int, r: int):
    def build(device: torch.device) -> Built:
        gen = torch.Generator(device=device).manual_seed(b + m + r)
        lifespan = torch.rand(b, m, generator=gen, device=device) * 4
        types = torch.randint(1, 4, (b, m), generator=gen, dtype=torch.uint8, device=device)
        age = torch.randint(0, 100, (b, m), generator=gen, dtype=torch.int32, device=device)
        idx = torch.randint(-1, m, (b, r), generator=gen, device=device)
        delta = torch.rand(b, r, generator=gen, device=device)
        cap = m // 4
        candidates = {"auto": lambda: ops.lifespan_step(lifespan, types, age, idx, delta, cap)}
        notes = {}
        if b * m <= 200_000:  # the definition loops in Python over rows and reminded indices
            candidates["peer:reference"] = lambda: reference.lifespan_step(lifespan, types, age, idx, delta, cap)
        else:
            notes["peer:reference"] = "skipped: Python loops over B x M"
        # the vectorised torch backend (the CPU path before the C++ step; on CUDA, Triton's fallback)
        candidates["torch"] = lambda: ops.lifespan_step(lifespan, types, age, idx, delta, cap, backend="torch")
        want = ops.lifespan_step(lifespan, types, age, idx, delta, cap, backend="torch")

        def check(fn) -> bool:
            got = fn()
            return bool(torch.equal(got.keep, want.keep) and torch.equal(got.types, want.types)
                        and torch.allclose(got.lifespan, want.lifespan, atol=1e-5))

        per_engram = 4 + 1 + 4  # lifespan, type, age read; the same written, plus keep and rank
        return Built(candidates, check, bytes_read=b * m * (2 * per_engram + 1 + 8), flops=0.0,
                     chosen=_chosen(device), notes=notes)

    return build


def _chosen(device: torch.device) -> str:
    """The backend ``lifespan_step`` runs on ``device`` (no speed policy: the declared order,
    Triton on CUDA, then the C++ step where it is built, then torch)."""
    if device.type == "cuda":
        return "triton"
    return "cpp" if lifespan_backends.core_lifespan() is not None else "torch"
