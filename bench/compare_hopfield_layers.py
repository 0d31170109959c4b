"""Hopfield *layers* that train: mnemonix.nn.Hopfield against the same layer on other association paths.

One layer (``Hopfield(input_size=128, num_heads=h)``: layer norms, input projections, heads,
output projection) with B = 4 samples, L = 64 state patterns and N stored patterns per sample
(the stored patterns are also the pattern projection, as in pooling / MIL), three ways:

- ``mnemonix``: :class:`mnemonix.nn.Hopfield` itself (the fused op: flash CPU kernel with its fused
  backward on CPU, Triton forward + backward on CUDA),
- ``hflayers``: the same projections, then hflayers' unfused association (``bmm`` -> softmax ->
  ``bmm`` on [B * heads, L, N]; re-implemented here from its description),
- ``sdpa``: the same projections, then ``torch.nn.functional.scaled_dot_product_attention``.

Times are medians of round-robin repetitions (the paths alternate, so machine noise hits them
alike); ``fb`` = forward + backward (parameters require grad), ``fwd`` = forward under
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
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import environment, print_table, write_results  # noqa: E402
from bench.compare_hopfield import peak_extra_bytes  # noqa: E402
from mnemonix import ops  # noqa: E402
from mnemonix.nn import Hopfield  # noqa: E402

B, L, D = 4, 64, 128
FULL = [(h, n) for h in (1, 8) for n in (1024, 16_384, 131_072)]
QUICK = [(h, n) for h in (1, 8) for n in (1024, 4096)]
PATHS = ("mnemonix", "hflayers", "sdpa")


def associate(kind: str, q, k, v, beta: float):
    """[B, heads, L, pd] from per-head q [B, h, L, hd], k [B, h, N, hd], v [B, h, N, pd]."""
    if kind == "mnemonix":
        return ops.hopfield_retrieve(q, k, v, beta=beta)
    if kind == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=beta)
    if kind == "hflayers":  # hflayers' core: contiguous [B * heads, seq, width] copies, bmm, softmax, bmm
        b, h, length, hd = q.shape
        q3 = q.contiguous().view(b * h, length, hd) * beta
        k3, v3 = k.contiguous().view(b * h, -1, hd), v.contiguous().view(b * h, -1, v.shape[-1])
        xi = torch.softmax(torch.bmm(q3, k3.transpose(1, 2)), dim=-1)
        return torch.bmm(xi, v3).view(b, h, length, -1)
    raise ValueError(kind)


def layer_forward(kind: str, layer: Hopfield, stored, state):
    data = (stored, state, stored)
    if kind == "mnemonix":
        return layer(data)
    stored_n, state_n, proj_n, _ = layer._prepare(data, None, None)
    core = layer.association_core
    q, k, v = core.project(state_n, stored_n, proj_n)
    out = associate(kind, q, k, v, layer.scaling).transpose(1, 2).flatten(2)
    return core.out_proj(out)


def setup(heads: int, n: int, device, dtype):
    torch.manual_seed(heads * 1_000_003 + n)
    layer = Hopfield(input_size=D, num_heads=heads).to(device=device, dtype=dtype)
    stored = torch.randn(B, n, D, device=device, dtype=dtype)
    state = torch.randn(B, L, D, device=device, dtype=dtype)
    return layer, stored, state


def forward_backward(kind, layer, stored, state):
    layer.zero_grad(set_to_none=True)
    layer_forward(kind, layer, stored, state).float().sum().backward()


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


def run_shape(heads: int, n: int, *, device, dtype, repeat: int, max_gb: float) -> dict:
    layer, stored, state = setup(heads, n, device, dtype)
    assoc_bytes = 4 * B * heads * L * n * 4  # logits, softmax and their gradients, float32
    skip = {"hflayers": assoc_bytes > max_gb * 2**30}

    def fwd(kind):
        with torch.no_grad():
            layer_forward(kind, layer, stored, state)
        sync(device)

    def fb(kind):
        forward_backward(kind, layer, stored, state)
        sync(device)

    row: dict = {"heads": heads, "N": n, "B": B, "L": L, "d": D, "dtype": str(dtype).removeprefix("torch.")}
    for mode, fn in (("fwd", fwd), ("fb", fb)):
        kinds = [k for k in PATHS if not skip.get(k)]
        for kind in kinds:
            fn(kind)  # warm up
        times = {k: [] for k in kinds}
        for _ in range(repeat):
            for kind in kinds:
                t0 = time.perf_counter()
                fn(kind)
                times[kind].append(time.perf_counter() - t0)
        for kind in kinds:
            row[f"{kind} {mode} ms"] = 1e3 * sorted(times[kind])[len(times[kind]) // 2]
    for kind in PATHS:
        if skip.get(kind):
            row[f"{kind} note"] = f"skipped: the association needs ~{assoc_bytes / 2**30:.1f} GB"
            continue
        for level in ("layer", "assoc"):
            row[f"{kind} {level} MB"] = peak_bytes(kind, heads, n, level, device) / 2**20
    if "hflayers fb ms" in row:
        row["fb speedup vs hflayers"] = row["hflayers fb ms"] / row["mnemonix fb ms"]
        row["assoc MB ours/hflayers"] = row["mnemonix assoc MB"] / max(row["hflayers assoc MB"], 1e-9)
    row["fb ours/sdpa"] = row["mnemonix fb ms"] / row["sdpa fb ms"]
    row["fwd ours/sdpa"] = row["mnemonix fwd ms"] / row["sdpa fwd ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--max-gb", type=float, default=8.0, help="skip the unfused path above this much memory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--measure-memory", nargs=4, metavar=("KIND", "HEADS", "N", "LEVEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        kind, heads, n, level = args.measure_memory
        measure_cpu_memory(kind, int(heads), int(n), level)
        return
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    repeat = args.repeat or (3 if args.quick else 5)
    rows = []
    for heads, n in QUICK if args.quick else FULL:
        rows.append(run_shape(heads, n, device=device, dtype=dtype, repeat=repeat, max_gb=args.max_gb))
        print(f"heads={heads} N={n}: done", flush=True)
    columns = ["heads", "N", "mnemonix fb ms", "hflayers fb ms", "sdpa fb ms", "fb speedup vs hflayers",
               "fb ours/sdpa", "mnemonix fwd ms", "hflayers fwd ms", "sdpa fwd ms", "fwd ours/sdpa",
               "mnemonix layer MB", "hflayers layer MB", "sdpa layer MB", "mnemonix assoc MB", "hflayers assoc MB",
               "sdpa assoc MB", "assoc MB ours/hflayers"]
    print_table(rows, columns)
    env = environment()
    name = "compare_hopfield_layers" + ("-quick" if args.quick else "")
    path = write_results(name, rows, {"columns": columns, "threads": env["torch_threads"]})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
