"""How accurate each 16-bit CPU path of ``hopfield_retrieve`` is, against the plain peer.

The plain peer, ``softmax(beta * (Q @ K.T)) @ K`` in float16 / bfloat16, gets its logits from a
16-bit matmul: torch's CPU matmul sums in float32 but rounds each logit to 16 bits, an error of
|logit| x 2^-9 (bfloat16) that the softmax turns into relative weight errors. Our paths keep
float32 logits (the C++ kernel computes in float32 from the exactly widened rows; torch's flash
kernel keeps its GEMMs' float32 sums). Prints the max error relative to max |out| of each,
against the float64 reference on the same 16-bit inputs, next to the error of rounding that
reference to the dtype (the floor). The backend grid's problem (uniform inputs, beta =
1/sqrt(d)) has logits under ~0.6, where the peer's rounding hides; sharper retrievals show it.

    python bench/half_accuracy.py
"""

from __future__ import annotations

import math

import torch

from mnemonix import ops, reference
from mnemonix.benchmark.suites import hopfield as hopfield_suite


def cases() -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    gen = torch.Generator().manual_seed(0)
    unit = torch.nn.functional.normalize(torch.randn(10_000, 128, generator=gen), dim=1)
    near = unit[:64] + 0.3 * torch.randn(64, 128, generator=gen) / math.sqrt(128)
    keys, queries = torch.randn(10_000, 128, generator=gen), torch.randn(64, 128, generator=gen)
    grid_q, grid_k, grid_beta = hopfield_suite.problem(10_000, 1024, 64, torch.float32, torch.device("cpu"))
    return [("the grid's problem, N=1e4 d=1024 B=64, beta=1/sqrt(d)", grid_q, grid_k, grid_beta),
            ("unit keys, queries near them, d=128, beta=8", near, unit, 8.0),
            ("randn, d=128, beta=1/sqrt(d)", queries, keys, 1 / math.sqrt(128)),
            ("randn, d=128, beta=0.5", queries, keys, 0.5)]


def relative_error(out: torch.Tensor, want: torch.Tensor) -> float:
    return float((out.double() - want).abs().max() / want.abs().max())


def main() -> int:
    print("max |out - reference| / max |reference| (float64 reference on the same 16-bit inputs)")
    print(f"{'dtype':9} {'case':55} {'plain':>8} {'sdpa':>8} {'cpp':>8} {'floor':>8}")
    for dtype in (torch.bfloat16, torch.float16):
        for name, q32, k32, beta in cases():
            q, k = q32.to(dtype), k32.to(dtype)
            want = reference.hopfield_retrieve(q.double(), k.double(), beta=beta)
            plain = torch.softmax(beta * (q @ k.T), dim=-1) @ k
            ours = [relative_error(ops.hopfield_retrieve(q, k, beta=beta, backend=b), want) for b in ("sdpa", "cpp")]
            print(f"{str(dtype)[6:]:9} {name:55} {relative_error(plain, want):8.1e} {ours[0]:8.1e} {ours[1]:8.1e} "
                  f"{relative_error(want.to(dtype), want):8.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
