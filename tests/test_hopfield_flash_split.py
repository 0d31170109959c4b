"""The flash kernel over key parts (``backends.hopfield.flash_split``) and its C++ merge
(``_core.retrieval.merge_parts_at``): split-K retrieval equals the float64 reference, the merge
is exact for any parts and rest rows, and its finite flag catches what the fast path must see."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix import ops, reference
from mnemonix.backends import hopfield as hb

core = hb._core_retrieval()
pytestmark = pytest.mark.skipif(core is None or hb._sdpa_kernel() is None,
                                reason="the C++ extension is always built in CI; torch < 2.3 lacks the flash kernel")


def _reference(q, k, v, beta):
    out, lse, _ = reference.hopfield_retrieve(q.double(), k.double(), None if v is None else v.double(), beta=beta,
                                              return_lse=True, return_argmax=True)
    return out, lse


def _merge(part_out, part_lse, q, beta, rest_k, rest_v):
    """merge_parts_at on torch tensors (rest rows given as 2-D views with unit column strides)."""
    parts, b, dv = part_out.shape
    return core.merge_parts_at(part_out.data_ptr(), part_lse.data_ptr(), parts, b, dv, q.data_ptr(), q.shape[1],
                               beta, rest_k.shape[0], rest_k.data_ptr(), rest_k.stride(0), rest_v.data_ptr(),
                               rest_v.stride(0))


@settings(max_examples=60, deadline=None)
@given(parts=st.integers(1, 6), rest=st.integers(0, 5), rows=st.integers(1, 20), b=st.integers(1, 9),
       d=st.integers(1, 24), dv=st.none() | st.integers(1, 12), pad=st.integers(0, 3),
       beta=st.floats(0.05, 4.0), seed=st.integers(0, 2**31 - 1))
def test_merge_of_parts_equals_the_whole(parts, rest, rows, b, d, dv, pad, beta, seed):
    gen = torch.Generator().manual_seed(seed)
    n = parts * rows + rest
    k = torch.randn(n, d + pad, generator=gen)[:, :d]  # rows strided past d: the rest rows' stride
    v = None if dv is None else torch.randn(n, dv + pad, generator=gen)[:, :dv]
    vv = k if v is None else v
    q = torch.randn(b, d, generator=gen)
    outs, lses = zip(*(_reference(q, k[p * rows:(p + 1) * rows], vv[p * rows:(p + 1) * rows], beta)
                       for p in range(parts)))
    part_out = torch.stack(outs).float().contiguous()
    part_lse = torch.stack(lses).float().contiguous()
    assert _merge(part_out, part_lse, q, beta, k[parts * rows:], vv[parts * rows:]) is True
    want_out, want_lse = _reference(q, k, vv, beta)
    torch.testing.assert_close(part_out[0], want_out.float(), atol=2e-5, rtol=2e-5)  # merged in place into part 0
    torch.testing.assert_close(part_lse[0], want_lse.float(), atol=2e-5, rtol=2e-5)


def test_merge_flags_a_nan_query_and_overflowing_logits():
    q, k = torch.randn(3, 4), torch.randn(5, 4)
    part_out, part_lse = torch.randn(2, 3, 4), torch.randn(2, 3)
    bad_q = q.clone()
    bad_q[1, 2] = math.nan
    assert _merge(part_out.clone(), part_lse.clone(), bad_q, 1.0, k[:1], k[:1]) is False  # the queries are checked
    huge = torch.full((1, 4), 3e38)
    assert _merge(part_out.clone(), part_lse.clone(), torch.ones(3, 4), 1.0, huge, huge) is False  # inf logit
    inf_lse = part_lse.clone()
    inf_lse[1, 0] = math.inf
    assert _merge(part_out.clone(), inf_lse, q, 1.0, k[:0], k[:0]) is False
    assert _merge(part_out.clone(), part_lse.clone(), q, 1.0, k[:0], k[:0]) is True


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 300), dv=st.integers(1, 400), where=st.none() | st.sampled_from(["out", "lse", "queries"]),
       bad=st.sampled_from([math.nan, -math.nan, math.inf, -math.inf]), data=st.data())
def test_one_part_is_copied_and_checked_share_by_share(b, dv, where, bad, data):
    # one part, no rest rows: the merge is a copy into out, each thread copying and checking its
    # share (past 16k values): the same bits, and a NaN/Inf anywhere in part 0, lse or the queries
    # flagged
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    part_out, part_lse, q = torch.randn(1, b, dv, generator=gen), torch.randn(1, b, generator=gen), torch.randn(b, 3)
    if where is not None:
        target = {"out": part_out, "lse": part_lse, "queries": q}[where].view(-1)
        target[data.draw(st.integers(0, target.numel() - 1))] = bad
    out, lse = torch.full((b, dv), 7.0), torch.full((b,), 7.0)
    finite = core.merge_parts_at(part_out.data_ptr(), part_lse.data_ptr(), 1, b, dv, q.data_ptr(), 3, 1.0, 0,
                                 q.data_ptr(), 3, q.data_ptr(), 3, out.data_ptr(), lse.data_ptr())
    assert finite is (where is None)
    bits = torch.int32  # NaN != NaN: the bits are compared
    assert torch.equal(out.view(bits), part_out[0].view(bits)) and torch.equal(lse.view(bits), part_lse[0].view(bits))


def test_merge_refuses_null_addresses_and_no_parts():
    out, lse, q = torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="null address for part_out"):
        core.merge_parts_at(0, lse.data_ptr(), 1, 2, 3, q.data_ptr(), 3, 1.0, 0, 0, 3, 0, 3)
    with pytest.raises(ValueError, match="null address for rest_keys"):
        core.merge_parts_at(out.data_ptr(), lse.data_ptr(), 1, 2, 3, q.data_ptr(), 3, 1.0, 1, 0, 3, q.data_ptr(), 3)
    with pytest.raises(ValueError, match="parts must be >= 1"):
        core.merge_parts_at(out.data_ptr(), lse.data_ptr(), 0, 2, 3, q.data_ptr(), 3, 1.0, 0, 0, 3, 0, 3)


@settings(max_examples=40, deadline=None)
@given(parts=st.integers(2, 5), n=st.integers(2, 400), b=st.integers(1, 40), d=st.integers(1, 48),
       values_apart=st.booleans(), pad=st.integers(0, 2), beta=st.floats(0.05, 3.0),
       seed=st.integers(0, 2**31 - 1))
def test_flash_split_equals_the_reference(parts, n, b, d, values_apart, pad, beta, seed):
    parts = min(parts, n)
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(n, d + pad, generator=gen)[:, :d]
    v = torch.randn(n, d, generator=gen) if values_apart else None
    q = torch.randn(b, d, generator=gen)
    out, lse, finite = hb.flash_split(q, k, v, beta, parts)
    want_out, want_lse = _reference(q, k, v, beta)
    assert finite is True and out.shape == (b, d) and lse.shape == (b,)
    torch.testing.assert_close(out, want_out.float(), atol=3e-5, rtol=3e-5)
    torch.testing.assert_close(lse, want_lse.float(), atol=3e-5, rtol=3e-5)


def test_key_parts_fill_the_threads_and_stop_at_four_tasks_per_thread():
    parts = hb.flash_key_parts
    assert parts(1, 1000, 2) == 2 and parts(32, 1000, 2) == 2  # one block of 32 queries: one task
    assert parts(64, 1000, 2) == 1  # two tasks on two threads: balanced already
    assert parts(96, 1000, 2) == 2  # three tasks: 2 + 1 would idle a thread for a third of the call
    assert parts(250, 1000, 2) == 1  # four blocks of 64
    assert parts(8, 2000, 16) == 16 and parts(8, 2000, 12) == 12
    assert parts(8, 200, 16) == 200 // hb.FLASH_MIN_PART_ROWS  # parts keep FLASH_MIN_PART_ROWS rows
    assert parts(8, 100, 2) == 1 and parts(8, 1000, 1) == 1
    assert parts(64 * 32, 10_000, 8) == 1  # 32 tasks on 8 threads
    # wide keys: halve the parts while the kernel's 512-row key blocks pass FLASH_PART_BYTES ...
    assert parts(8, 1000, 2, 1024, 1024) == 4 and parts(8, 2000, 2, 1024, 1024) == 8  # 250 rows: 1 MB
    assert parts(8, 1000, 2, 512, 512) == 2  # 512 x 512 floats: 1 MB, not past it
    assert parts(1, 100_000, 2, 1024, 1024) == 16  # ... up to 8 parts per thread
    assert parts(1, 300, 2, 4096, 4096) == 4  # ... parts of FLASH_MIN_PART_ROWS rows or more
    assert parts(32, 1000, 2, 1024, 1024) == 2  # ... while the parts' results stay small (64k values)
    assert parts(64, 1000, 2, 1024, 1024) == 1  # and never where the batch needs no split


def test_the_sdpa_backend_splits_one_group_and_not_groups_or_masks():
    q, k = torch.randn(4, 16), torch.randn(301, 16)  # 301: one rest row
    with torch.no_grad():
        got, lse = ops.hopfield_retrieve(q, k, beta=0.7, backend="sdpa", return_lse=True)
    g = q[None, None], k[None, None]  # the canonical layout the backend sees
    parts = hb.flash_splits(*g, None, None)
    assert parts == hb.flash_key_parts(4, 301, torch.get_num_threads())
    if parts > 1:
        out, want_lse, _ = hb.flash_split(q, k, None, 0.7, parts)
        assert torch.equal(got, out) and torch.equal(lse, want_lse)  # the general path's call is the split
    assert hb.flash_splits(g[0].expand(2, 1, 4, 16), g[1], None, None) == 1  # groups: tasks already
    assert hb.flash_splits(*g, None, torch.zeros(1, 1, 1, 301)) == 1  # a mask
    assert hb.flash_splits(g[0].double(), g[1].double(), None, None) == 1
    assert hb.flash_splits(g[0], torch.randn(16, 301).T[None, None], None, None) == 1  # a column stride
    assert hb.flash_splits(torch.randn(16, 4).T[None, None], g[1], None, None) == 1  # queries not contiguous


def test_one_part_goes_through_the_merge_only_for_small_outputs():
    q, k = torch.randn(300, 16), torch.randn(3000, 16)
    threads = torch.get_num_threads()
    if hb.flash_key_parts(300, 3000, threads) == 1:  # 5 blocks of 64 queries: one part unless threads > 2
        assert hb.flash_parts(q, k, None, 300, 3000, 16) == 1  # 4,800 values: the copy is cheaper than a view
    wide = torch.randn(300, 1024)
    if hb.flash_key_parts(300, 3000, threads) == 1:
        assert hb.flash_parts(wide, torch.randn(3000, 1024), None, 300, 3000, 1024) == 0  # 307,200 values
    out, lse, finite = hb.flash_split(q, k, None, 0.5, 1)
    want_out, want_lse = _reference(q, k, None, 0.5)
    assert finite is True
    torch.testing.assert_close(out, want_out.float(), atol=3e-5, rtol=3e-5)
    torch.testing.assert_close(lse, want_lse.float(), atol=3e-5, rtol=3e-5)


def _outcome(q, k, beta, backend):
    """``("raises", type)`` or ``("out", out as float64)`` of one call."""
    try:
        return "out", ops.hopfield_retrieve(q, k, beta=beta, backend=backend).double()
    except ValueError as error:
        return "raises", type(error)


@settings(max_examples=30, deadline=None)
@given(n=st.sampled_from([40, 2500, 6000]), b=st.integers(1, 3), d=st.integers(4, 40), near=st.floats(0.0, 1.0),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**31 - 1))
def test_sdpa_on_logits_past_float32_agrees_with_the_streaming_pass(n, b, d, near, dtype, seed):
    # Finite operands whose products pass float32's range: the keys past the first `near` share
    # make -inf logits. The flash kernel gives a query without a finite logit out = 0, lse = 0,
    # which the merge of key parts used to weigh as a real part (a wrong out) and the unsplit call
    # returned: every path must now do what the streaming pass does (raise, or the same out)
    gen = torch.Generator().manual_seed(seed)
    q = (torch.rand(b, d, generator=gen) + 0.5) * 1e18
    k = -torch.rand(n, d, generator=gen)
    k[int(near * n):] = -1e30
    q, k = q.to(dtype), k.to(dtype)
    want = _outcome(q, k, 1.0, "torch")
    for backend in ("sdpa", None):
        got = _outcome(q, k, 1.0, backend)
        assert got[0] == want[0], backend
        if got[0] == "raises":
            assert got[1] is want[1]
        else:
            torch.testing.assert_close(got[1], want[1], atol=2e-2 if dtype == torch.bfloat16 else 1e-5, rtol=1e-2)


def test_merge_and_flash_check_refuse_the_mark_of_a_query_without_a_finite_logit():
    # out = 0 and lse = 0 exactly in one part's row: not merged (the caller recomputes); a row
    # with lse 0 but some out, or out 0 with another lse, merges
    q = torch.randn(2, 3)
    part_out, part_lse = torch.randn(2, 2, 3), torch.randn(2, 2)
    part_out[1, 0], part_lse[1, 0] = 0.0, 0.0
    empty = torch.empty(0, 3)
    assert not _merge(part_out.clone(), part_lse.clone(), q, 1.0, empty, empty)
    part_out[1, 0, 2] = -0.0
    assert not _merge(part_out.clone(), part_lse.clone(), q, 1.0, empty, empty)  # -0 is zero too
    part_out[1, 0, 1] = 1e-30
    assert _merge(part_out.clone(), part_lse.clone(), q, 1.0, empty, empty)
    out, lse = torch.zeros(2, 3, dtype=torch.bfloat16), torch.tensor([0.5, 0.0])
    args = (out.data_ptr(), lse.data_ptr(), 2, 3, q.data_ptr(), 0)
    assert not core.flash_checked_at(2, *args)
    lse[1] = 1.0
    assert core.flash_checked_at(2, *args)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 300), b=st.integers(1, 20), d=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       values=st.booleans(), backend=st.sampled_from([None, "cpp", "sdpa", "gemm", "torch", "reference"]))
def test_a_query_whose_logits_all_overflow_to_minus_inf_is_named_as_such(n, b, d, seed, values, backend):
    # finite operands, no mask: every logit of query 0 is beyond float32's range below. The error
    # says so on every backend (it used to blame "mask / association_mask", none given)
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.rand(b, d, generator=gen) + 0.5, -(torch.rand(n, d, generator=gen) + 0.5) * 1e30
    q[0] *= 1e18
    v = torch.randn(n, d, generator=gen) if values else None  # (sdpa: dv == d)
    with pytest.raises(ValueError, match=r"logits overflow float32 to -inf: a query has no finite logit") as caught:
        ops.hopfield_retrieve(q, k, v, beta=1.0, backend=backend)
    assert "mask" not in str(caught.value)


@pytest.fixture
def bf16_split(monkeypatch, tmp_path):
    """A calibration file that turns the bfloat16 split on (``flash_split_bfloat16``), or off:
    call the fixture's value with 1 or 0; forgotten afterwards."""
    from mnemonix import calibration

    def use(flag: int) -> None:
        path = tmp_path / f"split{flag}.json"
        path.write_text(json.dumps({"format": calibration.FORMAT, "version": calibration.VERSION, "device": "cpu",
                                    "thresholds": {"hopfield_retrieve": {"flash_split_bfloat16": flag}}}))
        monkeypatch.setenv(calibration.ENV, str(path))
        calibration.reload()

    yield use
    calibration.reload()


def _bf16(*shape, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).bfloat16()


@settings(max_examples=40, deadline=None)
@given(parts=st.integers(2, 5), n=st.integers(2, 400), b=st.integers(1, 40), d=st.integers(1, 48),
       values_apart=st.booleans(), beta=st.floats(0.05, 3.0), seed=st.integers(0, 2**31 - 1))
def test_bfloat16_flash_split_equals_the_reference(parts, n, b, d, values_apart, beta, seed):
    # 16-bit parts are widened, merged in float32 and out rounded once more: within a few
    # bfloat16 steps of the float64 reference on the same (bfloat16) values, and of the unsplit
    # kernel; lse at float32's accuracy; the rest rows (N % parts) scored in the merge
    parts = min(parts, n)
    gen = torch.Generator().manual_seed(seed)
    k, q = _bf16(n, d, gen=gen), _bf16(b, d, gen=gen)
    v = _bf16(n, d, gen=gen) if values_apart else None
    out, lse, finite = hb.flash_split(q, k, v, beta, parts)
    want_out, want_lse = _reference(q, k, v, beta)
    assert finite is True and out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    top = float((k if v is None else v).abs().max())
    torch.testing.assert_close(out.double(), want_out, atol=2 ** -6 * top, rtol=0)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-3, rtol=1e-4)
    whole, _ = hb._SDPA_KERNEL(q[None, None], k[None, None], (k if v is None else v)[None, None], scale=beta)
    torch.testing.assert_close(out.double(), whole[0, 0].double(), atol=2 ** -6 * top, rtol=0)


def test_bfloat16_flash_split_follows_its_threshold_on_both_paths(bf16_split):
    # off: the flash kernel unsplit; on: key parts, the fast path and the general path the same
    # bits (the general path's call is the split too); float16 is never split
    import fast_paths

    from mnemonix.ops import _hopfield_fast as fast

    gen = torch.Generator().manual_seed(5)
    q, k = _bf16(4, 64, gen=gen), _bf16(3001, 64, gen=gen)  # one block of 4 queries; one rest row at 2 parts
    canonical = q[None, None], k[None, None]
    bf16_split(0)
    assert hb.flash_splits(*canonical, None, None) == 1 and not hb.flash_splits_16_bit(torch.bfloat16)
    whole, _ = hb._SDPA_KERNEL(*canonical, canonical[1], scale=0.3)
    assert torch.equal(ops.hopfield_retrieve(q, k, beta=0.3, backend="sdpa"), whole[0, 0])
    bf16_split(1)
    assert hb.flash_splits_16_bit(torch.bfloat16) and not hb.flash_splits_16_bit(torch.float16)
    assert hb.flash_splits(canonical[0].half(), canonical[1].half(), None, None) == 1
    parts = hb.flash_splits(*canonical, None, None)
    assert parts == (1 if torch.get_num_threads() == 1 else hb.flash_key_parts(4, 3001, torch.get_num_threads(),
                                                                                 64, 64, 2))
    with fast_paths.counting_fast_calls(fast, "cpu_fast_retrieve") as answered:
        got, lse = ops.hopfield_retrieve(q, k, beta=0.3, backend="sdpa", return_lse=True)
    with fast_paths.general_path_only(fast, "cpu_fast_retrieve"):
        want, want_lse = ops.hopfield_retrieve(q, k, beta=0.3, backend="sdpa", return_lse=True)
    assert answered == [True] and torch.equal(got, want) and torch.equal(lse, want_lse)
    if parts > 1:
        split, split_lse, _ = hb.flash_split(q, k, None, 0.3, parts)
        assert torch.equal(got, split) and torch.equal(lse, split_lse)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # set once
@given(where=st.sampled_from(["queries", "keys", "values"]), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       row=st.integers(0, 2999), seed=st.integers(0, 2**31 - 1))
def test_bfloat16_split_raises_the_streaming_paths_error_on_a_bad_value(bf16_split, where, bad, row, seed):
    # a NaN/Inf anywhere reaches the general path's checks, which name the argument, as unsplit
    # (keys apart from the values are checked on their own: a bad key may get weight 0)
    bf16_split(1)
    gen = torch.Generator().manual_seed(seed)
    q, k, v = _bf16(3, 32, gen=gen), _bf16(3000, 32, gen=gen), _bf16(3000, 32, gen=gen)
    target = {"queries": q, "keys": k, "values": v}[where]
    target[row % target.shape[0], row % 32] = bad
    with pytest.raises(ValueError, match=where):
        ops.hopfield_retrieve(q, k, v, beta=0.5, backend="sdpa")
