"""A/B two builds of the C++ core on the raw Hopfield kernel (``_core.retrieval.retrieve``, or
with ``--kernel amx`` the AMX bfloat16 kernel ``_core.retrieval_amx.retrieve_at``).

Each build runs in its own process (two pybind11 modules of the same name cannot share one),
the two alternating round by round; a round times every shape (median of many calls) and the
ratio new / old is taken within the round, so drift between rounds cancels. Queries and keys
are 64-byte aligned: the heap's alignment otherwise moved single shapes by 10-20% between
processes (bench/NOTES.md, "Small stores: row parts fixed by the shape").

Keep the old build before rebuilding::

    cp .venv/lib/python3.11/site-packages/mnemonix/_core*.so /tmp/old.so
    pip install --no-build-isolation --no-deps -e .
    python bench/ab_core_builds.py /tmp/old.so .venv/lib/python3.11/site-packages/mnemonix/_core*.so \\
        --shapes 1000:512:1,1000:128:4 --rounds 25
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.split(","):
        n, d, b = (int(x) for x in item.split(":"))
        shapes.append((n, d, b))
    return shapes


def _aligned(x):
    import numpy as np

    buf = np.empty(x.size + 64 // x.itemsize, x.dtype)
    off = (-buf.ctypes.data % 64) // x.itemsize
    y = buf[off:off + x.size].reshape(x.shape)
    y[...] = x
    return y


# The kernel's element codes (retrieve_at's element_type)
CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


def _rows(x, dtype: str):
    """float32 ``x`` as rows of ``dtype``: float32 itself, or the 16-bit values' bits (uint16)."""
    import numpy as np

    if dtype == "float16":
        return _aligned(x.astype(np.float16).view(np.uint16))
    if dtype == "bfloat16":  # the top half of each float32 (truncated: any bfloat16 values will do)
        return _aligned((x.view(np.uint32) >> 16).astype(np.uint16))
    return _aligned(x)


def _caller(retrieve_at, q, k, b: int, d: int, n: int, dtype: str):
    """A no-argument call of the kernel by address on rows of ``dtype`` (out, lse, argmax
    float32 / int64 buffers of its own)."""
    import numpy as np

    out, lse, arg = np.empty((b, d), np.float32), np.empty(b, np.float32), np.empty(b, np.int64)
    args = (q.ctypes.data, b, d, k.ctypes.data, n, 0, d, 0.1, 0, out.ctypes.data, lse.ctypes.data,
            arg.ctypes.data, CODES[dtype])
    return lambda: (retrieve_at(*args), out)


def _amx_caller(retrieve_at, q, k, b: int, d: int, n: int):
    """A no-argument call of the AMX kernel by address (bfloat16 rows; out bfloat16, lse float32)."""
    import numpy as np
    out, lse = np.empty((b, d), np.uint16), np.empty(b, np.float32)
    args = (q.ctypes.data, b, d, k.ctypes.data, n, 0, d, 0.1, out.ctypes.data, lse.ctypes.data)
    return lambda: (retrieve_at(*args), out)


def _time_build(so: str, shapes: list[tuple[int, int, int]], threads: int,
                dtype: str = "float32", kernel: str = "retrieval") -> dict[str, float]:
    """Median seconds per call of each shape with the build at ``so`` (run in a child process),
    on rows of ``dtype``: float32 arrays through ``retrieve``, 16-bit ones by address through
    ``retrieve_at`` (on all threads: it takes no thread count)."""
    import importlib.machinery
    import importlib.util

    import numpy as np

    loader = importlib.machinery.ExtensionFileLoader("_core", so)
    spec = importlib.util.spec_from_file_location("_core", so, loader=loader)
    core = importlib.util.module_from_spec(spec)
    loader.exec_module(core)
    retrieve = core.retrieval.retrieve
    rng = np.random.default_rng(0)
    result = {}
    for n, d, b in shapes:
        q = _rows(rng.standard_normal((b, d), dtype=np.float32), dtype)
        k = _rows(rng.standard_normal((n, d), dtype=np.float32), dtype)
        if kernel == "amx":
            call = _amx_caller(core.retrieval_amx.retrieve_at, q, k, b, d, n)
        elif dtype == "float32":
            def call(q=q, k=k):
                return retrieve(q, k, None, beta=0.1, num_threads=threads)
        else:
            call = _caller(core.retrieval.retrieve_at, q, k, b, d, n, dtype)
        for _ in range(20):
            call()
        calls = max(20, min(400, int(2e7 // (2 * n * d * b + 1))))
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        result[f"{n}:{d}:{b}"] = statistics.median(times)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", help="the baseline build's _core shared object")
    parser.add_argument("new", help="the candidate build's _core shared object")
    parser.add_argument("--shapes", required=True, help="N:d:B[,N:d:B...] (float32, values = keys)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="float32 only (16-bit rows run on all threads)")
    parser.add_argument("--dtype", choices=sorted(CODES), default="float32", help="the rows' element type")
    parser.add_argument("--kernel", choices=("retrieval", "amx"), default="retrieval",
                        help="amx: the AMX bfloat16 kernel (bfloat16 rows, on all threads)")
    args = parser.parse_args(argv)
    if args.kernel == "amx":
        args.dtype = "bfloat16"
    shapes = _parse_shapes(args.shapes)
    keys = [f"{n}:{d}:{b}" for n, d, b in shapes]
    ratios: dict[str, list[float]] = {k: [] for k in keys}
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in keys}
    for _ in range(args.rounds):
        got = []
        for so in (args.old, args.new):
            cmd = [sys.executable, __file__, "--child", so, args.shapes, str(args.threads), args.dtype, args.kernel]
            got.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
        for k in keys:
            ratios[k].append(got[1][k] / got[0][k])
            times[k][0].append(got[0][k])
            times[k][1].append(got[1][k])
    print(f"{'N:d:B':>16} {'old us':>9} {'new us':>9} {'new/old':>8}  quartiles ({args.rounds} rounds, "
          f"{args.threads} threads, {args.dtype})")
    for k in keys:
        q1, _, q3 = statistics.quantiles(ratios[k], n=4)
        old_us, new_us = statistics.median(times[k][0]) * 1e6, statistics.median(times[k][1]) * 1e6
        print(f"{k:>16} {old_us:9.1f} {new_us:9.1f} {statistics.median(ratios[k]):8.3f}  [{q1:.3f}, {q3:.3f}]")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # one build's timings as JSON: --child SO SHAPES THREADS DTYPE KERNEL
        so, shapes, threads, dtype, kernel = sys.argv[2:7]
        print(json.dumps(_time_build(so, _parse_shapes(shapes), int(threads), dtype, kernel)))
    else:
        main()
