"""pytest-benchmark suite of the plastic prefix memory (not collected by the normal test run).

Run: ``pytest bench/bench_plastic.py --benchmark-only``. The side-by-side table with
the pure-Python oracle and memory is ``bench/compare_plastic.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from plastic_oracle import PlasticOracle  # noqa: E402

from mnemonix.plastic import PlasticMemory, tokenize  # noqa: E402


def _names() -> list[str]:
    path = ROOT / "data" / "names.txt"  # bundled makemore names list
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


NAMES = [tokenize(n) for n in _names()]


@pytest.mark.parametrize("n", [1_000, 10_000, len(NAMES)])
def test_engine_learn_names(benchmark, n: int) -> None:
    def run() -> PlasticMemory:
        mem = PlasticMemory()
        mem.learn_many(NAMES[:n], progress=False)
        return mem

    mem = benchmark(run)
    assert mem.samples == n


def test_oracle_learn_1000_names(benchmark) -> None:
    def run() -> PlasticOracle:
        oracle = PlasticOracle()
        for s in NAMES[:1_000]:
            oracle.learn(s)
        return oracle

    oracle = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(oracle.node) == 1536


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_engine_infer(benchmark, mode: str) -> None:
    mem = PlasticMemory()
    mem.learn_many(NAMES, progress=False)
    result = benchmark(lambda: mem.infer(">", mode=mode, seed=0))
    assert result.completion.endswith("_")


def test_engine_save_load(benchmark, tmp_path: Path) -> None:
    mem = PlasticMemory()
    mem.learn_many(NAMES, progress=False)
    path = tmp_path / "names.npz"

    def run() -> PlasticMemory:
        mem.save(path)
        return PlasticMemory.load(path)

    loaded = benchmark(run)
    assert len(loaded) == len(mem)
