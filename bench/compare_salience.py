"""Top-k salience recall side by side: the notebook's RecallEngine, plain torch, faiss flat, mnemonix.

Usage::

    python bench/compare_salience.py --quick          # small sizes, a few seconds
    python bench/compare_salience.py                  # the issue's sizes (CPU: N = 1e5, 1e6, 1e7)
    python bench/compare_salience.py --device cuda    # GPU sizes (bf16, N = 1e6, 1e7, B in {1, 64}, k in {5, 64})

Methods (same inputs, one run):

- ``notebook``: seeds/002's RecallEngine as written: float32 salience
  ``r0 * exp(-alpha (now - tau))`` and ``F.cosine_similarity`` on broadcast
  [B, 1, d] x [1, N, d] (materialises B x N x d floats), topk, gather,
  weights ``s / (sum s + 1e-8)``. Skipped when it would need more than
  ``--notebook-max-gb`` of memory.
- ``torch``: normalise keys and queries, one matmul, multiply by the relative
  salience, ``topk``, gather (materialises [B, N]).
- ``faiss_flat``: faiss-cpu ``IndexFlatIP`` on normalised keys: pure cosine
  top-k, no salience (the keys are normalised and added outside the timing).
- ``mnemonix``: :func:`mnemonix.ops.salience_topk` (norms on the fly) and
  ``mnemonix_cached``: the same with cached key norms (what EpisodicMemory does).

Extra memory is the peak RSS growth during the call (psutil, sampled every
millisecond in a thread) on CPU, and ``torch.cuda.max_memory_allocated``
growth on GPU. The add benchmark compares the notebook's one-at-a-time
``torch.cat`` insertion with :meth:`EpisodicMemory.add` of a batch, and with
one pass over the salience array (the floor the issue names).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import environment, print_table, timeit, write_results  # noqa: E402
from mnemonix import ops  # noqa: E402
from mnemonix.epinet import EpisodicMemory, SalienceClock  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the bench extra
    psutil = None


def _malloc_thresholds(measuring_memory: bool) -> None:
    """glibc raises its mmap threshold after a big free (up to 32 MB), after which temporaries reuse
    already-resident heap pages and RSS growth misses them. While measuring memory, use a small fixed
    threshold (large blocks are mmap'd and returned); while timing, the 32 MB steady state."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        size = 128 * 1024 if measuring_memory else 32 * 1024 * 1024
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, size)  # M_TRIM_THRESHOLD
        if measuring_memory:
            libc.malloc_trim(0)  # give free heap pages back, so that reusing them shows up as growth
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak resident-set growth of this process while the block runs (sampled every ~1 ms)."""

    def __enter__(self):
        self.proc = psutil.Process() if psutil else None
        self.base = self.proc.memory_info().rss if self.proc else 0
        self.peak = self.base
        self._stop = threading.Event()
        if self.proc:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        if self.proc:
            self._thread.join()
            self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def grown_mb(self) -> float | None:
        return (self.peak - self.base) / 2**20 if self.proc else None


def extra_memory_mb(fn, device: str) -> float | None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    _malloc_thresholds(measuring_memory=True)
    try:
        with PeakRSS() as m:
            fn()
    finally:
        _malloc_thresholds(measuring_memory=False)
    return m.grown_mb


# -- the methods ----------------------------------------------------------------


def notebook_recall(query, keys, payloads, r0, tau, alpha, now, k):
    """seeds/002 RecallEngine.recall, as written (float32 salience, broadcast cosine)."""
    salience = r0 * torch.exp(-alpha * (torch.tensor(now, dtype=torch.float32, device=r0.device) - tau))
    cos_sim = F.cosine_similarity(query.unsqueeze(1), keys.unsqueeze(0), dim=-1)
    scores = cos_sim * salience.unsqueeze(0)
    _, top = torch.topk(scores, k, dim=1)
    s_top = salience[top]
    weights = s_top / (s_top.sum(dim=1, keepdim=True) + 1e-8)
    return (weights.unsqueeze(-1) * payloads[top]).sum(dim=1), top


def torch_recall(query, keys, payloads, log_s, k):
    """Straightforward torch: normalise, matmul, salience, topk, gather."""
    qn = F.normalize(query.float(), dim=1)
    cn = F.normalize(keys.float(), dim=1)
    scale = torch.exp(log_s - log_s.max()).float()
    scores = (qn @ cn.T) * scale
    _, top = torch.topk(scores, k, dim=1)
    w = torch.softmax(log_s[top], dim=1).float()
    return (w.unsqueeze(-1) * payloads[top].float()).sum(1), top


def make_inputs(N, d, B, dz, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    keys = torch.empty(N, d, dtype=dtype, device=device)
    step = 1 << 18
    for s in range(0, N, step):  # fill in pieces: no fp32 copy of a 16-bit store
        e = min(s + step, N)
        keys[s:e] = torch.randn(e - s, d, generator=g).to(device, dtype)
    payloads = keys if dz == d else torch.randn(N, dz, generator=g).to(device, dtype)
    query = torch.randn(B, d, generator=g).to(device, dtype)
    r0 = (torch.rand(N, generator=g) + 0.5).to(device)
    tau = (torch.rand(N, generator=g, dtype=torch.float64) * 10.0).to(device)
    return query, keys, payloads, r0, tau


def bench_query(N, d, B, k, *, dtype, device, repeat, notebook_max_gb, with_faiss) -> list[dict]:
    alpha, now = 0.1, 10.0
    query, keys, payloads, r0, tau = make_inputs(N, d, B, d, dtype, device)
    log_s = torch.log(r0.double()) - alpha * (now - tau)
    norms = torch.linalg.vector_norm(keys.float(), dim=1) if N * d <= 2**28 else None
    if norms is None:
        norms = torch.cat([torch.linalg.vector_norm(keys[s:s + 2**18].float(), dim=1) for s in range(0, N, 2**18)])
    rows = []
    common = {"N": N, "d": d, "B": B, "k": k, "dtype": str(dtype).removeprefix("torch."), "device": device}
    ours_idx = ops.salience_topk(query, keys, payloads, k=k, log_salience=log_s)[1]

    def record(name, fn, *, agree=None):
        seconds = timeit(fn, repeat=repeat, warmup=1)
        mem = extra_memory_mb(fn, device)
        rows.append({**common, "method": name, "ms": seconds * 1e3, "extra_MB": mem, "agree_top1": agree})
        return seconds

    methods = []
    nb_bytes = B * N * d * 4 * 2  # the broadcast cosine's temporaries
    if nb_bytes <= notebook_max_gb * 2**30:
        # float32 inputs as in the notebook (converted outside the timing; tau relative to 0 so that
        # float32 holds it: generous to the notebook, which uses unix seconds)
        r0_32, tau_32, q32, k32, z32 = r0.float(), tau.float(), query.float(), keys.float(), payloads.float()
        nb_idx = notebook_recall(q32, k32, z32, r0_32, tau_32, alpha, now, k)[1]
        methods.append(("notebook", lambda: notebook_recall(q32, k32, z32, r0_32, tau_32, alpha, now, k),
                        float((nb_idx[:, 0] == ours_idx[:, 0]).float().mean())))
    if B * N * 4 <= 8 * 2**30:
        t_idx = torch_recall(query, keys, payloads, log_s, k)[1]
        methods.append(("torch", lambda: torch_recall(query, keys, payloads, log_s, k),
                        float((t_idx[:, 0] == ours_idx[:, 0]).float().mean())))
    if with_faiss and device == "cpu":
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            index = faiss.IndexFlatIP(d)
            index.add(F.normalize(keys.float(), dim=1).numpy())
            qn = F.normalize(query.float(), dim=1).numpy()
            methods.append(("faiss_flat (cosine only)", lambda: index.search(qn, k), None))
    methods.append(("mnemonix", lambda: ops.salience_topk(query, keys, payloads, k=k, log_salience=log_s), 1.0))
    methods.append(("mnemonix_cached_norms", lambda: ops.salience_topk(
        query, keys, payloads, k=k, log_salience=log_s, key_norms=norms), 1.0))
    if device == "cuda":
        methods.append(("mnemonix_torch_backend", lambda: ops.salience_topk(
            query, keys, payloads, k=k, log_salience=log_s, backend="torch"), 1.0))
    for name, fn, agree in methods:
        record(name, fn, agree=agree)
    by = {r["method"]: r["ms"] for r in rows}
    for r in rows:
        r["x_vs_notebook"] = by["notebook"] / r["ms"] if "notebook" in by else None
        r["x_vs_torch"] = by["torch"] / r["ms"] if "torch" in by else None
    if device == "cuda":
        key_bytes = keys.numel() * keys.element_size()
        copy_s = timeit(lambda: keys.clone(), repeat=repeat)
        copy_bw = 2 * key_bytes / copy_s
        for r in rows:
            r["GB/s_keys"] = key_bytes / (r["ms"] / 1e3) / 1e9
            r["pct_copy_bw"] = 100 * (key_bytes / (r["ms"] / 1e3)) / copy_bw
    else:
        flops = 2.0 * B * N * d
        for r in rows:
            r["GFLOP/s"] = flops / (r["ms"] / 1e3) / 1e9
    return rows


def notebook_add(buffers, z, c, r0, y, tau_now, capacity, alpha):
    """seeds/002 EpisodicMemory.add for one item (torch.cat / argmin over the whole buffer)."""
    zb, cb, rb, tb, yb = buffers
    if zb.shape[0] < capacity:
        return (torch.cat([zb, z[None]]), torch.cat([cb, c[None]]), torch.cat([rb, r0[None]]),
                torch.cat([tb, tau_now[None]]), torch.cat([yb, y[None]]))
    s = rb * torch.exp(-alpha * (tau_now - tb))
    if r0 <= s.min():
        return buffers
    i = int(torch.argmin(s))
    zb[i], cb[i], rb[i], tb[i], yb[i] = z, c, r0, tau_now, y
    return buffers


def bench_add(stored, batch, d, *, repeat) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    alpha = 1e-3
    z = torch.randn(stored, d, generator=g)
    r0 = torch.rand(stored, generator=g) + 0.1
    y = torch.randint(10, (stored,), generator=g)
    new_z = torch.randn(batch, d, generator=g)
    new_r0 = torch.rand(batch, generator=g) * 2 + 0.1
    new_y = torch.randint(10, (batch,), generator=g)
    rows = []
    # Notebook: below capacity every add concatenates every buffer (the 38 ms per item at 100k).
    n_items = min(batch, 20)
    base = (z, z.clone(), r0, torch.zeros(stored), y)

    def nb():
        buffers = base
        for i in range(n_items):
            buffers = notebook_add(buffers, new_z[i], new_z[i], new_r0[i], new_y[i], torch.tensor(1.0),
                                   stored + batch, alpha)

    per_item = timeit(nb, repeat=max(1, repeat // 2)) / n_items
    rows.append({"stored": stored, "batch": batch, "method": "notebook add (cat, per item) x batch",
                 "ms": per_item * batch * 1e3})
    mem = EpisodicMemory(stored, d, clock=SalienceClock(alpha, source="timestamps"))
    mem.add(z, z, r0, y, now=0.0)
    snapshot = {n: getattr(mem, n).clone() for n in ("_c", "_z", "_r0", "_tau", "_y", "_seq", "_c_norm")}
    count, nxt = mem._count, mem._next_seq

    def ours():
        for n, v in snapshot.items():
            getattr(mem, n).copy_(v)
        mem._count, mem._next_seq = count, nxt
        mem.add(new_z, new_z, new_r0, new_y, now=1.0)

    def restore_only():
        for n, v in snapshot.items():
            getattr(mem, n).copy_(v)

    t_restore = timeit(restore_only, repeat=repeat)
    t_ours = max(timeit(ours, repeat=repeat) - t_restore, 0.0)
    rows.append({"stored": stored, "batch": batch, "method": "EpisodicMemory.add (batched, full buffer)",
                 "ms": t_ours * 1e3})
    t_pass = timeit(lambda: mem.log_salience(1.0), repeat=repeat)
    rows.append({"stored": stored, "batch": batch, "method": "one pass over the salience array", "ms": t_pass * 1e3})
    for r in rows:
        r["x_vs_notebook"] = rows[0]["ms"] / r["ms"] if r["ms"] > 0 else None
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--sizes", default=None, help="comma-separated N values (default per device)")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--notebook-max-gb", type=float, default=12.0, help="skip the notebook above this footprint")
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    _malloc_thresholds(measuring_memory=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    repeat = args.repeat or (3 if args.quick else 5)
    env = environment()
    print(f"# salience_topk on {device} ({env['cuda_device'] or env['cpu']}, {env['torch_threads']} threads), "
          f"commit {env['commit']}")
    rows = []
    if device == "cpu":
        sizes = [int(float(s)) for s in args.sizes.split(",")] if args.sizes else (
            [10_000, 50_000] if args.quick else [100_000, 1_000_000, 10_000_000])
        for N in sizes:
            rows += bench_query(N, 128, 64, 5, dtype=torch.float32, device="cpu", repeat=repeat if N < 5e6 else 2,
                                notebook_max_gb=args.notebook_max_gb if not args.quick else 1.0,
                                with_faiss=not args.no_faiss and N <= 2_000_000)
    else:
        sizes = [int(float(s)) for s in args.sizes.split(",")] if args.sizes else (
            [1_000_000] if args.quick else [1_000_000, 10_000_000])
        for N in sizes:
            for B in (1, 64):
                for k in (5, 64):
                    rows += bench_query(N, 128, B, k, dtype=torch.bfloat16, device="cuda", repeat=repeat,
                                        notebook_max_gb=0.0 if N > 1e6 else 4.0, with_faiss=False)
    cols = ["N", "B", "k", "dtype", "method", "ms", "extra_MB", "x_vs_notebook", "x_vs_torch", "agree_top1"]
    cols += ["GB/s_keys", "pct_copy_bw"] if device == "cuda" else ["GFLOP/s"]
    print_table(rows, cols)
    add_rows = []
    if device == "cpu":
        stored, batch = (20_000, 1_000) if args.quick else (100_000, 1_000)
        add_rows = bench_add(stored, batch, 128, repeat=repeat)
        print()
        print_table(add_rows, ["stored", "batch", "method", "ms", "x_vs_notebook"])
    path = write_results("salience" + ("-quick" if args.quick else ""), rows, {"add": add_rows})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
