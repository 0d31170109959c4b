"""Plastic prefix memory: the C++ engine vs the pure-Python rule, side by side in one run.

Learns the first 1k, 3k, 10k and all tokenised names (``">" + name + "_"``) with
the engine (``mnemonix.plastic.PlasticMemory``) and, up to ``--oracle-max``
names, with the pure-Python oracle of the spec (``tests/plastic_oracle.py``:
the research rule with networkx-like dicts, without networkx's overhead, so
the ratio understates the speed-up over the research code). Then learns
random strings of length 5-15 over 26 letters (1,000,000; ``--quick``: 100,000)
with the engine.

Scoring (``mnemonix.plastic.PlasticPredictor``): makemore's split of the names (1,000
test names, 1,000 validation names, the rest learned), then the time to copy the graph
into a predictor, to score the 1,000 test names in one batched call (teacher-forced NLL,
C++ without the GIL; with the graph's own context and with k-grams only), to score them
one ``log_prob`` call at a time, to read the full distribution after every test prefix,
and to sample 1,000 names. Times are the median and the minimum of ``--repeats`` runs.

Each (implementation, size) runs in a fresh subprocess so that its peak
memory is its own: ``peak MiB`` is the growth of the peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before learning) over
the resident set at that moment; ``engine est. MiB`` is the engine's own
estimate of its data structures. Each
run also hashes its final graph (nodes with count and r_level, edges, in
order); ``same graph`` says whether engine and oracle agree at that size.

Usage::

    python bench/compare_plastic.py            # full (the oracle at 10k takes minutes)
    python bench/compare_plastic.py --quick    # seconds: oracle at 1k only, 100k random strings
    python bench/compare_plastic.py --scoring-only   # the predictor's speed only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
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


def _graph_digest(nodes: list, edges: list) -> str:
    h = hashlib.sha256()
    h.update(repr(nodes).encode("utf-8"))
    h.update(repr(edges).encode("utf-8"))
    return h.hexdigest()[:16]


def worker(impl: str, dataset: str, n: int, names_path: Path) -> dict:
    """Learn ``n`` samples with ``impl`` in this process; return time, memory and digest."""
    if dataset == "names":
        names = [ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if n > len(names):
            raise ValueError(f"n={n} exceeds the {len(names)} names in {names_path}")
        samples = [">" + s + "_" for s in names[:n]]
    else:
        import numpy as np

        rng = np.random.default_rng(0)
        lengths = rng.integers(5, 16, size=n)
        letters = rng.integers(97, 123, size=int(lengths.sum()), dtype=np.uint8).tobytes().decode("ascii")
        ends = np.cumsum(lengths)
        samples = [letters[e - k : e] for e, k in zip(ends.tolist(), lengths.tolist())]
    if impl == "engine":
        from mnemonix.plastic import PlasticMemory

        model = PlasticMemory()
        learn_all = lambda: model.learn_many(samples, progress=False)
    else:
        from plastic_oracle import PlasticOracle

        model = PlasticOracle()

        def learn_all() -> None:
            for s in samples:
                model.learn(s)

    _reset_peak_rss()
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    learn_all()
    seconds = time.perf_counter() - t0
    peak = _peak_rss_bytes()
    nodes = model.nodes()
    edges = model.edges()
    out = {
        "impl": impl, "dataset": dataset, "n": n, "seconds": seconds,
        "peak_mib": max(0, peak - rss0) / 2**20, "nodes": len(nodes), "edges": len(edges),
        "digest": _graph_digest(nodes, edges) if dataset == "names" else None,
    }
    if impl == "engine":
        out["engine_mib"] = model.stats()["memory_bytes"] / 2**20
    return out


def run_worker(impl: str, dataset: str, n: int, names_path: Path, timeout: float) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, dataset, str(n),
           "--names", str(names_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        print(f"  {impl} {dataset} n={n}: over {timeout:.0f} s, skipped", file=sys.stderr)
        return None
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"worker {impl} {dataset} {n} failed:\n{exc.stderr}") from exc
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _times_ms(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall time of fn in ms, after one warm-up call."""
    import statistics

    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def scoring_rows(names_path: Path, repeats: int) -> list[dict]:
    """Speed of the predictor on makemore's split of the names (see the module docstring)."""
    from mnemonix.plastic import Backoff, PlasticMemory, tokenize
    from mnemonix.plastic.evaluation import split_names

    names = [ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    split = split_names(names)
    mem = PlasticMemory()
    mem.learn_many([tokenize(n) for n in split.learn], progress=False)
    test = [tokenize(n) for n in split.test]
    prefixes = [t[:j] for t in test for j in range(1, len(t))]
    engine = mem._engine  # the build itself, without PlasticMemory's cache
    build = _times_ms(lambda: engine.predictor(">", 4, ""), repeats)
    pred = mem.predictor(Backoff((0.5, 1.0, 0.79, 0.87), graph_discount=0.78), max_order=4)  # eval's fit
    kgrams = pred.with_backoff(Backoff((0.5, 1.0, 0.73, 0.84, 0.71), graph_context=False))
    chars = sum(len(t) - 1 for t in test)
    cases = [
        (f"copy the graph into a predictor ({len(mem)} nodes, k-grams up to 4)", None, build),
        ("score the test names, one batched call (graph context, order 3)", len(test),
         _times_ms(lambda: pred.log_probs(test), repeats)),
        ("score the test names, one batched call (k-grams only, order 4)", len(test),
         _times_ms(lambda: kgrams.log_probs(test), repeats)),
        ("score the test names, one log_prob call per name", len(test),
         _times_ms(lambda: [pred.log_prob(t) for t in test], max(1, repeats // 4))),
        (f"full distribution after each of the {len(prefixes)} test prefixes", len(prefixes),
         _times_ms(lambda: [pred.distribution(p) for p in prefixes], max(1, repeats // 4))),
        ("sample 1000 names", 1000, _times_ms(lambda: pred.sample(1000, seed=0), repeats)),
    ]
    rows = []
    for what, n, (median, best) in cases:
        rows.append({"scoring": what, "median ms": median, "min ms": best,
                     "us per item (min)": best * 1e3 / n if n else None})
    rows[1]["test nll"] = pred.nll(test)
    rows[1]["test chars"] = chars
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="oracle at 1k only, 100k random strings")
    parser.add_argument("--names", type=Path, default=None, help="names list (default: data/names.txt)")
    parser.add_argument("--oracle-max", type=int, default=None, help="largest size run with the oracle")
    parser.add_argument("--random", type=int, default=None, help="number of random strings (engine)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per worker run")
    parser.add_argument("--scoring-only", action="store_true", help="measure the predictor only")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per scoring case")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "DATASET", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names_path = args.names or default_names_path()
    if not names_path.is_file():
        raise FileNotFoundError(f"names list not found at {names_path} (pass --names)")

    if args.worker:
        impl, dataset, n = args.worker
        print(json.dumps(worker(impl, dataset, int(n), names_path)))
        return 0

    from bench._common import print_table, write_results

    scoring = scoring_rows(names_path, args.repeats)
    print_table(scoring, ["scoring", "median ms", "min ms", "us per item (min)"])
    print(f"(test NLL {scoring[1]['test nll']:.4f} nats per character over {scoring[1]['test chars']} characters)\n")
    if args.scoring_only:
        path = write_results("plastic-scoring", scoring, extra={"names_path": str(names_path)})
        print(f"wrote {path}")
        return 0

    total = sum(1 for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip())
    sizes = [1_000, 3_000, 10_000, total]
    oracle_max = args.oracle_max if args.oracle_max is not None else (1_000 if args.quick else 10_000)
    n_random = args.random if args.random is not None else (100_000 if args.quick else 1_000_000)

    rows = []
    for n in sizes:
        eng = run_worker("engine", "names", n, names_path, args.timeout)
        ora = run_worker("oracle", "names", n, names_path, args.timeout) if n <= oracle_max else None
        row = {
            "data": "names", "n": n, "nodes": eng["nodes"], "engine s": eng["seconds"],
            "engine peak MiB": eng["peak_mib"], "engine est. MiB": eng["engine_mib"],
            "oracle s": ora["seconds"] if ora else None, "oracle peak MiB": ora["peak_mib"] if ora else None,
            "speedup": ora["seconds"] / eng["seconds"] if ora else None,
            "same graph": (ora["digest"] == eng["digest"]) if ora else None,
        }
        rows.append(row)
        print(f"  names n={n}: engine {eng['seconds']:.3f} s" + (f", oracle {ora['seconds']:.2f} s" if ora else ""),
              file=sys.stderr)
    eng = run_worker("engine", "random", n_random, names_path, args.timeout)
    rows.append({
        "data": "random a-z, len 5-15", "n": n_random, "nodes": eng["nodes"], "engine s": eng["seconds"],
        "engine peak MiB": eng["peak_mib"], "engine est. MiB": eng["engine_mib"],
    })
    columns = ["data", "n", "nodes", "engine s", "engine peak MiB", "engine est. MiB", "oracle s",
               "oracle peak MiB", "speedup", "same graph"]
    print_table(rows, columns)
    path = write_results("plastic", rows, extra={"quick": args.quick, "names_path": str(names_path),
                                                 "scoring": scoring})
    print(f"\nwrote {path}")
    if any(r.get("same graph") is False for r in rows):
        print("ERROR: engine and oracle graphs differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
