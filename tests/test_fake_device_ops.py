"""salience_topk, lifespan_step and hopfield_retrieve on the fake CUDA device: no device mix, host syncs within budget.

Under :func:`mnemonix.testing.fake_cuda` the ops take their CUDA paths (the Triton backends,
with the tiles the launchers pick for an H200, run in the interpreter) on CPU data. Each call
must leave no device violation and stay within its host-sync budget (docs/gpu.md), and its
results must equal the same call on the CPU. Error paths raise the CPU's errors.
"""

from __future__ import annotations

import pytest
import torch

from mnemonix import ops

SYNC_BUDGET = {
    # op (arguments): host syncs per call on CUDA, valid inputs. Also in docs/gpu.md.
    "lifespan_step": 1,  # the value checks, read together
    "lifespan_step(check_inputs=False)": 0,
    "compact_engrams": 1,  # the result's width
    "compact_engrams(width=...)": 0,
    "salience_topk": 1,  # value checks + which queries need the exact float64 redo, read together
    "salience_topk(check_inputs=False)": 1,  # the redo decision
    "salience_topk(check_inputs=False, exact=False)": 0,
    "log_salience": 1,  # r0 / tau value checks, read together
    "log_salience(check_inputs=False)": 0,
    "hopfield_retrieve": 1,  # the inputs' value checks + the result's finite flag, read together
    "hopfield_retrieve backward": 0,
}
REDO_EXTRA_SYNCS = 2  # a query that needs the float64 redo: its rows, and the payload re-check


def _state(gen, batch=3, length=70, reminded=9):
    lifespan = torch.randint(-2, 5, (batch, length), generator=gen).float()
    types = torch.randint(0, 4, (batch, length), generator=gen).to(torch.uint8)
    age = torch.randint(0, 20, (batch, length), generator=gen).int()
    indices = torch.randint(-1, length, (batch, reminded), generator=gen)
    delta = torch.randint(-1, 6, (batch, reminded), generator=gen).float()
    return lifespan, types, age, indices, delta


def _same(a, b):
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x.cpu(), y.cpu())


def test_lifespan_step_on_fake_cuda(fake_device, rng):
    state = _state(rng)
    want = ops.lifespan_step(*state, 4)
    cuda_state = [t.cuda() for t in state]
    for kwargs, budget in [({}, SYNC_BUDGET["lifespan_step"]),
                           ({"check_inputs": False}, SYNC_BUDGET["lifespan_step(check_inputs=False)"])]:
        fake_device.reset()
        got = ops.lifespan_step(*cuda_state, 4, **kwargs)
        assert fake_device.syncs == budget, fake_device.describe()
        assert all(t.is_cuda for t in got if t is not None)
        _same(want, got)
    fake_device.reset()
    packed = ops.compact_engrams(cuda_state[0], got)
    assert fake_device.syncs == SYNC_BUDGET["compact_engrams"], fake_device.describe()
    fake_device.reset()
    again = ops.compact_engrams(cuda_state[0], got, width=packed.shape[1], pad_front=False)
    assert fake_device.syncs == SYNC_BUDGET["compact_engrams(width=...)"], fake_device.describe()
    assert torch.equal(packed.cpu(), ops.compact_engrams(state[0], want))
    assert torch.equal(again.cpu(), ops.compact_engrams(state[0], want, pad_front=False))


def test_lifespan_errors_on_fake_cuda_are_the_cpu_errors(fake_device, rng):
    lifespan, types, age, indices, delta = (t.cuda() for t in _state(rng))
    bad_delta = delta.clone()
    bad_delta[0, 0] = float("nan")
    with pytest.raises(ValueError, match="delta must be finite"):
        ops.lifespan_step(lifespan, types, age, indices, bad_delta, 4)
    out_of_range = indices.abs() + 70
    with pytest.raises(ValueError, match="reminded_indices must be < 70"):
        ops.lifespan_step(lifespan, types, age, out_of_range, delta, 4)
    with pytest.raises(ValueError, match="types must hold engram codes 0..3"):
        ops.lifespan_step(lifespan, types.clone().fill_(9), age, indices, delta, 4)
    for value in ("nan", "-inf"):
        bad_lifespan = lifespan.clone()
        bad_lifespan[1, 3] = float(value)
        with pytest.raises(ValueError, match="lifespan must not hold NaN or -inf"):
            ops.lifespan_step(bad_lifespan, types, age, indices, delta, 4)
    # Unchecked, an out-of-range index is ignored like the -1 pad (never a wild write).
    got = ops.lifespan_step(lifespan, types, age, out_of_range, delta, 4, check_inputs=False)
    want = ops.lifespan_step(lifespan.cpu(), types.cpu(), age.cpu(), torch.full_like(indices.cpu(), -1),
                             delta.cpu(), 4)
    _same(want, got)


def _recall_inputs(gen, B, N, d, dtype, dz=3):
    q = torch.randn(B, d, generator=gen)
    c = torch.randn(N, d, generator=gen).to(dtype)
    z = torch.randn(N, dz, generator=gen)
    log_s = torch.randn(N, generator=gen, dtype=torch.float64)
    valid = torch.rand(N, generator=gen) > 0.25
    return q, c, z, log_s, valid


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_salience_topk_on_fake_cuda(fake_device, rng, dtype):
    q, c, z, log_s, valid = _recall_inputs(rng, 5, 150, 24, dtype)
    want = ops.salience_topk(q, c, z, k=4, log_salience=log_s, valid=valid)
    args = [t.cuda() for t in (q, c, z)]
    kw = dict(k=4, log_salience=log_s.cuda(), valid=valid.cuda())
    for extra, budget in [({}, "salience_topk"), ({"check_inputs": False}, "salience_topk(check_inputs=False)"),
                          ({"check_inputs": False, "exact": False}, "salience_topk(check_inputs=False, exact=False)")]:
        fake_device.reset()
        got = ops.salience_topk(*args, **kw, **extra)
        assert fake_device.syncs == SYNC_BUDGET[budget], fake_device.describe()
        assert all(t.is_cuda for t in got)
        # 16-bit keys go through tensor-core dots with a split fp32 query on the GPU path: the
        # scores differ from the CPU's in the last bits, the exact re-rank then agrees.
        assert torch.equal(got[1].cpu(), want[1])
        torch.testing.assert_close(got[2].cpu(), want[2])
        torch.testing.assert_close(got[0].cpu(), want[0], rtol=1e-5, atol=1e-6)


def test_salience_r0_tau_form_and_padding_on_fake_cuda(fake_device, rng):
    q, c, z, _, _ = _recall_inputs(rng, 3, 40, 8, torch.float32)
    r0, tau = torch.rand(40, generator=rng) + 0.1, torch.arange(40, dtype=torch.float64)
    valid = torch.zeros(40, dtype=torch.bool)
    valid[[3, 30]] = True  # fewer valid memories than k: the rest pads, with no data-dependent shape
    want = ops.salience_topk(q, c, z, k=5, r0=r0, tau=tau, alpha=0.1, now=50.0, valid=valid)
    moved = [t.cuda() for t in (q, c, z, r0, tau, valid)]
    fake_device.reset()
    got = ops.salience_topk(*moved[:3], k=5, r0=moved[3], tau=moved[4], alpha=0.1, now=50.0, valid=moved[5])
    assert fake_device.syncs == SYNC_BUDGET["salience_topk"], fake_device.describe()
    assert got[1].cpu().tolist() == want[1].tolist() and (got[1].cpu()[:, 2:] == -1).all()
    for x, y in zip(got, want):
        torch.testing.assert_close(x.cpu(), y)


def test_log_salience_on_fake_cuda(fake_device, rng):
    r0, tau = torch.rand(40, generator=rng, dtype=torch.float64) + 0.1, torch.arange(40, dtype=torch.float64)
    want = ops.log_salience(r0, tau, 0.1, 50.0)
    r0_cuda, tau_cuda = r0.cuda(), tau.cuda()
    for kwargs, budget in [({}, SYNC_BUDGET["log_salience"]),
                           ({"check_inputs": False}, SYNC_BUDGET["log_salience(check_inputs=False)"])]:
        fake_device.reset()
        got = ops.log_salience(r0_cuda, tau_cuda, 0.1, 50.0, **kwargs)
        assert fake_device.syncs == budget, fake_device.describe()
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="r0 must be > 0"):
        ops.log_salience(-r0.cuda(), tau.cuda(), 0.1, 50.0)
    with pytest.raises(ValueError, match="tau must be finite"):
        ops.log_salience(r0.cuda(), tau.cuda() * float("inf"), 0.1, 50.0)


def test_salience_exact_redo_costs_its_stated_syncs(fake_device, rng):
    """Saliences far below float32 range force the float64 redo: the one data-dependent branch."""
    q, c, z, _, _ = _recall_inputs(rng, 2, 30, 6, torch.float32)
    log_s = -torch.arange(30, dtype=torch.float64) * 500.0
    want = ops.salience_topk(q, c, z, k=3, log_salience=log_s)
    args = [t.cuda() for t in (q, c, z, log_s)]
    fake_device.reset()
    got = ops.salience_topk(*args[:3], k=3, log_salience=args[3])
    assert fake_device.syncs == SYNC_BUDGET["salience_topk"] + REDO_EXTRA_SYNCS, fake_device.describe()
    assert torch.equal(got[1].cpu(), want[1])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, inside the Triton interpreter, about the NaN
def test_salience_errors_on_fake_cuda_are_the_cpu_errors(fake_device, rng):
    q, c, z, log_s, _ = (t.cuda() for t in _recall_inputs(rng, 3, 60, 8, torch.float32))
    inf_log_s = log_s.index_fill(0, _i(3), float("inf"))
    cases = [
        ("queries must be finite", lambda: ops.salience_topk(q.index_fill(1, _i(0), float("nan")), c, z, k=2,
                                                              log_salience=log_s)),
        ("log_salience must be finite", lambda: ops.salience_topk(q, c, z, k=2, log_salience=inf_log_s)),
        ("r0 must be > 0", lambda: ops.salience_topk(q, c, z, k=2, r0=torch.zeros(60, device="cuda"),
                                                     tau=torch.zeros(60, device="cuda"), alpha=1.0, now=0.0)),
        ("keys must be finite", lambda: ops.salience_topk(q, c.index_fill(0, _i(7), float("nan")), z, k=2,
                                                          log_salience=log_s)),
        ("key_norms must be finite and >= 0", lambda: ops.salience_topk(q, c, z, k=2, log_salience=log_s,
                                                                        key_norms=-c.norm(dim=1))),
    ]
    for message, call in cases:
        with pytest.raises(ValueError, match=message):
            call()
    top = ops.salience_topk(q, c, z, k=2, log_salience=log_s)[1]
    bad_z = z.index_fill(0, top[0, :1], float("nan"))
    with pytest.raises(ValueError, match="payloads must be finite"):
        ops.salience_topk(q, c, bad_z, k=2, log_salience=log_s)


def _i(value: int) -> torch.Tensor:
    return torch.tensor([value], device="cuda")


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_batch_invariant_results_do_not_depend_on_the_batch(rng, triton_device, backend):
    """A query alone and inside a batch of 40: bitwise the same outputs with batch_invariant=True."""
    device = triton_device if backend == "triton" else torch.device("cpu")
    q, c, z, log_s, valid = (t.to(device) for t in _recall_inputs(rng, 40, 300, 24, torch.float32))
    kw = dict(k=5, log_salience=log_s, valid=valid, backend=backend, batch_invariant=True)
    batch = ops.salience_topk(q, c, z, **kw)
    for row in (0, 17, 39):
        alone = ops.salience_topk(q[row:row + 1], c, z, **kw)
        for x, y in zip(alone, batch):
            assert torch.equal(x[0], y[row]), (row, x[0], y[row])


@pytest.mark.parametrize("shared", [True, False])
def test_hopfield_retrieve_forward_and_backward_on_fake_cuda(fake_device, rng, shared):
    # per-sample keys with a padding mask and a learnable per-head beta, or one shared store:
    # the Triton forward and its FlashAttention-2 backward kernels, through the custom op
    heads = 2
    q = torch.randn(3, heads, 5, 12, generator=rng)
    k = torch.randn(30, 12, generator=rng) if shared else torch.randn(3, heads, 30, 12, generator=rng)
    v = torch.randn(*k.shape[:-1], 8, generator=rng)
    mask = None if shared else torch.rand(3, 1, 30, generator=rng) > 0.2
    beta = torch.full((heads,), 0.6)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, beta)]
    want = ops.hopfield_retrieve(*leaves[:3], beta=leaves[3], mask=mask, backend="torch")
    want.square().sum().backward()

    on_gpu = [t.cuda().requires_grad_() for t in (q, k, v, beta)]
    mask_gpu = None if mask is None else mask.cuda()
    fake_device.reset()
    got = ops.hopfield_retrieve(*on_gpu[:3], beta=on_gpu[3], mask=mask_gpu)
    assert fake_device.syncs == SYNC_BUDGET["hopfield_retrieve"], fake_device.describe()
    fake_device.reset()
    got.square().sum().backward()
    assert fake_device.syncs == SYNC_BUDGET["hopfield_retrieve backward"], fake_device.describe()
    assert got.is_cuda and all(t.grad.is_cuda for t in on_gpu)
    torch.testing.assert_close(got.detach().cpu(), want.detach(), atol=1e-5, rtol=1e-4)
    for mine, ref in zip(on_gpu, leaves):
        torch.testing.assert_close(mine.grad.cpu(), ref.grad, atol=1e-4, rtol=1e-3)


def test_hopfield_retrieve_errors_on_fake_cuda_are_the_cpu_errors(fake_device, rng):
    q, k = torch.randn(4, 6, generator=rng), torch.randn(9, 6, generator=rng)
    bad_q = q.clone()
    bad_q[1, 2] = float("nan")
    bad_k = k.clone()
    bad_k[3, 0] = float("inf")
    none_kept = torch.zeros(9, dtype=torch.bool)
    for args, kwargs, match in [((bad_q, k), {}, "queries must be finite"), ((q, bad_k), {}, "keys must be finite"),
                                ((q, k), {"mask": none_kept}, "mask must keep")]:
        with pytest.raises(ValueError, match=match):
            ops.hopfield_retrieve(*args, None, beta=1.0, **kwargs)
        on_gpu = {key: t.cuda() for key, t in kwargs.items()}
        with pytest.raises(ValueError, match=match):
            ops.hopfield_retrieve(*(t.cuda() for t in args), None, beta=1.0, **on_gpu)
