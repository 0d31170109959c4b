"""The ``layers`` area: a Hopfield layer that trains, three association paths (``bench/compare_hopfield_layers.py``).

One layer (``Hopfield(input_size=128, num_heads=h)``: layer norms, input projections, heads,
output projection) with B = 4 samples, L = 64 state patterns and N stored patterns per sample
(the stored patterns are also the pattern projection, as in pooling / MIL):

- ``auto``: :class:`mnemonix.nn.Hopfield` itself (the fused op: flash CPU kernel with its fused
  backward on CPU, Triton forward + backward on CUDA);
- ``peer:hflayers``: the same projections, then hflayers' unfused association (``bmm`` ->
  softmax -> ``bmm`` on [B * heads, L, N], re-implemented here from its description, so it
  needs no package); skipped above ``max_gb`` of association memory;
- ``peer:sdpa``: the same projections, then ``torch.nn.functional.scaled_dot_product_attention``.

Ops ``nn.Hopfield.fwd`` (forward under ``no_grad``) and ``nn.Hopfield.fwd_bwd`` (forward +
backward, parameters require grad). Correctness in the same run: ``auto``'s output (``fwd``)
or parameter gradients (``fwd_bwd``) match the SDPA path's. Floor: one read of the stored
patterns, or the GEMM flops (projections and association; x3 for forward + backward).
Peak memory needs a fresh process per figure: ``bench/compare_hopfield_layers.py`` measures it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from mnemonix.benchmark.suites import Built, Case

B, L, D = 4, 64, 128
PATHS = ("auto", "peer:hflayers", "peer:sdpa")
MAX_GB = 8.0

SIZES: dict[str, list[tuple[int, int]]] = {  # (heads, N)
    "tiny": [(2, 64)],
    "quick": [(h, n) for h in (1, 8) for n in (1024, 4096)],
    "default": [(h, n) for h in (1, 8) for n in (1024, 16_384, 131_072)],
}


def area_cases(size: str, device: torch.device, *, max_gb: float = MAX_GB) -> list[Case]:
    """``fwd`` and ``fwd_bwd`` cases at the (heads, N) of ``size``; bfloat16 on CUDA, float32 on CPU."""
    return shape_cases(SIZES[size], device, max_gb=max_gb)


def shape_cases(shapes: list[tuple[int, int]], device: torch.device, *, max_gb: float = MAX_GB) -> list[Case]:
    """Both ops at each (heads, N) of ``shapes``."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return [Case(f"nn.Hopfield.{mode}", {"heads": h, "N": n, "B": B, "L": L, "d": D}, dtype,
                 _builder(h, n, mode, dtype, max_gb)) for h, n in shapes for mode in ("fwd_bwd", "fwd")]


def associate(kind: str, q, k, v, beta: float):
    """[B, heads, L, pd] from per-head q [B, h, L, hd], k [B, h, N, hd], v [B, h, N, pd]."""
    from mnemonix import ops

    if kind == "auto":
        return ops.hopfield_retrieve(q, k, v, beta=beta)
    if kind == "peer:sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=beta)
    if kind == "peer:hflayers":  # hflayers' core: contiguous [B * heads, seq, width] copies, bmm, softmax, bmm
        b, h, length, hd = q.shape
        q3 = q.contiguous().view(b * h, length, hd) * beta
        k3, v3 = k.contiguous().view(b * h, -1, hd), v.contiguous().view(b * h, -1, v.shape[-1])
        xi = torch.softmax(torch.bmm(q3, k3.transpose(1, 2)), dim=-1)
        return torch.bmm(xi, v3).view(b, h, length, -1)
    raise ValueError(f"kind must be one of {PATHS}, got {kind!r}")


def layer_forward(kind: str, layer, stored: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """The layer's output [B, L, D] with its association on path ``kind``."""
    data = (stored, state, stored)
    if kind == "auto":
        return layer(data)
    stored_n, state_n, proj_n, _ = layer._prepare(data, None, None)
    core = layer.association_core
    q, k, v = core.project(state_n, stored_n, proj_n)
    out = associate(kind, q, k, v, layer.scaling).transpose(1, 2).flatten(2)
    return core.out_proj(out)


def setup(heads: int, n: int, device: torch.device, dtype: torch.dtype):
    """The layer, stored patterns [B, n, D] and state patterns [B, L, D] of one shape (seeded)."""
    from mnemonix.nn import Hopfield

    torch.manual_seed(heads * 1_000_003 + n)
    layer = Hopfield(input_size=D, num_heads=heads).to(device=device, dtype=dtype)
    stored = torch.randn(B, n, D, device=device, dtype=dtype)
    state = torch.randn(B, L, D, device=device, dtype=dtype)
    return layer, stored, state


def forward_backward(kind: str, layer, stored: torch.Tensor, state: torch.Tensor) -> list[torch.Tensor]:
    """One forward + backward on path ``kind``; returns the parameters' gradients."""
    layer.zero_grad(set_to_none=True)
    layer_forward(kind, layer, stored, state).float().sum().backward()
    return [p.grad for p in layer.parameters() if p.grad is not None]


def association_bytes(heads: int, n: int) -> int:
    """Bytes of the unfused association: logits, softmax and their gradients, float32."""
    return 4 * B * heads * L * n * 4


def flops(n: int, mode: str) -> float:
    """GEMM flops of one call: projections (state, stored, pattern, output) and the association
    (4 B L N D whatever the heads); forward + backward at least three times the forward."""
    fwd = 2.0 * B * (L + 2 * n) * D * D + 2.0 * B * L * D * D + 4.0 * B * L * n * D
    return fwd if mode == "fwd" else 3.0 * fwd


def _builder(heads: int, n: int, mode: str, dtype: torch.dtype, max_gb: float) -> Callable[[torch.device], Built]:
    def build(device: torch.device) -> Built:
        layer, stored, state = setup(heads, n, device, dtype)
        notes: dict[str, str] = {}
        kinds = list(PATHS)
        if association_bytes(heads, n) > max_gb * 2**30:
            kinds.remove("peer:hflayers")
            gib = association_bytes(heads, n) / 2**30
            notes["peer:hflayers"] = f"skipped: the unfused association needs ~{gib:.1f} GiB (> max_gb {max_gb:g})"

        def fwd(kind: str) -> torch.Tensor:
            with torch.no_grad():
                return layer_forward(kind, layer, stored, state)

        run = fwd if mode == "fwd" else (lambda kind: forward_backward(kind, layer, stored, state))
        candidates: dict[str, Callable[[], Any]] = {kind: (lambda kind=kind: run(kind)) for kind in kinds}
        want = [t.float().clone() for t in _as_list(run("peer:sdpa"))]
        tol = 2e-2 if dtype != torch.float32 else 1e-3

        def check(fn) -> bool:
            got = [t.float() for t in _as_list(fn())]
            return len(got) == len(want) and all(
                torch.allclose(a, b, atol=tol * max(1.0, float(b.abs().max())), rtol=tol) for a, b in zip(got, want))

        return Built(candidates, check, bytes_read=B * n * D * stored.element_size(), flops=flops(n, mode),
                     chosen=_chosen(layer, stored, state), notes=notes)

    return build


def _as_list(out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out)


def _chosen(layer, stored: torch.Tensor, state: torch.Tensor) -> str | None:
    """The backend ``hopfield_retrieve`` picks for this layer's per-head association."""
    from mnemonix.ops.hopfield import choose_backend

    with torch.no_grad():
        stored_n, state_n, proj_n, _ = layer._prepare((stored, state, stored), None, None)
        q, k, _ = layer.association_core.project(state_n, stored_n, proj_n)
    try:
        return choose_backend(q, k)
    except (TypeError, ValueError):  # a signature this version's chooser does not take
        return None
