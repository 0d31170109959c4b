"""``hopfield_retrieve`` as a ``torch.library`` custom op with a registered backward.

One pass of the retrieval is the op ``mnemonix::hopfield_retrieve`` over the canonical layout
of :mod:`mnemonix.backends.hopfield_grad`; its backward is a second op,
``mnemonix::hopfield_retrieve_backward``, which runs the backward paired with the forward's
backend (:data:`mnemonix.backends.hopfield.BACKWARDS`). Both have fake (meta) versions, so
``torch.compile(..., fullgraph=True)`` traces a model through them without graph breaks, and
AOT autograd puts the fused backward into the backward graph.

Saved for backward: queries, keys, values, the two biases, ``out`` and ``lse``; nothing of size
[B, N]. The association bias is a constant (it gets no gradient). Double backward is not
supported. The schemas use ``typing.Optional`` (not ``X | None``): older torch versions infer
custom-op schemas from it only.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["retrieve"]


def _work(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _none() -> Tensor:
    return torch.empty(0)


@torch.library.custom_op("mnemonix::hopfield_retrieve", mutates_args=())
def _retrieve_op(queries: Tensor, keys: Tensor, values: Optional[Tensor], key_bias: Optional[Tensor],  # noqa: UP045
                 assoc: Optional[Tensor], beta: float, backend: str,  # noqa: UP045
                 want_argmax: bool, batch_invariant: bool, allow_tf32: bool) -> tuple[Tensor, Tensor, Tensor]:
    out, lse, arg = _run_backend(queries, keys, values, key_bias, assoc, beta, backend, want_argmax,
                                 batch_invariant, allow_tf32)
    if arg is None:  # custom ops return tensors
        arg = torch.empty(0, dtype=torch.int64, device=queries.device)
    return out, lse, arg


def _run_backend(queries, keys, values, key_bias, assoc, beta, backend, want_argmax, batch_invariant, allow_tf32):
    """The forward pass of one backend, contiguous results (the custom op's body, and the plain
    eager path that skips the op's dispatch)."""
    from mnemonix.backends import hopfield as hb

    out, lse, arg = hb.BY_NAME[backend].run(queries, keys, values, beta=beta, logit_bias=key_bias,
                                            want_argmax=want_argmax, assoc=assoc, batch_invariant=batch_invariant,
                                            allow_tf32=allow_tf32)
    return out.contiguous(), lse.contiguous(), (None if arg is None else arg.contiguous())


@_retrieve_op.register_fake
def _retrieve_fake(queries, keys, values, key_bias, assoc, beta, backend, want_argmax, batch_invariant, allow_tf32):
    work = _work(queries.dtype)
    dv = keys.shape[-1] if values is None else values.shape[-1]
    out = queries.new_empty((*queries.shape[:-1], dv), dtype=work)
    lse = queries.new_empty(queries.shape[:-1], dtype=work)
    arg = queries.new_empty(queries.shape[:-1] if want_argmax else (0,), dtype=torch.int64)
    return out, lse, arg


@torch.library.custom_op("mnemonix::hopfield_retrieve_backward", mutates_args=())
def _backward_op(d_out: Optional[Tensor], d_lse: Optional[Tensor], queries: Tensor, keys: Tensor,  # noqa: UP045
                 values: Optional[Tensor], key_bias: Optional[Tensor], assoc: Optional[Tensor],  # noqa: UP045
                 out: Tensor, lse: Tensor, beta: float, backend: str,
                 needs: list[bool], batch_invariant: bool, allow_tf32: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from mnemonix.backends import hopfield as hb

    grads = hb.BACKWARDS[backend](d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, beta=beta,
                                  needs=tuple(needs), batch_invariant=batch_invariant, allow_tf32=allow_tf32)
    # custom ops return tensors: an empty one stands for "no gradient"
    return tuple(torch.empty(0, device=queries.device) if g is None else _in_layout(g, t, backend)
                 for g, t in zip(grads, (queries, keys, values, key_bias)))


def _grad_layout(t: Tensor, backend: str) -> Tensor:
    """An empty gradient for ``t`` in the layout the backend writes (what the fake op promises):
    the flash kernel's backward follows its inputs' strides (so the gradient of a transposed
    per-head view of K or V is no copy); the other backwards write contiguous tensors."""
    return torch.empty_like(t) if backend == "sdpa" else t.new_empty(t.shape)


def _in_layout(grad: Tensor, t: Tensor, backend: str) -> Tensor:
    """``grad`` with exactly the strides the fake op promises: a view when only the strides of
    size-1 dimensions differ (the same memory order), a copy otherwise."""
    want = _grad_layout(torch.empty_like(t, device="meta"), backend).stride()  # no data moved
    if grad.stride() == want:
        return grad
    if all(a == b or size == 1 for a, b, size in zip(grad.stride(), want, grad.shape)):
        return grad.as_strided(grad.shape, want)
    fixed = torch.empty_strided(grad.shape, want, dtype=grad.dtype, device=grad.device)
    return fixed.copy_(grad)


@_backward_op.register_fake
def _backward_fake(d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, beta, backend, needs,
                   batch_invariant, allow_tf32):
    def like(t, want):
        return _grad_layout(t, backend) if want and t is not None else queries.new_empty((0,))

    return (like(queries, needs[0]), like(keys, needs[1]), like(values, needs[2]), like(key_bias, needs[3]))


def _setup_context(ctx, inputs, output):
    queries, keys, values, key_bias, assoc, beta, backend, _, batch_invariant, allow_tf32 = inputs
    out, lse, _ = output
    ctx.save_for_backward(queries, keys, values, key_bias, assoc, out, lse)
    ctx.beta, ctx.backend = beta, backend
    ctx.batch_invariant, ctx.allow_tf32 = batch_invariant, allow_tf32
    ctx.set_materialize_grads(False)  # an unused lse gives d_lse = None, not zeros


def _backward(ctx, d_out, d_lse, _d_arg):
    queries, keys, values, key_bias, assoc, out, lse = ctx.saved_tensors
    needs = [bool(x) for x in ctx.needs_input_grad[:4]]
    if ctx.needs_input_grad[4]:
        raise RuntimeError("hopfield_retrieve: the association mask gets no gradient")
    if d_out is None and d_lse is None:
        return (None,) * 10
    dq, dk, dv, db = torch.ops.mnemonix.hopfield_retrieve_backward(
        d_out, d_lse, queries, keys, values, key_bias, assoc, out, lse, ctx.beta, ctx.backend, needs,
        ctx.batch_invariant, ctx.allow_tf32)
    grads = [g if want else None for g, want in zip((dq, dk, dv, db), needs)]
    return (*grads, None, None, None, None, None, None)


_retrieve_op.register_autograd(_backward, setup_context=_setup_context)


def retrieve(queries: Tensor, keys: Tensor, values: Tensor | None, key_bias: Tensor | None, assoc: Tensor | None,
             *, beta: float, backend: str, want_argmax: bool, batch_invariant: bool = False,
             allow_tf32: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """One pass ``(out, lse, argmax | None)`` through the custom op (canonical layout).

    The ``reference`` backend is called directly: autograd differentiates its formula.
    """
    if backend == "reference":
        from mnemonix.backends import hopfield as hb

        return hb.run_reference(queries, keys, values, beta=beta, logit_bias=key_bias, want_argmax=want_argmax,
                                assoc=assoc)
    args = (queries, keys, values, key_bias, assoc, float(beta), backend, bool(want_argmax), bool(batch_invariant),
            bool(allow_tf32))
    # nothing to trace or differentiate: skip the custom op's dispatch (~10 us per call)
    out, lse, arg = _run_backend(*args) if plain_eager(args[:5]) else _retrieve_op(*args)
    return out, lse, (arg if want_argmax else None)


def plain_eager(operands: tuple[Tensor | None, ...]) -> bool:
    """True when calling the backend directly is exactly what the custom op would do: eager (not
    compiling or exporting), no gradient wanted, plain tensors, no dispatch mode or functorch
    transform (fake tensors, vmap, grad) active. Saves the custom op's dispatch (~10 us per call)."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    grad = torch.is_grad_enabled()
    for t in operands:
        if t is not None and (type(t) is not Tensor or (grad and t.requires_grad)):
            return False
    return _get_current_dispatch_mode() is None and torch._C._functorch.peek_interpreter_stack() is None
