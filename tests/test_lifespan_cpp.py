"""The fused C++ lifespan step (the CPU default) is the torch path bit for bit, errors included."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lifespan_step import assert_same  # dtype, shape and exact values of every field

from mnemonix import ops
from mnemonix.ops import lifespan as op_module


def _state(seed: int, batch: int, length: int, reminded: int, float_delta: bool, int32_index: bool):
    gen = torch.Generator().manual_seed(seed)
    lifespan = torch.randint(-2, 5, (batch, length), generator=gen).float() + torch.rand(batch, length, generator=gen)
    types = torch.randint(0, 4, (batch, length), generator=gen).to(torch.uint8)
    age = torch.randint(-5, 20, (batch, length), generator=gen).int()
    if batch * length:
        age.view(-1)[0] = 2**31 - 1  # wraps like torch's int32 add
    index = torch.randint(-2, max(length, 1), (batch, reminded), generator=gen)
    if length == 0:
        index.fill_(-1)
    delta = (torch.rand(batch, reminded, generator=gen) * 4 if float_delta
             else torch.randint(-1, 6, (batch, reminded), generator=gen).float())
    return lifespan, types, age, index.int() if int32_index else index, delta


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(0, 5), length=st.integers(0, 70),
       reminded=st.integers(0, 40), capacity=st.sampled_from([0, 1, 3, 10, 2**40, 2**63, 2**70]),
       float_delta=st.booleans(),
       int32_index=st.booleans(), with_age=st.booleans(), transposed=st.booleans())
def test_cpp_equals_torch_bitwise(seed, batch, length, reminded, capacity, float_delta, int32_index, with_age,
                                  transposed):
    life, types, age, index, delta = _state(seed, batch, length, reminded, float_delta, int32_index)
    if transposed:  # non-contiguous inputs: the binding copies them once
        life = life.T.contiguous().T
    age = age if with_age else None
    assert_same(ops.lifespan_step(life, types, age, index, delta, capacity, backend="cpp"),
           ops.lifespan_step(life, types, age, index, delta, capacity, backend="torch"))


def test_cpp_is_the_cpu_default_and_large_steps_use_threads_deterministically():
    assert op_module._dispatch.dispatch(op_module.SPEC, op_module.LifespanInputs(
        torch.ones(1, 2), torch.ones(1, 2, dtype=torch.uint8), None, torch.zeros(1, 0, dtype=torch.long),
        torch.zeros(1, 0), 1)).name == "cpp"
    state = _state(7, 64, 3000, 50, True, False)  # above the kernel's threading threshold
    assert_same(ops.lifespan_step(*state, 100, backend="cpp"), ops.lifespan_step(*state, 100, backend="torch"))


def test_unchecked_out_of_range_indices_are_ignored_like_torch():
    life, types, age, index, delta = _state(3, 2, 10, 6, True, False)
    index[0, 0], index[1, 3] = 10, 999
    assert_same(ops.lifespan_step(life, types, age, index, delta, 2, backend="cpp", check_inputs=False),
           ops.lifespan_step(life, types, age, index, delta, 2, backend="torch", check_inputs=False))


_FAULTS = {
    "type code": lambda s: s[1].view(-1).__setitem__(-1, 7),
    "NaN lifespan": lambda s: s[0].view(-1).__setitem__(0, math.nan),
    "-inf lifespan": lambda s: s[0].view(-1).__setitem__(1, -math.inf),
    "NaN delta": lambda s: s[4].view(-1).__setitem__(0, math.nan),
    "Inf delta": lambda s: s[4].view(-1).__setitem__(-1, math.inf),
    "index": lambda s: s[3].view(-1).__setitem__(2, 12),
}


def _errors(state, capacity):
    """(type, message) of the error each of the C++ and torch backends raises on ``state``."""
    errors = []
    for backend in ("cpp", "torch"):
        with pytest.raises(ValueError) as err:
            ops.lifespan_step(*state, capacity, backend=backend)
        errors.append((type(err.value), str(err.value)))
    return errors


@settings(max_examples=40, deadline=None)
@given(faults=st.sets(st.sampled_from(sorted(_FAULTS)), min_size=1), seed=st.integers(0, 1000))
def test_cpp_raises_the_torch_paths_first_error(faults, seed):
    state = list(_state(seed, 2, 8, 4, True, False))
    for name in faults:
        _FAULTS[name](state)
    cpp, torch_path = _errors(state, 2)
    assert cpp == torch_path


_SPECIAL_BITS = [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF,
                 0x7F7FFFFF, 0xFF7FFFFF, 0x80000000, 0x00000001, 0x80000001]  # +-inf, NaNs of either sign, extremes


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 1000), length=st.integers(1, 300),
       bits=st.lists(st.tuples(st.integers(0, 10**6), st.one_of(st.sampled_from(_SPECIAL_BITS),
                                                                 st.integers(0, 2**32 - 1))), max_size=6))
def test_cpp_reads_any_lifespan_bits_as_torch_does(seed, length, bits):
    # The check reads NaN / -inf off the bits (any payload, either sign), the step keeps what is
    # > 0 (+inf too): the C++ step raises the torch path's error or gives its results, bit for bit
    state = list(_state(seed, 3, length, 5, True, False))
    raw = state[0].view(torch.int32).view(-1)
    for position, pattern in bits:
        raw[position % raw.numel()] = pattern - 2**32 if pattern >= 2**31 else pattern
    outcomes = []
    for backend in ("cpp", "torch"):
        try:
            outcomes.append(ops.lifespan_step(*state, 50, backend=backend))
        except ValueError as err:
            outcomes.append(str(err))
    if isinstance(outcomes[0], str) or isinstance(outcomes[1], str):
        assert outcomes[0] == outcomes[1]
    else:
        assert_same(*outcomes)


def test_plus_inf_lifespan_is_kept():
    life = torch.tensor([[math.inf, 0.5]])
    out = ops.lifespan_step(life, torch.ones(1, 2, dtype=torch.uint8), None, torch.zeros(1, 0, dtype=torch.long),
                            torch.zeros(1, 0), 1, backend="cpp")
    assert out.keep.tolist() == [[True, False]] and out.lifespan[0, 0] == math.inf


_MIDDLE_FAULTS = {  # larger bad values in middle rows: the message shows the largest over all rows
    "larger index": lambda s: s[3].__setitem__((40, 7), 4000),
    "larger type code": lambda s: s[1].__setitem__((33, 5), 9),
}


@pytest.mark.parametrize("faults", [("larger index",), ("Inf delta", "larger index"),
                                    ("type code", "larger type code", "NaN lifespan"), ("-inf lifespan", "Inf delta"),
                                    ("NaN delta", "larger index"), tuple(sorted(_FAULTS))])
def test_threaded_step_raises_the_torch_paths_first_error(faults):
    """Above the threading threshold each thread checks its own rows: the first failure over all of
    them, with the largest code or index, is still the torch path's."""
    state = list(_state(11, 64, 3000, 50, True, False))  # _FAULTS land in the first and the last row
    # (their index 12 is no fault at M = 3000)
    for name in faults:
        (_FAULTS | _MIDDLE_FAULTS)[name](state)
    cpp, torch_path = _errors(state, 100)
    assert cpp == torch_path
