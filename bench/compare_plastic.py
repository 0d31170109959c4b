"""Plastic prefix memory: the C++ engine vs the pure-Python rule, side by side in one run.

A front-end of the ``plastic`` suite of ``mnemonix bench`` (:mod:`mnemonix.benchmark.suites.plastic`):
the times are the harness's (ops ``plastic.learn``, ``plastic.learn_random``, ``plastic.score``;
the engine's graph checked against the oracle's in the same run); the peak memory of each
(implementation, size) needs a fresh process and joins the same history rows as extra fields.

Learns the first 1k, 3k, 10k and all tokenised names (``">" + name + "_"``) with
the engine (``mnemonix.plastic.PlasticMemory``) and, up to ``--oracle-max``
names, with the pure-Python oracle of the spec (``tests/plastic_oracle.py``:
the research rule with networkx-like dicts, without networkx's overhead, so
the ratio understates the speed-up over the research code). Then learns
random strings of length 5-15 over 26 letters (1,000,000; ``--quick``: 100,000)
with the engine.

Scoring (``mnemonix.plastic.PlasticPredictor``): makemore's split of the names (1,000
test names, 1,000 validation names, the rest learned), then the time to score the 1,000 test
names in one batched call (teacher-forced NLL, C++ without the GIL; with the graph's own
context and with k-grams only) and one ``log_prob`` call at a time (the batched scores
checked against the per-name ones). Times are the harness's p50 over ``--repeats`` rounds.

Each (implementation, size) runs in a fresh subprocess so that its peak
memory is its own: ``peak MiB`` is the growth of the peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before learning) over
the resident set at that moment; ``engine est. MiB`` is the engine's own
estimate of its data structures. ``same graph`` is the harness's check: the engine's
graph (nodes with count and r_level, edges, in order) is the oracle's at that size.

Usage::

    python bench/compare_plastic.py            # full (the oracle at 10k takes minutes)
    python bench/compare_plastic.py --quick    # seconds: oracle at 1k only, 100k random strings
    python bench/compare_plastic.py --scoring-only   # the predictor's speed only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def default_names_path() -> Path:
    return ROOT / "data" / "names.txt"  # bundled makemore names list (data/README.md)


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(impl: str, dataset: str, n: int, names_path: Path) -> dict:
    """(Fresh process) peak memory of learning ``n`` samples with ``impl`` (not a timing)."""
    from mnemonix.benchmark.suites import plastic as suite

    samples = suite.samples(dataset, n, names_path)
    if impl == "engine":
        from mnemonix.plastic import PlasticMemory

        model = PlasticMemory()
        learn_all = lambda: model.learn_many(samples, progress=False)  # noqa: E731
    else:
        oracle, why = suite.oracle_class()
        if oracle is None:
            raise RuntimeError(why)
        model = oracle()

        def learn_all() -> None:
            for s in samples:
                model.learn(s)

    _reset_peak_rss()
    rss0 = _rss_bytes()
    learn_all()
    out = {"peak_mib": max(0, _peak_rss_bytes() - rss0) / 2**20, "nodes": len(model.nodes()),
           "edges": len(model.edges())}
    if impl == "engine":
        out["engine_mib"] = model.stats()["memory_bytes"] / 2**20
    return out


def memory_of(impl: str, dataset: str, n: int, names_path: Path, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, dataset, str(n),
           "--names", str(names_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"memory_error": f"over {timeout:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {"memory_error": (exc.stderr.strip().splitlines() or ["worker failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="oracle at 1k only, 100k random strings")
    parser.add_argument("--names", type=Path, default=None, help="names list (default: data/names.txt)")
    parser.add_argument("--oracle-max", type=int, default=None, help="largest size run with the oracle")
    parser.add_argument("--random", type=int, default=None, help="number of random strings (engine)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per memory worker")
    parser.add_argument("--scoring-only", action="store_true", help="measure the predictor only")
    parser.add_argument("--no-memory", action="store_true", help="times only (no fresh-process workers)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per case")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per case after which rounds stop")
    parser.add_argument("--history", type=Path, default=ROOT / "bench" / "history.jsonl",
                        help="default bench/history.jsonl; 'none' for none")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "DATASET", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names_path = args.names or default_names_path()
    if not names_path.is_file():
        raise FileNotFoundError(f"names list not found at {names_path} (pass --names)")
    if args.worker:
        impl, dataset, n = args.worker
        print(json.dumps(worker(impl, dataset, int(n), names_path)))
        return 0

    import torch

    from bench._common import append_rows, pivot, print_table, report_wrong, write_results
    from mnemonix.benchmark import run
    from mnemonix.benchmark.suites import plastic as suite

    total = sum(1 for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip())
    oracle_max = args.oracle_max if args.oracle_max is not None else (1_000 if args.quick else 10_000)
    n_random = args.random if args.random is not None else (100_000 if args.quick else 1_000_000)
    cases = [suite.score_case(names_path)]
    if not args.scoring_only:
        cases += [suite.learn_case("names", n, oracle_max=oracle_max, names_path=names_path)
                  for n in (1_000, 3_000, 10_000, total)]
        cases.append(suite.learn_case("random", n_random, oracle_max=0, names_path=names_path))
    rows = run.run_suite("plastic", torch.device("cpu"), history_path=None, repeat=args.repeats,
                         budget_s=args.budget, cases=cases, size="quick" if args.quick else "default")
    for r in rows:
        if not args.no_memory and r["op"].startswith("plastic.learn") and r.get("p50") is not None:
            dataset = "names" if r["op"] == "plastic.learn" else "random"
            r.update(memory_of("engine" if r["backend"] == "auto" else "oracle", dataset, r["shape"]["n"],
                               names_path, args.timeout))
    append_rows(rows, args)
    scoring = pivot([r for r in rows if r["op"] == "plastic.score"],
                    {"auto": "batched", "kgrams": "kgrams_batched", "per_name": "per_name"})
    print_table(scoring, ["names", "batched_ms", "kgrams_batched_ms", "per_name_ms", "x_vs_per_name", "ok"])
    nll = next((r.get("test_nll") for r in rows if r["op"] == "plastic.score" and r["backend"] == "auto"), None)
    print(f"(test NLL {nll:.4f} nats per character)\n" if nll is not None else "")
    table = []
    for r in rows:
        if r["op"].startswith("plastic.learn") and r["backend"] == "auto":
            peer = next((o for o in rows if o["op"] == r["op"] and o["shape"] == r["shape"]
                         and o["backend"] == "peer:python-rule"), {})
            table.append({"data": "names" if r["op"] == "plastic.learn" else "random a-z, len 5-15",
                          "n": r["shape"]["n"], "nodes": r.get("nodes"), "engine s": r["p50"],
                          "engine peak MiB": r.get("peak_mib"), "engine est. MiB": r.get("engine_mib"),
                          "oracle s": peer.get("p50"), "oracle peak MiB": peer.get("peak_mib"),
                          "speedup": peer["p50"] / r["p50"] if peer.get("p50") else None,
                          "same graph": r["ok"] if peer.get("p50") else None, "note": peer.get("skipped")})
    if table:
        print_table(table, ["data", "n", "nodes", "engine s", "engine peak MiB", "engine est. MiB", "oracle s",
                            "oracle peak MiB", "speedup", "same graph", "note"])
    name = "plastic-scoring" if args.scoring_only else "plastic"
    path = write_results(name, rows, {"quick": args.quick, "names_path": str(names_path), "table": table,
                                      "scoring": scoring}, device=torch.device("cpu"))
    print(f"\nwrote {path}")
    if any(r.get("ok") is False for r in rows):
        print("ERROR: a check failed (engine and oracle graphs differ, or batched and per-name scores)",
              file=sys.stderr)
    return report_wrong(rows)


if __name__ == "__main__":
    raise SystemExit(main())
