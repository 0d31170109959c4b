"""hopfield_retrieve with per-sample stores: keys/values [..., N, d], padding and association masks,
tensor beta; every CPU backend against the reference, gradients (gradcheck in float64), errors,
and torch.compile."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemonix import ops, reference
from mnemonix.backends import hopfield_grad

TOL = {torch.float32: 2e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float64: 1e-10}


def draw_problem(g, *, lead, b, n, d, dv, key_lead, dtype=torch.float32, with_mask=True, assoc_kind="bool",
                 beta_kind="float"):
    """A random problem: queries [*lead, B, d], keys / values [*key_lead, N, .], masks, beta."""
    q = torch.randn(*lead, b, d, generator=g).to(dtype)
    k = torch.randn(*key_lead, n, d, generator=g).to(dtype)
    v = None if dv is None else torch.randn(*key_lead, n, dv, generator=g).to(dtype)
    mask = None
    if with_mask:
        mask = torch.rand(*key_lead, n, generator=g) < 0.7
        mask[..., 0] = True
    assoc = None
    if assoc_kind == "bool":
        assoc = torch.rand(b, n, generator=g) < 0.8
        assoc[:, -1] = True
        if mask is not None:
            assoc[:, 0] = True
    elif assoc_kind == "float":
        assoc = torch.randn(*lead[-1:], b, n, generator=g)
    beta = 0.5
    if beta_kind == "head":
        beta = torch.rand(lead[-1], generator=g) + 0.2 if lead else torch.tensor(0.7)
    elif beta_kind == "scalar":
        beta = torch.tensor(0.6)
    return q, k, v, mask, assoc, beta


def run(fn, q, k, v, mask, assoc, beta, **kw):
    return fn(q, k, v, beta=beta, mask=mask, association_mask=assoc, return_lse=True, **kw)


def assert_matches(got, want, dtype):
    tol = TOL[dtype]
    for x, y in zip(got, want):
        scale = max(1.0, float(y.float().abs().max()))
        torch.testing.assert_close(x.float(), y.float(), atol=tol * scale, rtol=tol)


@settings(max_examples=30, deadline=None)
@given(
    lead=st.sampled_from([(), (3,), (2, 3), (2, 1, 2)]), b=st.integers(1, 9), n=st.integers(1, 300),
    d=st.integers(1, 24), dv=st.one_of(st.none(), st.integers(1, 12)), share=st.sampled_from(["all", "head", "none"]),
    assoc_kind=st.sampled_from([None, "bool", "float"]), beta_kind=st.sampled_from(["float", "head", "scalar"]),
    backend=st.sampled_from(["torch", "cpp", "sdpa", "gemm"]), seed=st.integers(0, 2**31 - 1),
)
def test_grouped_backends_match_reference(lead, b, n, d, dv, share, assoc_kind, beta_kind, backend, seed):
    g = torch.Generator().manual_seed(seed)
    key_lead = {"all": (), "head": lead[:-1] + (1,) if lead else (), "none": lead}[share]
    q, k, v, mask, assoc, beta = draw_problem(g, lead=lead, b=b, n=n, d=d, dv=dv, key_lead=key_lead,
                                              assoc_kind=assoc_kind, beta_kind=beta_kind)
    if backend == "cpp" and assoc is not None and assoc.shape[-2] > 1 and b > 1:
        backend = "torch"  # the C++ kernel takes no per-query association mask (tested below)
    if backend == "sdpa" and v is not None and v.shape[-1] != d:
        v = torch.randn(*v.shape[:-1], d, generator=g)
    want = run(reference.hopfield_retrieve, q, k, v, mask, assoc, beta)
    try:
        got = run(ops.hopfield_retrieve, q, k, v, mask, assoc, beta, backend=backend)
    except ValueError as err:  # a capability the backend declares it lacks
        assert backend in ("cpp", "sdpa", "gemm") and "no backend supports" in str(err)
        got = run(ops.hopfield_retrieve, q, k, v, mask, assoc, beta, backend="torch")
    assert got[0].shape == want[0].shape and got[1].shape == want[1].shape
    assert_matches(got, want, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_grouped_half_precision(dtype, rng):
    q, k, v, mask, assoc, beta = draw_problem(rng, lead=(2, 3), b=5, n=257, d=16, dv=8, key_lead=(2, 1),
                                              dtype=dtype, beta_kind="head")
    want = run(reference.hopfield_retrieve, q, k, v, mask, assoc, beta)
    got = run(ops.hopfield_retrieve, q, k, v, mask, assoc, beta)
    assert got[0].dtype == dtype
    assert_matches(got, want, dtype)


def test_cpp_loops_over_groups_and_refuses_per_query_masks(rng):
    q, k, v, mask, _, beta = draw_problem(rng, lead=(2, 3), b=2, n=100, d=8, dv=None, key_lead=(2, 3))
    want = reference.hopfield_retrieve(q, k, beta=0.5, mask=mask, return_argmax=True)
    got = ops.hopfield_retrieve(q, k, beta=0.5, mask=mask, return_argmax=True, backend="cpp")
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    assert (got[1] == want[1]).all()
    with pytest.raises(ValueError, match="association mask"):
        ops.hopfield_retrieve(q, k, beta=0.5, association_mask=torch.ones(2, 100, dtype=torch.bool), backend="cpp")


def _gradcheck(backend, *, lead, key_lead, dv, assoc_kind, beta_kind, update_steps=0, bias=True, lse=True):
    g = torch.Generator().manual_seed(7)
    q, k, v, mask, assoc, beta = draw_problem(g, lead=lead, b=3, n=11, d=4, dv=dv, key_lead=key_lead,
                                              dtype=torch.float64, assoc_kind=assoc_kind, beta_kind=beta_kind)
    assoc = None if assoc is None else (assoc if assoc.dtype == torch.bool else assoc.double())
    b_t = torch.randn(*key_lead, 11, generator=g, dtype=torch.float64) if bias else None
    beta = beta.double().requires_grad_(True) if isinstance(beta, torch.Tensor) else beta
    leaves = [t.requires_grad_(True) for t in (q, k, v, b_t) if t is not None]
    extra = [beta] if isinstance(beta, torch.Tensor) else []

    def fn(*tensors):
        it = iter(tensors)
        q_, k_ = next(it), next(it)
        v_ = next(it) if v is not None else None
        b_ = next(it) if b_t is not None else None
        beta_ = next(it) if extra else beta
        out = ops.hopfield_retrieve(q_, k_, v_, beta=beta_, mask=mask, bias=b_, association_mask=assoc,
                                    update_steps=update_steps, return_lse=lse, backend=backend)
        return out

    assert torch.autograd.gradcheck(fn, (*leaves, *extra), fast_mode=True)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_gradcheck_float64(backend):
    """Every backward that runs in float64: values, per-head beta, bias, both masks, the lse."""
    _gradcheck(backend, lead=(2, 2), key_lead=(2, 1), dv=3, assoc_kind="bool", beta_kind="head")
    _gradcheck(backend, lead=(2,), key_lead=(), dv=None, assoc_kind="float", beta_kind="scalar")
    _gradcheck(backend, lead=(2,), key_lead=(), dv=None, assoc_kind=None, beta_kind="float", update_steps=2,
               bias=False)


def test_gradcheck_float64_sdpa_pairing():
    """The flash kernel's forward with its own fused backward (no bias / lse gradient: declared)."""
    _gradcheck("sdpa", lead=(2, 2), key_lead=(2, 2), dv=4, assoc_kind="bool", beta_kind="head", bias=False,
               lse=False)
    with pytest.raises(ValueError, match="log-sum-exp"):
        _gradcheck("sdpa", lead=(2,), key_lead=(2,), dv=4, assoc_kind=None, beta_kind="float", bias=False)


def test_streaming_backward_chunks_over_groups(rng, monkeypatch):
    """Many chunks, shared and per-sample operands: the chunked backward equals autograd of the reference."""
    monkeypatch.setattr(hopfield_grad, "CHUNK_ELEMENTS", 16)
    q, k, v, mask, assoc, beta = draw_problem(rng, lead=(2, 3), b=4, n=150, d=6, dv=5, key_lead=(2, 1),
                                              assoc_kind="float", beta_kind="head")
    bias = torch.randn(3, 150, generator=rng)

    def grads(fn, **kw):
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v, beta, bias)]
        out, lse = fn(*leaves[:3], beta=leaves[3], bias=leaves[4], mask=mask, association_mask=assoc,
                      return_lse=True, **kw)
        (out.square().sum() + lse.sin().sum()).backward()
        return [t.grad for t in leaves]

    for x, y in zip(grads(ops.hopfield_retrieve, backend="torch"), grads(reference.hopfield_retrieve)):
        torch.testing.assert_close(x, y, atol=1e-4 * max(1.0, float(y.abs().max())), rtol=1e-4)


def test_compile_fullgraph_traces_the_custom_op(rng):
    """torch.compile(fullgraph=True) through the op and its backward, per-sample keys, learnable beta."""
    lin = torch.nn.Linear(8, 8)
    beta = torch.nn.Parameter(torch.tensor([0.5, 0.8]))
    keys = torch.randn(3, 1, 40, 8, generator=rng, requires_grad=True)
    mask = torch.rand(3, 1, 40, generator=rng) < 0.8
    mask[..., 0] = True
    x = torch.randn(3, 2, 4, 8, generator=rng)

    def model(x, keys):
        return ops.hopfield_retrieve(lin(x), keys, beta=beta, mask=mask, update_steps=0).square().sum()

    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss = compiled(x, keys)
    loss.backward()
    grads = [lin.weight.grad.clone(), beta.grad.clone(), keys.grad.clone()]
    for t in (lin.weight, beta, keys):
        t.grad = None
    eager = model(x, keys)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    for got, want in zip(grads, [lin.weight.grad, beta.grad, keys.grad]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(keys=torch.randn(4, 1, 10, 4)), ValueError, "keys"),          # more leading dims than the queries
        (dict(keys=torch.randn(3, 10, 4)), ValueError, "keys"),             # heads 3 vs 2
        (dict(values=torch.randn(2, 9, 4)), ValueError, "values"),
        (dict(values=torch.randn(5, 10, 4)), ValueError, "values"),
        (dict(mask=torch.ones(5, 10, dtype=torch.bool)), ValueError, "mask"),
        (dict(mask=torch.ones(2, 11, dtype=torch.bool)), ValueError, "mask"),
        (dict(bias=torch.zeros(3, 10)), ValueError, "bias"),
        (dict(association_mask=torch.ones(4, 10, dtype=torch.bool)), ValueError, "association_mask"),
        (dict(association_mask=torch.ones(3, 9, dtype=torch.bool)), ValueError, "association_mask"),
        (dict(association_mask=torch.ones(3, 3, 10, dtype=torch.bool)), ValueError, "association_mask"),
        (dict(association_mask=torch.ones(3, 10, dtype=torch.int32)), TypeError, "association_mask"),
        (dict(association_mask=torch.full((3, 10), float("nan"))), ValueError, "association_mask"),
        (dict(association_mask=torch.zeros(3, 10, requires_grad=True)), ValueError, "association_mask"),
        (dict(association_mask=torch.zeros(3, 10, dtype=torch.bool)), ValueError, "association_mask"),
        (dict(beta=torch.tensor([1.0, 2.0, 3.0])), ValueError, "beta"),
        (dict(beta=torch.tensor([1.0, -2.0])), ValueError, "beta"),
        (dict(beta=torch.tensor([1, 2])), TypeError, "beta"),
        (dict(mask=torch.zeros(2, 10, dtype=torch.bool)), ValueError, "mask"),
    ],
)
def test_grouped_argument_errors_name_the_argument(kwargs, exc, name):
    args = dict(queries=torch.randn(2, 3, 4), keys=torch.randn(2, 10, 4), values=None, beta=1.0)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        ops.hopfield_retrieve(args.pop("queries"), args.pop("keys"), args.pop("values"), **args)


def test_shared_keys_are_not_copied_per_group(rng):
    """keys shared by the heads of a sample stay one tensor: the op's canonical keys are a view."""
    from mnemonix.ops import _hopfield_args

    q = torch.randn(2, 4, 3, 8, generator=rng)
    k = torch.randn(2, 1, 50, 8, generator=rng)
    p = _hopfield_args.prepare(q, k, None, beta=1.0, mask=None, bias=None, association_mask=None,
                               update_steps=0, eps=1e-4)
    assert p.keys.shape == (2, 1, 50, 8) and p.keys.data_ptr() == k.data_ptr()
    shared = _hopfield_args.prepare(q, k[0, 0], None, beta=1.0, mask=None, bias=None, association_mask=None,
                                    update_steps=0, eps=1e-4)
    assert shared.queries.shape == (1, 1, 24, 8)  # nothing varies by group: the groups fold into rows
