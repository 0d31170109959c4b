"""Argument checks shared by the public boundary (ops, model constructors, load).

Every check raises ValueError or TypeError whose message names the argument,
what was expected and what was given. Checks never modify their inputs.

Tensors on the ``meta`` device (shape and dtype, no data) are refused by :func:`tensor`
unless the caller says otherwise: every public entry reads values, and a meta tensor would
otherwise fail deep inside with "Tensor.item() cannot be called on meta tensors".
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: The largest float32: a scale applied to float32 data (an inverse temperature) must not exceed it.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def tensor(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    min_ndim: int | None = None,
    dtypes: Sequence[torch.dtype] | None = FLOAT_DTYPES,
    meta_ok: bool = False,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of the given rank and dtype; return it unchanged.

    ``meta_ok=False`` (the default) refuses a tensor on the meta device (it holds no values).
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_meta and not meta_ok:
        raise ValueError(f"{name} is on the meta device (it holds no data); pass a tensor with values")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions, got shape {tuple(value.shape)}"
        )
    if dtypes is not None and value.dtype not in dtypes:
        raise TypeError(
            f"{name} must have dtype in {[str(d) for d in dtypes]}, got {value.dtype}"
        )
    return value


def nonfinite_flag(value: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor on ``value``'s device: True when ``value`` holds NaN or Inf. No host sync.

    One ``aminmax``: NaN propagates into both ends and an infinity shows at one of them, so
    the two extremes are finite exactly when every element is; nothing of the input's size is
    allocated.
    """
    if not value.is_floating_point() or value.numel() == 0:
        return torch.zeros((), dtype=torch.bool, device=value.device)
    low, high = torch.aminmax(value.detach())
    return ~(torch.isfinite(low) & torch.isfinite(high))


# Up to this many elements a host-side check first tries one float64 sum (one small kernel
# instead of aminmax + two isfinite + two logical ops: the per-call cost of tiny inputs); beyond,
# the sum's cast would cost more than aminmax reads.
SMALL_CHECK_NUMEL = 4096


def all_finite(value: torch.Tensor) -> bool:
    """True when a tensor holds no NaN/Inf (one host read).

    Small tensors first: a finite float64 sum proves every element finite (NaN or an infinity
    makes the sum NaN or infinite, and finite float16/bfloat16/float32 values cannot overflow a
    float64 sum); a non-finite sum -- a real NaN/Inf, or float64 values whose sum overflows --
    falls back to the exact :func:`nonfinite_flag`.
    """
    if value.numel() <= SMALL_CHECK_NUMEL and value.is_floating_point() and value.device.type == "cpu" \
            and math.isfinite(float(value.detach().sum(dtype=torch.float64))):
        return True
    return not bool(nonfinite_flag(value))


class NonFiniteError(ValueError):
    """``argument`` holds NaN or Inf. A ValueError; the attribute lets a caller that passed the
    argument under another name (a model calling an op) rename it without parsing the message."""

    def __init__(self, argument: str) -> None:
        super().__init__(f"{argument} must be finite, got NaN or Inf values")
        self.argument = argument


def finite(name: str, value: torch.Tensor) -> None:
    """Raise, naming the argument, if ``value`` holds NaN or Inf (see :func:`nonfinite_flag`)."""
    if not all_finite(value):
        raise NonFiniteError(name)


def data_checks_enabled(check_inputs: object, device: torch.device) -> bool:
    """Resolve an op's ``check_inputs`` argument (None, True or False) for inputs on ``device``.

    None (the default) checks, except while a CUDA graph is being captured: a capture cannot
    read device data on the host, so the value checks are skipped there (shape, dtype and
    device checks always run). True insists, and raises during a capture.
    """
    if check_inputs is not None and not isinstance(check_inputs, bool):
        raise TypeError(f"check_inputs must be None, True or False, got {type(check_inputs).__name__}")
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if capturing and check_inputs:
        raise ValueError("check_inputs=True reads data on the host, which a CUDA graph capture cannot do; "
                         "pass check_inputs=None or False while capturing")
    return (not capturing) if check_inputs is None else check_inputs


class DataChecks:
    """Checks of tensor *values* at an op's boundary (NaN/Inf, signs, index ranges).

    On the CPU each check raises at once, as it is met. On CUDA each check is a 0-dim bool
    tensor computed on the device, and :meth:`flush` reads all of them -- plus any flags
    the op itself needs on the host -- in one device-to-host copy: one host sync per call
    instead of one per check. Either way the first failed check (in the order they were
    made) raises, before the op returns a result, and a failed call changes no state.
    """

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.enabled = enabled
        self.deferred = device.type == "cuda"
        self._pending: list[tuple[torch.Tensor, type[Exception], object]] = []

    def require_not(self, bad: torch.Tensor, message: object, error: type[Exception] = ValueError) -> None:
        """Fail when the 0-dim bool tensor ``bad`` is True; ``message`` is a str or a callable giving one."""
        if not self.enabled:
            return
        if self.deferred:
            self._pending.append((bad, error, message))
        elif bool(bad):
            raise error(message() if callable(message) else message)

    def finite(self, name: str, value: torch.Tensor) -> None:
        """``value`` holds no NaN/Inf (the message names the argument)."""
        if not self.enabled:
            return
        if self.deferred:
            self.require_not(nonfinite_flag(value), name, NonFiniteError)  # raised as NonFiniteError(name)
        elif not all_finite(value):
            raise NonFiniteError(name)

    def flush(self, *flags: torch.Tensor) -> list[bool]:
        """Raise the first failed pending check; return ``flags`` (0-dim tensors) as Python bools.

        On CUDA this is the one host sync of the call (none when nothing is pending and no
        flag is asked for).
        """
        pending, self._pending = self._pending, []
        tensors = [bad for bad, _, _ in pending] + list(flags)
        if not tensors:
            return []
        if self.deferred:
            values = torch.stack([t.reshape(()).to(torch.bool) for t in tensors]).tolist()
        else:
            values = [bool(t) for t in tensors]
        for (_, error, message), failed in zip(pending, values):
            if failed:
                raise error(message() if callable(message) else message)
        return values[len(pending):]


def same_device(named: dict[str, torch.Tensor | None]) -> torch.device:
    """All given tensors (None entries skipped) live on one device; return it.

    A value that is not a tensor is a TypeError naming it (callers may check devices before
    they check each optional argument's kind).
    """
    first_name, first, mismatch = "", None, None
    for key, value in named.items():  # one pass; a wrong type is reported before a wrong device
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{key} must be a torch.Tensor or None, got {type(value).__name__}")
        dev = value.device
        if first is None:
            first_name, first = key, dev
        elif mismatch is None and dev != first:
            mismatch = (key, dev)
    if mismatch is not None:
        raise ValueError(f"{mismatch[0]} is on {mismatch[1]} but {first_name} is on {first}: "
                         "all inputs must share one device")
    if first is None:
        raise ValueError("same_device needs at least one tensor, got none")
    return first


def _shown(value: object) -> str:
    """``repr(value)`` for a message, shortened (an int such as 10**400 has 401 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:18]}...{text[-18:]} ({len(text)} characters)"


def _real(name: str, value: object) -> float:
    """A real number (int or float, not a bool) as a float; an int beyond float64 becomes +-inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float64 (e.g. -10**400)
        return math.inf if value > 0 else -math.inf


def positive_float(name: str, value: object, *, maximum: float | None = None) -> float:
    """A finite float > 0 (e.g. beta), and <= ``maximum`` when given.

    ``maximum=FLOAT32_MAX`` for a factor that scales float32 data (the message then says so).
    """
    out = _real(name, value)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {_shown(value)}")
    if maximum is not None and out > maximum:
        why = " (float32's range: it scales float32 values)" if maximum == FLOAT32_MAX else ""
        raise ValueError(f"{name} must be <= {maximum:.4g}{why}, got {_shown(value)}")
    return out


def nonneg_float(name: str, value: object) -> float:
    """A finite float >= 0 (e.g. a decay rate)."""
    out = _real(name, value)
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {_shown(value)}")
    return out


def finite_float(name: str, value: object) -> float:
    """A finite float of any sign (e.g. a time)."""
    out = _real(name, value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {_shown(value)}")
    return out


def nonneg_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def flag(name: str, value: object) -> bool:
    """A bool (``True`` / ``False``; 0, 1, None and strings are refused: a flag is one or the other)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def choice(name: str, value: object, options: Sequence[str], *, none_ok: bool = False) -> str | None:
    """One of the strings ``options`` (or None when ``none_ok``)."""
    if value is None and none_ok:
        return None
    if not isinstance(value, str):
        none = " or None" if none_ok else ""
        raise TypeError(f"{name} must be one of {list(options)}{none}, got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def path(name: str, value: object) -> str:
    """A file-system path (str or os.PathLike of str), non-empty and without NUL; returned as str."""
    from mnemonix._io import checked_path  # torch-free module: the CLI imports it before torch

    return str(checked_path(value, name))


def device(name: str, value: object) -> torch.device:
    """A device that exists here and holds data: a ``torch.device``, a str such as ``"cuda:0"``
    or a CUDA index. ``meta``, unknown names, and CUDA (or another accelerator) that this machine
    lacks are ValueErrors; other types TypeErrors."""
    if isinstance(value, bool) or not isinstance(value, (str, torch.device, numbers.Integral)):
        raise TypeError(f"{name} must be a torch.device, str or int, got {type(value).__name__}")
    try:
        out = torch.device(int(value) if isinstance(value, numbers.Integral) else value)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{name} is not a device: {value!r} ({exc})") from None
    if out.type == "meta":
        raise ValueError(f"{name} must hold data, got the meta device")
    if out.type == "cpu":
        return out
    module = getattr(torch, out.type, None)
    available = torch.backends.mps.is_available if out.type == "mps" else getattr(module, "is_available", None)
    if available is None or not available():
        raise ValueError(f"{name}={value!r} but {out.type.upper()} is not available on this machine")
    count = getattr(module, "device_count", None)
    if out.index is not None and count is not None and out.index >= count():
        raise ValueError(f"{name}={value!r} but this machine has {count()} {out.type} device(s)")
    return out


_ALLOCATION_WORDS = ("allocate", "overflow", "out of memory", "numel", "too large")


@contextlib.contextmanager
def building(sizes: str) -> Iterator[None]:
    """Run a constructor's allocations; ``sizes`` names the arguments they depend on
    (e.g. ``"capacity=10, key_dim=3"``).

    A failed allocation (sizes beyond int64 or beyond this machine's memory) becomes a
    ValueError naming those arguments instead of torch's allocator error, and the global CPU
    RNG that a failed build consumed (weight initialisation) is restored: a failed
    constructor changes no state.
    """
    rng = torch.random.get_rng_state()
    try:
        yield
    except BaseException as exc:
        torch.random.set_rng_state(rng)
        if isinstance(exc, (RuntimeError, TypeError, OverflowError, MemoryError)) and any(
                word in str(exc).lower() for word in _ALLOCATION_WORDS):
            why = "a size overflows int64" if "overflow" in str(exc).lower() else "out of memory"
            raise ValueError(f"{sizes}: the tensors are too large to allocate here ({why})") from None
        raise
