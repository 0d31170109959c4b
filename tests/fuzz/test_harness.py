"""The harness can fail: each kind of broken contract is caught (else a green suite proves nothing)."""

from __future__ import annotations

import pytest
import torch

from mnemonix.plastic import PlasticMemory

from .harness import STATS, Target, bad_tensor, first_difference, global_rngs, probe, snapshot


class Box:
    def __init__(self) -> None:
        self.t = torch.zeros(3)
        self.inner = {"n": 1, "x": [1.0, torch.ones(2)]}


def test_snapshot_sees_every_change() -> None:
    box = Box()
    before = snapshot(box)
    for change in (lambda b: b.t.view(torch.int32)[1].fill_(1), lambda b: b.inner["x"][1].mul_(-1),
                   lambda b: b.inner.update(n=2), lambda b: setattr(b, "t", b.t.double()),
                   lambda b: b.inner["x"].__setitem__(0, -0.0)):
        fresh = Box()
        change(fresh)
        assert first_difference(before, snapshot(fresh)) is not None
    assert first_difference(before, snapshot(Box())) is None
    mem, other = PlasticMemory(), PlasticMemory()
    other.learn(">a_")  # the C++ engine's state is seen through its registered snapshot
    assert first_difference(snapshot(mem), snapshot(other)) is not None
    rng = global_rngs()
    torch.rand(1)
    assert global_rngs() != rng


def _target(call) -> Target:
    return Target("demo", lambda box, **kw: call(box, **kw), dict(x=torch.ones(2)), dict(x=bad_tensor(torch.ones(2))),
                  make=Box)


def _raise(error: Exception, before=lambda box: None):
    def call(box, x):
        before(box)
        raise error
    return call


@pytest.mark.parametrize("call,complaint", [
    (lambda box, x: None, "accepted"),
    (_raise(ValueError("something is wrong")), "does not name"),
    (_raise(ValueError("x is bad"), lambda box: box.t.add_(1)), "changed the state"),
    (_raise(ValueError("x is bad"), lambda box: torch.rand(1)), "changed the state"),
    (_raise(KeyError("x")), "raised KeyError"),
    (_raise(TypeError("f(): incompatible function arguments: x")), "raw library"),
])
def test_probe_reports_each_broken_contract(call, complaint) -> None:
    box = Box()
    target = _target(call)
    target.make = lambda: box
    counts = dict(STATS)
    with pytest.raises(AssertionError, match=complaint):
        probe(target, "x", ("type:str", "x"))
    STATS.update(counts)  # these probes fail on purpose: they are not the suite's probes
