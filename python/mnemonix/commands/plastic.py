"""``mnemonix plastic``: learn, query and inspect a plastic prefix memory.

- ``mnemonix plastic learn FILE [--limit N] [--save PATH]``: learn one sample per line
  (tokenised as ``">" + line + "_"`` unless ``--raw``), print statistics, optionally save.
- ``mnemonix plastic infer PATH PREFIX``: complete ``">" + PREFIX`` (``--raw``: PREFIX as is).
- ``mnemonix plastic stats PATH``: statistics of a saved memory, per level.
- ``mnemonix plastic eval FILE``: held-out NLL per character against a counting bigram and
  trigram and a small MLP on makemore's split (:mod:`mnemonix.plastic.evaluation`).
- ``mnemonix plastic curriculum FILE``: the same names in several orders
  (:mod:`mnemonix.plastic.curriculum`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from mnemonix import _plotting as plotting
from mnemonix._table import format_table
from mnemonix.commands._args import (
    UsageError,
    check_output_dir,
    check_output_file,
    finite_float,
    int_at_least,
    positive_int,
    seed_int,
)

_ORDERS = ("file", "random", "shortest", "entropy")  # mnemonix.plastic.curriculum.ORDERS (not imported: fast --help)
_MAKEMORE_SEED = 3407

# A small built-in list for the demo when no names file is given (synthetic, not real data).
_SYNTHETIC_STEMS = ["ma", "li", "ar", "el", "jo", "an", "ka", "ro", "sa", "ev", "da", "mi"]
_SYNTHETIC_ENDS = ["", "a", "n", "na", "ra", "lie", "son", "ly", "ia", "en", "ie", "o"]


def synthetic_names(n: int, seed: int = 0) -> list[str]:
    """``n`` pseudo-names (stem + stem + ending) from a seeded generator."""
    import random

    rng = random.Random(seed)
    return [rng.choice(_SYNTHETIC_STEMS) + rng.choice(_SYNTHETIC_STEMS) + rng.choice(_SYNTHETIC_ENDS)
            for _ in range(n)]


def read_samples(path: Path, limit: int | None, *, label: str = "FILE") -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file, at most ``limit`` of them.

    ``label`` names the argument in errors (``FILE``, ``--names``).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{label} {str(path)!r} is a directory, expected a text file")
    if not path.is_file():
        raise FileNotFoundError(f"{label} {str(path)!r} does not exist")
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    out.append(line)
                    if limit is not None and len(out) >= limit:
                        break
    except UnicodeDecodeError as exc:
        raise ValueError(f"{label} {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return out


def _print_stats(stats: dict) -> None:
    print(f"nodes {stats['nodes']}  edges {stats['edges']}  samples {stats['samples']}  "
          f"levels {stats['levels']}  leaves {stats['leaves']}  memory ~{stats['memory_bytes'] / 2**20:.1f} MiB")
    print(f"{'r_level':>7}  {'nodes':>8}  {'leaves':>8}  {'count sum':>10}  {'max count':>10}  {'mean len':>8}")
    for level, row in stats["per_level"].items():
        print(f"{level:>7}  {row['nodes']:>8}  {row['leaves']:>8}  {row['count_sum']:>10}  "
              f"{row['max_count']:>10}  {row['mean_length']:>8.2f}")


def _learn(args: argparse.Namespace) -> int:
    from mnemonix.plastic import PlasticMemory, tokenize

    check_output_file("--save", args.save)
    lines = read_samples(args.file, args.limit)
    samples = lines if args.raw else [tokenize(s) for s in lines]
    mem = PlasticMemory(exact_counts=args.exact_counts)
    t0 = time.perf_counter()
    mem.learn_many(samples, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    print(f"learned {len(samples)} samples in {seconds:.3f} s")
    _print_stats(mem.stats())
    if args.save is not None:
        mem.save(args.save)
        print(f"saved to {args.save}")
    return 0


def _infer(args: argparse.Namespace) -> int:
    from mnemonix.plastic import PlasticMemory

    mem = PlasticMemory.load(args.path)
    prefix = args.prefix if args.raw else ">" + args.prefix
    for i in range(args.n):
        seed = None if args.seed is None else args.seed + i
        result = mem.infer(prefix, stop=args.stop, mode=args.mode, seed=seed)
        if not result.path:
            print(f"no node is a prefix of {prefix!r}")
            return 1
        probs = " ".join(f"{p:.3f}" for p in result.probabilities)
        print(f"{result.completion}\tp={_product(result.probabilities):.4f}\tsteps: {probs}")
    return 0


def _product(values: list[float]) -> float:
    out = 1.0
    for v in values:
        out *= v
    return out


def _stats(args: argparse.Namespace) -> int:
    from mnemonix.plastic import PlasticMemory

    _print_stats(PlasticMemory.load(args.path).stats())
    return 0


def order_list(text: str) -> list[str]:
    """An argparse type: a comma-separated list of curriculum orders."""
    orders = [o.strip() for o in text.split(",") if o.strip()]
    bad = [o for o in orders if o not in _ORDERS]
    if not orders or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list among {','.join(_ORDERS)}, got {text!r}")
    return orders


def _read_names(args: argparse.Namespace) -> list[str]:
    """The names of FILE, checked (FormatError), and --test-size checked against their number."""
    from mnemonix.plastic.evaluation import check_names

    names = check_names(read_samples(args.file, None), args.file)
    if args.test_size is not None and args.test_size > len(names) - 2:
        raise UsageError(f"--test-size {args.test_size}: FILE {str(args.file)!r} holds {len(names)} names, and at "
                         f"least 2 must remain to learn and validate (so at most {max(len(names) - 2, 0)})")
    return names


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=1, default=lambda o: dataclasses.asdict(o)) + "\n", encoding="utf-8")


def _figure(plot, result, path: Path) -> None:
    if not plotting.available():
        print(f"no figure: matplotlib is not installed (pip install 'mnemonix[demo]'); {path} not written")
        return
    plot(result, path)
    print(f"wrote {path}")


def _eval(args: argparse.Namespace) -> int:
    from mnemonix.plastic.evaluation import evaluate
    from mnemonix.plastic.figures import plot_eval

    check_output_dir("--out", args.out)
    names = _read_names(args)
    log = (lambda *a, **k: None) if args.quiet else print
    mlp_seconds = args.mlp_seconds if args.mlp_seconds is not None else (3.0 if args.quick else 60.0)
    result = evaluate(names, test_size=args.test_size, seed=args.seed, mlp_seconds=mlp_seconds,
                      n_samples=args.samples, quick=args.quick, progress=not args.quiet, log=log)
    rows = [[r.model, r.test_nll, _percent(r.novel), _percent(r.learned), r.seconds, r.detail] for r in result.rows]
    print(f"\nheld-out NLL of {result.sizes['test']} test names ({result.sizes['test_chars']} characters, stop "
          f"included), {result.sizes['learned']} names learned; samples: {args.samples} per model")
    print(format_table(["model", "test NLL", "novel", "learned", "seconds", "detail"], rows))
    per_name = result.score_ms * 1e3 / result.sizes["test"]
    print(f"scoring the {result.sizes['test']} test names with the plastic predictor: {result.score_ms:.2f} ms "
          f"({per_name:.1f} us per name; C++, GIL released)")
    args.out.mkdir(parents=True, exist_ok=True)
    _write_json(args.out / "eval.json", result)
    print(f"wrote {args.out / 'eval.json'}")
    _figure(plot_eval, result, args.out / "eval.png")
    return 0


def _percent(x: float | None) -> str | None:
    return None if x is None else f"{100 * x:.1f}%"


def _curriculum(args: argparse.Namespace) -> int:
    from mnemonix.plastic.curriculum import run_curriculum
    from mnemonix.plastic.figures import plot_curriculum

    check_output_dir("--out", args.out)
    names = _read_names(args)
    log = (lambda *a, **k: None) if args.quiet else print
    points = args.points if args.points is not None else (8 if args.quick else 40)
    result = run_curriculum(names, test_size=args.test_size, seed=args.seed, orders=args.orders, points=points,
                            exact_counts=args.exact_counts, log=log)
    rows = []
    for t in result.traces:
        tenth = min(range(len(t.samples)), key=lambda i: abs(t.samples[i] - t.samples[-1] / 10))
        rows.append([t.order, t.nodes[-1], t.levels[-1], t.test_nll[tenth], t.test_nll[-1],
                     t.cumulative_bits[-1] / t.samples[-1], t.rate_deviation, t.learn_seconds])
    counts = "exact counts" if args.exact_counts else "research counts"
    print(f"\n{result.sizes['learned']} names per order ({counts}), "
          f"test NLL of {result.sizes['test']} names (nats / character)")
    print(format_table(["order", "nodes", "levels", "NLL at 10%", "NLL at 100%", "bits / sample",
                        "rate deviation", "learn s"], rows))
    args.out.mkdir(parents=True, exist_ok=True)
    _write_json(args.out / "curriculum.json", result)
    print(f"wrote {args.out / 'curriculum.json'}")
    _figure(plot_curriculum, result, args.out / "curriculum.png")
    return 0


def _add_split_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, metavar="FILE", help="one name per line (UTF-8)")
    p.add_argument("--test-size", type=positive_int, default=None,
                   help="test names (default makemore's min(1000, 10%%))")
    p.add_argument("--seed", type=seed_int, default=_MAKEMORE_SEED, help="seed of the split (default 3407, makemore's)")
    p.add_argument("--quick", action="store_true", help="a smoke run in seconds (fewer points, short MLP training)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plastic", help="plastic prefix memory: learn strings, complete prefixes")
    psub = p.add_subparsers(dest="plastic_command", metavar="ACTION")
    psub.required = True

    learn = psub.add_parser("learn", help="learn one sample per line of FILE")
    learn.add_argument("file", type=Path, metavar="FILE")
    learn.add_argument("--limit", type=positive_int, default=None, help="learn only the first N lines")
    learn.add_argument("--save", type=Path, default=None, metavar="PATH", help="save the memory here")
    learn.add_argument("--raw", action="store_true", help="learn lines as they are (no '>' ... '_' tokens)")
    learn.add_argument("--exact-counts", action="store_true", help="fix the research counts quirk")
    learn.add_argument("--quiet", action="store_true", help="no progress bar")
    learn.set_defaults(func=_learn)

    infer = psub.add_parser("infer", help="complete a prefix with a saved memory")
    infer.add_argument("path", type=Path, metavar="PATH")
    infer.add_argument("prefix", metavar="PREFIX")
    infer.add_argument("--mode", choices=["greedy", "sample"], default="greedy")
    infer.add_argument("--seed", type=seed_int, default=None)
    infer.add_argument("-n", type=positive_int, default=1, help="number of completions (sample mode)")
    infer.add_argument("--stop", default="_", help="stop token (default '_')")
    infer.add_argument("--raw", action="store_true", help="use PREFIX as is (no leading '>')")
    infer.set_defaults(func=_infer)

    stats = psub.add_parser("stats", help="statistics of a saved memory")
    stats.add_argument("path", type=Path, metavar="PATH")
    stats.set_defaults(func=_stats)

    ev = psub.add_parser("eval", help="held-out NLL against a bigram, a trigram and an MLP (makemore's split)")
    _add_split_arguments(ev)
    ev.add_argument("--mlp-seconds", type=finite_float(0.0), default=None,
                    help="MLP training time, all learning-curve points together (default 60; --quick: 3)")
    ev.add_argument("--samples", type=positive_int, default=1000, help="names sampled per model (default 1000)")
    ev.add_argument("--out", type=Path, default=Path("mnemonix-plastic-eval"), help="folder for eval.json, eval.png")
    ev.set_defaults(func=_eval)

    cur = psub.add_parser("curriculum", help="learn the same names in several orders")
    _add_split_arguments(cur)
    cur.add_argument("--orders", type=order_list, default=list(_ORDERS),
                     help=f"comma-separated orders (default {','.join(_ORDERS)})")
    cur.add_argument("--points", type=int_at_least(2), default=None,
                     help="grid points per order (default 40; --quick: 8)")
    cur.add_argument("--exact-counts", action="store_true", help="learn with exact_counts=True")
    cur.add_argument("--out", type=Path, default=Path("mnemonix-plastic-curriculum"),
                     help="folder for curriculum.json, curriculum.png")
    cur.set_defaults(func=_curriculum)


def demo_section(ctx) -> None:  # ctx: mnemonix.commands.demo.DemoContext
    """Learn names (``ctx.names_path`` or a built-in synthetic list) and print completions."""
    from mnemonix.plastic import PlasticMemory, tokenize

    if ctx.names_path is not None:
        names = read_samples(ctx.names_path, 3000 if ctx.quick else None, label="--names")
        source = str(ctx.names_path)
    else:
        names = synthetic_names(500 if ctx.quick else 5000, seed=ctx.seed)
        source = "built-in synthetic names"
    mem = PlasticMemory()
    t0 = time.perf_counter()
    mem.learn_many([tokenize(n) for n in names], progress=False)
    seconds = time.perf_counter() - t0
    stats = mem.stats()
    print(f"  learned {len(names)} names from {source} in {seconds:.3f} s: "
          f"{stats['nodes']} nodes, {stats['levels']} levels")
    rows = []
    if ctx.names_path is not None:
        prefixes = ["", "a", "em", "ka", "jo", "mar", "z"]
    else:
        prefixes = ["", "ma", "el", "ka", "jo", "ro"]
    for prefix in prefixes:
        greedy = mem.infer(">" + prefix)
        sampled = mem.infer(">" + prefix, mode="sample", seed=ctx.seed)
        rows.append([repr(prefix), greedy.completion, _product(greedy.probabilities), sampled.completion])
    ctx.table(["prefix", "greedy", "p(greedy)", "sampled"], rows)
    if not plotting.available():  # matplotlib is an optional (demo) dependency
        return
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    levels = list(stats["nodes_per_level"])
    ax.bar(levels, [stats["nodes_per_level"][lv] for lv in levels], color="tab:green")
    ax.set_xlabel("r_level")
    ax.set_ylabel("nodes")
    ax.set_title(f"plastic memory after {len(names)} names")
    fig.tight_layout()
    out = Path(ctx.out_dir) / "plastic_levels.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    ctx.figures.append(out)
