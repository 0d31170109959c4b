"""Every area suite of the bench harness at its tiny size: rows with the history's fields, our
candidates correct, every peer either timed or noted with the reason (no timing asserted)."""

from __future__ import annotations

import pytest
import torch

from mnemonix.benchmark import run, suites, timing
from mnemonix.benchmark.floors import Floors

CPU = torch.device("cpu")
FIELDS = ("op", "backend", "role", "shape", "dtype", "device", "device_name", "p20", "p50", "p80", "floor_s",
          "commit", "version", "torch", "triton", "timestamp", "run_id", "suite", "size", "ok")
ENV = {"device": "cpu", "device_name": "test", "commit": "c", "version": "v", "torch": torch.__version__,
       "triton": None, "timestamp": "t", "run_id": "r"}


@pytest.fixture(autouse=True)
def _fixed_floors(monkeypatch):
    """The floors' bandwidth and GEMM measurements take seconds: a fixed machine instead."""
    monkeypatch.setattr(run, "measure_floors", lambda device, dtype=torch.float32: Floors(1e10, 1e11))


def _measure(area: str, only=None) -> list[dict]:
    rows = []
    for case in suites.cases(area, CPU, "tiny"):
        if only is None or case.op in only:
            rows += run.measure_case(case, CPU, repeat=2, budget_s=0.05, env=ENV, suite=area, size="tiny")
    return rows


def _assert_rows(rows: list[dict], peers: set[str]) -> None:
    assert rows
    for row in rows:
        for field in FIELDS:
            assert field in row, (row["op"], row["backend"], field)
        if row["role"] == "mnemonix" and not row.get("skipped"):
            assert row["ok"] is True, (row["op"], row["backend"], row["shape"])
        if row["role"] == "peer":
            assert row["ok"] is None
            assert (row["p50"] is not None) != bool(row.get("skipped")), row
    assert peers <= {r["backend"] for r in rows}  # timed, or a row saying why not


@pytest.mark.parametrize("area, peers", [
    ("store", {"peer:faiss", "peer:torch"}),
    ("memoria", {"peer:memoria-pytorch"}),
    ("layers", {"peer:hflayers", "peer:sdpa"}),
    ("hopfield", {"peer:sdpa", "peer:plain", "peer:hflayers", "peer:research"}),
    ("salience", {"peer:plain", "peer:faiss", "peer:notebook"}),
    ("plastic", {"peer:python-rule"}),
    ("consolidation", {"peer:research"}),
])
def test_area_suite_at_its_tiny_size(area, peers):
    rows = _measure(area, only={"store.search", "store.remove", "store.load"} if area == "store" else None)
    _assert_rows(rows, peers)
    floors = {r["op"]: r["floor_s"] for r in rows}
    if area == "store":
        assert floors["store.search"] > 0 and floors["store.remove"] is None  # no bytes or flops: no floor
        load = next(r for r in rows if r["op"] == "store.load" and r["backend"] == "auto")
        assert "rss_growth_MB" in load


def test_missing_peer_packages_are_noted(monkeypatch):
    from mnemonix.benchmark.suites import memoria, store

    monkeypatch.setattr(store, "_faiss", lambda: (None, "faiss is not installed (pip install faiss-cpu)"))
    monkeypatch.setattr(memoria, "_original_available", lambda: "memoria-pytorch is not installed")
    rows = _measure("store", only={"store.remove"}) + _measure("memoria")
    noted = {r["backend"]: r["skipped"] for r in rows if r.get("skipped")}
    assert "faiss is not installed" in noted["peer:faiss"]
    assert noted["peer:memoria-pytorch"] == "memoria-pytorch is not installed"
    assert all(r["ok"] is True for r in rows if r["role"] == "mnemonix")


def test_measure_runs_setup_before_every_call_outside_the_clock():
    state = {"removed": False, "setups": 0}

    def remove():
        assert not state["removed"], "setup did not restore the state"
        state["removed"] = True

    def restore():
        state["removed"], state["setups"] = False, state["setups"] + 1

    t = timing.measure({"x": remove}, CPU, repeat=3, warmup_s=0.0, setup={"x": restore})
    # the warm-up call, the probe of its length, and three rounds of an untimed + a timed call
    # (a short call on the CPU is timed right after one of its own)
    assert t["x"].samples == 3 and state["setups"] == 2 + 3 * 2


def test_op_filter_takes_an_op_or_a_prefix():
    assert run._selected("store.search", "store.search") and run._selected("store.search", "store.")
    assert not run._selected("store.search", "store") and not run._selected("memoria.step", "store.")
    assert run._selected("anything", None)
