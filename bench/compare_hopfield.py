"""Modern Hopfield retrieval: mnemonix against its baselines, side by side in one run.

Per shape (N stored patterns, d dimensions, B queries, values = keys) it times

- ``ours``: :func:`mnemonix.ops.hopfield_retrieve` with the automatic backend (named in the row),
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with K = V (flash kernel on CPU),
- ``torch``: plain ``softmax(beta Q K^T) K`` (materialises [B, N]),
- ``hflayers``: the unfused path of the ``hflayers`` package (``bmm`` -> softmax -> ``bmm`` on
  [heads, B, N], re-implemented here from its description),
- ``research``: the research code's one-query-at-a-time float64 numpy retrieval
  ``X^T softmax(beta X q)`` (re-implemented from its description), timed on a few queries and
  reported per query,

and the floor of the shape, measured in the same run: one read of the keys (``keys.sum()``; on
CUDA a device-to-device copy gives the bandwidth) and the matmul rate of ``torch.mm`` for the
4 B N d flops. Baselines that would need more than ``--max-gb`` of memory are skipped with the
reason in the row. Extra memory of ``ours`` is the peak RSS growth (CPU, sampled) or the peak
CUDA allocation above the inputs.

    python bench/compare_hopfield.py --quick       # seconds, small shapes
    python bench/compare_hopfield.py               # the issue's shapes (quiet machine!)
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import environment, print_table, timeit, write_results  # noqa: E402
from mnemonix import ops  # noqa: E402
from mnemonix.ops.hopfield import choose_backend  # noqa: E402

FULL_SHAPES = [(n, d, b) for n in (10_000, 100_000, 1_000_000) for d in (64, 128) for b in (1, 16, 64, 1024)]
FULL_SHAPES += [(10_000, 12_288, b) for b in (1, 16, 64, 100, 1024)]  # B = 100: the research-code target
QUICK_SHAPES = [(10_000, 64, 1), (10_000, 64, 16), (10_000, 128, 64), (100_000, 128, 1), (2_000, 12_288, 16)]
RESEARCH_QUERIES = 3


# -- baselines -------------------------------------------------------------------------------------

def plain_torch(q, k, beta):
    return torch.softmax(beta * (q @ k.T), dim=-1) @ k


def sdpa(q, k, beta):
    return F.scaled_dot_product_attention(q[None, None], k[None, None], k[None, None], scale=beta)[0, 0]


def hflayers_unfused(q, k, beta):
    """hflayers' core: [heads, B, d] x [heads, d, N] association, softmax, then x [heads, N, d]."""
    qh, kh = q[None], k[None]
    association = torch.bmm(qh * beta, kh.transpose(1, 2))
    weights = torch.softmax(association, dim=-1)
    return torch.bmm(weights, kh)[0]


def research_numpy(x64: np.ndarray, q64: np.ndarray, beta: float) -> np.ndarray:
    """One query at a time, float64: ``X^T softmax(beta X q)``."""
    logits = beta * (x64 @ q64)
    p = np.exp(logits - logits.max())
    return x64.T @ (p / p.sum())


# -- floors ----------------------------------------------------------------------------------------

def measure_floors(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Bandwidth of one read (CPU: a sum; CUDA: a device copy) and the torch.mm flop rate."""
    n_bytes = 256 * 2**20 if device.type == "cuda" else 128 * 2**20
    buf = torch.ones(n_bytes // torch.finfo(dtype).bits * 8, device=device, dtype=dtype)
    if device.type == "cuda":
        dst = torch.empty_like(buf)
        t = timeit(lambda: dst.copy_(buf), repeat=20)
        bandwidth = 2 * n_bytes / t  # read + write
    else:
        t = timeit(lambda: buf.sum(), repeat=7)
        bandwidth = n_bytes / t
    m = 2048 if device.type == "cuda" else 1024
    a = torch.randn(m, 1024, device=device, dtype=dtype)
    b = torch.randn(1024, 4 * m, device=device, dtype=dtype)
    t = timeit(lambda: a @ b, repeat=7)
    return {"bandwidth_gbs": bandwidth / 1e9, "mm_gflops": 2 * m * 1024 * 4 * m / t / 1e9}


# -- memory ----------------------------------------------------------------------------------------

def peak_extra_bytes(fn, device: torch.device) -> int:
    """Peak memory above the baseline while ``fn`` runs (CUDA allocator, or sampled RSS on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return int(peak[0] - base)


# -- one shape ---------------------------------------------------------------------------------------

def settle() -> None:
    """Let BLAS/OpenMP worker threads of the previous measurement stop spinning (OpenBLAS,
    used by the numpy research baseline, busy-waits after each call and would steal one of
    the two cores from whatever is timed next)."""
    time.sleep(0.3)


def run_shape(n, d, b, *, device, dtype, floors, max_bytes, repeat, research):
    gen = torch.Generator(device="cpu").manual_seed(n + d + b)
    keys = (torch.rand(n, d, generator=gen) * 2 - 1).to(device=device, dtype=dtype)
    queries = (torch.rand(b, d, generator=gen) * 2 - 1).to(device=device, dtype=dtype)
    beta = 1.0 / math.sqrt(d)
    elem = torch.finfo(dtype).bits // 8
    key_bytes = n * d * elem
    row: dict = {"N": n, "d": d, "B": b, "dtype": str(dtype).removeprefix("torch.")}

    row["backend"] = choose_backend(queries, keys)
    ours = lambda: ops.hopfield_retrieve(queries, keys, beta=beta)  # noqa: E731
    settle()
    row["ours_ms"] = timeit(ours, repeat=repeat) * 1e3
    row["ours_extra_MB"] = peak_extra_bytes(ours, device) / 2**20
    settle()
    row["sdpa_ms"] = timeit(lambda: sdpa(queries, keys, beta), repeat=repeat) * 1e3
    notes = []
    scores_bytes = 3 * b * n * 4  # logits, probabilities and a temporary, float32
    if scores_bytes <= max_bytes:
        row["torch_ms"] = timeit(lambda: plain_torch(queries, keys, beta), repeat=repeat) * 1e3
        row["hflayers_ms"] = timeit(lambda: hflayers_unfused(queries, keys, beta), repeat=repeat) * 1e3
    else:
        notes.append(f"torch/hflayers skipped: [B, N] temporaries {scores_bytes / 2**30:.1f} GB")
    if research and device.type == "cpu" and 2 * n * d * 8 <= max_bytes:
        x64 = keys.double().numpy()
        q64 = queries[:RESEARCH_QUERIES].double().numpy()
        t = timeit(lambda: [research_numpy(x64, qi, beta) for qi in q64], repeat=1, warmup=0)
        row["research_ms_per_query"] = t / len(q64) * 1e3
        row["ours_ms_per_query"] = row["ours_ms"] / b
        row["x_vs_research"] = row["research_ms_per_query"] / row["ours_ms_per_query"]
        del x64
    elif research and device.type == "cpu":
        notes.append("research skipped: float64 copy of X too large")

    mem_floor = key_bytes / (floors["bandwidth_gbs"] * 1e9)
    flop_floor = 4 * b * n * d / (floors["mm_gflops"] * 1e9)
    row["floor_ms"] = max(mem_floor, flop_floor) * 1e3
    row["floor_kind"] = "memory" if mem_floor >= flop_floor else "flops"
    row["x_floor"] = row["ours_ms"] / row["floor_ms"]
    row["x_vs_sdpa"] = row["sdpa_ms"] / row["ours_ms"]
    if "torch_ms" in row:
        row["x_vs_torch"] = row["torch_ms"] / row["ours_ms"]
    if device.type == "cuda":
        row["pct_copy_bw"] = 100 * mem_floor / (row["ours_ms"] / 1e3)
    row["note"] = "; ".join(notes)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes only (seconds)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 / float16 / bfloat16 (default: bf16 on CUDA)")
    parser.add_argument("--max-gb", type=float, default=4.0, help="skip baselines needing more memory")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-research", action="store_true", help="skip the float64 numpy baseline")
    parser.add_argument("--name", default="compare_hopfield" , help="results file stem")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    floors = measure_floors(device, dtype)
    print(f"device {device} ({environment()['cuda_device'] or environment()['cpu']}), dtype {dtype}: "
          f"read {floors['bandwidth_gbs']:.1f} GB/s, torch.mm {floors['mm_gflops']:.0f} GFLOP/s")
    rows = []
    for n, d, b in shapes:
        row = run_shape(n, d, b, device=device, dtype=dtype, floors=floors, max_bytes=args.max_gb * 2**30,
                        repeat=args.repeat, research=not args.no_research)
        rows.append(row)
        print(f"  N={n} d={d} B={b}: ours {row['ours_ms']:.3f} ms ({row['backend']}), sdpa {row['sdpa_ms']:.3f} ms",
              flush=True)
    columns = ["N", "d", "B", "backend", "ours_ms", "sdpa_ms", "torch_ms", "hflayers_ms", "x_vs_sdpa",
               "x_vs_torch", "floor_ms", "floor_kind", "x_floor", "ours_extra_MB"]
    if device.type == "cuda":
        columns.append("pct_copy_bw")
    else:
        columns += ["research_ms_per_query", "ours_ms_per_query", "x_vs_research"]
    columns.append("note")
    print_table(rows, columns)
    path = write_results(args.name + ("-quick" if args.quick else ""), rows, extra={"floors": floors})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
