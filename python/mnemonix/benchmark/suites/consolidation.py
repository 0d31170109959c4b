"""The ``consolidation`` area: the consolidation simulation's stages (``bench/compare_consolidation.py``).

- ``consolidation.retrieve`` (Spens & Burgess 2024's Hopfield stage): N procedural 64x64x3
  scenes (d = 12,288 values in [-1, 1]) stored in a modern Hopfield network, B uniform-noise
  cues retrieved at beta 1000. ``auto``: :meth:`mnemonix.hopfield.ModernHopfield.retrieve`
  (the fused op, 1,024 cues per call); ``peer:research``: the research code's
  ``X^T softmax(beta X q)`` in float64 numpy, one cue per call, over every cue (only up to
  :data:`RESEARCH_MAX_FLOPS`: the paper's 10,000 x 10,000 would take ~15 minutes a call; the
  ``B = 10`` case at that N compares per cue). Correctness: our states match the research
  code's on the first cues. Floor: 4 B N d flops or one read of the patterns.
- ``consolidation.train_step``: one Adam step of the tiny VAE (8x8 images, batch 64) or of
  the paper's large VAE (64x64x3 images, batch 32), on random images in [0, 1]; ``auto`` only (no peer runs the same
  model). Correctness: the loss is finite and the parameters moved. No floor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mnemonix.benchmark.suites import Built, Case
from mnemonix.benchmark.suites.hopfield import research_numpy  # the research code's update, one cue per call

D = 64 * 64 * 3
BATCH = 1024
RESEARCH_MAX_FLOPS = 4e10
RESEARCH_CHECKED = 3

SIZES: dict[str, list[tuple[str, int, int]]] = {  # ("retrieve", N, B) | ("train_step", model 0 tiny / 1 large, batch)
    "tiny": [("retrieve", 100, 8), ("train_step", 0, 8)],
    "quick": [("retrieve", 500, 500), ("train_step", 0, 64), ("train_step", 1, 32)],
    "default": [("retrieve", 10_000, 10_000), ("retrieve", 10_000, 10), ("train_step", 0, 64),
                ("train_step", 1, 32)],
}


def area_cases(size: str, device: torch.device, *, beta: float | None = None) -> list[Case]:
    """The consolidation area at ``size``: retrieval on ``device`` (float32), training on the CPU."""
    from mnemonix.consolidation.teacher_student import DEFAULT_BETA

    beta = DEFAULT_BETA if beta is None else beta
    out = []
    for op, a, b in SIZES[size]:
        if op == "retrieve":
            out.append(Case("consolidation.retrieve", {"N": a, "B": b, "d": D}, torch.float32, _retrieve(a, b, beta)))
        else:
            model = ("tiny", "large")[a]
            out.append(Case(f"consolidation.train_step.{model}_vae", {"batch": b}, torch.float32, _train(model, b)))
    return out


def stored_patterns(n: int, seed: int = 0) -> torch.Tensor:
    """n procedural 64x64x3 scenes as patterns [n, 12288] in [-1, 1], generated in chunks."""
    from mnemonix.consolidation import make_shapes3d
    from mnemonix.consolidation.teacher_student import to_patterns

    return torch.cat([to_patterns(make_shapes3d(min(1000, n - s), seed=seed + s).images) for s in range(0, n, 1000)])


def _retrieve(n: int, b: int, beta: float) -> Callable[[torch.device], Built]:
    def build(device: torch.device) -> Built:
        from mnemonix.consolidation.teacher_student import noise_cues
        from mnemonix.hopfield import ModernHopfield

        x = stored_patterns(n)
        cues = noise_cues(b, D, seed=1)
        hop = ModernHopfield(x.to(device), beta=beta)
        cues_d = cues.to(device)
        candidates: dict[str, Callable[[], Any]] = {
            "auto": lambda: hop.retrieve(cues_d, batch_size=BATCH, with_energy=False).states}
        notes: dict[str, str] = {}
        x64 = x.double().numpy()
        want = torch.from_numpy(research_numpy(x64, cues[:RESEARCH_CHECKED].double().numpy(), beta))
        if device.type != "cpu":
            notes["peer:research"] = "the research code is CPU numpy"
        elif 4.0 * b * n * D > RESEARCH_MAX_FLOPS:
            notes["peer:research"] = (f"skipped: one cue per call in float64 over B = {b} would take minutes "
                                      "(see the B = 10 case)")
        else:
            q64 = cues.double().numpy()
            candidates["peer:research"] = lambda: torch.from_numpy(research_numpy(x64, q64, beta))

        def check(fn) -> bool:
            got = fn()[:RESEARCH_CHECKED].double().cpu()
            return bool((got - want).abs().max() <= 1e-3)

        return Built(candidates, check, bytes_read=n * D * 4, flops=4.0 * b * n * D, chosen=None, notes=notes)

    return build


def _train(model: str, batch: int) -> Callable[[torch.device], Built]:
    def build(device: torch.device) -> Built:
        from mnemonix.consolidation import LargeVAE, TinyVAE

        torch.manual_seed(0)
        # random images of the dataset's shape and range: a step's cost does not depend on the pixels
        vae, shape = (TinyVAE(), (batch, 1, 8, 8)) if model == "tiny" else (LargeVAE(), (batch, 3, 64, 64))
        images = torch.rand(shape, generator=torch.Generator().manual_seed(batch))
        opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
        vae.train()

        def step() -> torch.Tensor:
            loss, _ = vae.loss(images)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.detach()

        def check(fn) -> bool:
            before = [p.detach().clone() for p in vae.parameters()]
            loss = fn()
            moved = any(not torch.equal(a, p) for a, p in zip(before, vae.parameters()))
            return bool(torch.isfinite(loss)) and moved

        return Built({"auto": step}, check, bytes_read=0.0, flops=0.0, chosen="torch")

    return build
