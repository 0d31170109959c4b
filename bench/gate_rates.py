"""False-alarm and detection rates of the regression gate (``mnemonix bench compare``), measured.

Runs the smoke suite's cases (or a sub-selection) ``--runs`` times, alternating an honest run
and a run with an injected slowdown of every op's ``auto`` candidate (``MNEMONIX_BENCH_SLOWDOWN``,
the same busy wait the harness tests use), into a throw-away history. Then, with the gate exactly
as ``compare`` runs it (xformers' rule on the median, re-measure of flagged rows):

- false alarm: an honest run compared with the honest run before it flags a case;
- detection: a slowed run compared with the honest run just before it flags the case.

The rule cannot see a slowdown ``s`` of a case whose base time ``t`` has ``s t <= rtol t + atol``
(10 % against 5 % + 30 us: t <= 0.6 ms); such cases are reported as "below the rule's reach".

    python bench/gate_rates.py [--runs 20] [--slowdown 0.10] [--ops hopfield_retrieve,lifespan_step]
                               [--max-case-seconds 20] [--no-notes] [--keep-history PATH]

Writes bench/results/gate_rates-<device>.json and appends a dated paragraph to bench/NOTES.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from mnemonix.benchmark import environment, gate, history, run, suites
from mnemonix.benchmark.settings import ATOL, RTOL

HERE = Path(__file__).resolve().parent


def _label(row: dict[str, Any]) -> str:
    dims = " ".join(f"{k}={v}" for k, v in (row.get("shape") or {}).items())
    return f"{row['op']} {dims} {row.get('dtype', '')}"


def measure_runs(cases: list[suites.Case], device: torch.device, runs: int, slowdown: float, path: Path,
                 repeat: int) -> list[tuple[str, bool]]:
    """``runs`` runs into the history at ``path``, honest and slowed alternately: [(run_id, slowed)]."""
    ops = sorted({c.op for c in cases})
    order = []
    for i in range(runs):
        slowed = i % 2 == 1
        env = environment.record(device)
        os.environ[run.SLOWDOWN_ENV] = ",".join(f"{op}={slowdown}" for op in ops) if slowed else ""
        try:
            for case in cases:
                history.append(path, run.measure_case(case, device, repeat=repeat, budget_s=5.0, env=env,
                                                      suite="smoke"))
        finally:
            os.environ[run.SLOWDOWN_ENV] = ""
        order.append((env["run_id"], slowed))
        print(f"  run {i + 1}/{runs} ({'slowed' if slowed else 'honest'}) done", flush=True)
    return order


class Flags(NamedTuple):
    """One case pair's verdicts: on the recorded numbers (per-round drift, and the peers'
    medians' drift instead), after the re-measure, and the base's p50."""

    raw: bool
    raw_medians: bool
    final: bool
    base_s: float


def _flags(rows, base, new, slowed: bool, slowdown: float, ops: list[str]) -> dict[str, Flags]:
    """Per case label: its :class:`Flags`."""
    os.environ[run.SLOWDOWN_ENV] = ",".join(f"{op}={slowdown}" for op in ops) if slowed else ""
    try:
        raw = {_label(v.__dict__): v.regressed for v in gate.compare(rows, base, new) if v.backend == "auto"}
        medians = {_label(v.__dict__): v.regressed for v in gate.compare(rows, base, new, per_round=False)
                   if v.backend == "auto"}
        final = gate.compare(rows, base, new, remeasure=gate.remeasurer())
    finally:
        os.environ[run.SLOWDOWN_ENV] = ""
    return {_label(v.__dict__): Flags(raw[_label(v.__dict__)], medians[_label(v.__dict__)], v.regressed, v.base_s)
            for v in final if v.backend == "auto"}


def rates(rows: list[dict[str, Any]], order: list[tuple[str, bool]], slowdown: float,
          ops: list[str]) -> dict[str, dict[str, Any]]:
    """Per case: false alarms over honest pairs and detections over slowed pairs (raw with the
    per-round drift, raw with the medians' drift, and re-measured)."""
    per: dict[str, dict[str, Any]] = {}
    last_honest = None
    for run_id, slowed in order:
        if last_honest is not None:
            for label, flags in _flags(rows, last_honest, run_id, slowed, slowdown, ops).items():
                r = per.setdefault(label, {"honest_pairs": 0, "false_alarms_raw": 0, "false_alarms_raw_medians": 0,
                                           "false_alarms": 0, "slowed_pairs": 0, "detected_raw": 0,
                                           "detected_raw_medians": 0, "detected": 0, "base_p50_s": []})
                pairs, count = ("slowed_pairs", "detected") if slowed else ("honest_pairs", "false_alarms")
                r[pairs] += 1
                r[count + "_raw"] += flags.raw
                r[count + "_raw_medians"] += flags.raw_medians
                r[count] += flags.final
                r["base_p50_s"].append(flags.base_s)
        if not slowed:
            last_honest = run_id
    for r in per.values():
        base = statistics.median(r.pop("base_p50_s"))
        r["base_p50_ms"] = base * 1e3
        r["within_rule_reach"] = slowdown * base > RTOL * base + ATOL
    return per


def _notes_paragraph(result: dict[str, Any], command: str) -> str:
    env, per = result["environment"], result["cases"]
    lines = [f"\n## Gate rates ({time.strftime('%Y-%m-%d')}, {env['device_name']}, commit {env['commit']})\n",
             f"`{command}`: {result['runs']} smoke runs alternating honest / +{result['slowdown']:.0%} injected "
             f"into `auto` (rule: new - base - {RTOL:g} base > {ATOL * 1e6:g} us on the median, flagged rows "
             f"re-measured). Per case: false alarms / honest pairs, detections / slowed pairs; in brackets "
             f"before the re-measure, with the drift from the per-round peer ratios / from the peers' medians:\n"]
    for label, r in per.items():
        reach = "" if r["within_rule_reach"] else " (below the rule's reach: 10% < 5% + 30 us here)"
        lines.append(f"- {label} (base {r['base_p50_ms']:.3g} ms): false alarms {r['false_alarms']}/"
                     f"{r['honest_pairs']} ({r['false_alarms_raw']} / {r['false_alarms_raw_medians']}), detected "
                     f"{r['detected']}/{r['slowed_pairs']} ({r['detected_raw']} / {r['detected_raw_medians']}){reach}")
    t = result["totals"]
    lines.append(f"\nTotal: false-alarm rate {t['false_alarm_rate']:.1%} of {t['honest_case_pairs']} honest case "
                 f"pairs; detection rate {t['detection_rate_in_reach']:.1%} of {t['slowed_case_pairs_in_reach']} "
                 f"slowed case pairs within the rule's reach. Before the re-measure: false alarms "
                 f"{t['false_alarm_rate_raw']:.1%} per-round / {t['false_alarm_rate_raw_medians']:.1%} medians, "
                 f"detection {t['detection_rate_raw']:.1%} / {t['detection_rate_raw_medians']:.1%}. "
                 f"JSON: bench/results/{result['file']}.\n")
    return "\n".join(lines)


def _totals(per: dict[str, dict[str, Any]]) -> dict[str, Any]:
    honest = sum(r["honest_pairs"] for r in per.values())
    reach = [r for r in per.values() if r["within_rule_reach"]]
    slowed = sum(r["slowed_pairs"] for r in reach)
    out: dict[str, Any] = {"honest_case_pairs": honest, "slowed_case_pairs_in_reach": slowed}
    for suffix in ("", "_raw", "_raw_medians"):
        alarms = sum(r["false_alarms" + suffix] for r in per.values())
        found = sum(r["detected" + suffix] for r in reach)
        out["false_alarm_rate" + suffix] = alarms / honest if honest else 0.0
        out["detection_rate" + ("_in_reach" if not suffix else suffix)] = found / slowed if slowed else 0.0
        if not suffix:
            out.update(false_alarms=alarms, detected_in_reach=found)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="total runs, alternating honest / slowed (default 20)")
    p.add_argument("--slowdown", type=float, default=0.10)
    p.add_argument("--ops", default=None, help="comma-separated ops of the smoke suite (default: all)")
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--no-notes", action="store_true", help="do not append to bench/NOTES.md")
    p.add_argument("--keep-history", type=Path, default=None,
                   help="write the runs' history here (to study other rules on the same runs) instead of a temp file")
    args = p.parse_args(argv)
    device = torch.device("cpu")
    cases = [c for c in suites.cases("smoke", device) if args.ops is None or c.op in args.ops.split(",")]
    ops = sorted({c.op for c in cases})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep_history if args.keep_history is not None else Path(tmp) / "history.jsonl"
        order = measure_runs(cases, device, args.runs, args.slowdown, path, args.repeat)
        per = rates(history.read(path), order, args.slowdown, ops)
    name = f"gate_rates-{device.type}.json"
    result = {"runs": args.runs, "slowdown": args.slowdown, "rtol": RTOL, "atol_s": ATOL, "ops": ops,
              "cases": per, "totals": _totals(per), "seconds": time.perf_counter() - started,
              "environment": environment.record(device), "file": name}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / name).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    command = "python bench/gate_rates.py " + " ".join(argv if argv is not None else sys.argv[1:])
    paragraph = _notes_paragraph(result, command.strip())
    print(paragraph)
    if not args.no_notes:
        with (HERE / "NOTES.md").open("a", encoding="utf-8") as fh:
            fh.write(paragraph)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
