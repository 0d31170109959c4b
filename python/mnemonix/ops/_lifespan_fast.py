"""The fast path of :func:`mnemonix.ops.lifespan_step`: a plain CPU call straight to the C++ step.

The general path checks every argument with :mod:`mnemonix._checks`, casts ``delta``, builds an
inputs record, dispatches, and unpacks the C++ step's nested results (~19 us of Python per call at
tiny shapes). For the commonest call -- CPU tensors of the exact dtypes (lifespan float32, types
uint8, age int32 or None, reminded_indices int64 or int32, delta float32), 2-D, contiguous, of
matching shapes, the C++ step chosen or forced -- all of that reduces to five ``Tensor.numpy()``,
one call of the step's lean entry (``_core.lifespan.step_or_none``: positional arguments, flat
results) and six ``torch.from_numpy`` (~8 us), which is what this module does.

The recognition is split where each part is cheapest: here the arguments, the plain Tensor type and
the absence of any mode; ``Tensor.numpy()`` refuses (TypeError / RuntimeError) what has no CPU data
of a numpy dtype or would need a conversion (another device, meta, a sparse or other layout, a
tensor that requires grad, a negative or conjugate bit); ``step_or_none`` takes the arrays only when
they are exactly the step's (dtype, 2-D, C-contiguous, matching shapes), with a few C-level reads.

It is a pure shortcut, never a second semantics: :func:`cpu_fast_step` returns None for anything it
does not recognise (another dtype, device, rank, layout, shape or argument, non-contiguous data, a
tensor that requires grad, a tensor subclass, a torch function or dispatch mode such as the fake
CUDA device, a functorch transform, ``torch.compile``), and the caller then takes the general path.
Results are the general path's bit for bit: the same C++ kernel on the same arrays (tested). The
value checks are the kernel's own, run in the same call as in the general path; when one fails the
kernel's results are dropped and this returns None, so that the general path runs the call again
and raises its own error, word for word.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mnemonix._types import ENGRAM_LONGTERM, ENGRAM_SHORTTERM, ENGRAM_WORKING, LifespanResult
from mnemonix.backends import lifespan as lb
from mnemonix.backends import no_mode

_from_numpy = torch.from_numpy
_result = LifespanResult._make


def cpu_fast_step(lifespan: object, types: object, age: object, reminded_indices: object, delta: object,
                  stm_capacity: object, backend: object, check_inputs: object) -> LifespanResult | None:
    """The C++ step's :class:`LifespanResult` for a plain CPU call, or None: take the general path.

    Parameters
    ----------
    lifespan, types, age, reminded_indices, delta, stm_capacity, backend, check_inputs
        The arguments of :func:`mnemonix.ops.lifespan_step`, as the caller passed them.

    Returns
    -------
    LifespanResult or None
        The general path's results bit for bit; None for any call this does not recognise, and
        for a call whose values fail a check (the general path then raises the error).
    """
    if backend is not None and (type(backend) is not str or backend != "cpp"):
        return None
    if check_inputs is not None and check_inputs is not True and check_inputs is not False:
        return None  # not a flag: the general path's TypeError
    if type(stm_capacity) is not int or stm_capacity < 0:
        return None
    if (type(lifespan) is not Tensor or type(types) is not Tensor or (age is not None and type(age) is not Tensor)
            or type(reminded_indices) is not Tensor or type(delta) is not Tensor or not no_mode()):
        return None
    core = lb.core_lifespan()
    if core is None:
        return None
    try:  # CPU data, strided, no grad, no conjugate or negative bit, a dtype numpy has
        arrays = (lifespan.numpy(), types.numpy(), None if age is None else age.numpy(),  # type: ignore[union-attr]
                  reminded_indices.numpy(), delta.numpy())  # type: ignore[union-attr]
    except (TypeError, RuntimeError):
        return None
    # None when the arrays are not exactly the step's (dtypes, 2-D, C-contiguous, shapes) or a value check fails
    found = core.step_or_none(*arrays, min(stm_capacity, lb.CAPACITY_CAP), ENGRAM_WORKING, ENGRAM_SHORTTERM,
                              ENGRAM_LONGTERM, check_inputs is not False)
    if found is None:
        return None
    new_life, new_types, new_age, keep, rank, kept = found
    return _result((_from_numpy(new_life), _from_numpy(new_types), None if new_age is None else _from_numpy(new_age),
                    _from_numpy(keep), _from_numpy(rank), _from_numpy(kept)))
