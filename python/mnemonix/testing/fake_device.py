"""A fake CUDA device on the CPU: find device bugs and host syncs without a GPU.

``with fake_cuda() as fc:`` installs a :class:`torch.overrides.TorchFunctionMode` under
which a tensor created or moved "to CUDA" (``device="cuda"``, ``.to("cuda")``, ``.cuda()``,
``Module.to("cuda")``) really stays on the CPU but carries a *fake-CUDA tag*. The tag follows
every torch operation (a result is tagged when an input is), and tagged tensors report
``device == cuda:0`` and ``is_cuda``, so code that branches on the device takes its CUDA
branch. The mode then checks what a real GPU would refuse or pay for:

*Violations* (``fc.violations``; raised at once as :class:`FakeDeviceError` when ``strict``,
and again on exit if something swallowed them):

- an operation mixing a tagged tensor with an untagged (CPU) tensor that is not 0-dim
  (``tensor[cpu_index]``, ``tensor[...] = cpu_value``, ``copy_`` and ``.to`` are transfers,
  not violations: PyTorch allows them);
- ``.numpy()`` / ``np.asarray`` of a tagged tensor;
- a random draw whose ``generator=`` lives on the other device than its output (a CPU
  ``torch.Generator`` drawing a CUDA tensor);
- a Triton kernel launched with an untagged tensor argument.

*Host syncs* (``fc.syncs``, with ``fc.sync_events`` saying what and where): on a tagged
tensor, ``.item()``, ``bool()``, ``float()``, ``int()``, ``operator.index``, ``.tolist()``,
``.cpu()`` / ``.to("cpu")`` (device to host), a blocking host to device copy
(``torch.tensor(data, device="cuda")``, ``.to("cuda")``, indexing with a CPU index),
``nonzero`` and friends, boolean-mask indexing, ``torch.equal``/``allclose``, ``unique``,
printing, and ``torch.cuda.synchronize()``. An operation on the fast path of an op that a CUDA
graph should capture must count zero.

*Copies* (``fc.copies``, with ``fc.copy_events``): every transfer of tensor data between host
and device, blocking or not -- moves (``.to``, ``.cuda()``, ``.cpu()``), ``copy_`` across
devices, ``torch.tensor(data, device="cuda")``, CPU indices or values in indexing, and
``.tolist()`` of a tagged tensor. A ``non_blocking`` host-to-device move is a copy but no sync.

Inside the mode ``torch.cuda`` answers as a one-GPU machine (``is_available()``,
``get_device_properties`` of an H200 with 132 SMs, ``torch.cuda.device`` guards), and
``torch.Generator(device="cuda")`` makes a CPU generator tagged as CUDA. Triton kernels launch
through the interpreter (``TRITON_INTERPRET=1`` must have been set before the kernels were
imported) with the mode paused, so a launcher's CUDA configuration runs, interpreted, on the
CPU data. A tensor's tag is an attribute of its Python object: tensors that autograd creates
in C++ (gradients) are tagged when read through ``.grad``, and untagged tensors met inside a
backward pass are taken as unknown rather than as CPU tensors.

Typical use (see ``tests/test_fake_device.py``)::

    with fake_cuda() as fc:
        x = torch.randn(8, 4).cuda()
        fc.reset()
        out = op(x)
        assert fc.syncs == 0, fc.describe()
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["FakeCuda", "FakeDeviceError", "SyncEvent", "fake_cuda", "is_fake_cuda", "FAKE_SM_COUNT"]

_TAG = "_mnemonix_fake_cuda"
FAKE_SM_COUNT = 132
"""Streaming multiprocessors the fake device reports (an H100 SXM / H200)."""
_CUDA = torch.device("cuda", 0)
_CPU = torch.device("cpu")
_T = torch.Tensor


class FakeDeviceError(AssertionError):
    """Code under :func:`fake_cuda` did something a real CUDA device would refuse."""


@dataclass(frozen=True)
class SyncEvent:
    """One host sync: its kind (``"item"``, ``"bool"``, ``"d2h"``, ...) and the first caller frame."""

    kind: str
    where: str


def is_fake_cuda(value: object) -> bool:
    """True when ``value`` is a tensor tagged as living on the fake CUDA device."""
    return isinstance(value, torch.Tensor) and bool(getattr(value, _TAG, False))


def _tag(value: Any, on: bool = True) -> Any:
    """Tag (or untag) every tensor in ``value`` (a tensor, or a tuple/list of them); returns it."""
    if isinstance(value, torch.Tensor):
        try:
            setattr(value, _TAG, on)
        except (AttributeError, RuntimeError):  # a tensor type without __dict__: leave it
            pass
    elif isinstance(value, (tuple, list)):
        for item in value:
            _tag(item, on)
    return value


def _tensors(value: Any, out: list[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _tensors(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _tensors(item, out)
    return out


def _device_is_cuda(device: Any) -> bool | None:
    """True/False for a CUDA/other device argument, None when no device is given."""
    if device is None:
        return None
    if isinstance(device, bool):
        return None
    if isinstance(device, int):
        return True  # a bare ordinal names a CUDA device
    if isinstance(device, (str, torch.device)):
        return torch.device(device).type == "cuda"
    return None


def _cpu_device_args(args: tuple, kwargs: dict) -> tuple[tuple, dict, bool | None]:
    """Replace CUDA device arguments by the CPU; return the new args and the requested target."""
    target = _device_is_cuda(kwargs.get("device"))
    if target:
        kwargs = {**kwargs, "device": _CPU}
    new_args = []
    for a in args:
        is_cuda = _device_is_cuda(a) if isinstance(a, (str, torch.device)) else None
        if is_cuda is not None:
            target = is_cuda
            a = _CPU if is_cuda else a
        new_args.append(a)
    return tuple(new_args), kwargs, target


def _prop(name: str) -> tuple[str, str]:
    return ("__get__", name)


def _key(func: Any) -> Any:
    """A hashable key for ``func``; property getters/setters arrive as fresh method-wrappers."""
    owner = getattr(func, "__self__", None)
    if type(func).__name__ == "method-wrapper" and owner is not None and hasattr(owner, "__name__"):
        return (func.__name__, owner.__name__)
    return func


_SYNC_METHODS = {
    _T.item: "item", _T.tolist: "tolist", _T.__bool__: "bool", _T.__float__: "float", _T.__int__: "int",
    _T.__index__: "index", _T.__complex__: "complex", _T.nonzero: "nonzero", torch.nonzero: "nonzero",
    torch.argwhere: "nonzero", _T.argwhere: "nonzero", torch.masked_select: "masked_select",
    _T.masked_select: "masked_select", torch.equal: "equal", _T.equal: "equal", torch.allclose: "allclose",
    _T.allclose: "allclose", torch.unique: "unique", _T.unique: "unique", torch.unique_consecutive: "unique",
    _T.is_nonzero: "bool", torch.is_nonzero: "bool", _T.__repr__: "print", _T.__format__: "print",
    _T.__contains__: "bool", torch.bincount: "bincount", _T.bincount: "bincount",
}
_NUMPY = {_T.numpy, _T.__array__}
_TRANSFER_OK = {_T.copy_, ("__set__", "data"), ("__set__", "grad"),
                torch._has_compatible_shallow_copy_type}  # the last: Module.to() compares old and new
_HOST_DATA_FACTORIES = {torch.tensor, torch.as_tensor, torch.asarray}


class FakeCuda(TorchFunctionMode):
    """The mode behind :func:`fake_cuda`; see the module docstring for what it checks.

    Attributes
    ----------
    violations : list[str]
        Every device bug seen (also raised at once when ``strict``).
    sync_events : list[SyncEvent]
        Every host sync on a tagged tensor since the last :meth:`reset`.
    copy_events : list[SyncEvent]
        Every host <-> device data transfer since the last :meth:`reset` (kind ``"h2d"``/``"d2h"``).
    """

    def __init__(self, *, strict: bool = True) -> None:
        super().__init__()
        self.strict = strict
        self.violations: list[str] = []
        self.sync_events: list[SyncEvent] = []
        self.copy_events: list[SyncEvent] = []
        self._paused = 0

    # -- public API -------------------------------------------------------------------
    @property
    def syncs(self) -> int:
        """Host syncs since the last :meth:`reset`."""
        return len(self.sync_events)

    @property
    def copies(self) -> int:
        """Host <-> device data transfers since the last :meth:`reset`."""
        return len(self.copy_events)

    def reset(self) -> None:
        """Forget the syncs and copies counted so far (violations stay)."""
        self.sync_events.clear()
        self.copy_events.clear()

    def describe(self) -> str:
        """The syncs counted so far, one per line (for assertion messages)."""
        return "\n".join(f"{e.kind} at {e.where}" for e in self.sync_events) or "no host sync"

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Run a block with the mode's checks off and real (CPU) devices reported."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    # -- bookkeeping ------------------------------------------------------------------
    def _sync(self, kind: str) -> None:
        self.sync_events.append(SyncEvent(kind, _caller()))

    def _copy(self, kind: str) -> None:
        self.copy_events.append(SyncEvent(kind, _caller()))

    def _violation(self, message: str) -> None:
        message = f"{message} (at {_caller()})"
        self.violations.append(message)
        if self.strict:
            raise FakeDeviceError(message)

    def _check_mix(self, func: Any, args: tuple, tensors: list[torch.Tensor]) -> None:
        key = _key(func)
        if key is _T.__getitem__ or key is _T.__setitem__:
            if not is_fake_cuda(args[0]) and any(is_fake_cuda(t) for t in _tensors(args[1:2], [])):
                self._violation(f"{_name(func)} indexes a CPU tensor with a CUDA index")
            return  # a CUDA tensor indexed with CPU indices or assigned CPU values: a transfer
        if key in _TRANSFER_OK or torch._C._current_autograd_node() is not None:
            return  # transfers are legal; inside backward, engine-made tensors carry no tag
        cpu = [t for t in tensors if not is_fake_cuda(t) and t.ndim > 0 and t.device.type == "cpu"]
        if cpu:
            shapes = ", ".join(str(tuple(t.shape)) for t in cpu[:3])
            self._violation(f"{_name(func)} mixes CUDA tensors with CPU tensors of shape {shapes}")

    def _check_generator(self, func: Any, kwargs: dict, out_cuda: bool) -> None:
        gen = kwargs.get("generator")
        if gen is None:
            return
        gen_cuda = bool(getattr(gen, _TAG, False))
        if gen_cuda != out_cuda:
            where = ("a CPU generator", "a CUDA tensor") if out_cuda else ("a CUDA generator", "a CPU tensor")
            self._violation(f"{_name(func)} draws {where[1]} with {where[0]}")

    # -- the mode ---------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._paused:
            return func(*args, **kwargs)
        key = _key(func)
        special = _SPECIAL.get(key)
        if special is not None:
            return special(self, func, args, kwargs)
        args, kwargs, target = _cpu_device_args(args, kwargs) if "device" in kwargs else (args, kwargs, None)
        if kwargs.get("pin_memory"):
            kwargs = {**kwargs, "pin_memory": False}  # a CPU-only torch cannot pin; pinned memory is host memory
        tensors = _tensors(args, _tensors(kwargs, []))
        any_cuda = any(is_fake_cuda(t) for t in tensors)
        out_cuda = any_cuda if target is None else target
        if any_cuda and target is None:  # an explicit device= places the result: no mix
            self._check_mix(func, args, tensors)
        self._check_generator(func, kwargs, out_cuda)
        if any_cuda:
            self._count(func, key, args, tensors)
        elif target and func in _HOST_DATA_FACTORIES:
            self._sync("h2d")
            self._copy("h2d")
        out = func(*args, **kwargs)
        if out_cuda:
            _tag(out)
        return out

    def _count(self, func: Any, key: Any, args: tuple, tensors: list[torch.Tensor]) -> None:
        kind = _SYNC_METHODS.get(func)
        if kind is not None:
            self._sync(kind)
            if kind == "tolist":
                self._copy("d2h")
        elif key is _T.__getitem__ or key is _T.__setitem__:
            index = args[1] if len(args) > 1 else None
            index_tensors = _tensors(index, [])
            if any(t.dtype == torch.bool for t in index_tensors):
                self._sync("mask")
            elif any(not is_fake_cuda(t) for t in index_tensors):
                self._sync("h2d")
                self._copy("h2d")
            if key is _T.__setitem__ and len(args) > 2:
                value = args[2]
                if isinstance(value, torch.Tensor) and not is_fake_cuda(value) and value.ndim > 0:
                    if index_tensors:
                        self._violation("index_put_ of CPU values into a CUDA tensor")
                    self._sync("h2d")
                    self._copy("h2d")
        elif func is torch.where and len(args) == 1:
            self._sync("nonzero")
        elif func is _T.copy_ and is_fake_cuda(args[0]) != is_fake_cuda(args[1]):
            self._sync("h2d" if is_fake_cuda(args[0]) else "d2h")
            self._copy("h2d" if is_fake_cuda(args[0]) else "d2h")
        elif func in (_T.repeat_interleave, torch.repeat_interleave) and isinstance(
                args[1] if len(args) > 1 else None, torch.Tensor):
            self._sync("repeat_interleave")


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))


_SKIP_FILES = (os.sep + "torch" + os.sep, os.sep + "triton" + os.sep, os.path.join("testing", "fake_device.py"),
               os.sep + "contextlib.py")


def _caller() -> str:
    """``file:line`` of the innermost frame outside torch, triton and this module."""
    frame = sys._getframe(2)
    while frame is not None and any(s in frame.f_code.co_filename for s in _SKIP_FILES):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} ({frame.f_code.co_name})"


# -- special cases: device reporting and moves -------------------------------------------------


def _get_device(mode: FakeCuda, func, args, kwargs):
    return _CUDA if is_fake_cuda(args[0]) else func(*args, **kwargs)


def _get_is_cuda(mode: FakeCuda, func, args, kwargs):
    return True if is_fake_cuda(args[0]) else func(*args, **kwargs)


def _get_is_cpu(mode: FakeCuda, func, args, kwargs):
    return False if is_fake_cuda(args[0]) else func(*args, **kwargs)


def _get_device_index(mode: FakeCuda, func, args, kwargs):
    return 0 if is_fake_cuda(args[0]) else func(*args, **kwargs)


def _get_grad(mode: FakeCuda, func, args, kwargs):
    out = func(*args, **kwargs)
    if out is not None and is_fake_cuda(args[0]):
        _tag(out)  # autograd made it in C++: it lives where its tensor lives
    return out


def _set_data(mode: FakeCuda, func, args, kwargs):
    out = func(*args, **kwargs)
    _tag(args[0], is_fake_cuda(args[1]))  # Module.to() swaps .data in place
    return out


def _move(mode: FakeCuda, src: torch.Tensor, out: torch.Tensor, to_cuda: bool, non_blocking: bool) -> torch.Tensor:
    """Finish a ``.to``/``.cuda``/``.cpu``: a move across fake devices returns a new, re-tagged copy."""
    was_cuda = is_fake_cuda(src)
    if was_cuda != to_cuda:
        mode._copy("h2d" if to_cuda else "d2h")
        if not non_blocking:
            mode._sync("h2d" if to_cuda else "d2h")
        if out is src:
            out = src.clone()
    _tag(out, to_cuda)
    return out


def _to(mode: FakeCuda, func, args, kwargs):
    src, rest = args[0], args[1:]
    other = next((a for a in rest if isinstance(a, torch.Tensor)), kwargs.get("other"))
    if isinstance(other, torch.Tensor):
        target = is_fake_cuda(other)
        new_rest, new_kwargs = rest, kwargs
    else:
        new_rest, new_kwargs, target = _cpu_device_args(rest, kwargs)
    out = func(src, *new_rest, **new_kwargs)
    to_cuda = is_fake_cuda(src) if target is None else bool(target)
    return _move(mode, src, out, to_cuda, bool(kwargs.get("non_blocking", False)))


def _cuda(mode: FakeCuda, func, args, kwargs):
    return _move(mode, args[0], args[0], True, bool(kwargs.get("non_blocking", False)))


def _cpu(mode: FakeCuda, func, args, kwargs):
    return _move(mode, args[0], func(*args, **kwargs), False, False)


def _numpy(mode: FakeCuda, func, args, kwargs):
    if is_fake_cuda(args[0]):
        mode._violation(f"{_name(func)} of a CUDA tensor (call .cpu() first)")
    return func(*args, **kwargs)


def _pin_memory(mode: FakeCuda, func, args, kwargs):
    return args[0]  # pinned host memory is a CPU tensor all the same; a CPU-only torch cannot pin


_SPECIAL = {
    _prop("device"): _get_device, _prop("is_cuda"): _get_is_cuda, _prop("is_cpu"): _get_is_cpu,
    _T.get_device: _get_device_index, _prop("grad"): _get_grad, ("__set__", "data"): _set_data,
    _T.to: _to, _T.cuda: _cuda, _T.cpu: _cpu, _T.numpy: _numpy, _T.__array__: _numpy,
    _T.pin_memory: _pin_memory,
}


# -- torch.cuda, torch.Generator and Triton, patched for the duration of the mode ---------------


class _GeneratorMeta(type(torch._C.Generator)):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, torch._C.Generator)  # every generator is still a torch.Generator


class _FakeGenerator(torch._C.Generator, metaclass=_GeneratorMeta):
    """``torch.Generator`` inside the mode: ``device="cuda"`` makes a CPU generator tagged as CUDA."""

    def __new__(cls, device: Any = "cpu") -> _FakeGenerator:
        on_cuda = bool(_device_is_cuda(device))
        self = super().__new__(cls, device=_CPU if on_cuda else device)
        setattr(self, _TAG, on_cuda)
        return self

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return _CUDA if getattr(self, _TAG, False) else torch._C.Generator.device.__get__(self)


class _DeviceGuard:
    """``torch.cuda.device(...)`` inside the mode: accepts any device, switches nothing (one GPU)."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def _cuda_patches(mode: FakeCuda) -> dict[str, Any]:
    props = types.SimpleNamespace(name="fake NVIDIA H200 (CPU)", multi_processor_count=FAKE_SM_COUNT,
                                  total_memory=141 * 2**30, major=9, minor=0)
    return {
        "is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
        "get_device_properties": lambda device=None: props, "get_device_capability": lambda device=None: (9, 0),
        "get_device_name": lambda device=None: props.name, "device": _DeviceGuard,
        "synchronize": lambda device=None: mode._sync("synchronize"), "is_bf16_supported": lambda *a, **k: True,
        "is_current_stream_capturing": lambda: False, "empty_cache": lambda: None,
        "memory_allocated": lambda device=None: 0, "max_memory_allocated": lambda device=None: 0,
        "reset_peak_memory_stats": lambda device=None: None, "manual_seed": lambda seed: None,
        "manual_seed_all": lambda seed: None,
        "mem_get_info": lambda device=None: (props.total_memory - 2 * 2**30, props.total_memory),
    }


def _patch_triton(mode: FakeCuda, stack: contextlib.ExitStack) -> None:
    """Launch interpreted Triton kernels with the mode paused; check that every tensor is on CUDA."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except Exception:  # noqa: BLE001 - no Triton: nothing to patch
        return

    def compiled_run(self, *args, **kwargs):
        # A compiled kernel would read CPU pointers as device addresses: refuse, clearly.
        raise FakeDeviceError(f"Triton kernel {self.__name__} is compiled, not interpreted: fake_cuda runs Triton "
                              "only when TRITON_INTERPRET=1 was set before the kernels were imported")

    stack.enter_context(_patched(JITFunction, "run", compiled_run))
    original = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        for t in _tensors(args, _tensors(kwargs, [])):
            if not is_fake_cuda(t):
                mode._violation(f"Triton kernel {self.__name__} launched with a CPU tensor of shape {tuple(t.shape)}")
        with mode.paused():
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = run
    stack.callback(setattr, InterpretedFunction, "run", original)


def _patch_custom_ops(mode: FakeCuda, stack: contextlib.ExitStack) -> None:
    """Run the bodies of mnemonix's ``torch.library`` custom ops under the mode.

    The dispatcher reaches a custom op's Python body from inside the mode's ``__torch_function__``,
    where the mode is popped: tensors there would report the CPU and allocations go untagged.
    Each body is wrapped to push the mode again, so what it allocates, launches and reads is
    tagged, checked and counted as anywhere else (the dispatcher, autograd included, is unchanged).
    Untagged tensor arguments of a call with tagged ones (gradients made by autograd in C++) are
    tagged: a real call has all its tensors on one device.
    """
    from torch._library.custom_ops import OPDEFS

    def under_mode(fn):
        def body(*args, **kwargs):
            tensors = _tensors(args, _tensors(kwargs, []))
            if any(is_fake_cuda(t) for t in tensors):
                # one device per call (the dispatcher's rule): gradients autograd made in C++
                # for a backward op are on the device of the tensors saved with them
                for t in tensors:
                    _tag(t)
            if mode in torch.overrides._get_current_function_mode_stack():
                return fn(*args, **kwargs)
            with mode:
                return fn(*args, **kwargs)
        return body

    for name, opdef in list(OPDEFS.items()):
        if name.startswith("mnemonix::"):
            for device_type, fn in list(opdef._backend_fns.items()):
                stack.callback(opdef._backend_fns.__setitem__, device_type, fn)
                opdef._backend_fns[device_type] = under_mode(fn)


@contextlib.contextmanager
def fake_cuda(*, strict: bool = True) -> Iterator[FakeCuda]:
    """Run a block as if on a one-GPU machine whose "CUDA" tensors really live on the CPU.

    Parameters
    ----------
    strict : bool
        Raise :class:`FakeDeviceError` at the first violation (and on exit if one was swallowed);
        False only records them in ``fc.violations``.

    Yields
    ------
    FakeCuda
        ``fc.syncs``, ``fc.sync_events``, ``fc.violations``, ``fc.reset()``, ``fc.describe()``.
    """
    mode = FakeCuda(strict=strict)
    with contextlib.ExitStack() as stack:
        for name, value in _cuda_patches(mode).items():
            stack.enter_context(_patched(torch.cuda, name, value))
        stack.enter_context(_patched(torch, "Generator", _FakeGenerator))
        _patch_triton(mode, stack)
        _patch_custom_ops(mode, stack)
        with mode:
            yield mode
    if strict and mode.violations:
        raise FakeDeviceError("device violations under fake_cuda:\n" + "\n".join(mode.violations))


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)
