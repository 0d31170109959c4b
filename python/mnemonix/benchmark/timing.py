"""Timing of candidates side by side: interleaved repetitions, percentiles, GPU hygiene.

Interleaving (round r runs every candidate once, in an order shuffled per round) spreads the
noise of a shared machine evenly over the candidates, so their ratios are fair even when the
absolute times drift; on the CPU a short call is timed right after an untimed call of its own, so
that it does not pay for the state the previous candidate left (allocator pages, thread pools).
The shuffle (seeded: runs repeat) also varies which candidate precedes which: a rotated order
always puts a candidate after the same one, and a peer whose OpenMP runtime (faiss ships its own)
still spins on both cores made the candidate listed after it read 20-45% slower than the same
kernel timed elsewhere in the round.
On CUDA each repetition is timed with CUDA events around the call, after a write of a buffer
larger than the L2 cache (so a candidate does not profit from data the previous one left in
L2), and warm-up runs by time, not by count (clocks ramp up).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

# Bytes written between GPU repetitions to evict the L2 cache (H100/H200: 50/60 MB of L2).
L2_FLUSH_BYTES = 256 << 20
# CPU calls shorter than this get an untimed call of their own right before each timed one.
PRECALL_BELOW_S = 0.02


@dataclass(frozen=True)
class Timing:
    """Percentiles (seconds) of one candidate's repetitions, and the repetitions in round order."""

    p20: float
    p50: float
    p80: float
    rounds: tuple[float, ...]

    @property
    def samples(self) -> int:
        return len(self.rounds)

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        arr = np.asarray(samples, dtype=np.float64)
        p20, p50, p80 = np.percentile(arr, [20, 50, 80])
        return cls(float(p20), float(p50), float(p80), tuple(float(x) for x in samples))


def peer_ratio(timings: Mapping[str, Timing], name: str) -> float | None:
    """Median over the rounds of ``name``'s time over the geometric mean of the peers' times in
    the same round (candidates named ``peer:...``); None without peers or rounds.

    The machine's state (clock, another tenant, the cache) moves every candidate of a round
    alike, so the per-round ratio keeps little of it, where a ratio of medians keeps whatever
    changed between the rounds: what the regression gate compares across runs.
    """
    peers = [t.rounds for key, t in timings.items() if key.startswith("peer:") and t.rounds]
    ours = timings[name].rounds
    if not peers or not ours or any(len(p) != len(ours) for p in peers):
        return None
    logs = np.log(np.asarray(peers, dtype=np.float64))
    ratios = np.asarray(ours, dtype=np.float64) / np.exp(logs.mean(axis=0))
    return float(np.median(ratios))


class _Clock:
    """Times one call on the CPU (perf_counter) or on a CUDA device (events + L2 flush)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device=device)

    def __call__(self, fn: Callable[[], object]) -> float:
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        self.flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def measure(candidates: Mapping[str, Callable[[], object]], device: torch.device, *, repeat: int = 9,
            warmup_s: float = 0.05, budget_s: float = 10.0, slowdown: Mapping[str, float] | None = None,
            setup: Mapping[str, Callable[[], object]] | None = None) -> dict[str, Timing]:
    """Interleaved percentiles of every candidate.

    Each candidate first warms up for ``warmup_s`` seconds (at least one call); then ``repeat``
    rounds run every candidate once, the order shuffled per round (on the CPU a call shorter than
    :data:`PRECALL_BELOW_S` is preceded by an untimed call of its own). A round stops early once the
    total time passes ``budget_s`` (with at least 3 rounds). ``slowdown`` maps a candidate to an
    injected relative slowdown (a busy wait of that fraction of each call), used to measure the
    regression gate's detection rate. ``setup`` maps a candidate to a call made before each of
    its calls, outside the clock: what puts its state back for an op that changes it (a remove
    re-adds what the previous call removed, a save clears the folder it writes).
    """
    clock = _Clock(device)
    names = list(candidates)
    slowdown = dict(slowdown or {})
    setup = dict(setup or {})

    def timed(name: str) -> float:
        if name in setup:
            setup[name]()
        return clock(candidates[name])

    for name in names:
        t_end = time.perf_counter() + warmup_s
        timed(name)
        while time.perf_counter() < t_end:
            timed(name)
    samples: dict[str, list[float]] = {name: [] for name in names}
    # On the CPU a short call is timed right after an untimed call of its own: what it costs in a
    # loop of its own, not after whatever the previous candidate left behind (freed allocator
    # pages to fault in again, a thread pool to wake, evicted caches). Without it the candidate
    # that ran after its twin (ours, then the same torch kernel as a peer) looked 20-50% faster.
    short = set() if clock.cuda else {name for name in names if timed(name) < PRECALL_BELOW_S}
    started = time.perf_counter()
    order = random.Random(0)
    for r in range(repeat):
        for name in order.sample(names, len(names)):
            if name in short:
                timed(name)
            elapsed = timed(name)
            extra = slowdown.get(name, 0.0) * elapsed
            if extra > 0:
                _busy_wait(extra)
            samples[name].append(elapsed + extra)
        if r >= 2 and time.perf_counter() - started > budget_s:
            break
    return {name: Timing.of(values) for name, values in samples.items()}


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def median_time(fn: Callable[[], object], device: torch.device | str = "cpu", *, repeat: int = 5) -> float:
    """Median seconds of one callable (a convenience for scripts)."""
    return measure({"fn": fn}, torch.device(device), repeat=repeat).get("fn").p50
