"""Every public entry, every argument, generated bad values (see ``harness.py`` for the contract).

One hypothesis test per (entry, argument): it draws a bad value, calls the entry with every other
argument valid, and asserts that only a TypeError / ValueError naming the argument escapes and
that the state (the object's, the global RNGs') is bit-identical afterwards. ``-m slow`` draws
many more values per argument. A last test proves each entry's good arguments succeed, so every
probe differs from a working call by exactly one argument.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import targets_consolidation, targets_epinet, targets_hopfield, targets_ops, targets_plastic
from .harness import Target, probe

TARGETS: list[Target] = [
    *targets_ops.TARGETS, *targets_hopfield.TARGETS, *targets_plastic.TARGETS, *targets_epinet.TARGETS,
    *targets_consolidation.TARGETS,
]
BY_NAME = {t.name: t for t in TARGETS}
assert len(BY_NAME) == len(TARGETS), "target names must be unique"
CASES = [pytest.param(t.name, arg, id=f"{t.name}-{arg}") for t in TARGETS for arg in t.bad]
COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name,arg", CASES)
@settings(max_examples=12, derandomize=True, **COMMON)
@given(data=st.data())
def test_bad_argument(name: str, arg: str, data: st.DataObject) -> None:
    probe(BY_NAME[name], arg, data.draw(BY_NAME[name].bad[arg], label=arg))


@pytest.mark.slow
@pytest.mark.parametrize("name,arg", CASES)
@settings(max_examples=200, **COMMON)
@given(data=st.data())
def test_bad_argument_many(name: str, arg: str, data: st.DataObject) -> None:
    probe(BY_NAME[name], arg, data.draw(BY_NAME[name].bad[arg], label=arg))


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_good_arguments_work(name: str) -> None:
    target = BY_NAME[name]
    target.call(target.make(), **target.good)
