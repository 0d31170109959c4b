"""Backend selection in the style of xformers' fmha dispatch, one dialect for every op.

Every op module in :mod:`mnemonix.ops` declares itself the same way:

- a typed *inputs record* (a frozen dataclass) built once the arguments are checked; it
  carries ``device``, ``dtype`` and ``needs_grad`` (see :class:`Inputs`);
- an :class:`OpSpec`: the op's name, an ordered tuple of :class:`Backend` declarations and
  a *speed policy*;
- one call ``dispatch(spec, inputs, forced)``.

Two questions are kept apart, as in xformers:

*Capability* -- can this backend run these inputs at all? Each backend states it as data
(devices, dtypes, needs Triton, has a backward) plus an optional ``extra_reasons(inputs)``
for shape limits, and answers :meth:`Backend.not_supported_reasons` with readable reasons.

*Speed* -- among the backends that can, which one is fastest for these inputs? That is the
op's ``policy(inputs)``: the names of the backends to try in order of preference. It never
decides correctness, and forcing a backend (``backend="cpp"``) bypasses it entirely.
Interpreted Triton (``TRITON_INTERPRET=1`` on CPU tensors) is a correctness tool: it is
*capable* of running, but :func:`default_policy` never picks it.

When nothing fits, or a forced backend cannot run, one error lists the inputs and every
backend's reasons.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mnemonix import _triton


class Inputs(Protocol):
    """What the dispatcher needs of an op's inputs record."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def needs_grad(self) -> bool: ...


class SelectionOverKeys:
    """Mixin of the inputs record of a selection over ``self.keys`` (top-k, nearest keys): the
    keys' device and dtype decide, and no gradient flows through the selected indices."""

    @property
    def device(self) -> torch.device:
        return self.keys.device  # type: ignore[attr-defined]

    @property
    def dtype(self) -> torch.dtype:
        return self.keys.dtype  # type: ignore[attr-defined]

    @property
    def needs_grad(self) -> bool:
        return False


ALL_FLOAT = frozenset({torch.float32, torch.float16, torch.bfloat16})


@dataclass(frozen=True)
class Backend:
    """One implementation of an op and what it can run (capability, never speed).

    ``run`` takes the op's inputs in the op's own calling convention (see each op module).
    ``devices`` holds torch device types ("cpu", "cuda"). A Triton backend on CPU tensors
    can run only under ``TRITON_INTERPRET=1``. ``supports_grad`` is True when gradients
    flow through ``run`` (autograd or a registered backward).
    """

    name: str
    run: Callable[..., Any]
    devices: frozenset[str] = frozenset({"cpu", "cuda"})
    dtypes: frozenset[torch.dtype] = ALL_FLOAT
    needs_triton: bool = False
    supports_grad: bool = False
    extra_reasons: Callable[[Any], list[str]] | None = field(default=None, compare=False)

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        """Readable reasons why this backend cannot run ``inputs`` (empty: it can)."""
        device, dtype = inputs.device, inputs.dtype
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
        if inputs.needs_grad and not self.supports_grad:
            reasons.append("forward only: an input requires grad")
        if self.extra_reasons is not None:
            reasons.extend(self.extra_reasons(inputs))
        return reasons

    def interpreted(self, device: torch.device) -> bool:
        """True when this backend would run Triton code in the interpreter on ``device``."""
        return self.needs_triton and device.type != "cuda"


Policy = Callable[[Any, Sequence[Backend]], Sequence[str]]


def default_policy(inputs: Inputs, backends: Sequence[Backend]) -> list[str]:
    """Declared order, without interpreted Triton (slow; tests force it explicitly)."""
    return [b.name for b in backends if not b.interpreted(inputs.device)]


@dataclass(frozen=True)
class OpSpec:
    """An op's declaration: its backends (declared order) and its speed policy."""

    name: str
    backends: tuple[Backend, ...]
    policy: Policy = default_policy

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends]


def describe_inputs(inputs: Any) -> str:
    """``name: shape dtype on device`` for every tensor field of an inputs record."""
    parts = []
    items = (
        ((f.name, getattr(inputs, f.name)) for f in dataclasses.fields(inputs))
        if dataclasses.is_dataclass(inputs) else dict(inputs).items()
    )
    for key, value in items:
        if isinstance(value, torch.Tensor):
            parts.append(f"{key}: {tuple(value.shape)} {value.dtype} on {value.device}")
    return ", ".join(parts)


def dispatch(spec: OpSpec, inputs: Inputs, forced: str | None = None) -> Backend:
    """The backend to run: ``forced`` if it can run the inputs, else the policy's first capable one.

    Raises
    ------
    TypeError
        ``forced`` is neither a str nor None.
    ValueError
        ``forced`` names no backend of the op, or no candidate can run the inputs (the
        message lists the inputs and every backend's reasons).
    """
    if forced is not None:
        if not isinstance(forced, str):
            raise TypeError(f"{spec.name}: backend must be one of {spec.names} or None, got {type(forced).__name__}")
        if forced not in spec.names:
            raise ValueError(f"{spec.name}: backend must be one of {spec.names} or None, got {forced!r}")
        candidates = [spec.backend(forced)]
    else:
        candidates = [spec.backend(name) for name in spec.policy(inputs, spec.backends)]
    all_reasons: dict[str, list[str]] = {}
    for backend in candidates:
        reasons = backend.not_supported_reasons(inputs)
        if not reasons:
            return backend
        all_reasons[backend.name] = reasons
    for backend in spec.backends:  # name the others too: why were they not candidates?
        if backend.name not in all_reasons and forced is None:
            all_reasons[backend.name] = backend.not_supported_reasons(inputs) or ["not chosen by the speed policy"]
    lines = [f"{spec.name}: no backend supports these inputs ({describe_inputs(inputs)})"]
    lines += [f"  `{name}`: {'; '.join(r)}" for name, r in all_reasons.items()]
    raise ValueError("\n".join(lines))
