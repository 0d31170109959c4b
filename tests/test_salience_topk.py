"""salience_topk: every backend against the float64 reference on fresh random inputs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mnemonix import ops, reference
from mnemonix.backends import salience as sb

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
HAS_CUDA = torch.cuda.is_available()


def _on(device, *tensors):
    """Tensors moved to ``device`` (None stays None): forced Triton runs on ``triton_device``."""
    return tuple(None if t is None else t.to(device) for t in tensors)


def _cpu(out):
    return tuple(None if t is None else t.cpu() for t in out)


@pytest.fixture
def dev(request, triton_device):
    """The device of a backend-parametrized test's inputs: ``triton_device`` for Triton, else the CPU."""
    backend = request.getfixturevalue("backend")
    return triton_device if backend == "triton" else torch.device("cpu")


def _op(dev, q, c, z, **kw):
    """``ops.salience_topk`` on ``dev`` (tensor keyword arguments moved too), results on the CPU."""
    kw = {key: v.to(dev) if isinstance(v, torch.Tensor) else v for key, v in kw.items()}
    return _cpu(ops.salience_topk(*_on(dev, q, c, z), **kw))


def _inputs(rng, B, N, d, dtype, *, spread=3.0, masked=False, dz=4, device="cpu"):
    q = torch.randn(B, d, generator=rng).to(dtype)
    c = torch.randn(N, d, generator=rng).to(dtype)
    z = torch.randn(N, dz, generator=rng).to(dtype)
    log_s = torch.randn(N, generator=rng, dtype=torch.float64) * spread
    valid = None
    if masked:
        valid = torch.rand(N, generator=rng) > 0.3
        valid[int(torch.randint(N, (1,), generator=rng))] = True
    move = lambda t: None if t is None else t.to(device)
    return move(q), move(c), move(z), move(log_s), move(valid)


def _exact_scores(q, c, log_s, valid):
    """Full [B, N] float64 relative scores (cos * exp(log_s - shift)), -inf at invalid slots."""
    cos = reference._cosine64(q.cpu(), c.cpu())
    ls = log_s.cpu().double()
    shift = ls.max() if valid is None else ls[valid.cpu()].max()
    s = cos * torch.exp(ls - shift)
    if valid is not None:
        s[:, ~valid.cpu()] = float("-inf")
    return s


def assert_matches_reference(out, ref, q, c, z, log_s, valid, k, *, tol=2e-5):
    """Scores equal within tol; indices equal except among near-ties; recall consistent with the indices."""
    recall, idx, w, scores = out
    r_recall, r_idx, r_w, r_scores = ref
    assert idx.dtype == torch.int64 and idx.shape == r_idx.shape
    idx, w, scores = idx.cpu(), w.cpu(), scores.cpu()
    full = _exact_scores(q, c, log_s, valid)
    n_valid = full.shape[1] if valid is None else int(valid.sum())
    take = min(k, n_valid)
    assert (idx[:, take:] == -1).all() and (w[:, take:] == 0).all()
    assert torch.isneginf(scores[:, take:]).all()
    ours = torch.gather(full, 1, idx[:, :take])
    want = torch.gather(full, 1, r_idx[:, :take].cpu())
    assert torch.isfinite(ours).all(), "an invalid slot was selected"
    torch.testing.assert_close(ours, want, atol=tol, rtol=0)
    torch.testing.assert_close(scores[:, :take].double(), ours, atol=tol, rtol=1e-4)
    # Indices must agree wherever the reference's ranking is not a near-tie.
    ranked = torch.sort(full, dim=1, descending=True).values
    inf = torch.full((ranked.shape[0], 1), math.inf, dtype=ranked.dtype)
    gap_above = torch.cat([inf, ranked[:, :-1] - ranked[:, 1:]], dim=1)[:, :take]
    gap_below = torch.cat([ranked[:, :-1] - ranked[:, 1:], inf], dim=1)[:, :take]
    isolated = (gap_above > tol) & (gap_below > tol)
    assert torch.equal(idx[:, :take][isolated], r_idx[:, :take].cpu()[isolated])
    torch.testing.assert_close(w[:, :take].sum(1), torch.ones(idx.shape[0]), atol=1e-5, rtol=0)
    # Weights and recall are exact functions of the selected indices.
    sel_log_s = log_s.cpu().double()[idx[:, :take]]
    torch.testing.assert_close(w[:, :take].double(), torch.softmax(sel_log_s, 1), atol=1e-6, rtol=1e-5)
    if z is not None:
        expect = torch.einsum("bk,bkz->bz", torch.softmax(sel_log_s, 1), z.cpu().double()[idx[:, :take]])
        torch.testing.assert_close(recall.cpu().double(), expect, atol=1e-4, rtol=1e-4)
        if torch.equal(idx, r_idx.cpu()):
            torch.testing.assert_close(recall.cpu(), r_recall.cpu(), atol=1e-4, rtol=1e-4)
    else:
        assert recall is None


def _grid_torch():
    cases = []
    for N, d, kk, B, dtype in itertools.product([1, 5, 1000, 3000], [1, 3, 64, 130], ["1", "5", "N"], [1, 7, 64],
                                                 DTYPES):
        k = {"1": 1, "5": 5, "N": N}[kk]
        if k > N:
            continue
        cases.append((N, d, k, B, dtype))
    return cases


@pytest.mark.parametrize("N,d,k,B,dtype", _grid_torch())
def test_torch_backend_matches_reference(rng, N, d, k, B, dtype):
    masked = bool(torch.randint(2, (1,), generator=rng))
    q, c, z, log_s, valid = _inputs(rng, B, N, d, dtype, masked=masked)
    out = ops.salience_topk(q, c, z, k=k, log_salience=log_s, valid=valid, backend="torch")
    ref = reference.salience_topk(q, c, z, k=k, log_salience=log_s, valid=valid)
    assert_matches_reference(out, ref, q, c, z, log_s, valid, k)


@pytest.mark.parametrize("N,d,k,B,dtype", [case for case in _grid_torch() if case[-1] == torch.float32])
def test_cpp_backend_matches_reference(rng, N, d, k, B, dtype):
    """The exact C++ recall (float32 keys; queries and payloads of any float dtype)."""
    masked = bool(torch.randint(2, (1,), generator=rng))
    q, c, z, log_s, valid = _inputs(rng, B, N, d, dtype, masked=masked)
    q = q.to(DTYPES[int(torch.randint(3, (1,), generator=rng))])
    out = ops.salience_topk(q, c, z, k=k, log_salience=log_s, valid=valid, backend="cpp")
    ref = reference.salience_topk(q, c, z, k=k, log_salience=log_s, valid=valid)
    assert_matches_reference(out, ref, q, c, z, log_s, valid, k, tol=1e-9)
    assert torch.equal(out[1], ref[1])  # float64 scores: the definition's order but at ties within rounding


def _grid_triton():
    # The interpreter is slow: small N and B, every d, k in {1, 5, N}.
    cases = []
    for N, d, kk, B, dtype in itertools.product([1, 5, 300], [1, 3, 64, 130], ["1", "5", "N"], [1, 7], DTYPES):
        k = {"1": 1, "5": 5, "N": N}[kk]
        too_slow = N == 300 and (d == 130 or dtype != torch.float32 or B == 7)
        if k > N or k + sb.CANDIDATE_EXTRA > sb.TRITON_MAX_K or too_slow:
            continue
        cases.append((N, d, k, B, dtype))
    return cases


@pytest.mark.parametrize("N,d,k,B,dtype", _grid_triton())
def test_triton_backend_matches_reference(rng, triton_device, N, d, k, B, dtype):
    masked = bool(torch.randint(2, (1,), generator=rng))
    q, c, z, log_s, valid = _inputs(rng, B, N, d, dtype, masked=masked)
    out = ops.salience_topk(*_on(triton_device, q, c, z), k=k, log_salience=log_s.to(triton_device),
                            valid=None if valid is None else valid.to(triton_device), backend="triton")
    ref = reference.salience_topk(q, c, z, k=k, log_salience=log_s, valid=valid)
    assert_matches_reference(out, ref, q, c, z, log_s, valid, k)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_triton_split_merge_is_exact(rng, triton_device, num_splits):
    """Partial lists from several N-splits merge into the exact top-k (ties to the lower index)."""
    N, d, B, k = 200, 16, 5, 7
    q, c, z, log_s, valid = _inputs(rng, B, N, d, torch.float32, masked=True)
    c[150:170] = c[10]  # equal keys spread over splits, most salient of all: every top score ties
    log_s[10] = log_s.max() + 5.0
    log_s[150:170] = log_s[10]
    q[0] = c[10]
    shift = sb.shift_of(log_s, valid)
    vals, idx, keys_bad = sb.triton_topk(*_on(triton_device, q, c, log_s, shift, valid), k, num_splits=num_splits)
    vals, idx = vals.cpu(), idx.cpu()
    assert not bool(keys_bad)
    vals_t, idx_t, _ = sb.torch_topk(q, c, log_s, shift, valid, k, chunk=13)
    ref_idx = reference.salience_topk(q, c, None, k=k, log_salience=log_s, valid=valid)[1]
    tied = [i for i in [10, *range(150, 170)] if bool(valid[i])]
    assert idx[0].tolist() == tied[:k] == ref_idx[0].tolist()
    torch.testing.assert_close(vals, vals_t, atol=1e-6, rtol=1e-6)
    assert torch.equal(idx, idx_t)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,B,k", [(100_000, 64, 5), (50_000, 1, 64), (3000, 7, 3000)])
def test_gpu_backends_match_reference(rng, dtype, N, B, k):
    q, c, z, log_s, valid = _inputs(rng, B, N, 128, dtype, masked=True, device="cuda")
    ref = reference.salience_topk(q, c, z, k=k, log_salience=log_s, valid=valid)
    tol = 2e-5 if dtype == torch.float32 else 2e-2  # 16-bit tensor-core dot rounds the unit queries
    for backend in ("triton", "torch"):
        if backend == "triton" and k + sb.CANDIDATE_EXTRA > sb.TRITON_MAX_K:
            continue
        out = ops.salience_topk(q, c, z, k=k, log_salience=log_s, valid=valid, backend=backend)
        assert_matches_reference(out, ref, q, c, z, log_s, valid, k, tol=tol)


# -- log-space salience ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
def test_underflow_alpha_dt_10000(rng, backend, dev):
    """alpha * (now - tau) = 10,000: float32 r0 * exp(...) is 0 for every memory, the result is still right."""
    N, d, B, k = 40, 8, 3, 5
    q, c, z, _, _ = _inputs(rng, B, N, d, torch.float32)
    r0 = torch.rand(N, generator=rng) + 0.1
    tau = torch.zeros(N, dtype=torch.float64)
    tau[::3] = 2.0  # stored later: more salient
    alpha, now = 1.0, 10_000.0
    assert (r0 * torch.exp(torch.tensor(-alpha * now, dtype=torch.float32))).eq(0).all()
    out = _op(dev, q, c, z, k=k, r0=r0, tau=tau, alpha=alpha, now=now, backend=backend)
    log_s = reference.salience_log(r0, tau, alpha, now)
    assert float(log_s.max()) < -9990
    ref = reference.salience_topk(q, c, z, k=k, log_salience=log_s)
    assert_matches_reference(out, ref, q, c, z, log_s, None, k)
    assert out[0].abs().sum() > 0  # the notebook's recall would be exactly 0 here
    # Same ranking and weights as at now = 0: exp(-alpha * now) is a common factor.
    at_zero = _op(dev, q, c, z, k=k, r0=r0, tau=tau, alpha=alpha, now=0.0, backend=backend)
    assert torch.equal(out[1], at_zero[1])
    torch.testing.assert_close(out[2], at_zero[2])


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
def test_extreme_spread_uses_exact_order(rng, backend, dev):
    """Relative saliences far below float32 range: order still follows cos * s exactly (sign, then log size)."""
    N, d, B = 30, 6, 4
    q, c, z, _, _ = _inputs(rng, B, N, d, torch.float32)
    log_s = -torch.arange(N, dtype=torch.float64) * 500.0  # ratios exp(-500 m)
    for k in (1, 5, N):
        out = _op(dev, q, c, z, k=k, log_salience=log_s, backend=backend)
        ref = reference.salience_topk(q, c, z, k=k, log_salience=log_s)
        assert torch.equal(out[1], ref[1])
        torch.testing.assert_close(out[2], ref[2])
        torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)
    # Positive-cos memories all rank before any negative one; among negatives the least salient first.
    cos = reference._cosine64(q, c)
    order = ref[1]
    signs = torch.sign(torch.gather(cos, 1, order))
    assert (signs[:, 1:] <= signs[:, :-1]).all()
    for b in range(B):
        neg = order[b][signs[b] < 0]
        assert torch.equal(neg, torch.sort(neg, descending=True).values)


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
def test_ties_go_to_lower_index(backend, dev):
    N, d = 50, 4
    keys = torch.ones(N, d)
    q = torch.ones(2, d)
    q[1] = -1.0  # all cosines -1: every score ties too
    log_s = torch.zeros(N, dtype=torch.float64)
    _, idx, w, scores = _op(dev, q, keys, None, k=5, log_salience=log_s, backend=backend)
    assert idx.tolist() == [[0, 1, 2, 3, 4]] * 2
    torch.testing.assert_close(w, torch.full((2, 5), 0.2))
    # A tie broken in favour of a later memory only by salience.
    log_s[7] = 1e-3
    _, idx, _, _ = _op(dev, q, keys, None, k=3, log_salience=log_s, backend=backend)
    assert idx[0].tolist() == [7, 0, 1] and idx[1].tolist() == [0, 1, 2]


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
@pytest.mark.parametrize("d", [3, 64, 130])
def test_duplicate_random_keys_tie_exactly(rng, backend, dev, d):
    """Equal keys at scattered positions: equal scores, lower index first, whatever the rounding."""
    N, k = 120, 6
    keys = torch.randn(N, d, generator=rng)
    copies = [3, 17, 18, 40, 41, 42, 77, 99]
    keys[copies] = keys[60].clone()
    log_s = torch.randn(N, generator=rng, dtype=torch.float64) * 0.01
    log_s[copies + [60]] = 5.0  # the most salient: the copies fill the top
    q = torch.cat([keys[60:61] + 0.01 * torch.randn(1, d, generator=rng), torch.randn(2, d, generator=rng)])
    out = _op(dev, q, keys, None, k=k, log_salience=log_s, backend=backend)
    ref = reference.salience_topk(q, keys, None, k=k, log_salience=log_s)
    assert out[1][0].tolist() == [3, 17, 18, 40, 41, 42] == ref[1][0].tolist()
    assert torch.equal(out[1], ref[1])


def test_torch_chunk_boundary_ties():
    """Equal float32 scores straddling chunk edges and the k-th position: the lowest indices."""
    N, d, k = 100, 4, 6
    keys = torch.randn(N, d).abs() + 2.0
    keys[[3, 17, 18, 40, 41, 42, 99]] = torch.ones(d)  # integer data: every copy scores exactly 1
    keys[60] = torch.ones(d)
    q = torch.ones(1, d)
    log_s = torch.zeros(N, dtype=torch.float64)
    for chunk in (7, 16, 100):
        _, idx, _ = sb.torch_topk(q, keys, log_s, 0.0, None, k, chunk=chunk)
        assert idx[0].tolist() == [3, 17, 18, 40, 41, 42]


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
def test_zero_norm_query_and_key(backend, dev):
    keys = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    log_s = torch.zeros(4, dtype=torch.float64)
    _, idx, _, scores = _op(dev, q, keys, None, k=4, log_salience=log_s, backend=backend)
    # cos(q0) = [1, 0 (zero key), -1, 0]: 0, then the zeros by index, then -1.
    assert idx[0].tolist() == [0, 1, 3, 2]
    assert scores[0].tolist() == [1.0, 0.0, 0.0, -1.0]
    # zero query: every cos is 0 -> all tie -> index order.
    assert idx[1].tolist() == [0, 1, 2, 3]
    assert scores[1].abs().sum() == 0


# -- masks, padding, arguments ------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
def test_fewer_valid_than_k_pads(rng, backend, dev):
    q, c, z, log_s, _ = _inputs(rng, 3, 10, 4, torch.float32)
    valid = torch.zeros(10, dtype=torch.bool)
    valid[[2, 7]] = True
    recall, idx, w, scores = _op(dev, q, c, z, k=4, log_salience=log_s, valid=valid, backend=backend)
    assert (idx[:, 2:] == -1).all() and set(idx[:, :2].flatten().tolist()) <= {2, 7}
    assert (w[:, 2:] == 0).all() and torch.isneginf(scores[:, 2:]).all()
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    none_valid = torch.zeros(10, dtype=torch.bool)
    recall, idx, w, scores = _op(dev, q, c, z, k=3, log_salience=log_s, valid=none_valid, backend=backend)
    assert (idx == -1).all() and (recall == 0).all() and (w == 0).all()


def test_k_equals_n_and_no_payloads(rng):
    q, c, _, log_s, _ = _inputs(rng, 2, 9, 3, torch.float32)
    recall, idx, w, _ = ops.salience_topk(q, c, None, k=9, log_salience=log_s)
    assert recall is None and sorted(idx[0].tolist()) == list(range(9))


def test_r0_tau_form_equals_log_form(rng):
    q, c, z, _, _ = _inputs(rng, 4, 50, 8, torch.float32)
    r0 = torch.rand(50, generator=rng) * 3 + 0.01
    tau = torch.rand(50, generator=rng, dtype=torch.float64) * 100 + 1.8e9  # unix-like times in float64
    a = ops.salience_topk(q, c, z, k=5, r0=r0, tau=tau, alpha=0.05, now=1.8e9 + 120)
    b = ops.salience_topk(q, c, z, k=5, log_salience=reference.salience_log(r0, tau, 0.05, 1.8e9 + 120))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_bad_arguments_raise(rng):
    q, c, z, log_s, _ = _inputs(rng, 2, 6, 3, torch.float32)
    good = dict(k=2, log_salience=log_s)
    with pytest.raises(ValueError, match="k must be <= N"):
        ops.salience_topk(q, c, z, k=7, log_salience=log_s)
    with pytest.raises(ValueError, match="k must be >= 1"):
        ops.salience_topk(q, c, z, k=0, log_salience=log_s)
    with pytest.raises(ValueError, match=r"keys must have shape \[N, 3\]"):
        ops.salience_topk(q, c[:, :2], z, **good)
    with pytest.raises(ValueError, match="payloads must have 6 rows"):
        ops.salience_topk(q, c, z[:5], **good)
    with pytest.raises(ValueError, match="queries must have 2 dimensions"):
        ops.salience_topk(q[0], c, z, **good)
    with pytest.raises(ValueError, match=r"log_salience must have shape \[6\]"):
        ops.salience_topk(q, c, z, k=2, log_salience=log_s[:5])
    with pytest.raises(ValueError, match="not both"):
        ops.salience_topk(q, c, z, k=2, log_salience=log_s, r0=torch.ones(6))
    with pytest.raises(ValueError, match="missing"):
        ops.salience_topk(q, c, z, k=2, r0=torch.ones(6), tau=torch.zeros(6))
    with pytest.raises(ValueError, match="r0 must be > 0"):
        ops.salience_topk(q, c, z, k=2, r0=torch.zeros(6), tau=torch.zeros(6), alpha=1.0, now=0.0)
    with pytest.raises(ValueError, match="alpha must be"):
        ops.salience_topk(q, c, z, k=2, r0=torch.ones(6), tau=torch.zeros(6), alpha=-1.0, now=0.0)
    bad = q.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="queries must be finite"):
        ops.salience_topk(bad, c, z, **good)
    with pytest.raises(TypeError, match="valid must have dtype"):
        ops.salience_topk(q, c, z, k=2, log_salience=log_s, valid=torch.ones(6))
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.salience_topk(q, c, z, k=2, log_salience=log_s, backend="nope")
    big = torch.randn(200, 3)
    with pytest.raises(ValueError, match=r"no backend supports(.|\n)*k = 150 > 120"):
        ops.salience_topk(q, big, None, k=150, log_salience=torch.zeros(200, dtype=torch.float64), backend="triton")


def test_cached_key_norms_give_same_result(rng):
    q, c, z, log_s, valid = _inputs(rng, 5, 400, 20, torch.float32, masked=True)
    c[7] = 0.0
    norms = torch.linalg.vector_norm(c, dim=1)
    a = ops.salience_topk(q, c, z, k=6, log_salience=log_s, valid=valid)
    b = ops.salience_topk(q, c, z, k=6, log_salience=log_s, valid=valid, key_norms=norms)
    assert torch.equal(a[1], b[1])
    torch.testing.assert_close(a[0], b[0])
    with pytest.raises(ValueError, match=r"key_norms must have shape \[400\]"):
        ops.salience_topk(q, c, z, k=6, log_salience=log_s, key_norms=norms[:5])
    with pytest.raises(ValueError, match="key_norms must be finite and >= 0"):
        ops.salience_topk(q, c, z, k=6, log_salience=log_s, key_norms=-norms)



@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, inside the Triton interpreter, about the NaN
@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
def test_nonfinite_keys_and_payloads_raise(rng, backend, dev):
    q, c, z, log_s, _ = _inputs(rng, 3, 150, 8, torch.float32)
    for bad_value in (float("nan"), float("inf"), float("-inf")):
        bad = c.clone()
        bad[97, 1] = bad_value
        with pytest.raises(ValueError, match="keys must be finite"):
            _op(dev, q, bad, z, k=4, log_salience=log_s, backend=backend)
        # ... unless the slot is empty (valid False): it cannot change the result.
        valid = torch.ones(150, dtype=torch.bool)
        valid[97] = False
        out = _op(dev, q, bad, z, k=4, log_salience=log_s, valid=valid, backend=backend)
        assert (out[1] != 97).all()
    # Payloads: checked on the rows the recall selects.
    top = _op(dev, q, c, z, k=4, log_salience=log_s, backend=backend)[1]
    bad_z = z.clone()
    bad_z[int(top[0, 0])] = float("nan")
    with pytest.raises(ValueError, match="payloads must be finite"):
        _op(dev, q, c, bad_z, k=4, log_salience=log_s, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "triton"])  # cpp: float32 keys only
def test_many_query_blocks_and_mixed_dtypes(rng, backend, dev):
    """B = 70 spans two query blocks of the kernel; fp32 queries against bf16 keys."""
    q, c, z, log_s, valid = _inputs(rng, 70, 40, 24, torch.bfloat16, masked=True)
    q = torch.randn(70, 24, generator=rng)
    out = _op(dev, q, c, z, k=5, log_salience=log_s, valid=valid, backend=backend)
    ref = reference.salience_topk(q, c, z, k=5, log_salience=log_s, valid=valid)
    assert_matches_reference(out, ref, q, c, z, log_s, valid, 5)


@pytest.mark.parametrize("offset", [1e9, 1e12, 1e15])
def test_results_depend_only_on_time_differences(rng, offset):
    """alpha * now far above 1e12 must not swamp log r0: shifting every time changes nothing."""
    n, d = 300, 16
    keys, queries = torch.randn(n, d, generator=rng), torch.randn(7, d, generator=rng)
    payloads = torch.randn(n, 5, generator=rng)
    r0 = torch.rand(n, generator=rng, dtype=torch.float64) + 0.5
    tau = torch.randint(0, 50, (n,), generator=rng).double()
    base = ops.salience_topk(queries, keys, payloads, k=6, r0=r0, tau=tau, alpha=0.01, now=60.0)
    shifted = ops.salience_topk(queries, keys, payloads, k=6, r0=r0, tau=tau + offset, alpha=0.01,
                                now=60.0 + offset)
    ancient = ops.salience_topk(queries, keys, payloads, k=6, r0=r0, tau=tau, alpha=0.01, now=60.0 + offset)
    for far in (shifted, ancient):
        torch.testing.assert_close(far[1], base[1], rtol=0, atol=0)
        torch.testing.assert_close(far[2], base[2], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(far[0], base[0], rtol=1e-5, atol=1e-6)


INT64_OFFSETS_SCRIPT = """
import torch
from mnemonix import ops
device = "cuda" if torch.cuda.is_available() else "cpu"
d, stride = 8, 2**30 + 64  # row 2 starts 2**31 + 128 elements in: past int32
big = torch.empty(2 * stride + d, dtype=torch.float16, device=device)  # 4.3 GB, virtual on the CPU
keys = big.as_strided((3, d), (stride, 1))
gen = torch.Generator().manual_seed(0)
rows = torch.randn(3, d, generator=gen).half()
keys.copy_(rows)
queries = (rows.float() + 0.01 * torch.randn(3, d, generator=gen)).to(device)
out = ops.salience_topk(queries, keys, None, k=1, log_salience=torch.zeros(3, dtype=torch.float64, device=device),
                        backend="triton")
print("TOP", out[1].flatten().tolist())
"""


def test_triton_key_offsets_past_int32():
    """Keys whose rows start past 2**31 elements (a strided view of a 4.3 GB buffer, untouched but for
    three rows) are read where they are: int32 offsets would wrap and read (or crash) elsewhere.
    A subprocess, so that a wrong offset's segfault fails this test and nothing else."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", INT64_OFFSETS_SCRIPT], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "TOP [0, 1, 2]" in proc.stdout, proc.stdout + proc.stderr[-2000:]
