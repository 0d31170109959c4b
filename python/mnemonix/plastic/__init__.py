"""Plastic prefix memory: a C++ graph engine for the research "plastic memory" rule.

The research code (seed 003, "Plastic Memory Constructor", class
``PlasticPrefixNetwork``; rule restated in ``shared/specs/plastic_memory.md``)
learns strings into a directed graph of more and more abstract common
prefixes ("non-local refactoring") and strengthens the path of each learned
sample ("synaptic potentiation").

- :mod:`~mnemonix.plastic.memory`: :class:`PlasticMemory`, the rule node for node and
  edge for edge in C++ (``mnemonix._core.plastic.Engine``), inference, persistence, exports.
- :mod:`~mnemonix.plastic.predictor`: :class:`PlasticPredictor`, the memory as a sequence
  model (the next-character distribution read from the graph, batched scoring in C++).
- :mod:`~mnemonix.plastic.evaluation`: held-out likelihood against counting n-grams and a
  small MLP (makemore's split); :mod:`~mnemonix.plastic.curriculum`: learning orders.

Example
-------
>>> from mnemonix.plastic import PlasticMemory, tokenize
>>> mem = PlasticMemory()
>>> mem.learn_many([tokenize(n) for n in ["emily", "emma", "ella"]], progress=False)
>>> mem.infer(">em").completion in {">emily_", ">emma_"}
True
>>> round(sum(mem.predictor().distribution(">em").values()), 9)
1.0
"""

from __future__ import annotations

from mnemonix.plastic.memory import FORMAT, FORMAT_VERSION, Inference, PlasticMemory, tokenize
from mnemonix.plastic.predictor import DEFAULT_ORDER, MAX_ORDER, Backoff, PlasticPredictor

__all__ = [
    "PlasticMemory",
    "Inference",
    "tokenize",
    "FORMAT",
    "FORMAT_VERSION",
    "Backoff",
    "PlasticPredictor",
    "DEFAULT_ORDER",
    "MAX_ORDER",
]
