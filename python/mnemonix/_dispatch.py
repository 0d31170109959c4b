"""Backend selection in the style of xformers' fmha dispatch.

Each backend states what it supports as data (devices, dtypes, needs Triton)
plus an optional ``extra_reasons(inputs)`` for shape limits, and answers
:meth:`Backend.not_supported_reasons` with readable reasons. The dispatcher
picks the first backend in priority order with no reasons; when none fits, or
a forced backend does not, it raises one error listing the inputs and every
backend's reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mnemonix import _triton

Inputs = Mapping[str, Any]


@dataclass(frozen=True)
class Backend:
    """One implementation of an op.

    ``run`` takes the already-checked inputs as keyword arguments.
    ``devices`` holds torch device types ("cpu", "cuda"). A Triton backend on
    CPU tensors is supported only under ``TRITON_INTERPRET=1``.
    """

    name: str
    run: Callable[..., Any]
    devices: frozenset[str] = frozenset({"cpu", "cuda"})
    dtypes: frozenset[torch.dtype] = frozenset({torch.float32, torch.float16, torch.bfloat16})
    needs_triton: bool = False
    extra_reasons: Callable[[Inputs], list[str]] | None = field(default=None, compare=False)

    def not_supported_reasons(self, inputs: Inputs, device: torch.device, dtype: torch.dtype) -> list[str]:
        reasons: list[str] = []
        if device.type not in self.devices:
            reasons.append(f"device {device.type!r} not in {sorted(self.devices)}")
        if dtype not in self.dtypes:
            reasons.append(f"dtype {dtype} not in {sorted(str(d) for d in self.dtypes)}")
        if self.needs_triton:
            if _triton.triton_version() is None:
                reasons.append("Triton is not installed")
            elif device.type == "cpu" and not _triton.interpret_mode():
                reasons.append("CPU tensors need TRITON_INTERPRET=1 for the Triton backend")
        if self.extra_reasons is not None:
            reasons.extend(self.extra_reasons(inputs))
        return reasons


def describe_inputs(inputs: Inputs) -> str:
    parts = []
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            parts.append(f"{key}: {tuple(value.shape)} {value.dtype} on {value.device}")
    return ", ".join(parts)


def select(
    op: str,
    backends: Sequence[Backend],
    inputs: Inputs,
    *,
    device: torch.device,
    dtype: torch.dtype,
    forced: str | None = None,
) -> Backend:
    """Return the backend to run: ``forced`` if given and supported, else the first that fits."""
    by_name = {b.name: b for b in backends}
    if forced is not None:
        if forced not in by_name:
            raise ValueError(f"{op}: backend must be one of {sorted(by_name)} or None, got {forced!r}")
        candidates: Sequence[Backend] = [by_name[forced]]
    else:
        candidates = backends
    all_reasons: dict[str, list[str]] = {}
    for backend in candidates:
        reasons = backend.not_supported_reasons(inputs, device, dtype)
        if not reasons:
            return backend
        all_reasons[backend.name] = reasons
    lines = [f"{op}: no backend supports these inputs ({describe_inputs(inputs)})"]
    lines += [f"  `{name}`: {'; '.join(r)}" for name, r in all_reasons.items()]
    raise ValueError("\n".join(lines))
