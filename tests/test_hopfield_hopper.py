"""hopfield_retrieve's Hopper options: launch on the tensors' device, batch-invariant results, TF32 opt-in.

CPU checks: the Triton kernels run in the interpreter (CPU tensors, or the fake CUDA device with the
tiles the launchers pick for an H200). The interpreter computes every ``tl.dot`` in float32
whatever its ``input_precision``; the TF32 tests emulate the tensor cores' rounding of the inputs
(10-bit mantissas) in the interpreter's dot, so they see whether ``allow_tf32`` reaches each dot
of the forward and backward kernels. The compiled PTX of both precisions is checked in
tests/test_kernels_compile.py, the register use in tests/test_kernels_spills.py.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from mnemonix import _triton, ops, reference

TF32_TOL = 2e-3  # 2^-11 relative per product, summed over d with float32 accumulation


def _kernels(name: str = "hopfield"):
    return _triton.load_kernels(name)


def _inputs(gen, B, N, d, dv=None, dtype=torch.float32):
    q = torch.randn(B, d, generator=gen).to(dtype)
    k = torch.randn(N, d, generator=gen).to(dtype)
    v = None if dv is None else torch.randn(N, dv, generator=gen).to(dtype)
    return q, k, v


# -- launch on the tensors' device ---------------------------------------------------------------

@contextlib.contextmanager
def _recorded_guards():
    """Replace ``torch.cuda.device`` (the fake device's guard) by one that records its device."""
    seen: list[torch.device] = []
    inner = torch.cuda.device

    class Recorder:
        def __init__(self, device):
            seen.append(torch.device(device))
            self.guard = inner(device)

        def __enter__(self):
            return self.guard.__enter__()

        def __exit__(self, *exc):
            return self.guard.__exit__(*exc)

    torch.cuda.device = Recorder
    try:
        yield seen
    finally:
        torch.cuda.device = inner


def test_forward_and_backward_launch_under_a_guard_of_the_inputs_device(fake_device, rng):
    q, k, v = _inputs(rng, 5, 70, 12, 8)
    leaves = [t.cuda().requires_grad_() for t in (q, k, v)]
    with _recorded_guards() as seen:
        out = ops.hopfield_retrieve(*leaves, beta=0.7, backend="triton")
        forward = list(seen)
        out.square().sum().backward()
    assert forward and all(dev == leaves[0].device for dev in forward)  # partial kernel + merge
    assert len(seen) > len(forward) and all(dev == leaves[0].device for dev in seen)  # dK/dV + dQ
    assert all(t.grad is not None and t.grad.is_cuda for t in leaves)


def test_the_device_guard_is_a_no_op_for_cpu_tensors():
    kh = _kernels()
    assert isinstance(kh.device_guard(torch.device("cpu")), contextlib.nullcontext)


# -- batch invariance ---------------------------------------------------------------------------

def test_batch_invariant_config_does_not_follow_the_batch():
    kh, kb = _kernels(), _kernels("hopfield_bwd")
    for d, dtype in ((16, torch.float16), (128, torch.float32), (256, torch.bfloat16), (12288, torch.float16)):
        cfgs = {kh.hopfield_config(b, d, d, dtype, interpret=False, batch_invariant=True) for b in (1, 64, 1024)}
        assert len(cfgs) == 1
        cfg = cfgs.pop()
        sizes = {kh.split_size(10**6, cfg, None, b, torch.device("cuda"), 1, True) for b in (1, 64, 1024)}
        assert len(sizes) == 1 and sizes.pop() % cfg.block_n == 0
        if kb.use_kernels(d, d, dtype, interpret=False):
            bcfg = kb.backward_config(d, d, dtype, "dq", interpret=False)
            assert len({kb.dq_split_size(p, 10**6, bcfg.block_n, torch.device("cuda"), True)
                        for p in (1, 4, 64)}) == 1
    # without it, the query tile and the split count follow B
    plain = {kh.hopfield_config(b, 64, 64, torch.float16, interpret=False).block_b for b in (1, 64, 1024)}
    assert len(plain) > 1


def _check_rows(call, q, rows):
    batch = call(q)
    for row in rows:
        alone = call(q[row:row + 1])
        for x, y in zip(alone, batch):
            assert torch.equal(x[0], y[row]), (row, x[0], y[row])


@contextlib.contextmanager
def _interpreter_dot(wrap):
    """The Triton interpreter's ``tl.dot`` replaced by ``wrap(original)`` inside the block."""
    from triton.runtime import interpreter as ti

    original = ti.InterpreterBuilder.create_dot
    ti.InterpreterBuilder.create_dot = wrap(original)
    try:
        yield
    finally:
        ti.InterpreterBuilder.create_dot = original


@contextlib.contextmanager
def _row_invariant_interpreter_dot():
    """Float32 ``tl.dot`` in the interpreter through numpy's own loops instead of its BLAS: some
    BLAS kernels (OpenBLAS' Haswell kernel, which a machine may force with OPENBLAS_CORETYPE)
    sum a row's products in an order that depends on the row's place in the tile, where the GPU's
    MMA does not; the batch-invariance tests are about our tiles and splits, not numpy's BLAS."""
    from triton.runtime import interpreter as ti

    counts = {"rowwise": 0}

    def wrap(original):
        def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
            if not (a.data.dtype == b.data.dtype == d.data.dtype == np.float32):
                return original(self, a, b, d, input_precision, max_num_imprecise_acc)
            counts["rowwise"] += 1
            product = np.einsum("...ij,...jk->...ik", a.data, b.data, optimize=False)
            return ti.TensorHandle(product + d.data, d.dtype.scalar)
        return create_dot

    with _interpreter_dot(wrap):
        yield counts


@pytest.mark.skipif(torch.cuda.is_available(), reason="patches the Triton interpreter")
def test_the_row_invariant_dot_replaces_the_interpreters_dot_and_agrees_with_it(rng):
    q, k, v = _inputs(rng, 40, 300, 16, 8)
    plain = ops.hopfield_retrieve(q, k, v, beta=0.3, backend="triton", batch_invariant=True)
    with _row_invariant_interpreter_dot() as counts:
        rowwise = ops.hopfield_retrieve(q, k, v, beta=0.3, backend="triton", batch_invariant=True)
    assert counts["rowwise"] > 0  # the kernel's dots went through it
    torch.testing.assert_close(rowwise, plain, rtol=1e-5, atol=1e-6)  # the same sums, another order


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("values", [False, True])
def test_batch_invariant_results_do_not_depend_on_the_batch(rng, triton_device, backend, values):
    """A query alone and inside a batch of 40: bitwise the same out, lse and argmax.

    N = 5000 > the batch-invariant split (4096): two splits and the merge take part.
    """
    device = triton_device if backend == "triton" else torch.device("cpu")
    q, k, v = (None if t is None else t.to(device) for t in _inputs(rng, 40, 5000, 16, 8 if values else None))
    bias = torch.randn(5000, generator=rng).to(device)

    def call(queries):
        return ops.hopfield_retrieve(queries, k, v, beta=0.3, bias=bias, backend=backend, batch_invariant=True,
                                     return_lse=True, return_argmax=True)

    with _row_invariant_interpreter_dot() if device.type == "cpu" else contextlib.nullcontext():
        _check_rows(call, q, (0, 17, 39))


def test_batch_invariant_on_the_fake_device_with_the_h200_tiles(fake_device, rng):
    q, k, v = (t.cuda() for t in _inputs(rng, 40, 300, 24, 8))

    def call(queries):
        return ops.hopfield_retrieve(queries, k, v, beta=0.5, batch_invariant=True, return_lse=True)

    fake_device.reset()
    batch = call(q)
    assert fake_device.syncs == 1, fake_device.describe()  # SYNC_BUDGET["hopfield_retrieve"]
    assert batch[0].is_cuda
    _check_rows(call, q, (0, 33))


def test_batch_invariant_dq_does_not_depend_on_the_batch(rng, triton_device):
    q, k = (t.to(triton_device) for t in _inputs(rng, 20, 300, 16)[:2])

    def grad_of(queries):
        leaf = queries.clone().requires_grad_()
        ops.hopfield_retrieve(leaf, k, beta=0.5, backend="triton", batch_invariant=True).sum().backward()
        return leaf.grad

    batch = grad_of(q)
    for row in (0, 19):
        assert torch.equal(grad_of(q[row:row + 1])[0], batch[row])


@pytest.mark.parametrize("backend", ["cpp", "sdpa", "reference"])
def test_backends_that_are_not_batch_invariant_say_so(rng, backend):
    q, k, _ = _inputs(rng, 3, 50, 8)
    with pytest.raises(ValueError, match="not batch-invariant"):
        ops.hopfield_retrieve(q, k, beta=1.0, backend=backend, batch_invariant=True)


def test_batch_invariant_auto_picks_an_invariant_backend_on_the_cpu(rng):
    q, k, _ = _inputs(rng, 2, 50, 8)
    want = ops.hopfield_retrieve(q, k, beta=1.0, backend="torch", batch_invariant=True)
    assert torch.equal(ops.hopfield_retrieve(q, k, beta=1.0, batch_invariant=True), want)


@pytest.mark.parametrize("name", ["batch_invariant", "allow_tf32"])
@pytest.mark.parametrize("bad", [1, None, "yes"])
def test_flags_must_be_bools(rng, name, bad):
    q, k, _ = _inputs(rng, 2, 10, 4)
    with pytest.raises(TypeError, match=name):
        ops.hopfield_retrieve(q, k, beta=1.0, **{name: bad})


# -- TF32 opt-in ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _tf32_interpreter():
    """Round float32 operands of ``tl.dot(..., input_precision="tf32")`` to 10-bit mantissas, as
    the tensor cores do (the interpreter itself ignores the precision); counts both kinds of dots."""
    from triton.runtime import interpreter as ti

    counts = {"tf32": 0, "ieee": 0}

    def wrap(original):
        def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
            if input_precision == ti._ir.INPUT_PRECISION.TF32 and a.data.dtype == np.float32:
                counts["tf32"] += 1
                a = ti.TensorHandle(ti._round_f32_to_tf32(a.data), a.dtype)
                b = ti.TensorHandle(ti._round_f32_to_tf32(b.data), b.dtype)
            else:
                counts["ieee"] += 1
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)
        return create_dot

    with _interpreter_dot(wrap):
        yield counts


def test_dot_precision_is_ieee_unless_asked_for_float32():
    kh = _kernels()
    assert kh.dot_precision(torch.float32, False) == "ieee"
    assert kh.dot_precision(torch.float32, True) == "tf32"
    assert kh.dot_precision(torch.bfloat16, True) == "ieee"  # 16-bit inputs: tensor cores already


@pytest.mark.skipif(torch.cuda.is_available(), reason="emulates TF32 in the interpreter")
def test_tf32_forward_and_backward_stay_within_tf32_tolerance(rng):
    q, k, v = _inputs(rng, 6, 200, 32, 16)
    q = q * 0.3
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    want = reference.hopfield_retrieve(*leaves, beta=1.0)
    want.square().sum().backward()
    grads = {}
    for allow in (False, True):
        mine = [t.clone().requires_grad_() for t in (q, k, v)]
        with _tf32_interpreter() as counts:
            out = ops.hopfield_retrieve(*mine, beta=1.0, backend="triton", allow_tf32=allow)
            out.square().sum().backward()
        assert counts["tf32" if allow else "ieee"] > 0 and counts["ieee" if allow else "tf32"] == 0, counts
        grads[allow] = (out.detach(), *(t.grad for t in mine))
        tol = TF32_TOL if allow else 2e-5
        torch.testing.assert_close(out.detach(), want.detach(), atol=tol, rtol=tol)
        for mine_g, ref in zip(grads[allow][1:], leaves):
            torch.testing.assert_close(mine_g, ref.grad, atol=5 * tol, rtol=5 * tol)
    assert not torch.equal(grads[True][0], grads[False][0])  # the rounding did reach the dots


def test_the_default_is_exact_ieee(rng):
    q, k, v = _inputs(rng, 5, 120, 16, 8)
    with _tf32_interpreter() as counts:
        default = ops.hopfield_retrieve(q, k, v, beta=0.8, backend="triton")
        explicit = ops.hopfield_retrieve(q, k, v, beta=0.8, backend="triton", allow_tf32=False)
        half = ops.hopfield_retrieve(q.half(), k.half(), v.half(), beta=0.8, backend="triton", allow_tf32=True)
    assert counts["tf32"] == 0
    assert torch.equal(default, explicit)
    torch.testing.assert_close(default, reference.hopfield_retrieve(q, k, v, beta=0.8), atol=2e-5, rtol=2e-5)
    assert half.dtype == torch.float16


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 12288])
def test_tf32_on_gpu(rng, d):
    q, k, v = (t.cuda() for t in _inputs(rng, 16, 4096, d, 64))
    q = q / d ** 0.5
    want = reference.hopfield_retrieve(q.double(), k.double(), v.double(), beta=1.0).float()
    exact = ops.hopfield_retrieve(q, k, v, beta=1.0)
    fast = ops.hopfield_retrieve(q, k, v, beta=1.0, allow_tf32=True)
    torch.testing.assert_close(exact, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast, want, atol=TF32_TOL * 4, rtol=TF32_TOL * 4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batch_invariant_on_gpu(rng, dtype):
    q, k, v = (t.cuda() for t in _inputs(rng, 300, 100_000, 128, 64, dtype))

    def call(queries):
        return ops.hopfield_retrieve(queries, k, v, beta=0.1, batch_invariant=True, return_lse=True,
                                     return_argmax=True)

    _check_rows(call, q, (0, 1, 150, 299))


def test_float32_heads_wider_than_64_take_the_streaming_backward_on_a_gpu():
    kb = _kernels("hopfield_bwd")
    assert kb.use_kernels(64, 64, torch.float32, interpret=False)
    assert not kb.use_kernels(128, 16, torch.float32, interpret=False)  # its dK/dV kernel spills on sm_90
    assert kb.use_kernels(128, 16, torch.float32, interpret=True)  # the interpreter still checks the kernels
    assert kb.use_kernels(256, 256, torch.bfloat16, interpret=False)
    assert not kb.use_kernels(512, 64, torch.float16, interpret=False)
