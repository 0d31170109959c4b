"""The noise-aware regression gate of ``mnemonix bench compare`` (xformers' rule).

A measurement regressed when ``(new - base) - rtol * base > atol`` on the median (defaults:
rtol 5 %, atol 30 us), comparing runs on the same device name only, after dividing the new time
by the drift of its case's peers between the two runs (torch's SDPA, plain torch, faiss: code
that does not change with ours, timed in the same rounds; so a machine that runs 10% slower
today fails nothing, and one that runs faster hides nothing). Where both runs recorded it, the
drift comes from the per-round ratios to the peers (``peer_ratio``: the new time counts as
``base * new_ratio / base_ratio``), which also cancels what moved the machine between the rounds
of one run; else from the peers' medians. Flagged cases are
re-measured (the case is rebuilt from its suite and timed with its peers, as the run timed it)
before the gate fails: the best median of the re-measurements replaces the new value, so one
noisy repetition does not fail a build.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mnemonix.benchmark import history, suites
from mnemonix.benchmark.run import injected_slowdown
from mnemonix.benchmark.settings import ATOL, RTOL  # noqa: E402
from mnemonix.benchmark.timing import measure, peer_ratio


@dataclass(frozen=True)
class Verdict:
    op: str
    backend: str
    shape: dict[str, int]
    dtype: str
    base_s: float
    new_s: float
    regressed: bool
    drift: float = 1.0  # how much slower the case's peers ran in the new run (the machine, not our code)

    @property
    def ratio(self) -> float:
        """new / base, with the machine's drift divided out."""
        return self.new_s / self.drift / self.base_s


def regressed(base: float, new: float, *, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return (new - base) - rtol * base > atol


def pick_runs(rows: list[dict[str, Any]], base: str | None, new: str | None) -> tuple[str, str]:
    """Run ids to compare: the given ones, else the last two runs on the newest run's device."""
    order = history.runs(rows)
    if new is None:
        if not order:
            raise ValueError("the history holds no run")
        new = order[-1]
    device = next((r["device_name"] for r in rows if r["run_id"] == new), None)
    if device is None:
        raise ValueError(f"run {new!r} is not in the history (runs: {order[-5:]})")
    if base is None:
        same = [run for run in order if run != new and
                any(r["run_id"] == run and r["device_name"] == device for r in rows)]
        before = [run for run in same if order.index(run) < order.index(new)]
        if not before:
            raise ValueError(f"no earlier run on {device!r} to compare run {new!r} with")
        base = before[-1]
    elif base not in order:
        raise ValueError(f"run {base!r} is not in the history (runs: {order[-5:]})")
    return base, new


def _case(row: dict[str, Any]) -> tuple:
    return (row["op"], tuple(sorted((row.get("shape") or {}).items())), row.get("dtype"), row.get("device"))


def peer_drift(base_peers: dict[str, float], new_peers: dict[str, float]) -> float:
    """Geometric mean of new / base over the peers timed in both (1.0 without any): the peers are
    other libraries' code, unchanged between our commits, so their drift is the machine's."""
    common = [name for name in new_peers if name in base_peers and base_peers[name] > 0 and new_peers[name] > 0]
    if not common:
        return 1.0
    return math.exp(sum(math.log(new_peers[n] / base_peers[n]) for n in common) / len(common))


def _peers(rows: list[dict[str, Any]], run: str) -> dict[tuple, dict[str, Any]]:
    """Per case of ``run``: its peers' medians, and the torch version they ran with."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["run_id"] == run and r.get("role") == "peer" and r.get("p50") is not None:
            entry = out.setdefault(_case(r), {"torch": r.get("torch"), "p50": {}})
            entry["p50"][r["backend"]] = r["p50"]
    return out


def compare(rows: list[dict[str, Any]], base: str, new: str, *, rtol: float = RTOL, atol: float = ATOL,
            remeasure: Callable[[dict[str, Any]], dict[str, float] | None] | None = None,
            drift_by_peers: bool = True, per_round: bool = True) -> list[Verdict]:
    """Verdicts for every measurement present in both runs (same device name).

    ``drift_by_peers``: a candidate's new time is divided by its case's peer drift (same torch
    version in both runs only) before the rule applies, so a machine that got slower or faster
    between the runs moves neither verdict: from the per-round ratios when both rows carry
    ``peer_ratio`` and ``per_round`` is set, else from the peers' medians (:func:`peer_drift`).
    ``remeasure(row)`` re-times a flagged row's case (every candidate, name -> median, and
    ``"ratio:<name>"`` -> the per-round peer ratio of ours).
    """
    base_rows = {history.key(r): r for r in rows if r["run_id"] == base and r.get("p50") is not None}
    base_peers, new_peers = _peers(rows, base), _peers(rows, new)
    verdicts = []
    for row in rows:
        if row["run_id"] != new or row.get("p50") is None:
            continue
        old = base_rows.get(history.key(row))
        if old is None or old.get("device_name") != row.get("device_name"):
            continue
        then, now = base_peers.get(_case(row)), new_peers.get(_case(row))
        ours = row.get("role") == "mnemonix"
        usable = drift_by_peers and ours and then is not None and now is not None and then["torch"] == now["torch"]
        base_ratio = old.get("peer_ratio") if usable and per_round else None
        verdicts.append(_verdict(row, old["p50"], then["p50"] if usable else None, now["p50"] if usable else {},
                                 rtol, atol, remeasure if ours else None, base_ratio))
    return verdicts


def _verdict(row: dict[str, Any], base_s: float, base_peers: dict[str, float] | None, new_peers: dict[str, float],
             rtol: float, atol: float, remeasure, base_ratio: float | None = None) -> Verdict:
    """One row's verdict: its time over the machine's drift (none when ``base_peers`` is None),
    and when flagged the re-measurement's, if better. The drift is the per-round ratios' when
    ``base_ratio`` and the new ratio are known, else the peers' medians'."""
    def drift(new_s: float, peers: dict[str, float], ratio: float | None) -> float:
        if base_peers is None:
            return 1.0
        if base_ratio and ratio:
            return new_s / (base_s * ratio / base_ratio)  # the factor that takes new_s to that time
        return peer_drift(base_peers, peers)

    new_s = row["p50"]
    factor = drift(new_s, new_peers, row.get("peer_ratio"))
    flagged = regressed(base_s, new_s / factor, rtol=rtol, atol=atol)
    if flagged and remeasure is not None:
        again = remeasure(row)
        if again is not None and row["backend"] in again:
            peers = {k: v for k, v in again.items() if k.startswith("peer:")}
            t = again[row["backend"]]
            f = drift(t, peers, again.get(f"ratio:{row['backend']}"))
            if t / f < new_s / factor:
                new_s, factor = t, f
            flagged = regressed(base_s, new_s / factor, rtol=rtol, atol=atol)
    return Verdict(row["op"], row["backend"], row.get("shape") or {}, row.get("dtype", ""), base_s, new_s, flagged,
                   factor)


def remeasurer(attempts: int = 2, repeat: int = 9) -> Callable[[dict[str, Any]], dict[str, float] | None]:
    """Re-time a history row's case with the current code: every candidate's median (and the
    row's candidate's per-round peer ratio) from the attempt where it was fastest (of ``attempts``),
    side by side with the rest of its case's candidates as the run timed it: timed alone, a
    candidate runs faster than it did among its peers, which would hide a real regression."""
    def again(row: dict[str, Any]) -> dict[str, float] | None:
        device = torch.device(row.get("device", "cpu"))
        try:
            found = suites.cases(row.get("suite", "quick"), device, row.get("size"))
        except ValueError:  # a suite or size this version does not declare
            return None
        for case in found:
            if case.op == row["op"] and case.shape == row.get("shape") and \
                    str(case.dtype).removeprefix("torch.") == row.get("dtype"):
                built = case.build(device)
                if row["backend"] not in built.candidates:
                    return None
                slow = injected_slowdown().get(row["op"])
                slowdown = {"auto": slow} if slow else None
                tries = [measure(built.candidates, device, repeat=repeat, slowdown=slowdown, setup=built.setup)
                         for _ in range(attempts)]
                best = min(tries, key=lambda t: t[row["backend"]].p50)
                ratio = peer_ratio(best, row["backend"])
                return {**{name: t.p50 for name, t in best.items()},
                        **({f"ratio:{row['backend']}": ratio} if ratio is not None else {})}
        return None

    return again
