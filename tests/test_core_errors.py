"""Errors of the C++ engines: one translation, named arguments, no state change on failure.

Before: ``potentiate(s, 2**63)`` and every other out-of-range or wrong-typed scalar
dumped pybind11's "incompatible function arguments" signature; exceptions were
translated three ways; an exception inside an OpenMP region would have called
``std::terminate``. Now each C++ argument is converted with its Python name and
every C++ exception family maps to one Python class (csrc/common/errors.hpp).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemonix._core import _selftest, hebbian, plastic, retrieval
from mnemonix.plastic import PlasticMemory

# Anything a caller might pass where a scalar is expected.
ANY_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=True),
    st.text(max_size=3), st.binary(max_size=3), st.lists(st.integers(), max_size=2), st.complex_numbers(),
)


def assert_named_error(call, name: str) -> None:
    """The call fails with TypeError/ValueError naming `name`, never a pybind signature dump."""
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    message = str(info.value)
    assert "incompatible" not in message and "Invoked with" not in message, message
    assert name in message, f"{name!r} not in {message!r}"


@pytest.mark.parametrize(
    ("kind", "error"),
    [("type", TypeError), ("value", ValueError), ("domain", ValueError), ("index", IndexError),
     ("length", MemoryError), ("memory", MemoryError), ("runtime", RuntimeError)],
)
def test_one_translation_of_every_exception_family(kind: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        _selftest.raise_as(kind)
    assert type(info.value) is error  # the family's own class, not a subclass of it


@pytest.mark.parametrize("fail_at", [0, 5, 63])
def test_exception_inside_openmp_region_is_rethrown_after_it(fail_at: int) -> None:
    assert _selftest.parallel_raise(64, -1) >= 1  # no failure: the region runs to the end
    with pytest.raises(ValueError, match=f"iteration {fail_at} failed"):
        _selftest.parallel_raise(64, fail_at)
    assert _selftest.parallel_raise(64, -1) >= 1  # and the runtime is still usable


# ---------------------------------------------------------------------------- plastic
@pytest.fixture
def mem() -> PlasticMemory:
    m = PlasticMemory()
    m.learn_many([">emma_", ">emily_", ">ella_"], progress=False)
    return m


def state(m: PlasticMemory) -> dict:
    s = m._engine.export_state()
    return {"samples": s["samples"], **{k: v.tolist() for k, v in s["arrays"].items()}}


@pytest.mark.parametrize("amount", [2**63, -(2**63) - 1, 10**30, 2**4000])
def test_potentiate_out_of_int64_names_amount(mem: PlasticMemory, amount: int) -> None:
    before = state(mem)
    for call in (lambda: mem.potentiate(">emma_", amount), lambda: mem._engine.potentiate(">emma_", amount)):
        with pytest.raises(ValueError, match=r"amount must be an integer in \[-2\*\*63, 2\*\*63 - 1\]"):
            call()
    assert state(mem) == before


def test_potentiate_int64_extremes_saturate(mem: PlasticMemory) -> None:
    mem.potentiate(">emma_", 2**63 - 1)
    assert mem.node(">emma_")[0] == 2**63 - 1  # saturated, not wrapped
    mem.potentiate(">emma_", -(2**63))
    assert mem.node(">emma_")[0] == 0  # floored at 0


@settings(max_examples=60, deadline=None)
@given(value=ANY_SCALAR)
def test_engine_scalars_fail_with_their_name(value: object) -> None:
    engine = plastic.Engine(False)
    engine.learn_many([">ab_", ">ac_"])
    before = engine.export_arrays()["count"].tolist(), engine.samples
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**63:
        assert_named_error(lambda: engine.potentiate(">ab_", value), "amount")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        assert_named_error(lambda: engine.infer(">a", "_", True, value), "seed")
    if not isinstance(value, str):
        assert_named_error(lambda: engine.learn(value), "s")
        assert_named_error(lambda: engine.infer(value, "_", False, 0), "prefix")
        assert_named_error(lambda: engine.learn_many([">x_", value]), "samples[1]")
    if not isinstance(value, (bool, np.bool_)) and value not in (0, 1):
        assert_named_error(lambda: plastic.Engine(value), "exact_counts")
    assert (engine.export_arrays()["count"].tolist(), engine.samples) == before  # nothing learned


def test_engine_string_errors() -> None:
    engine = plastic.Engine()
    assert_named_error(lambda: engine.learn(""), "s must be a non-empty str")
    assert_named_error(lambda: engine.learn("a\ud800"), "s must be valid unicode")
    assert_named_error(lambda: engine.learn_many([">a_", ""]), "samples[1] must be a non-empty str")
    assert_named_error(lambda: engine.learn_many(">a_"), "samples must be a list of str")
    assert_named_error(lambda: engine.potentiate(">a_", 1), "s must be a node")
    assert engine.samples == 0 and engine.num_nodes == 0
    assert ">a_" not in engine and 3 not in engine and "\ud800" not in engine


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("offsets", np.array([1, 3]), "offsets must start at 0"),
     ("offsets", np.array([0, 4]), "offsets are not increasing"),
     ("count", np.array([-1]), r"count\[0\] is negative"),
     ("r_level", np.array([0, 0]), "r_level must have len"),
     ("codepoints", np.array([0xD800, 98, 99], dtype=np.uint32), "not a unicode scalar value"),
     ("edge_src", np.array([0]), "edge_src and edge_dst differ"),
     ("edge_dst", np.array([5]), "endpoint outside"),
     ("codepoints", "abc", "codepoints must be an array")],
)
def test_import_arrays_names_the_field(field: str, value: object, message: str) -> None:
    arrays = {"codepoints": np.array([97, 98, 99], dtype=np.uint32), "offsets": np.array([0, 3]),
              "count": np.array([1]), "r_level": np.array([0]), "edge_src": np.zeros(0, dtype=np.int64),
              "edge_dst": np.zeros(0, dtype=np.int64)}
    if field == "edge_dst":
        arrays["edge_src"] = np.array([0])
    arrays[field] = value
    with pytest.raises((ValueError, TypeError), match=message):
        plastic.Engine.import_arrays(False, 1, **arrays)
    assert_named_error(lambda: plastic.Engine.import_arrays(False, 2**64, **arrays), "samples")


# ---------------------------------------------------------------------------- hebbian
def test_hebbian_arguments_are_named() -> None:
    g = hebbian.HebbianGraph(2)
    g.fire_together(np.array([[1, 2, 3], [4, 5, -1]]))
    before = [np.concatenate(g.edges(b)).tolist() for b in range(2)]
    assert_named_error(lambda: hebbian.HebbianGraph(2**63), "batch")
    assert_named_error(lambda: hebbian.HebbianGraph("2"), "batch")
    assert_named_error(lambda: g.resize(-1), "batch must be >= 0")
    assert_named_error(lambda: g.count(2**64, 1, 2), "row")
    assert_named_error(lambda: g.count(0, 1.0, 2), "a")
    assert_named_error(lambda: g.count(0, 1, None), "b")
    assert_named_error(lambda: g.num_nodes(2), "row must be in [0, 2)")
    assert_named_error(lambda: g.fire_together("x"), "ids")
    assert_named_error(lambda: g.fire_together(np.array([1, 2])), "ids must be 2-D")
    assert_named_error(lambda: g.fire_together(np.array([[1, 2]])), "ids must have 2 rows")
    assert_named_error(lambda: g.remove(np.array([[1]])), "ids must have 2 rows")
    assert_named_error(lambda: g.set_edges(0, np.array([1]), np.array([2, 3]), np.array([1])), "src, dst and counts")
    assert_named_error(lambda: g.set_fires(0, np.array([1]), None), "counts")
    slots = g.add_nodes(np.array([[1, 2, 3], [4, 5, -1]]))
    pos = np.tile(np.arange(3), (2, 1))
    assert_named_error(lambda: g.walk(np.zeros((2, 1), np.int64), slots, -1), "depth")
    assert_named_error(lambda: g.walk(np.zeros((2, 1), np.int64), slots, 2, alias_negative="no"), "alias_negative")
    assert_named_error(lambda: g.walk(np.full((2, 1), 3), slots, 2), "starts must be < the LTM length")
    assert_named_error(lambda: g.walk(np.zeros((2, 1), np.int64), slots[:1], 2), "ltm must have the rows of starts")
    assert_named_error(lambda: g.initial_ltm(slots, slots, pos, 0, 1), "num_positions must be >= 1")
    assert_named_error(lambda: g.initial_ltm(slots, slots, pos, 3, -1), "seed")
    assert_named_error(lambda: g.initial_ltm(slots, slots, pos[:, :2], 3, 1), "ltm_positions must have the shape")
    assert_named_error(lambda: g.initial_ltm(slots + 100, slots, pos, 3, 1), "queries holds")
    assert_named_error(lambda: g.dense(0, np.zeros((1, 1)), np.zeros(1)), "queries must be 1-D")
    assert [np.concatenate(g.edges(b)).tolist() for b in range(2)] == before  # failed calls changed nothing


# ---------------------------------------------------------------------------- retrieval
def test_retrieve_arguments_are_named() -> None:
    q, k = np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)
    out, lse, arg = retrieval.retrieve(q, k, beta=1)  # an int beta is a number
    assert out.shape == (2, 4) and lse.shape == (2,) and arg.tolist() == [0, 0]
    assert_named_error(lambda: retrieval.retrieve(q, k, beta="x"), "beta must be a float")
    assert_named_error(lambda: retrieval.retrieve(q, k, beta=None), "beta")
    assert_named_error(lambda: retrieval.retrieve(q, k, beta=0.0), "beta must be finite and > 0")
    assert_named_error(lambda: retrieval.retrieve(q, k, beta=1e300), "beta must be finite")
    assert_named_error(lambda: retrieval.retrieve(q[0], k, beta=1.0), "queries must be 2-D")
    assert_named_error(lambda: retrieval.retrieve(q, k[:, :3], beta=1.0), "keys must have d = 4")
    assert_named_error(lambda: retrieval.retrieve(q, k[:0], beta=1.0), "keys must hold at least one")
    assert_named_error(lambda: retrieval.retrieve(q, k, k[:2], beta=1.0), "values must have N = 3")
    assert_named_error(lambda: retrieval.retrieve(q, k, beta=1.0, bias=np.zeros(2)), "bias must have length N = 3")
    assert_named_error(lambda: retrieval.retrieve(q, k, beta=1.0, num_threads=2**40), "num_threads")
    assert_named_error(lambda: retrieval.retrieve(q, "k", beta=1.0), "keys must be an array")
