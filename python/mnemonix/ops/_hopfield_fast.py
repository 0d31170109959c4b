"""The fast path of :func:`mnemonix.ops.hopfield_retrieve`: a plain CPU call straight to the C++ kernel.

The general path checks every argument, builds the canonical layout and an inputs record,
dispatches, and runs the custom op (~60-80 us of Python per call). For the commonest call --
``hopfield_retrieve(q [B, d], keys [N, d], values [N, dv] | None, beta=<float>)`` on CPU float32
tensors (or contiguous float16 / bfloat16 ones, all of one dtype), nothing that needs a
gradient -- all of that reduces to a few attribute reads, the speed policy's choice and one
kernel call, which is what this module does.

It is a pure shortcut, never a second semantics: :func:`cpu_fast_retrieve` returns None for
anything it does not recognise (another dtype, device, shape, layout or argument, a tensor
subclass, a torch function or dispatch mode such as the fake CUDA device, a functorch
transform, ``torch.compile``), and the caller then takes the general path. Results are the
general path's bit for bit (the same kernel on the same operands, tested). Its value checks are
the general path's too (folded into the C++ kernel's call, ``retrieve_checked``, which also flags
non-finite logits; one ``_core.retrieval.all_finite`` call after the other kernels): every
operand must be finite, which shows in out or lse, or in the queries and (with values apart
from the keys) the keys read by that call; a failure returns None as well, so that the general
path recomputes the call and raises its own error, naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mnemonix import _checks
from mnemonix.backends import hopfield as hb
from mnemonix.backends import hopfield_amx, no_grad_wanted, no_mode, numpy_view

_F32 = torch.float32
_TENSOR = torch.Tensor
_STRIDED = torch.strided
# The element codes of the C++ kernel (retrieve_checked_at, flash_checked_at) by dtype: the backend's table
_CODES = hb._ELEMENT_CODES
_F32_ROW = torch.empty(0, dtype=torch.float32)  # new_empty of it: a float32 tensor, whatever the default dtype
_Order = Callable[[int, int, int, int, int | None], tuple[str, ...]]  # the speed policy's order of a shape


def _plain_matrix(t: object, dtype: object) -> bool:
    """:func:`mnemonix.backends.plain_cpu_tensor` (2-D, of ``dtype``), written out: the fast path
    runs it for every operand of every call."""
    return type(t) is _TENSOR and t.dtype is dtype and t.dim() == 2 and t.is_cpu and t.layout is _STRIDED


def defaults_only(mask: object, bias: object, association_mask: object, update_steps: object, eps: object,
                  batch_invariant: object, allow_tf32: object) -> bool:
    """True when the call's other arguments are their defaults (any valid ``eps``): the fast path's case."""
    return (mask is None and bias is None and association_mask is None and type(update_steps) is int
            and update_steps == 0 and batch_invariant is False and allow_tf32 is False and type(eps) is float
            and 0.0 < eps < math.inf)


def cpu_fast_retrieve(queries: object, keys: object, values: object, beta: object, backend: object,
                      order: _Order, want_lse: bool = False,
                      want_argmax: bool = False, half_order: _Order | None = None
                      ) -> tuple[Tensor, Tensor | None, Tensor | None] | None:
    """``(out [B, dv], lse [B], argmax [B])`` from the kernel the policy picks, or None: take the
    general path.

    ``order(B, N, d, itemsize, dv)`` is the speed policy's CPU order without a gradient
    (:func:`mnemonix.ops.hopfield.cpu_forward_order_at`); its first backend runs here (the C++
    kernel, the blocked GEMM path or torch's flash kernel), or a forced ``"cpp"``, ``"gemm"`` or
    ``"sdpa"``. ``half_order(B, N, d, code, dv)`` is its order for float16 / bfloat16 operands
    (:func:`mnemonix.ops.hopfield.cpu_half_order_at`; None: those take the general path).
    ``lse`` / ``argmax`` are None unless wanted.
    """
    if backend is not None and (type(backend) is not str or backend not in _KERNELS):
        return None  # another backend, or not a name: the general path (its error names the argument)
    if (type(beta) is not float and type(beta) is not int) or not 0.0 < beta <= _checks.FLOAT32_MAX:
        return None  # bool, numpy scalars, tensors, NaN (fails the comparison): the general path's checks
    dtype = getattr(queries, "dtype", None)
    code = _CODES.get(dtype) if type(dtype) is torch.dtype else None  # type: ignore[arg-type]
    if code is None or (code and half_order is None):
        return None  # another dtype (or 16-bit ones without their policy): the general path
    if not (_plain_matrix(queries, dtype) and _plain_matrix(keys, dtype)
            and (values is None or _plain_matrix(values, dtype))) or not no_mode():
        return None
    q, k, v = queries, keys, values  # type: ignore[assignment]
    (b, d), (n, dk) = q.shape, k.shape  # read once: after a kernel that evicted the caches each read costs ~1 us
    nv, dv = (n, d) if v is None else v.shape
    if b == 0 or n == 0 or d == 0 or dk != d or nv != n or dv == 0 or not no_grad_wanted((q, k, v)):
        return None  # the general path handles (or refuses) empty and mismatched operands
    if code:
        return _half(q, k, v, float(beta), (b, d, n, dv), backend, half_order, want_lse, want_argmax, code)
    name = backend if backend is not None else order(b, n, d, 4, None if v is None else dv)[0]
    if name == "cpp":
        return _cpp(q, k, v, float(beta), (b, d, n, dv), want_lse, want_argmax)
    if name == "gemm":
        return _gemm(q, k, v, float(beta), want_lse, want_argmax)
    if name != "sdpa" or want_argmax or dv != d:
        return None  # the flash kernel has no argmax and needs dv == d: the general path's choice
    return _flash(q, k, v, float(beta), (b, d, n, dv), want_lse)


def _half(q: Tensor, k: Tensor, v: Tensor | None, beta: float, dims: tuple[int, int, int, int], backend: str | None,
          order: _Order, want_lse: bool, want_argmax: bool, code: int):
    """Checked float16 / bfloat16 operands (element code ``code``): the C++ kernel reads the
    16-bit rows in place, or torch's flash kernel runs unsplit (its split merges float32 parts).
    out in the operands' dtype, lse float32. None: the general path."""
    if not (q.is_contiguous() and k.is_contiguous() and (v is None or v.is_contiguous())):
        return None  # strided 16-bit operands: the general path (contiguous copies for the C++ kernel)
    b, d, n, dv = dims
    name = backend if backend is not None else order(b, n, d, code, None if v is None else dv)[0]
    if name == "cpp":
        return _cpp(q, k, v, beta, dims, want_lse, want_argmax, code)
    if name == "amx":
        return None if want_argmax or code != 2 or not hopfield_amx.available() else _amx(q, k, v, beta, dims, want_lse)
    if name != "sdpa" or want_argmax or dv != d:
        return None
    parts = hb.flash_parts(q, k, v, b, n, dv, d) if hb.flash_splits_16_bit(q.dtype) else 0
    if parts:  # bfloat16 keys in parts fill the cores; the merge checks queries, out and lse
        out, lse, finite = hb.flash_split(q, k, v, beta, parts, want_lse, dims)
        if not finite or (v is not None and not hb._core_retrieval().all_finite_typed_at(code, k.data_ptr(), n * d)):
            return None
        return out, lse, None
    return _flash_unsplit(q, k, v, beta, dims, want_lse, code)


_KERNELS = frozenset({"cpp", "gemm", "sdpa", "amx"})


def _cpp(q: Tensor, k: Tensor, v: Tensor | None, beta: float, dims: tuple[int, int, int, int], want_lse: bool,
         want_argmax: bool, code: int = 0):
    """The C++ kernel; ``code``: the operands' element type (0 float32, 1 float16, 2 bfloat16,
    contiguous then), and out's; lse float32."""
    core = hb._core_retrieval()
    if core is None:
        return None
    if not code and not (q.is_contiguous() and k.is_contiguous() and (v is None or v.is_contiguous())):
        return _cpp_strided(core, q, k, v, beta, want_lse, want_argmax)
    # contiguous operands go by address (numpy views cost ~1 us each, several after a kernel that
    # evicted the caches); the finite checks run in the call (queries before, out and lse after)
    b, d, n, dv = dims
    out = q.new_empty(b, dv)  # q's dtype, not the default dtype; positional sizes: ~0.5 us less
    lse = (_F32_ROW.new_empty(b) if code else out.new_empty(b)) if want_lse else None  # float32
    arg = torch.empty((b,), dtype=torch.int64) if want_argmax else None
    if not core.retrieve_checked_at(q.data_ptr(), b, d, k.data_ptr(), n, 0 if v is None else v.data_ptr(), dv, beta,
                                    out.data_ptr(), 0 if lse is None else lse.data_ptr(),
                                    0 if arg is None else arg.data_ptr(), code):
        return None
    return out, lse, arg


def _amx(q: Tensor, k: Tensor, v: Tensor | None, beta: float, dims: tuple[int, int, int, int], want_lse: bool):
    """The AMX kernel on contiguous bfloat16 operands: out bfloat16, lse float32. A NaN or
    infinite logit (a NaN/Inf operand, logits past float32) shows as NaN in out and lse, which is
    all that is checked."""
    b, d, n, dv = dims
    out = q.new_empty(b, dv)
    lse = _F32_ROW.new_empty(b)
    hopfield_amx.retrieve_at(q, k, v, beta, out, lse)
    if not hb._core_retrieval().all_finite_typed_at(_CODES[out.dtype], out.data_ptr(), b * dv, _CODES[_F32],
                                                    lse.data_ptr(), b):
        return None
    return out, lse if want_lse else None, None


def _cpp_strided(core, q: Tensor, k: Tensor, v: Tensor | None, beta: float, want_lse: bool, want_argmax: bool):
    # numpy views: the binding makes strided operands contiguous, once
    found = core.retrieve_checked(numpy_view(q), numpy_view(k), None if v is None else numpy_view(v), beta=beta)
    if found is None:
        return None
    out, lse, arg = found
    return (torch.from_numpy(out), torch.from_numpy(lse) if want_lse else None,
            torch.from_numpy(arg) if want_argmax else None)


def _finite(*tensors: Tensor | None) -> bool:
    """No NaN/Inf in the tensors (None skipped): one C++ pass, or without the extension
    :func:`mnemonix._checks.all_finite` per tensor. Contiguous tensors go by address and length
    (``all_finite_at``): a numpy view costs ~2.3 us per tensor, and right after torch's flash
    kernel the three views and the call took ~21 us where the addresses take ~6 (N = 1e3,
    d = 1,024, B = 4)."""
    given = [t for t in tensors if t is not None]
    core = hb._core_retrieval()
    if core is None:
        return all(_checks.all_finite(t) for t in given)
    spans: list[int] = []
    for t in given:
        if not t.is_contiguous():
            return core.all_finite(*(numpy_view(t) for t in given))
        spans += (t.data_ptr(), t.numel())
    return core.all_finite_at(*spans)


def _gemm(q: Tensor, k: Tensor, v: Tensor | None, beta: float, want_lse: bool, want_argmax: bool):
    out, lse, arg = hb.gemm_rows(q, k, k if v is None else v, beta, want_lse=want_lse, want_argmax=want_argmax)
    # the queries are not read: a NaN/Inf query makes a NaN or infinite logit against every key,
    # which the softmax turns into a NaN row of out. The keys are, when the values are apart: a
    # key whose logits are all -inf gets weight 0 and shows nowhere else
    if not _finite(None if v is None else k, out, lse):
        return None  # a NaN/Inf in queries, keys or values, or logits beyond float32: the general path says which
    return out, lse, arg


def _flash(q: Tensor, k: Tensor, v: Tensor | None, beta: float, dims: tuple[int, int, int, int], want_lse: bool):
    kernel = hb._SDPA_KERNEL
    if kernel is None:
        return None
    b, d, n, dv = dims
    parts = hb.flash_parts(q, k, v, b, n, dv, d)
    if parts:  # the keys in parts fill the cores; the merge checks queries, out and lse
        out, lse, finite = hb.flash_split(q, k, v, beta, parts, want_lse, dims)
        if not finite or (v is not None and not _finite(k)):
            return None
        return out, lse, None
    return _flash_unsplit(q, k, v, beta, dims, want_lse, 0)


def _flash_unsplit(q: Tensor, k: Tensor, v: Tensor | None, beta: float, dims: tuple[int, int, int, int],
                   want_lse: bool, code: int):
    """torch's flash kernel as is, on operands of element code ``code`` (lse float32)."""
    kernel = hb._SDPA_KERNEL
    if kernel is None:
        return None
    b, d, n, dv = dims
    core = hb._core_retrieval()
    if core is None:
        return None
    k4 = k.view(1, 1, n, d)
    out, lse = kernel(q.view(1, 1, b, d), k4, k4 if v is None else v.view(1, 1, n, dv), 0.0, False, attn_mask=None,
                      scale=beta)
    # the queries are read too (the flash kernel turns a NaN query into out = 0, lse = 0), and the
    # keys when the values are apart (a key with NaN or -inf logits gets weight 0 there); a row of
    # out = 0 and lse = 0 may be a query without a finite logit (logits past float32's range)
    if not core.flash_checked_at(code, out.data_ptr(), lse.data_ptr(), b, dv, q.data_ptr(), b * d,
                                 0 if v is None else k.data_ptr(), 0 if v is None else n * d):
        return None  # a NaN/Inf in queries, keys or values, or logits beyond float32: the general path says which
    return out.view(b, dv), lse.view(b) if want_lse else None, None
