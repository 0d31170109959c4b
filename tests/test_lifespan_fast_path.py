"""The CPU fast path of ``ops.lifespan_step`` (``ops._lifespan_fast``) is a shortcut, never a second
semantics: where it runs, results are the general path's bit for bit; everything it does not
recognise, and every bad value, goes to the general path (same errors)."""

from __future__ import annotations

import math

import fast_paths
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lifespan_cpp import _FAULTS, _state  # random states (int32 / int64 indices), one bad value each
from test_lifespan_step import assert_same  # dtype, shape and exact values of every field
from torch.utils._python_dispatch import TorchDispatchMode

from mnemonix import ops
from mnemonix.backends import lifespan as lb
from mnemonix.ops import _lifespan_fast as fast


def general_path_only():
    return fast_paths.general_path_only(fast, "cpu_fast_step")


def counting_fast_calls():
    return fast_paths.counting_fast_calls(fast, "cpu_fast_step")


def _both(*args, **kwargs):
    with counting_fast_calls() as answered:
        got = ops.lifespan_step(*args, **kwargs)
    with general_path_only():
        want = ops.lifespan_step(*args, **kwargs)
    return got, want, answered


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(0, 5), length=st.integers(0, 70),
       reminded=st.integers(0, 40), capacity=st.sampled_from([0, 1, 3, 10, 2**40, 2**70]),
       float_delta=st.booleans(), int32_index=st.booleans(), with_age=st.booleans(),
       backend=st.sampled_from([None, "cpp"]), check_inputs=st.sampled_from([None, True, False]))
def test_fast_path_equals_general_path_bitwise(seed, batch, length, reminded, capacity, float_delta, int32_index,
                                               with_age, backend, check_inputs):
    life, types, age, index, delta = _state(seed, batch, length, reminded, float_delta, int32_index)
    if check_inputs is False and batch * reminded and length:  # unchecked: an index >= M is ignored like the pad
        index.view(-1)[0] = length + 3
    got, want, answered = _both(life, types, age if with_age else None, index, delta, capacity, backend,
                                check_inputs=check_inputs)
    assert answered == [True]
    assert_same(want, got)
    if capacity < 2**63:  # (the torch backend cannot take a capacity beyond int64)
        assert_same(ops.lifespan_step(life, types, age if with_age else None, index, delta, capacity,
                                      backend="torch", check_inputs=check_inputs), got)


def test_fast_path_leaves_inputs_alone_and_owns_its_results():
    state = _state(4, 3, 20, 6, True, False)
    copies = [t.clone() for t in state]
    out = fast.cpu_fast_step(*state, 2, None, None)
    assert out is not None
    for a, b in zip(state, copies):
        assert torch.equal(a, b)
    for t in out:
        assert all(t.untyped_storage().data_ptr() != s.untyped_storage().data_ptr() for s in state)


class _Sub(torch.Tensor):
    pass


def _declined_cases() -> dict[str, dict]:
    life, types, age, index, delta = _state(1, 2, 8, 3, True, False)
    return {
        "subclass lifespan": dict(lifespan=life.as_subclass(_Sub)),
        "subclass delta": dict(delta=delta.as_subclass(_Sub)),
        "float64 lifespan": dict(lifespan=life.double()),
        "bfloat16 lifespan": dict(lifespan=life.bfloat16()),
        "int8 types": dict(types=types.to(torch.int8)),
        "bool types": dict(types=types.bool()),
        "int64 age": dict(age=age.long()),
        "int16 indices": dict(reminded_indices=index.to(torch.int16)),
        "float16 delta": dict(delta=delta.half()),
        "float64 delta": dict(delta=delta.double()),
        "non-contiguous lifespan": dict(lifespan=life.T.contiguous().T),
        "non-contiguous types": dict(types=types.T.contiguous().T),
        "non-contiguous age": dict(age=age.T.contiguous().T),
        "non-contiguous indices": dict(reminded_indices=index.T.contiguous().T),
        "strided delta": dict(delta=torch.cat([delta, delta], 1)[:, ::2]),
        "expanded lifespan": dict(lifespan=life[:1].expand(2, 8)),
        "3-D lifespan": dict(lifespan=life[None]),
        "1-D delta": dict(delta=delta[0], reminded_indices=index[0]),
        "types shape": dict(types=types[:, :7]),
        "age shape": dict(age=age[:1]),
        "indices rows": dict(reminded_indices=index[:1], delta=delta[:1]),
        "delta shape": dict(delta=delta[:, :2]),
        "lifespan requires grad": dict(lifespan=life.clone().requires_grad_()),
        "delta requires grad": dict(delta=delta.clone().requires_grad_()),
        "negative-bit lifespan": dict(lifespan=torch._neg_view(life)),
        "sparse lifespan": dict(lifespan=life.to_sparse()),
        "meta lifespan": dict(lifespan=life.to("meta")),
        "numpy lifespan": dict(lifespan=life.numpy()),
        "list delta": dict(delta=delta.tolist()),
        "forced torch": dict(backend="torch"),
        "forced triton": dict(backend="triton"),
        "unknown backend": dict(backend="cuda-magic"),
        "backend not a str": dict(backend=1),
        "check_inputs not a flag": dict(check_inputs=1),
        "negative capacity": dict(stm_capacity=-1),
        "bool capacity": dict(stm_capacity=True),
        "float capacity": dict(stm_capacity=2.0),
        "numpy capacity": dict(stm_capacity=np.int64(2)),
    }


def _args(**changes) -> dict:
    life, types, age, index, delta = _state(1, 2, 8, 3, True, False)
    return dict(lifespan=life, types=types, age=age, reminded_indices=index, delta=delta, stm_capacity=2,
                backend=None, check_inputs=None) | changes


def _call_fast(**changes) -> object:
    return fast.cpu_fast_step(**_args(**changes))


@pytest.mark.parametrize("case", sorted(_declined_cases()))
def test_fast_path_declines_what_it_does_not_recognise(case):
    assert _call_fast() is not None  # the unchanged call is the fast path's
    assert _call_fast(**_declined_cases()[case]) is None


def test_fast_path_takes_int32_indices_and_no_age():
    assert _call_fast(reminded_indices=_state(1, 2, 8, 3, True, True)[3]) is not None
    assert _call_fast(age=None).age is None


def test_fast_path_is_off_under_modes_and_transforms():
    from mnemonix.testing import fake_cuda

    args = _args()
    with fake_cuda():
        assert fast.cpu_fast_step(**args) is None

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Passthrough():
        assert fast.cpu_fast_step(**args) is None
    seen = []

    def under_vmap(row):
        seen.append(fast.cpu_fast_step(**args))
        return row

    torch.func.vmap(under_vmap)(torch.zeros(3, 2))
    assert seen == [None]
    assert fast.cpu_fast_step(**args) is not None


@settings(max_examples=40, deadline=None)
@given(faults=st.sets(st.sampled_from(sorted(_FAULTS)), min_size=1), seed=st.integers(0, 1000),
       int32_index=st.booleans(), check_inputs=st.sampled_from([None, True]))
def test_bad_values_raise_the_general_paths_error(faults, seed, int32_index, check_inputs):
    state = list(_state(seed, 2, 8, 4, True, int32_index))
    for name in faults:
        _FAULTS[name](state)
    errors = []
    with counting_fast_calls() as answered, pytest.raises(ValueError) as err:
        ops.lifespan_step(*state, 2, check_inputs=check_inputs)
    assert answered == [False]  # the kernel computed nothing; the general path raised
    errors.append((type(err.value), str(err.value)))
    for forced in ("cpp", "torch"):
        with general_path_only(), pytest.raises(ValueError) as err:
            ops.lifespan_step(*state, 2, backend=forced, check_inputs=check_inputs)
        errors.append((type(err.value), str(err.value)))
    assert errors[0] == errors[1] == errors[2]


def test_step_or_none_is_step_on_exact_arrays_and_none_otherwise():
    core = lb.core_lifespan()
    life, types, age, index, delta = (t.numpy() for t in _state(5, 3, 30, 7, True, False))
    codes = (1, 2, 3)
    fault, _, want = core.step(life, types, age, index, delta, stm_capacity=4, working=1, shortterm=2, longterm=3)
    assert fault == 0
    got = core.step_or_none(life, types, age, index, delta, 4, *codes, True)
    assert len(got) == 6 and all(g.dtype == w.dtype and (g == w).all() for g, w in zip(got, want))
    for wrong in ([life.astype(np.float64), types, age, index, delta], [life, types, age, index, delta[:, :3]],
                  [np.asfortranarray(life), types, age, index, delta], [life, types, age[:1], index, delta],
                  [life, types, age, index.astype(np.int16), delta], [life.tolist(), types, age, index, delta],
                  [life[None], types, age, index, delta], [life.view(np.matrix), types, age, index, delta]):
        assert core.step_or_none(*wrong, 4, *codes, True) is None
    bad = life.copy()
    bad[1, 2] = math.nan
    assert core.step_or_none(bad, types, age, index, delta, 4, *codes, True) is None
    assert core.step_or_none(bad, types, age, index, delta, 4, *codes, False) is not None
    with pytest.raises(ValueError, match="stm_capacity"):
        core.step_or_none(life, types, age, index, delta, -1, *codes, True)
    with pytest.raises(TypeError, match="check"):
        core.step_or_none(life, types, age, index, delta, 4, *codes, "yes")
