"""Probe targets: the plastic prefix memory (``mnemonix.plastic``)."""

from __future__ import annotations

import functools
import os

from hypothesis import strategies as st

from mnemonix.plastic import PlasticMemory, tokenize

from .harness import Target, bad_choice, bad_flag, bad_int, bad_path, bad_str, scratch_dir

NAMES = [tokenize(n) for n in ("emma", "emily", "ella", "olivia", "oliver")]
LONE_SURROGATE = "a\ud800b"


def memory() -> PlasticMemory:
    mem = PlasticMemory()
    mem.learn_many(NAMES, progress=False)
    return mem


@functools.cache
def saved() -> str:
    path = os.path.join(scratch_dir(), "plastic.npz")
    memory().save(path)
    return path


def _bad_sample() -> st.SearchStrategy:
    return st.one_of(bad_str(), st.sampled_from([("empty", ""), ("surrogate", LONE_SURROGATE)]))


def _bad_samples() -> st.SearchStrategy:
    """Not an iterable of non-empty str: a str, None, a number, a list holding one bad sample."""
    def one_bad(tag_value, pos):
        tag, value = tag_value
        samples = list(NAMES)
        samples.insert(pos % (len(samples) + 1), value)
        return f"[{pos}] {tag}", samples

    return st.one_of(st.sampled_from([("str", ">emma_"), ("None", None), ("int", 3), ("bytes", b"ab")]),
                     st.builds(one_bad, _bad_sample(), st.integers(0, 10)))


TARGETS = [
    Target("PlasticMemory", lambda _, **kw: PlasticMemory(**kw), dict(exact_counts=False),
           dict(exact_counts=bad_flag())),
    Target("PlasticMemory.learn", lambda mem, **kw: mem.learn(**kw), dict(s=">anna_"), dict(s=_bad_sample()),
           make=memory),
    Target("PlasticMemory.learn_many", lambda mem, **kw: mem.learn_many(**kw),
           dict(samples=[">anna_", ">bob_"], progress=False), dict(samples=_bad_samples(), progress=bad_flag()),
           make=memory),
    Target("PlasticMemory.potentiate", lambda mem, **kw: mem.potentiate(**kw), dict(s=">em", amount=1),
           dict(s=st.one_of(_bad_sample(), st.just(("not a node", ">zz"))),
                amount=bad_int(None, none_ok=False).filter(lambda b: b[0] != "below")
                | st.sampled_from([("2**63", 2**63), ("-2**63-1", -(2**63) - 1), ("10**30", 10**30)])),
           make=memory),
    Target("PlasticMemory.infer", lambda mem, **kw: mem.infer(**kw),
           dict(prefix=">em", stop="_", mode="greedy", seed=3),
           dict(prefix=st.one_of(bad_str(), st.just(("surrogate", LONE_SURROGATE))),
                stop=st.one_of(bad_str(), st.just(("surrogate", LONE_SURROGATE))),
                mode=bad_choice(("greedy", "sample")),
                seed=bad_int(None, none_ok=True).filter(lambda b: b[0] != "below")),
           make=memory),
    Target("PlasticMemory.node", lambda mem, **kw: mem.node(**kw), dict(s=">em"), dict(s=bad_str()), make=memory),
    Target("PlasticMemory.save", lambda mem, **kw: mem.save(**kw),
           dict(path=os.path.join(scratch_dir(), "plastic-unused.npz")), dict(path=bad_path()), make=memory),
    Target("PlasticMemory.to_csv", lambda mem, **kw: mem.to_csv(**kw),
           dict(nodes_path=os.path.join(scratch_dir(), "n.csv"), edges_path=os.path.join(scratch_dir(), "e.csv")),
           dict(nodes_path=bad_path(), edges_path=bad_path()), make=memory),
    Target("PlasticMemory.load", lambda _, **kw: PlasticMemory.load(**kw), dict(path=saved()),
           dict(path=bad_path(to_read=True))),
    Target("tokenize", lambda _, **kw: tokenize(**kw), dict(s="emma", start=">", stop="_"),
           dict(s=bad_str(), start=bad_str(), stop=bad_str())),
]
