"""The fast path of :func:`mnemonix.ops.hopfield_retrieve`: a plain CPU call straight to the C++ kernel.

The general path checks every argument, builds the canonical layout and an inputs record,
dispatches, and runs the custom op (~60-80 us of Python per call). For the commonest call --
``hopfield_retrieve(q [B, d], keys [N, d], values [N, dv] | None, beta=<float>)`` on CPU float32
tensors, nothing that needs a gradient, at a batch the speed policy sends to the C++ kernel --
all of that reduces to a few attribute reads and one kernel call, which is what this module does.

It is a pure shortcut, never a second semantics: :func:`cpu_fast_retrieve` returns None for
anything it does not recognise (another dtype, device, shape, layout or argument, a tensor
subclass, a torch function or dispatch mode such as the fake CUDA device, a functorch
transform, ``torch.compile``), and the caller then takes the general path. Results are the
general path's bit for bit (the same kernel on the same operands, tested). Its value checks are
the general path's too, folded into the kernel's call (``retrieve_checked``): the queries must be
finite (B x d elements, read before the kernel runs), and keys or values with a NaN/Inf show
in out or lse; a failure returns None as well, so that the general path recomputes the call
and raises its own error, naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mnemonix import _checks
from mnemonix.backends import hopfield as hb
from mnemonix.backends import numpy_view
from mnemonix.backends.hopfield_autograd import plain_eager

_F32 = torch.float32
_STRIDED = torch.strided


def _plain_f32_matrix(t: object) -> bool:
    """A 2-D float32 CPU tensor of the plain Tensor type and strided layout."""
    return (type(t) is Tensor and t.dim() == 2 and t.dtype is _F32 and t.is_cpu  # type: ignore[union-attr]
            and t.layout is _STRIDED)  # type: ignore[union-attr]


def _shapes_fit(queries: Tensor, keys: Tensor, values: Tensor | None) -> bool:
    b, d = queries.shape
    n, dk = keys.shape
    if b == 0 or n == 0 or d == 0 or dk != d:
        return False  # the general path handles (or refuses) empty and mismatched operands
    return values is None or (values.shape[0] == n and values.shape[1] > 0)


def cpu_fast_retrieve(queries: object, keys: object, values: object, beta: object, backend: object,
                      max_batch: Callable[[Tensor], int], want_lse: bool = False,
                      want_argmax: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None] | None:
    """``(out [B, dv], lse [B], argmax [B])`` from the kernel the policy picks, or None: take the
    general path.

    The policy's choice without a gradient: the C++ kernel up to ``max_batch(keys)`` queries,
    torch's flash kernel above (dv == d, no argmax). A forced ``"cpp"`` or ``"sdpa"`` takes that
    kernel at any batch. ``lse`` / ``argmax`` are None unless wanted.
    """
    if torch.compiler.is_compiling() or torch._C._is_torch_function_mode_enabled():
        return None
    if backend is not None and backend != "cpp" and backend != "sdpa":
        return None
    if type(beta) is not float and type(beta) is not int:
        return None  # bool, numpy scalars, tensors: the general path's checks
    if not (_plain_f32_matrix(queries) and _plain_f32_matrix(keys)
            and (values is None or _plain_f32_matrix(values))):
        return None
    q, k, v = queries, keys, values  # type: ignore[assignment]
    if not _shapes_fit(q, k, v) or not 0.0 < beta <= _checks.FLOAT32_MAX or not plain_eager((q, k, v)):
        return None  # (a NaN beta fails the comparison)
    if backend == "cpp" or (backend is None and q.shape[0] <= max_batch(k)):
        return _cpp(q, k, v, float(beta), want_lse, want_argmax)
    if want_argmax or (v is not None and v.shape[1] != k.shape[1]):
        return None  # the flash kernel has no argmax and needs dv == d: the general path's choice
    return _flash(q, k, v, float(beta), want_lse)


def _cpp(q: Tensor, k: Tensor, v: Tensor | None, beta: float, want_lse: bool, want_argmax: bool):
    core = hb._core_retrieval()
    if core is None:
        return None
    # the finite checks run in the kernel's call (queries before, out and lse after): None if any fails
    found = core.retrieve_checked(numpy_view(q), numpy_view(k), None if v is None else numpy_view(v), beta=beta)
    if found is None:
        return None
    out, lse, arg = found
    return (torch.from_numpy(out), torch.from_numpy(lse) if want_lse else None,
            torch.from_numpy(arg) if want_argmax else None)


def _flash(q: Tensor, k: Tensor, v: Tensor | None, beta: float, want_lse: bool):
    kernel = hb._sdpa_kernel()
    if kernel is None or not _checks.all_finite(q):
        return None
    k4 = k[None, None]
    out, lse = kernel(q[None, None], k4, k4 if v is None else v[None, None], 0.0, False, attn_mask=None, scale=beta)
    if not math.isfinite(float(lse.sum()) + float(out.sum())):
        return None  # a NaN/Inf in keys or values, or logits beyond float32: the general path says which
    return out[0, 0], lse[0, 0] if want_lse else None, None
