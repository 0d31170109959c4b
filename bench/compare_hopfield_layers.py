"""Hopfield *layers* that train: mnemonix.nn.Hopfield against the same layer on other association paths.

A front-end of the ``layers`` suite of ``mnemonix bench`` (:mod:`mnemonix.benchmark.suites.layers`):
the times are the harness's (ops ``nn.Hopfield.fwd`` and ``nn.Hopfield.fwd_bwd``, correctness
checked in the same run); the memory figures below need a fresh process each and are measured
here, then added to the same history rows as extra fields.

One layer (``Hopfield(input_size=128, num_heads=h)``: layer norms, input projections, heads,
output projection) with B = 4 samples, L = 64 state patterns and N stored patterns per sample
(the stored patterns are also the pattern projection, as in pooling / MIL), three ways:

- ``mnemonix``: :class:`mnemonix.nn.Hopfield` itself (the fused op: flash CPU kernel with its fused
  backward on CPU, Triton forward + backward on CUDA),
- ``hflayers``: the same projections, then hflayers' unfused association (``bmm`` -> softmax ->
  ``bmm`` on [B * heads, L, N]; re-implemented here from its description),
- ``sdpa``: the same projections, then ``torch.nn.functional.scaled_dot_product_attention``.

Times are medians of the harness's interleaved rounds (the paths alternate, so machine noise
hits them alike); ``fb`` = forward + backward (parameters require grad), ``fwd`` = forward under
``no_grad``. Memory (forward + backward, fresh process per figure on CPU: the layer and inputs
built, a warm-up on a tiny shape, then the kernel's high-water mark reset before the call; the
CUDA allocator's peak on GPU):

- ``layer MB``: peak above the memory before the call, whole layer (norms, projections, their
  activations and gradients included: the same for every path but the association);
- ``assoc MB``: the association alone on per-head views of leaf q, k, v in the layer's layout,
  peak minus the tensors any implementation must produce (``out``, dq, dk, dv): what the
  association itself costs on top.

    python bench/compare_hopfield_layers.py --quick    # seconds
    python bench/compare_hopfield_layers.py            # the issue's shapes (quiet machine!)

The times alone: ``mnemonix bench run --suite layers [--size quick]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (  # noqa: E402
    add_harness_args,
    append_rows,
    by_backend,
    ms,
    peak_extra_bytes,
    print_table,
    ratio,
    report_wrong,
    run_cases,
    write_results,
)
from mnemonix.benchmark.suites import layers as suite  # noqa: E402
from mnemonix.benchmark.suites.layers import B, D, L, associate, forward_backward, setup  # noqa: E402

PATHS = suite.PATHS
NAMES = {"auto": "mnemonix", "peer:hflayers": "hflayers", "peer:sdpa": "sdpa"}


def association_leaves(heads: int, n: int, device, dtype):
    """Leaf q, k, v [B, seq, D] (what the projections hand the association) and their per-head views."""
    torch.manual_seed(heads * 7 + n)
    leaves = [torch.randn(B, length, D, device=device, dtype=dtype, requires_grad=True) for length in (L, n, n)]
    return leaves, [t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in leaves]


def association_backward(kind: str, heads: int, views) -> int:
    """Forward + backward of the association alone; returns the bytes of the tensors it must produce."""
    out = associate(kind, *views, 1.0 / (D // heads) ** 0.5)
    out.float().sum().backward()
    return out.numel() * out.element_size() + sum(t.numel() * t.element_size() for t in views)


def measure_cpu_memory(kind: str, heads: int, n: int, level: str) -> None:
    """(Child process) print the peak growth of one forward + backward, in bytes, above the
    tensors it must produce when ``level`` is ``assoc``."""
    cpu = torch.device("cpu")
    if level == "layer":
        layer, stored, state = setup(heads, n, cpu, torch.float32)
        forward_backward(kind, *setup(heads, 16, cpu, torch.float32))  # load lazily initialised code
        before = _reset_peak_rss()
        forward_backward(kind, layer, stored, state)
        print(_peak_rss() - before)
        return
    _, views = association_leaves(heads, n, cpu, torch.float32)
    association_backward(kind, heads, association_leaves(heads, 16, cpu, torch.float32)[1])
    before = _reset_peak_rss()
    produced = association_backward(kind, heads, views)
    print(_peak_rss() - before - produced)


def _reset_peak_rss() -> int:
    """Reset the kernel's high-water mark of this process to its current RSS (Linux >= 4.0:
    ``5 > /proc/self/clear_refs``) and return that RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS") * 1024
    except OSError:  # no /proc: fall back to the lifetime peak (exact only when the call sets it)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    try:
        return _status_kb("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def peak_bytes(kind: str, heads: int, n: int, level: str, device) -> int:
    if device.type == "cuda":
        if level == "layer":
            layer, stored, state = setup(heads, n, device, torch.bfloat16)
            return peak_extra_bytes(lambda: (forward_backward(kind, layer, stored, state), sync(device)), device)
        _, views = association_leaves(heads, n, device, torch.bfloat16)
        produced = []
        peak = peak_extra_bytes(lambda: (produced.append(association_backward(kind, heads, views)), sync(device)),
                                device)
        return peak - produced[0]
    proc = subprocess.run([sys.executable, __file__, "--measure-memory", kind, str(heads), str(n), level],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout.strip().splitlines()[-1])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def table_row(rows: list[dict], heads: int, n: int, memory: dict[str, dict[str, float]]) -> dict:
    """The table's row of one (heads, N): times of both ops, memory, the ratios."""
    row: dict = {"heads": heads, "N": n, "B": B, "L": L, "d": D}
    for mode, op in (("fb", "nn.Hopfield.fwd_bwd"), ("fwd", "nn.Hopfield.fwd")):
        group = by_backend(rows, op, heads=heads, N=n)
        for kind, r in group.items():
            if r.get("p50") is not None:
                row[f"{NAMES[kind]} {mode} ms"] = ms(r)
            elif r.get("skipped"):
                row[f"{NAMES[kind]} note"] = r["skipped"]
        row["dtype"] = next(iter(group.values()))["dtype"] if group else None
        row[f"{mode} ok"] = all(r.get("ok") is not False for r in group.values())
    for kind, levels in memory.items():
        for level, mb in levels.items():
            row[f"{NAMES[kind]} {level} MB"] = mb
    row["fb speedup vs hflayers"] = ratio(row.get("hflayers fb ms"), row.get("mnemonix fb ms"))
    row["assoc MB ours/hflayers"] = ratio(row.get("mnemonix assoc MB"), max(row.get("hflayers assoc MB") or 0, 1e-9)) \
        if "hflayers assoc MB" in row else None
    row["fb ours/sdpa"] = ratio(row.get("mnemonix fb ms"), row.get("sdpa fb ms"))
    row["fwd ours/sdpa"] = ratio(row.get("mnemonix fwd ms"), row.get("sdpa fwd ms"))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--size", default=None, help=f"a size of the layers suite: {', '.join(suite.SIZES)}")
    parser.add_argument("--max-gb", type=float, default=suite.MAX_GB,
                        help="skip the unfused path above this much memory")
    parser.add_argument("--no-memory", action="store_true", help="times only (no fresh-process memory figures)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--measure-memory", nargs=4, metavar=("KIND", "HEADS", "N", "LEVEL"), help=argparse.SUPPRESS)
    add_harness_args(parser)
    args = parser.parse_args()
    if args.measure_memory:
        kind, heads, n, level = args.measure_memory
        measure_cpu_memory(kind, int(heads), int(n), level)
        return 0
    device = torch.device(args.device)
    size = args.size or ("quick" if args.quick else "default")
    history = args.history
    args.history = "none"  # appended below, with the memory figures
    rows = run_cases("layers", suite.area_cases(size, device, max_gb=args.max_gb), device, args, size=size)
    args.history = history
    table = []
    for heads, n in suite.SIZES[size]:
        memory: dict[str, dict[str, float]] = {}
        skip = suite.association_bytes(heads, n) > args.max_gb * 2**30
        for kind in PATHS:
            if args.no_memory or (kind == "peer:hflayers" and skip):
                continue
            memory[kind] = {level: peak_bytes(kind, heads, n, level, device) / 2**20 for level in ("layer", "assoc")}
        for r in rows:
            if r["op"] == "nn.Hopfield.fwd_bwd" and r["shape"]["heads"] == heads and r["shape"]["N"] == n:
                r.update({f"{level}_MB": mb for level, mb in memory.get(r["backend"], {}).items()})
        table.append(table_row(rows, heads, n, memory))
        print(f"heads={heads} N={n}: done", flush=True)
    append_rows(rows, args)
    columns = ["heads", "N", "mnemonix fb ms", "hflayers fb ms", "sdpa fb ms", "fb speedup vs hflayers",
               "fb ours/sdpa", "mnemonix fwd ms", "hflayers fwd ms", "sdpa fwd ms", "fwd ours/sdpa",
               "mnemonix layer MB", "hflayers layer MB", "sdpa layer MB", "mnemonix assoc MB", "hflayers assoc MB",
               "sdpa assoc MB", "assoc MB ours/hflayers", "fb ok", "fwd ok"]
    print_table(table, columns)
    name = "compare_hopfield_layers" + ("" if size == "default" else f"-{size}")
    path = write_results(name, rows, {"table": table, "columns": columns, "threads": torch.get_num_threads()},
                         device=device)
    print(f"\nwritten to {path}")
    return report_wrong(rows)


if __name__ == "__main__":
    raise SystemExit(main())
