"""The fast path of :func:`mnemonix.ops.salience_topk`: a plain CPU call straight to the C++ recall.

The general path checks every argument with torch ops (each a few microseconds), builds the
inputs record, dispatches, and either runs the C++ recall or the float32 selection, the exact
re-rank and the outputs (~0.5 ms of small torch ops at tiny shapes). For the commonest call --
float32 CPU queries and keys, float32 payloads or None, the saliences as ``log_salience`` or
``(r0, tau, alpha, now)`` -- when the speed policy picks the C++ recall, all of that reduces to
attribute reads and one kernel call (``cpp``, or ``gemm``: torch's GEMM feeding the same C++
screen), whose value checks run inside it.

A pure shortcut, never a second semantics: :func:`cpu_fast_recall` returns None for anything it
does not recognise (another dtype, device, shape or argument kind, a tensor subclass, an input
that requires grad, a torch function or dispatch mode such as the fake CUDA device, a functorch
transform, ``torch.compile``) and the caller takes the general path. A failed value check returns
None as well, so that the general path runs the call again and raises its own error, naming the
argument. Results are the general path's bit for bit (the same exact kernels on the same
operands; tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mnemonix.backends import no_grad_wanted, no_mode, numpy_view, plain_cpu_tensor
from mnemonix.backends import salience_cpp as sc

_F32 = torch.float32
_F64 = torch.float64
_SALIENCE = frozenset({torch.float64, torch.float32})
_WHOLE = frozenset({"cpp", "gemm"})


def _vector(t: object, n: int, dtypes: frozenset[torch.dtype] | torch.dtype) -> bool:
    return plain_cpu_tensor(t, 1, dtypes) and t.shape[0] == n  # type: ignore[union-attr]


def _number(x: object, low: float) -> bool:
    """An int or float (not bool) that is a finite float >= ``low`` (10**400 is not)."""
    if type(x) is int:
        return abs(x) < 2**1000 and x >= low
    return type(x) is float and math.isfinite(x) and x >= low


def _salience_fits(n: int, log_salience: object, r0: object, tau: object, alpha: object, now: object) -> bool:
    """``log_salience`` [N] alone, or ``r0``, ``tau`` [N] with finite ``alpha >= 0`` and ``now``."""
    if log_salience is not None:
        return r0 is None and tau is None and alpha is None and now is None and _vector(log_salience, n, _SALIENCE)
    return (_vector(r0, n, _SALIENCE) and _vector(tau, n, _SALIENCE) and _number(alpha, 0.0)
            and _number(now, -math.inf))


def _operands_fit(queries: object, keys: object, payloads: object, k: object) -> bool:
    if not (plain_cpu_tensor(queries, 2, _F32) and plain_cpu_tensor(keys, 2, _F32)
            and (payloads is None or plain_cpu_tensor(payloads, 2, _F32))):
        return False
    (b, d), n = queries.shape, keys.shape[0]  # type: ignore[union-attr]
    if b == 0 or d == 0 or n == 0 or keys.shape[1] != d or type(k) is not int or not 1 <= k <= n:  # type: ignore[union-attr]
        return False  # empty or mismatched operands: the general path handles or refuses them
    return payloads is None or (payloads.shape[0] == n and payloads.shape[1] > 0)  # type: ignore[union-attr]


def _by_address(operands: tuple) -> bool:
    """Whether the C++ recall can take ``(queries, keys, payloads, log_salience, r0, tau, valid,
    key_norms)`` by address (``recall_at``, no numpy views: ~0.8 us each): every tensor given
    contiguous, the saliences given as float64 ``log_salience``, the norms float64."""
    queries, keys, payloads, log_s, r0, tau, valid, norms = operands
    if log_s is None or log_s.dtype is not _F64 or (norms is not None and norms.dtype is not _F64):
        return False
    return (queries.is_contiguous() and keys.is_contiguous() and log_s.is_contiguous()
            and (payloads is None or payloads.is_contiguous()) and (valid is None or valid.is_contiguous())
            and (norms is None or norms.is_contiguous()))


def cpu_fast_recall(queries: object, keys: object, payloads: object, k: object, log_salience: object, r0: object,
                    tau: object, alpha: object, now: object, valid: object, key_norms: object, backend: object,
                    check_inputs: object, exact: object, batch_invariant: object,
                    order: Callable[[int, int, int], list[str]]):
    """``(recall, indices, weights, scores)`` from the C++ recall, or None: take the general path.

    ``order(B, N, d)`` is the op's CPU speed policy (:func:`mnemonix.ops.salience.cpu_order`); its
    first backend runs (``"cpp"`` or ``"gemm"``: both whole C++ recalls), or a forced one of them.
    """
    if not no_mode():
        return None
    if backend is not None and (type(backend) is not str or backend not in _WHOLE):
        return None
    if type(exact) is not bool or type(batch_invariant) is not bool or type(check_inputs) not in (bool, type(None)):
        return None
    if not _operands_fit(queries, keys, payloads, k):
        return None
    n = keys.shape[0]  # type: ignore[union-attr]
    if not _salience_fits(n, log_salience, r0, tau, alpha, now):
        return None
    if (valid is not None and not _vector(valid, n, torch.bool)) or (
            key_norms is not None and not _vector(key_norms, n, _SALIENCE)):
        return None
    operands = (queries, keys, payloads, log_salience, r0, tau, valid, key_norms)
    if not no_grad_wanted(operands):  # type: ignore[arg-type]
        return None
    b, d = queries.shape  # type: ignore[union-attr]
    name = backend if backend is not None else order(b, n, d)[0]
    if name not in _WHOLE or sc.core_salience() is None:
        return None
    alpha = None if alpha is None else float(alpha)  # type: ignore[arg-type]
    try:
        if name == "cpp" and _by_address(operands):  # contiguous, saliences float64: buffers by address
            core = sc.core_salience()
            z = payloads
            return sc.results_of(core.recall_at(  # type: ignore[union-attr]
                queries.data_ptr(), b, d, keys.data_ptr(), n, 0 if z is None else z.data_ptr(),  # type: ignore
                0 if z is None else z.shape[1], log_salience.data_ptr(),  # type: ignore[union-attr]
                0 if valid is None else valid.data_ptr(), 0 if key_norms is None else key_norms.data_ptr(),  # type: ignore
                k, check_inputs is not False))
        if name == "cpp":  # straight to the kernel: it converts float32 saliences and norms to float64 itself
            views = (None if x is None else numpy_view(x) for x in operands)  # type: ignore[arg-type]
            q, c, z, ls, r, t, v, norms = views
            found = sc.core_salience().recall(q, c, z, ls, r, t, alpha, v, norms, k, check_inputs is not False)
            return sc.results_of(found)
        return sc.recall_gemm(queries, keys, payloads, k, log_s=log_salience, r0=r0, tau=tau,  # type: ignore[arg-type]
                              alpha=alpha, valid=valid, key_norms=key_norms, check=check_inputs is not False)
    except sc.ValueFault:
        return None  # the general path runs the call again and raises its error, naming the argument
