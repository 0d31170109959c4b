"""The ``memoria`` area: one Memoria step, mnemonix against memoria-pytorch (``bench/compare_memoria.py``).

The loop of the issue: ``add_working_memory(B=1, L=64, H=256) -> remind ->
adjust_lifespan_and_memories`` with num_reminded_stm 32, stm_capacity 512, ltm_search_depth 5,
initial_lifespan 50, num_final_ltms 16 and a lifespan delta of 1 for every reminded engram.

Op ``memoria.step`` at M engrams: each candidate starts from the same state, a store grown
with the same loop (chunks of 256 engrams, nothing dying) to M engrams, every lifespan then
set to 50; each call is one step on the next of a fixed sequence of inputs, after
``torch.manual_seed`` of that step (the original's ties draw from torch's global generator).
Candidates: ``auto`` (``tie_break="original"``, memoria-pytorch's random stream: B x S x M
fp16 draws per step), ``random`` (the C++ tie-break, one seed per step) and
``peer:memoria-pytorch`` (the original, on the CPU, from the same state with the co-fire counts
densified into its [B, M, M] matrix; only up to ``baseline_max`` engrams: 4 M^2 bytes).
Correctness in the same run: ``auto``'s first step leaves the same engrams (data, lifespans,
types) as the original's step from the same state and seed when memoria-pytorch is
installed, and every candidate's step reminds valid indices. No floor (a graph walk and a
nearest-neighbour search whose cost depends on the state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mnemonix.benchmark.suites import Built, Case

CONFIG = dict(num_reminded_stm=32, stm_capacity=512, ltm_search_depth=5, initial_lifespan=50, num_final_ltms=16)
WIDTH, HIDDEN, GROW_CHUNK, BASELINE_MAX = 64, 256, 256, 10_000
IMPLS = ("auto", "random", "peer:memoria-pytorch")

SIZES: dict[str, list[int]] = {"tiny": [300], "quick": [1_000], "default": [1_000, 5_000, 10_000, 50_000, 100_000]}


def area_cases(size: str, device: torch.device) -> list[Case]:
    """One ``memoria.step`` case per store size of ``size``."""
    return step_cases(SIZES[size], device)


def step_cases(sizes: list[int], device: torch.device, *, baseline_max: int = BASELINE_MAX,
               grow_chunk: int = GROW_CHUNK, impls: tuple[str, ...] = IMPLS, op: str = "memoria.step",
               seed: int = 0) -> list[Case]:
    """``memoria.step`` cases at ``sizes`` engrams with the candidates ``impls`` (a subset of
    :data:`IMPLS`); memoria-pytorch runs up to ``baseline_max`` engrams."""
    return [Case(op, {"M": m, "L": WIDTH, "H": HIDDEN}, torch.float32,
                 _builder(m, baseline_max, grow_chunk, impls, seed)) for m in sizes]


def grow(size: int, chunk: int, device: torch.device | str, seed: int, tie_break: str = "original"):
    """A mnemonix Memoria grown with the benchmark loop (nothing dies) to >= ``size`` engrams.

    Grown with the fast tie-break from a seeded generator (the state is shared by every
    implementation), then switched to ``tie_break`` and torch's global generator, as the original.
    """
    from mnemonix.memoria import Memoria

    memoria = Memoria(**dict(CONFIG, initial_lifespan=10**9), device=device, tie_break="random",
                      generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed)
    while len(memoria.engrams) < size:
        data = torch.rand(1, min(chunk, size - len(memoria.engrams)), HIDDEN, generator=gen).to(device)
        memoria.add_working_memory(data)
        _, indices = memoria.remind()
        memoria.adjust_lifespan_and_memories(indices, torch.ones_like(indices, dtype=torch.float32))
    memoria.initial_lifespan = CONFIG["initial_lifespan"]
    memoria.engrams.lifespan.fill_(float(CONFIG["initial_lifespan"]))
    memoria.tie_break = tie_break
    memoria.generator = None
    return memoria


def to_original(ours):
    """A memoria-pytorch Memoria holding the same state as ``ours`` (dense co-fire matrix, CPU)."""
    import memoria as original

    e = ours.engrams
    theirs = original.Memoria(**CONFIG)
    theirs.engrams = original.Engrams(
        e.data.cpu().clone(), induce_counts=e.induce_counts.cpu(), engrams_types=e.engrams_types.cpu().clone(),
        lifespan=e.lifespan.cpu().clone())
    return theirs


class Stepper:
    """One implementation's state and its next step: the step's input and seed come from a
    sequence shared by every implementation (call ``i`` uses input ``i mod len(inputs)``)."""

    def __init__(self, memoria, inputs: list[torch.Tensor], device: torch.device | str, seed: int) -> None:
        self.memoria, self.inputs, self.device, self.seed, self.calls = memoria, inputs, device, seed, 0

    def __call__(self) -> torch.Tensor:
        data = self.inputs[self.calls % len(self.inputs)].to(self.device)
        torch.manual_seed(self.seed + self.calls)
        self.calls += 1
        self.memoria.add_working_memory(data)
        _, indices = self.memoria.remind()
        self.memoria.adjust_lifespan_and_memories(indices, torch.ones_like(indices, dtype=torch.float32))
        return indices


def _original_available() -> str:
    try:
        import memoria  # noqa: F401
    except ImportError:
        return "memoria-pytorch is not installed (pip install memoria-pytorch)"
    return ""


def _builder(m: int, baseline_max: int, grow_chunk: int, impls: tuple[str, ...], seed: int
             ) -> Callable[[torch.device], Built]:
    def build(device: torch.device) -> Built:
        inputs = [torch.rand(1, WIDTH, HIDDEN, generator=torch.Generator().manual_seed(seed + 1 + i))
                  for i in range(16)]
        notes: dict[str, str] = {}
        steppers: dict[str, Stepper] = {}
        for name in impls:
            if name == "peer:memoria-pytorch":
                why = _original_available() or (
                    f"store of {m} engrams above baseline_max {baseline_max} (dense [M, M] co-fire matrix: "
                    f"{4 * m * m / 2**30:.1f} GiB)" if m > baseline_max else "")
                if why:
                    notes[name] = why
                    continue
                steppers[name] = Stepper(to_original(grow(m, grow_chunk, "cpu", seed)), inputs, "cpu", seed)
            else:
                tie = "original" if name == "auto" else "random"
                steppers[name] = Stepper(grow(m, grow_chunk, device, seed, tie), inputs, device, seed)
        expected = _expected_first_step(m, grow_chunk, seed, inputs, baseline_max) if "auto" in steppers else None

        def check(fn) -> bool:
            stepper = fn
            before = len(stepper.memoria.engrams)
            indices = stepper()
            valid = bool(((indices >= -1) & (indices < before + WIDTH)).all())
            if stepper is steppers.get("auto") and expected is not None:
                e = stepper.memoria.engrams
                return valid and all(torch.equal(a, b.to(a.device)) for a, b in
                                     zip(expected, (e.data.cpu(), e.lifespan.cpu(), e.engrams_types.cpu())))
            return valid

        return Built(dict(steppers), check, bytes_read=0.0, flops=0.0, chosen="original", notes=notes,
                     extra={"auto": {"engrams": len(steppers["auto"].memoria.engrams)}} if "auto" in steppers else {})

    return build


def _expected_first_step(m: int, grow_chunk: int, seed: int, inputs: list[torch.Tensor], baseline_max: int
                         ) -> tuple[torch.Tensor, ...] | None:
    """The original's engrams (data, lifespan, types) after the first step from the grown state,
    or None when memoria-pytorch is missing or the store is too large for its dense matrix."""
    if _original_available() or m > baseline_max:
        return None
    theirs = Stepper(to_original(grow(m, grow_chunk, "cpu", seed)), inputs, "cpu", seed)
    theirs()
    e = theirs.memoria.engrams
    return e.data.clone(), e.lifespan.clone(), e.engrams_types.clone()


def memory_fields(rss_before: int, rss_after: int, engrams: int) -> dict[str, Any]:
    """Resident-memory figures of a fresh-process run: growth, and growth beyond the engram data."""
    data = engrams * HIDDEN * 4
    return {"rss_mb": (rss_after - rss_before) / 2**20, "beyond_data_mb": (rss_after - rss_before - data) / 2**20,
            "data_mb": data / 2**20}
