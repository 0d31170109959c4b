"""The bench harness: timing, history, the regression gate, plots and the CLI (tiny cases)."""

from __future__ import annotations

import json

import pytest
import torch

from mnemonix.benchmark import gate, history, run, suites, timing
from mnemonix.benchmark.timing import Timing, measure
from mnemonix.cli import main


def test_measure_interleaves_and_injects_slowdown(monkeypatch):
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    t = measure(fns, torch.device("cpu"), repeat=5, warmup_s=0.0)
    assert set(t) == {"a", "b"} and all(v.samples == 5 for v in t.values())
    assert calls.count("a") >= 6 and calls.count("b") >= 6  # warm-up + 5 rounds
    # the injected slowdown adds that fraction of each measured call (no wall-clock assertion)
    waits = []
    monkeypatch.setattr(timing._Clock, "__call__", lambda self, fn: (fn(), 0.01)[1])
    monkeypatch.setattr(timing, "_busy_wait", waits.append)
    slow = measure({"x": lambda: None, "y": lambda: None}, torch.device("cpu"), repeat=4, slowdown={"x": 0.1})
    assert waits == [pytest.approx(0.001)] * 4
    assert slow["x"].p50 == pytest.approx(0.011) and slow["y"].p50 == pytest.approx(0.01)


def test_timing_percentiles_are_ordered():
    t = Timing.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert t.p20 <= t.p50 <= t.p80 and t.p50 == 3.0 and t.samples == 5 and t.rounds == (5.0, 1.0, 3.0, 2.0, 4.0)


def test_peer_ratio_is_the_median_of_per_round_ratios():
    machine = [1.0, 3.0, 1.5, 2.0, 1.0]  # the machine's speed moves every candidate of a round alike
    timings = {"auto": Timing.of([2 * m for m in machine]), "peer:a": Timing.of(machine),
               "peer:b": Timing.of([4 * m for m in machine])}
    # the medians' ratio mixes rounds (2 * 1.5 / sqrt(1.5 * 6)), the per-round one does not
    assert timing.peer_ratio(timings, "auto") == pytest.approx(1.0)
    timings["auto"] = Timing.of([2 * m * (1.3 if i == 1 else 1.0) for i, m in enumerate(machine)])
    assert timing.peer_ratio(timings, "auto") == pytest.approx(1.0)  # one noisy round moves no median
    assert timing.peer_ratio({"auto": Timing.of([1.0])}, "auto") is None  # no peer
    assert timing.peer_ratio({"auto": Timing.of([1.0]), "peer:a": Timing.of([1.0, 2.0])}, "auto") is None


def test_history_appends_and_skips_torn_lines(tmp_path):
    path = tmp_path / "h.jsonl"
    row = {"op": "x", "backend": "auto", "run_id": "r1", "p50": 1.0, "shape": {"N": 1}}
    assert history.append(path, [row, dict(row, run_id="r2")]) == 2
    with path.open("a") as fh:
        fh.write('{"op": "x", "backend": "au')  # a crash mid-line
    rows = history.read(path)
    assert [r["run_id"] for r in rows] == ["r1", "r2"] and history.runs(rows) == ["r1", "r2"]
    with pytest.raises(FileNotFoundError, match="mnemonix bench run"):
        history.read(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("base, new, flagged", [
    (1.0, 1.04, False), (1.0, 1.2, True), (10e-6, 35e-6, False), (1e-3, 1.1e-3, True), (1.0, 0.5, False),
])
def test_gate_rule(base, new, flagged):
    assert gate.regressed(base, new) is flagged


def _rows(run_id, p50, device_name="dev", backend="auto"):
    return {"op": "op", "backend": backend, "run_id": run_id, "p50": p50, "shape": {"N": 4}, "dtype": "float32",
            "device": "cpu", "device_name": device_name, "role": "peer" if backend.startswith("peer") else "mnemonix"}


def test_gate_compares_same_device_runs_and_remeasures():
    rows = [_rows("a", 1.0), _rows("other", 0.1, device_name="gpu"), _rows("b", 1.5)]
    base, new = gate.pick_runs(rows, None, None)
    assert (base, new) == ("a", "b")
    (verdict,) = gate.compare(rows, base, new)
    assert verdict.regressed and verdict.ratio == pytest.approx(1.5)
    (cleared,) = gate.compare(rows, base, new, remeasure=lambda row: {"auto": 1.01})  # noise: the re-measure is fine
    assert not cleared.regressed


def test_gate_divides_out_the_machines_drift_seen_by_the_peers():
    def run(run_id, ours, peer, torch_version="2.13"):
        return [dict(_rows(run_id, ours), torch=torch_version),
                dict(_rows(run_id, peer, backend="peer:sdpa"), torch=torch_version)]

    slower_machine = run("a", 1.0, 2.0) + run("b", 1.2, 2.4)  # everything 20% slower: the machine
    (ours, peer) = gate.compare(slower_machine, "a", "b")
    assert not ours.regressed and peer.regressed  # (a peer's verdict is shown, never fails the gate)
    assert ours.drift == pytest.approx(1.2) and ours.ratio == pytest.approx(1.0)
    assert gate.compare(slower_machine, "a", "b", drift_by_peers=False)[0].regressed
    ours_slower = run("a", 1.0, 2.0) + run("b", 1.2, 2.0)  # the peer did not move: our code did
    assert gate.compare(ours_slower, "a", "b")[0].regressed
    faster_machine = run("a", 1.0, 2.0) + run("b", 1.0, 1.6)  # a 20% faster machine hides nothing
    assert gate.compare(faster_machine, "a", "b")[0].regressed
    # with per-round ratios recorded in both runs, they decide: the medians moved apart (rounds of
    # another speed), the per-round ratio did not
    steady = [dict(r, peer_ratio=0.5) if r["role"] == "mnemonix" else r
              for r in run("a", 1.0, 2.0) + run("b", 1.2, 2.0)]
    (verdict, _) = gate.compare(steady, "a", "b")
    assert not verdict.regressed and verdict.ratio == pytest.approx(1.0)
    assert gate.compare(steady, "a", "b", per_round=False)[0].regressed  # the medians' drift alone
    moved = [dict(r, peer_ratio=0.5 if r["run_id"] == "a" else 0.6) for r in run("a", 1.0, 2.0) + run("b", 1.0, 2.0)]
    assert gate.compare(moved, "a", "b")[0].regressed  # 20% slower against the peers, round by round
    again = gate.compare(moved, "a", "b", remeasure=lambda row: {"auto": 1.2, "peer:sdpa": 2.4, "ratio:auto": 0.5})
    assert not again[0].regressed  # the re-measure's per-round ratio is back at the base's
    new_torch = run("a", 1.0, 2.0) + run("b", 1.2, 2.4, torch_version="2.14")  # peers changed: no drift
    assert gate.compare(new_torch, "a", "b")[0].regressed
    with pytest.raises(ValueError, match="no earlier run"):
        gate.pick_runs([_rows("only", 1.0)], None, None)


def _tiny_case(op="tiny_op"):
    def build(device):
        x = torch.randn(64, 64)
        return suites.Built({"auto": lambda: x @ x, "peer:twice": lambda: (x @ x) @ torch.eye(64)},
                            check=lambda fn: bool(torch.allclose(fn(), x @ x)), bytes_read=64 * 64 * 4,
                            flops=2 * 64**3, chosen="torch")
    return suites.Case(op, {"N": 64}, torch.float32, build)


def test_cli_run_compare_plot_on_a_tiny_suite(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suites, "cases", lambda suite, device, size=None: [_tiny_case()])
    hist = tmp_path / "h.jsonl"
    for _ in range(2):
        assert main(["bench", "run", "--suite", "smoke", "--device", "cpu", "--history", str(hist),
                     "--repeat", "3"]) == 0
    rows = history.read(hist)
    assert len(history.runs(rows)) == 2
    first = rows[0]
    for field in ("op", "backend", "shape", "dtype", "device", "device_name", "p20", "p50", "p80", "floor_s",
                  "commit", "version", "torch", "triton", "timestamp", "run_id"):
        assert field in first, field
    assert first["ok"] is True and first["floor_s"] > 0
    code = main(["bench", "compare", "--history", str(hist), "--rtol", "1000", "--atol", "1"])
    assert code == 0 and "ok" in capsys.readouterr().out
    assert main(["bench", "plot", "--history", str(hist), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "tiny_op.png").stat().st_size > 1000


def test_cli_compare_fails_naming_the_regression(tmp_path, capsys):
    hist = tmp_path / "h.jsonl"
    history.append(hist, [_rows("a", 1e-3), _rows("b", 2e-3)])
    assert main(["bench", "compare", "--history", str(hist), "--no-remeasure"]) == 1
    out = capsys.readouterr().out
    assert "regression: op auto {'N': 4} float32" in out


def test_injected_slowdown_spec(monkeypatch):
    monkeypatch.setenv(run.SLOWDOWN_ENV, "hopfield_retrieve=0.1")
    assert run.injected_slowdown() == {"hopfield_retrieve": 0.1}
    monkeypatch.setenv(run.SLOWDOWN_ENV, "hopfield_retrieve=0.1, lifespan_step=0.2")
    assert run.injected_slowdown() == {"hopfield_retrieve": 0.1, "lifespan_step": 0.2}
    for bad in ("nonsense", "a=0.1,b", "a=-1", "=0.1", "a=nan", "a=inf"):
        monkeypatch.setenv(run.SLOWDOWN_ENV, bad)
        with pytest.raises(ValueError, match="op=0.10"):
            run.injected_slowdown()


def test_every_suite_declares_cases():
    core = {"hopfield_retrieve", "salience_topk", "lifespan_step"}
    for suite in suites.SIZE_SUITES:
        ops = {c.op for c in suites.cases(suite, torch.device("cpu"))}
        assert ops == core if suite != "full" else (core < ops and {"store.search", "memoria.step"} <= ops)
    for area in suites.AREAS:
        for size in suites.sizes(area):
            assert suites.cases(area, torch.device("cpu"), size), (area, size)
    with pytest.raises(ValueError, match="suite must be one of"):
        suites.cases("nope", torch.device("cpu"))
    with pytest.raises(ValueError, match="size of suite 'store' must be one of"):
        suites.cases("store", torch.device("cpu"), "huge")
    with pytest.raises(ValueError, match="size must be None"):
        suites.cases("smoke", torch.device("cpu"), "tiny")


def test_real_lifespan_case_runs_and_checks(tmp_path):
    rows = run.run_suite("smoke", torch.device("cpu"), history_path=tmp_path / "h.jsonl", repeat=3,
                         only="lifespan_step", report=lambda s: None)
    auto = next(r for r in rows if r["backend"] == "auto")
    from mnemonix.backends import lifespan as lifespan_backends  # no speed policy: the declared order on CPU

    assert auto["ok"] is True and auto["chosen"] == ("cpp" if lifespan_backends.core_lifespan() else "torch")
    assert json.loads((tmp_path / "h.jsonl").read_text().splitlines()[0])["op"] == "lifespan_step"


def test_gate_rates_counts_false_alarms_and_detections(monkeypatch):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "gate_rates", Path(__file__).resolve().parents[1] / "bench" / "gate_rates.py")
    gate_rates = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate_rates)
    monkeypatch.setenv(run.SLOWDOWN_ENV, "")
    monkeypatch.setattr(gate, "remeasurer", lambda: (lambda row: None))
    rows = [_rows("h1", 1e-3), _rows("h1", 5e-3, backend="peer:x"), _rows("s1", 1.2e-3), _rows("h2", 1.01e-3),
            _rows("s2", 1.02e-3), _rows("h3", 1.5e-3)]
    order = [("h1", False), ("s1", True), ("h2", False), ("s2", True), ("h3", False)]
    (per,) = gate_rates.rates(rows, order, 0.10, ["op"]).values()
    assert (per["honest_pairs"], per["false_alarms"], per["false_alarms_raw"]) == (2, 1, 1)  # h2 -> h3 jumped
    assert (per["slowed_pairs"], per["detected"]) == (2, 1)  # s2 vs h2 missed
    assert per["within_rule_reach"] and per["base_p50_ms"] == pytest.approx(1.005)  # median of the bases
    totals = gate_rates._totals({"op": per})
    assert totals["false_alarm_rate"] == 0.5 and totals["detection_rate_in_reach"] == 0.5


def test_short_cpu_calls_are_timed_after_one_of_their_own(monkeypatch):
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    timing.measure(fns, torch.device("cpu"), repeat=2, warmup_s=0.0)
    calls = order[4:]  # after the warm-up call and the length probe of each
    pairs = [calls[i:i + 2] for i in range(0, len(calls), 2)]
    assert all(p[0] == p[1] for p in pairs)  # each timed call right after an untimed one of its own
    assert [sorted(p[0] for p in pairs[i:i + 2]) for i in (0, 2)] == [["a", "b"], ["a", "b"]]
    monkeypatch.setattr(timing, "PRECALL_BELOW_S", 0.0)  # long calls: one timed call each per round
    order.clear()
    timing.measure(fns, torch.device("cpu"), repeat=2, warmup_s=0.0)
    assert [sorted(order[4:6]), sorted(order[6:8])] == [["a", "b"], ["a", "b"]]


def test_rounds_vary_which_candidate_runs_before_which(monkeypatch):
    """A fixed cyclic order would put each candidate after the same one in every round (after a
    peer whose thread pool still spins, say): the shuffled rounds vary it, the same way each run."""
    monkeypatch.setattr(timing, "PRECALL_BELOW_S", 0.0)
    runs = []
    for _ in range(2):
        order = []
        fns = {name: (lambda name=name, order=order: order.append(name)) for name in "abcd"}
        timing.measure(fns, torch.device("cpu"), repeat=12, warmup_s=0.0, budget_s=60.0)
        runs.append(order[8:])
    assert runs[0] == runs[1]  # seeded
    rounds = [runs[0][i:i + 4] for i in range(0, 48, 4)]
    assert all(sorted(r) == list("abcd") for r in rounds)
    before = {name: {r[r.index(name) - 1] for r in rounds if r.index(name) > 0} for name in "abcd"}
    assert all(len(v) >= 2 for v in before.values())


def test_cpu_hopfield_suites_track_16_bit_operands():
    # the "fp16/bf16 where the peer runs": SDPA and plain torch run both on the CPU
    from mnemonix.benchmark.suites import hopfield as hopfield_suite

    found = {(tuple(c.shape.values()), c.dtype) for c in suites.cases("quick", torch.device("cpu"))
             if c.op == "hopfield_retrieve"}
    for shape in hopfield_suite.HALF_CPU_SHAPES["quick"]:
        assert {(shape, torch.bfloat16), (shape, torch.float16)} <= found
    for shape in hopfield_suite.BFLOAT16_CPU_SHAPES["quick"]:  # bfloat16 alone: the AMX kernel's shape
        assert (shape, torch.bfloat16) in found and (shape, torch.float16) not in found
    sixteen = set(hopfield_suite.HALF_CPU_SHAPES["quick"]) | set(hopfield_suite.BFLOAT16_CPU_SHAPES["quick"])
    assert all(dt == torch.float32 for shape, dt in found if shape not in sixteen)
    for dtype in (torch.bfloat16, torch.float16):  # ours checked against SDPA in the same dtype
        built = hopfield_suite._builder(500, 16, 4, dtype)(torch.device("cpu"))
        assert built.check(built.candidates["auto"]) and built.chosen in {"cpp", "sdpa", "amx"}
        assert {"peer:sdpa", "peer:plain"} <= set(built.candidates)


def test_floor_reads_at_the_cache_rate_only_what_half_the_cache_holds():
    from mnemonix.benchmark.floors import Floors

    f = Floors(bandwidth=1e10, gemm_flops=1e12, cache_bandwidth=4e10, cache_bytes=100 << 20)
    assert f.of(bytes_read=50 << 20) == (50 << 20) / 4e10  # fits in half the cache: its rate
    assert f.of(bytes_read=(50 << 20) + 1) == ((50 << 20) + 1) / 1e10  # beyond: memory's
    assert f.of(bytes_read=1e3, flops=1e9) == 1e9 / 1e12  # compute-bound
    assert Floors(1e10, 1e12).of(bytes_read=1e6) == 1e6 / 1e10  # no cache measured: memory's rate


def test_floor_reads_at_the_core_caches_rate_what_they_hold_together():
    from mnemonix.benchmark.floors import Floors

    f = Floors(bandwidth=1e10, gemm_flops=1e12, cache_bandwidth=4e10, cache_bytes=100 << 20,
               core_cache_bandwidth=2e11, core_cache_bytes=4 << 20)
    assert f.of(bytes_read=4 << 20) == (4 << 20) / 2e11  # all the cores' caches hold it: their rate
    assert f.of(bytes_read=(4 << 20) + 1) == ((4 << 20) + 1) / 4e10  # beyond: the last level's
    assert f.of(bytes_read=(50 << 20) + 1) == ((50 << 20) + 1) / 1e10  # beyond half of that: memory's
    assert f.of(bytes_read=1e3, flops=1e9) == 1e9 / 1e12  # compute-bound


def test_core_caches_come_from_sysfs_one_copy_per_core_or_per_sharing_group(tmp_path):
    from mnemonix.benchmark.floors import core_cache_bytes

    for i, (level, kind, size, cpus) in enumerate([(1, "Data", "48K", "0"), (1, "Instruction", "64K", "0"),
                                                   (2, "Unified", "2048K", "0"), (3, "Unified", "491520K", "0-1")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, text in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", cpus)):
            (d / name).write_text(f"{text}\n")
    assert core_cache_bytes(2, tmp_path) == 4 << 20 and core_cache_bytes(1, tmp_path) == 2 << 20  # one per core
    (tmp_path / "index2" / "shared_cpu_list").write_text("0,2-3\n")  # one copy per three CPUs
    assert core_cache_bytes(2, tmp_path) == 2 << 20 and core_cache_bytes(4, tmp_path) == 4 << 20
    (tmp_path / "index2" / "size").write_text("garbage\n")
    assert core_cache_bytes(2, tmp_path) == 0  # unreadable: unknown
    for i in (2, 3):
        for name in ("level", "type", "size", "shared_cpu_list"):
            (tmp_path / f"index{i}" / name).unlink()
        (tmp_path / f"index{i}").rmdir()
    assert core_cache_bytes(2, tmp_path) == 0  # one level only: no level below the last


def test_last_level_cache_comes_from_sysfs(tmp_path):
    from mnemonix.benchmark.floors import last_level_cache_bytes

    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "64K"), (2, "Unified", "2048K"),
                                             (3, "Unified", "491520K")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert last_level_cache_bytes(tmp_path) == 491520 << 10
    (tmp_path / "index3" / "size").write_text("32M\n")
    assert last_level_cache_bytes(tmp_path) == 32 << 20
    (tmp_path / "index3" / "size").write_text("garbage\n")
    assert last_level_cache_bytes(tmp_path) == 0  # unreadable: unknown
    assert last_level_cache_bytes(tmp_path / "missing") == 0


def _cpuinfo(name, family="26", model="2"):
    block = f"processor\t: {{i}}\nvendor_id\t: X\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: {name}\n"
    return "\n".join(block.format(i=i) for i in range(2))


@pytest.mark.parametrize("name, generic", [
    ("AMD EPYC", True),  # a hypervisor's generic names: the generation is added
    ("Intel(R) Xeon(R) Processor", True),
    ("AMD EPYC 9654 96-Core Processor", False),  # a model number says it already
    ("Intel(R) Xeon(R) Platinum 8480+", False),
])
def test_cpu_model_tells_apart_what_a_generic_name_hides(name, generic):
    from mnemonix.benchmark.environment import cpu_model

    assert cpu_model(_cpuinfo(name)) == (f"{name} (family 26, model 2)" if generic else name)
    assert (cpu_model(_cpuinfo(name, family="25", model="1")) != cpu_model(_cpuinfo(name))) == generic


def test_cpu_model_without_cpuinfo_falls_back_to_the_platform():
    import platform

    from mnemonix.benchmark.environment import cpu_model

    assert cpu_model("") == (platform.processor() or platform.machine())
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC\n") == "AMD EPYC"  # no family given


def test_a_16_bit_cpu_floor_computes_at_least_at_the_float32_rate(monkeypatch):
    # torch's float16 mm on a CPU without a float16 unit is far slower than its float32 one; the
    # floor is what the machine can do, and the kernels compute 16-bit operands in float32
    from mnemonix.benchmark import floors

    rates = {torch.float32: 1e11, torch.float16: 2e9, torch.bfloat16: 4e11}
    monkeypatch.setattr(floors, "_CACHE", {})
    monkeypatch.setattr(floors, "_read_rate", lambda n_bytes, device, dtype, repeat, times=1: 1e10)
    monkeypatch.setattr(floors, "_gemm_rate", lambda device, dtype: rates[dtype])
    cpu = torch.device("cpu")
    assert floors.measure_floors(cpu, torch.float16).gemm_flops == 1e11  # float32's
    assert floors.measure_floors(cpu, torch.bfloat16).gemm_flops == 4e11  # its own, faster
    assert floors.measure_floors(cpu, torch.float32).gemm_flops == 1e11
