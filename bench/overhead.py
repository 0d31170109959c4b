"""Per-call overhead of the ops on the CPU fast path at tiny shapes (microseconds).

overhead = time(op) - time(the bare kernel call the op ends in, on prepared arguments), each
timed side by side with plain torch at the same shape (interleaved rounds,
:func:`mnemonix.benchmark.timing.measure`; min and p20 reported: the machine is shared,
medians wander). Target: < 15 us of overhead.

- ``hopfield_retrieve`` (N=64, d=16, B=1, float32): the op (its fast path: checks, the C++ kernel
  with the finite checks folded in, tensors around the results) vs the bare
  ``_core.retrieval.retrieve_checked`` on numpy arrays; also ``backends.hopfield.run_cpp`` on
  the canonical operands (the general path's backend call); plain: softmax(beta q K^T) K.
- ``salience_topk`` (N=64, d=16, B=1, k=5, log_salience given): the op (its fast path: the exact
  C++ recall, checks and outputs in the call) vs the bare ``_core.salience.recall`` on numpy
  arrays; also the torch backend's float32 selection alone (what the op's torch path starts
  with); plain: normalise, matmul, scale, topk, gather, softmax (not exact).
- ``lifespan_step`` (B=1, M=64, R=4): the op (its fast path: ``Tensor.numpy()`` of the inputs, the
  C++ step's lean entry with the value checks in the same call, ``torch.from_numpy`` of the
  results) vs the bare ``_core.lifespan.step_or_none`` on numpy arrays (checks on: the same work);
  also ``backends.lifespan.lifespan_step_cpp`` (the general path's backend call, through
  ``_core.lifespan.step``); plain: the torch backend (``backends.lifespan.lifespan_step_torch``,
  what the op ran before the C++ step).

    python bench/overhead.py [--repeat 3000] [--out bench/results/overhead-cpu.json] [--label before]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mnemonix import ops
from mnemonix.backends import hopfield as hb
from mnemonix.backends import lifespan as lb
from mnemonix.backends import salience as sb
from mnemonix.backends import salience_cpp
from mnemonix.backends import salience_exact as sx
from mnemonix.benchmark import environment
from mnemonix.benchmark.timing import measure
from mnemonix.ops import salience as salience_op

HERE = Path(__file__).resolve().parent
CPU = torch.device("cpu")


def _stats(samples: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {name: {"p20_us": t.p20 * 1e6, "p50_us": t.p50 * 1e6} for name, t in samples.items()}


def hopfield(repeat: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    n, d = 64, 16
    keys, q = torch.randn(n, d, generator=gen), torch.randn(1, d, generator=gen)
    beta = 1.0 / math.sqrt(d)
    assert ops.hopfield.choose_backend(q, keys) == "cpp"
    q4, k4 = q[None, None], keys[None, None]
    core = hb._core_retrieval()
    qn, kn = q.numpy(), keys.numpy()
    cands = {
        "op": lambda: ops.hopfield_retrieve(q, keys, beta=beta),
        "general_backend": lambda: hb.run_cpp(q4, k4, None, beta=beta, logit_bias=None, want_argmax=False),
        "bare": lambda: core.retrieve_checked(qn, kn, None, beta=beta),
        "plain": lambda: torch.softmax(beta * (q @ keys.T), dim=-1) @ keys,
    }
    return {"shape": {"N": n, "d": d, "B": 1}, "backend": "cpp", **_timed(cands, repeat)}


def salience(repeat: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(1)
    n, d, k = 64, 16, 5
    keys, q = torch.randn(n, d, generator=gen), torch.randn(1, d, generator=gen)
    log_s = torch.rand(n, generator=gen, dtype=torch.float64)
    shift = sx.shift_of(log_s, None)
    n_cand = min(k + sx.CANDIDATE_EXTRA, n)
    assert salience_op.cpu_order(1, n, d)[0] == "cpp"
    core = salience_cpp.core_salience()
    qn, kn, ln = q.numpy(), keys.numpy(), log_s.numpy()

    def plain():
        scale = torch.exp(log_s - log_s.max()).float()
        top = torch.topk((F.normalize(q, dim=1) @ F.normalize(keys, dim=1).T) * scale, k, dim=1).indices
        return torch.softmax(log_s[top], dim=1), top

    cands = {
        "op": lambda: ops.salience_topk(q, keys, None, k=k, log_salience=log_s),
        "bare": lambda: core.recall(qn, kn, None, ln, None, None, None, None, None, k, True),
        "torch_selection": lambda: sb.TORCH.run(q, keys, log_s, shift, None, n_cand, key_norms=None,
                                                batch_invariant=False),
        "plain": plain,
    }
    return {"shape": {"N": n, "d": d, "B": 1, "k": k}, "backend": "cpp", **_timed(cands, repeat)}


def lifespan(repeat: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(2)
    m, r = 64, 4
    life = torch.rand(1, m, generator=gen) * 4
    types = torch.randint(1, 4, (1, m), generator=gen, dtype=torch.uint8)
    age = torch.randint(0, 100, (1, m), generator=gen, dtype=torch.int32)
    idx = torch.randint(-1, m, (1, r), generator=gen)
    delta = torch.rand(1, r, generator=gen)
    core = lb.core_lifespan()
    arrays = [t.numpy() for t in (life, types, age, idx, delta)]
    cands = {
        "op": lambda: ops.lifespan_step(life, types, age, idx, delta, 16),
        "general_backend": lambda: lb.lifespan_step_cpp(life, types, age, idx, delta, 16, check=True),
        "bare": lambda: core.step_or_none(*arrays, 16, 1, 2, 3, True),
        "plain": lambda: lb.lifespan_step_torch(life, types, age, idx, delta, 16),
    }
    return {"shape": {"B": 1, "M": m, "R": r}, "backend": "cpp", **_timed(cands, repeat)}


def _timed(cands, repeat: int) -> dict[str, Any]:
    t = measure(cands, CPU, repeat=repeat, warmup_s=0.3, budget_s=60.0)
    out = _stats(t)
    out["overhead_p20_us"] = out["op"]["p20_us"] - out["bare"]["p20_us"]
    return {"us": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="per-call overhead of the ops at tiny shapes (CPU)")
    p.add_argument("--repeat", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: tiny shapes)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "overhead-cpu.json")
    p.add_argument("--label", default="current")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"label": args.label, "environment": environment.record(CPU), "repeat": args.repeat,
              "hopfield_retrieve": hopfield(args.repeat), "salience_topk": salience(args.repeat),
              "lifespan_step": lifespan(args.repeat)}
    for op in ("hopfield_retrieve", "salience_topk", "lifespan_step"):
        us = result[op]["us"]
        parts = "  ".join(f"{name} {v['p20_us']:.1f}" for name, v in us.items() if isinstance(v, dict))
        print(f"{op:18s} p20 us: {parts}  -> overhead {us['overhead_p20_us']:.1f} us")
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    data[args.label] = result
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
