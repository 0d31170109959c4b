"""``mnemonix bench calibrate`` and the thresholds the speed policies read (tiny shapes, no timing asserted)."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch

from mnemonix import calibration
from mnemonix._io import FormatError
from mnemonix.backends import hopfield as hb
from mnemonix.backends import hopfield_amx
from mnemonix.benchmark import calibrate
from mnemonix.cli import main
from mnemonix.ops import hopfield as hops
from mnemonix.ops import salience as salience_op

HAS_CPP = hb._core_retrieval() is not None
HAS_AMX = hopfield_amx.available()


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No variable, an empty per-user cache, no CPU profile (the same policy on every machine),
    nothing resolved yet (and forgotten afterwards)."""
    monkeypatch.delenv(calibration.ENV, raising=False)
    monkeypatch.setattr(calibration, "CPU_PROFILES", ())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calibration.reload()
    yield tmp_path
    calibration.reload()


def _doc(**thresholds):
    return {"format": calibration.FORMAT, "version": calibration.VERSION, "device": "cpu",
            "thresholds": {"hopfield_retrieve": thresholds}}


def test_defaults_without_a_file(clean):
    cpu = calibration.thresholds("hopfield_retrieve", torch.device("cpu"))
    assert cpu == calibration.DEFAULTS["cpu"]["hopfield_retrieve"]
    assert {"cpp_max_batch": hops.CPP_MAX_BATCH, "cpp_max_batch_large_store": hops.CPP_MAX_BATCH_LARGE_STORE,
            "cpp_large_store_bytes": hops.CPP_LARGE_STORE_BYTES}.items() <= cpu.items()
    assert (hops.CPP_MAX_BATCH, hops.CPP_MAX_BATCH_LARGE_STORE, hops.CPP_LARGE_STORE_BYTES) == (64, 32, 4 << 20)
    assert hops.cpp_max_batch(torch.empty(4096, 64)) == 64
    assert hops.cpp_max_batch(torch.empty(4096, 32)) == cpu["cpp_max_batch_narrow"] == 32  # narrow keys
    # stores of few rows (the kernel splits the queries): up to 256 while B x d <= 8,192, d >= 8
    assert (cpu["cpp_few_rows"], cpu["cpp_few_rows_min_dim"], cpu["cpp_max_batch_few_rows"]) == (2048, 8, 256)
    assert [hops.cpp_max_batch(torch.empty(1000, d)) for d in (4, 8, 32, 64, 128)] == [32, 256, 256, 128, 64]
    salience = calibration.thresholds("salience_topk", torch.device("cpu"))
    assert salience == {"cpp_max_batch": 64, "cpp_max_work": 1 << 18, "narrow_dim": 32, "cpp_max_batch_narrow": 256,
                        "gemm_chunk_scores": 384 << 10}
    assert [salience_op.cpu_order(b, 10**5, d)[0] for b, d in ((64, 128), (65, 128), (256, 32), (257, 32))] == [
        "cpp", "gemm", "cpp", "gemm"]
    assert all(not g["measured"] for g in calibration.GPU_GUESSES.values())


def test_policy_reads_the_file_named_by_the_variable(clean, monkeypatch):
    path = clean / "cal.json"
    path.write_text(json.dumps(_doc(cpp_max_batch=2)))  # other keys keep their defaults
    monkeypatch.setenv(calibration.ENV, str(path))
    keys = torch.randn(2048, 64)  # not a store of few rows (cpp_few_rows): cpp_max_batch applies
    assert hops.cpp_max_batch(keys) == 2
    limits = calibration.thresholds("hopfield_retrieve", torch.device("cpu"))
    assert limits["cpp_max_batch_large_store"] == hops.CPP_MAX_BATCH_LARGE_STORE
    if HAS_CPP:
        assert hops.choose_backend(torch.zeros(2, 64), keys) == "cpp"
        assert hops.choose_backend(torch.zeros(3, 64), keys) == "sdpa"
        # a threshold is speed, never capability: forcing cpp past it still runs
        from mnemonix import ops
        out = ops.hopfield_retrieve(torch.zeros(3, 64), keys, beta=1.0, backend="cpp")
        assert out.shape == (3, 64)
    monkeypatch.setenv(calibration.ENV, "default")
    assert hops.cpp_max_batch(keys) == hops.CPP_MAX_BATCH


def test_per_user_file_is_read_and_a_bad_one_warns_and_keeps_defaults(clean):
    from mnemonix.benchmark.environment import device_name

    path = calibration.user_path(device_name(torch.device("cpu")))
    assert str(path).startswith(str(clean / "cache" / "mnemonix" / "calibration-"))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_doc(cpp_max_batch=3)))
    assert hops.cpp_max_batch(torch.empty(2048, 64)) == 3
    path.write_text("{not json")
    calibration.reload()
    with pytest.warns(UserWarning, match="ignoring the calibration file .*shipped defaults"):
        assert hops.cpp_max_batch(torch.empty(2048, 64)) == hops.CPP_MAX_BATCH
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per call
        assert hops.cpp_max_batch(torch.empty(2048, 64)) == hops.CPP_MAX_BATCH


def test_a_cpu_profile_overrides_the_defaults_on_its_cpus_only(clean, monkeypatch):
    monkeypatch.setattr(calibration, "CPU_PROFILES", (
        (r"Acme\(R\) Turbo", {"salience_topk": {"cpp_max_batch": 3}}),
        (r"Acme", {"salience_topk": {"cpp_max_batch": 5}, "hopfield_retrieve": {"cpp_max_batch": 7}})))
    monkeypatch.setattr(calibration, "_device_name", lambda device_type: "Acme(R) Turbo 9 x2")
    salience = calibration.thresholds("salience_topk", "cpu")
    assert salience["cpp_max_batch"] == 3  # the first match only
    assert {k: v for k, v in salience.items() if k != "cpp_max_batch"} == {
        k: v for k, v in calibration.DEFAULTS["cpu"]["salience_topk"].items() if k != "cpp_max_batch"}
    assert calibration.thresholds("hopfield_retrieve", "cpu") == calibration.DEFAULTS["cpu"]["hopfield_retrieve"]
    assert calibration.DEFAULTS["cpu"]["salience_topk"]["cpp_max_batch"] == 64  # not changed in place
    monkeypatch.setenv(calibration.ENV, "default")  # the generic defaults, whatever the CPU
    assert calibration.thresholds("salience_topk", "cpu")["cpp_max_batch"] == 64
    monkeypatch.delenv(calibration.ENV)
    path = calibration.user_path("Acme(R) Turbo 9 x2")  # a calibration of this machine overrides the profile
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**_doc(), "thresholds": {"salience_topk": {"cpp_max_batch": 9}}}))
    calibration.reload()
    assert calibration.thresholds("salience_topk", "cpu")["cpp_max_batch"] == 9
    monkeypatch.setattr(calibration, "_device_name", lambda device_type: "Other CPU x2")
    calibration.reload()
    assert calibration.thresholds("salience_topk", torch.device("cpu")) == calibration.DEFAULTS["cpu"]["salience_topk"]


def test_the_shipped_cpu_profiles_are_valid_and_match_their_machines():
    for pattern, overrides in calibration.CPU_PROFILES:
        calibration.validate({**_doc(), "thresholds": overrides}, pattern)
    xeon = calibration.shipped("cpu", "Intel(R) Xeon(R) Processor x2")
    assert xeon != calibration.DEFAULTS["cpu"] and set(xeon) == set(calibration.DEFAULTS["cpu"])
    assert calibration.shipped("cpu", "AMD EPYC x2") == calibration.DEFAULTS["cpu"]  # the development machine
    # the Zen 5 (family 26) and Zen 3 (family 25, model 1) EPYCs have profiles of their own;
    # another generation of the same name (Zen 4: family 25, model 17, with AVX-512) does not
    lanes = calibration.DEFAULTS["cpu"]["hopfield_retrieve"]["cpp_lane_max_batch"]
    zen5 = calibration.shipped("cpu", "AMD EPYC (family 26, model 2) x2")["hopfield_retrieve"]
    zen3 = calibration.shipped("cpu", "AMD EPYC (family 25, model 1) x2")["hopfield_retrieve"]
    assert zen5["cpp_lane_max_batch"] > zen3["cpp_lane_max_batch"] > lanes
    assert zen3["cpp_lane_max_dims"] < zen5["cpp_lane_max_dims"]
    assert calibration.shipped("cpu", "AMD EPYC (family 25, model 17) x2") == calibration.DEFAULTS["cpu"]
    assert calibration.shipped("cuda", "Intel(R) Xeon(R) Processor x2") == calibration.DEFAULTS["cuda"]


@pytest.mark.parametrize("doc, field", [
    ("[]", "(top level)"),
    (json.dumps({**_doc(), "format": "other"}), "format"),
    (json.dumps({**_doc(), "version": 99}), "version"),
    (json.dumps({**_doc(), "device": "tpu"}), "device"),
    (json.dumps(_doc(cpp_max_batch=-1)), "thresholds.hopfield_retrieve.cpp_max_batch"),
    (json.dumps(_doc(cpp_max_batch="8")), "thresholds.hopfield_retrieve.cpp_max_batch"),
    (json.dumps(_doc(cpp_max_batch=True)), "thresholds.hopfield_retrieve.cpp_max_batch"),
    (json.dumps(_doc(max_speed=1)), "thresholds.hopfield_retrieve.max_speed"),
    (json.dumps({**_doc(), "thresholds": {"nope": {}}}), "thresholds.nope"),
])
def test_a_bad_file_named_by_the_variable_is_a_format_error(clean, monkeypatch, doc, field):
    path = clean / "bad.json"
    path.write_text(doc)
    monkeypatch.setenv(calibration.ENV, str(path))
    with pytest.raises(FormatError, match=re.escape(f"bad.json': field '{field}'")):
        hops.cpp_max_batch(torch.empty(10, 64))


def test_missing_or_unreadable_file_named_by_the_variable(clean, monkeypatch):
    monkeypatch.setenv(calibration.ENV, str(clean / "missing.json"))
    with pytest.raises(FormatError, match="missing.json.*does not exist"):
        hops.cpp_max_batch(torch.empty(10, 64))
    (clean / "bin.json").write_bytes(b"\xff\xfe{")
    monkeypatch.setenv(calibration.ENV, str(clean / "bin.json"))
    with pytest.raises(FormatError, match="bin.json.*not JSON"):
        hops.cpp_max_batch(torch.empty(10, 64))


def test_a_file_for_another_device_type_leaves_the_cpu_defaults(clean, monkeypatch):
    path = clean / "gpu.json"
    path.write_text(json.dumps({**_doc(), "device": "cuda", "thresholds": {}}))
    monkeypatch.setenv(calibration.ENV, str(path))
    assert hops.cpp_max_batch(torch.empty(2048, 64)) == hops.CPP_MAX_BATCH


@pytest.mark.parametrize("wins, expected", [
    ([True, True, True, False, False], 4),
    ([False, True, True, False, False], 4),  # one noisy loss at B = 1
    ([True, True, False, False, True], 2),  # one noisy win past the crossover
    ([False, False, False, False, False], 0),
    ([True] * 5, 16),
    ([False, True, False, False, False], 0),  # a tie: the smaller threshold
])
def test_crossover_rule(wins, expected):
    rows = [{"B": b, "cpp_p20": 1.0 if won else 3.0, "sdpa_p20": 2.0, "torch_p20": 5.0}
            for b, won in zip((1, 2, 4, 8, 16), wins)]
    assert calibrate.crossover(rows, "cpp", ("sdpa", "torch")) == expected
    assert calibrate.crossover([{"B": 1, "sdpa_p20": 1.0}], "cpp", ("sdpa",)) is None


@pytest.mark.parametrize("wins, expected", [
    ([False, True, True, False, False], (2, 4)),
    ([True, True, True, True, True], (1, 16)),
    ([False, False, False, False, False], (0, 0)),
    ([False, True, False, True, True], (2, 16)),  # one noisy loss inside the band
    ([True, False, False, False, False], (1, 1)),
    ([False, True, False, False, True], (2, 2)),  # two bands as good: the lowest
])
def test_interval_rule(wins, expected):
    rows = [{"B": b, "amx_p20": 1.0 if won else 3.0, "sdpa_p20": 2.0, "cpp_p20": 2.5}
            for b, won in zip((1, 2, 4, 8, 16), wins)]
    assert calibrate.interval(rows, "amx", ("sdpa", "cpp")) == expected
    assert calibrate.interval([{"B": 1, "sdpa_p20": 1.0}], "amx", ("sdpa",)) is None


def test_calibrate_tiny_writes_a_valid_file_the_policy_uses(clean, monkeypatch):
    # salience batches past cpp_max_batch (64): the ones the fit places
    doc = calibrate.calibrate(torch.device("cpu"), stores={"small": (2048, 64)}, batches=(1, 2), repeat=3,
                              budget_s=0.5, report=lambda s: None, salience_shapes=((72, 64, 40), (80, 300, 40)),
                              amx_store=(2048, 64), amx_batches=(16, 1))
    path = calibrate.write(doc, clean / "out" / "cal.json")
    data = json.loads(path.read_text())
    calibration.validate(data)
    assert data["device_name"] == data["environment"]["device_name"] and data["environment"]["commit"]
    rows = data["measurements"]["hopfield_retrieve"]["small"]["rows"]
    assert [r["B"] for r in rows] == [1, 2] and all(r["sdpa_p20"] > 0 and r["gemm_p20"] > 0 for r in rows)
    assert "hopfield_retrieve.cpp_max_batch_large_store" in data["not_measured"]  # no large store swept
    assert "keeps the shipped value" in data["not_measured"]["hopfield_retrieve.amx_wide_dim_bfloat16"]
    if HAS_AMX:  # the AMX band from a bfloat16 sweep of amx against sdpa and cpp
        amx = data["measurements"]["hopfield_retrieve"]["amx"]
        assert amx["dtype"] == "bfloat16" and amx["key_bytes"] == 2048 * 64 * 2
        assert [r["B"] for r in amx["rows"]] == [16, 1] and all(r["amx_p20"] > 0 for r in amx["rows"])
        band = [data["thresholds"]["hopfield_retrieve"][f"amx_{end}_batch_bfloat16"] for end in ("min", "max")]
        assert band in ([0, 0], [1, 1], [16, 16], [1, 16])
    else:
        assert "no AMX" in data["not_measured"]["hopfield_retrieve.amx_min_batch_bfloat16"]
        assert "amx" not in data["measurements"]["hopfield_retrieve"]
    swept = data["measurements"]["salience_topk"]["rows"]
    assert [r["work"] for r in swept] == [72 * 64 * 40, 80 * 300 * 40] and all(r["gemm_p20"] > 0 for r in swept)
    monkeypatch.setenv(calibration.ENV, str(path))
    if HAS_CPP:
        work = data["thresholds"]["salience_topk"]["cpp_max_work"]
        assert work in (0, 72 * 64 * 40, 80 * 300 * 40)
        assert salience_op.cpu_order(72, 64, 40)[0] == ("cpp" if work >= 72 * 64 * 40 else "gemm")
        value = data["thresholds"]["hopfield_retrieve"]["cpp_max_batch"]
        assert value in (0, 1, 2)
        assert hops.cpp_max_batch(torch.empty(2048, 64)) == value
    # the default output is the per-user file the policies read without the variable
    monkeypatch.delenv(calibration.ENV)
    doc["thresholds"] = {"hopfield_retrieve": {"cpp_max_batch": 5}}
    written = calibrate.write(doc, None)
    assert written == calibration.user_path(doc["device_name"])
    assert hops.cpp_max_batch(torch.empty(2048, 64)) == 5


@pytest.mark.skipif(not HAS_CPP, reason="needs mnemonix._core (CI builds it)")
@pytest.mark.parametrize("width", [8, 16])
def test_the_lane_batches_get_their_own_threshold(width):
    # the C++ kernel wins at B = 1 (row scan), loses at 2-4, wins again at 16-64 (the query-lane
    # scan) and loses at 128: at either lane width the row scan's fit sees B < 16 only and the
    # lane rule takes 16-64
    core = hb._core_retrieval()
    wins = {1: True, 2: False, 4: False, 16: True, 32: True, 64: True, 128: False}

    def store(n, d):
        rows = [{"B": b, "cpp_p20": 1.0 if won else 3.0, "gemm_p20": 2.0, "sdpa_p20": 2.5} for b, won in wins.items()]
        return {"N": n, "d": d, "key_bytes": n * d * 4, "rows": rows}

    previous = core.set_max_lane_width(width)
    try:
        found, skipped = calibrate._cpu_thresholds({"small": store(8_000, 64), "large": store(300_000, 128)})
    finally:
        core.set_max_lane_width(previous)
    assert found["cpp_max_batch"] == found["cpp_max_batch_large_store"] == 1
    assert found["cpp_lane_max_batch"] == 64 and "cpp_lane_max_batch" not in skipped


@pytest.mark.skipif(not HAS_CPP, reason="needs mnemonix._core (CI builds it)")
@pytest.mark.parametrize("width", [8, 16])
def test_the_lane_sweep_goes_on_while_the_lanes_lead(monkeypatch, width):
    # the lanes win to B = 1,024 and lose at 4,096: the 2 MB store's sweep goes on past its last
    # batch (64) to the loss, the large store's stops at its work limit; at either lane width
    core = hb._core_retrieval()

    def row(b):
        return {"B": b, "cpp_p20": 1.0 if b <= 1024 else 3.0, "gemm_p20": 2.0, "sdpa_p20": 2.5}

    swept = []

    def fake_sweep(n, d, batches, device, **kw):
        swept.append((n, *batches))
        return {"rows": [row(b) for b in batches]}

    monkeypatch.setattr(calibrate, "sweep", fake_sweep)
    measured = {label: {"N": n, "d": d, "key_bytes": n * d * 4, "rows": [row(b) for b in (1, 16, 64)]}
                for label, (n, d) in calibrate.DEFAULT_STORES.items()}
    lines = []
    previous = core.set_max_lane_width(width)
    try:
        calibrate._extend_lane_sweep(measured, torch.device("cpu"), repeat=1, budget_s=0.1, report=lines.append)
        found, _ = calibrate._cpu_thresholds(measured)
    finally:
        core.set_max_lane_width(previous)
    small = calibrate.DEFAULT_STORES["small"][0]
    assert swept == [(small, 256), (small, 1024), (small, 4096)] and len(lines) == 3
    assert [r["B"] for r in measured["small"]["rows"]] == [1, 16, 64, 256, 1024, 4096]
    assert found["cpp_lane_max_batch"] == 1024
    assert [r["B"] for r in measured["large"]["rows"]] == [1, 16, 64]


@pytest.mark.skipif(not HAS_CPP, reason="needs mnemonix._core (CI builds it)")
@pytest.mark.parametrize("shipped", [32, 100_000])
def test_a_lane_fit_at_the_end_of_its_sweep_keeps_a_larger_shipped_value(monkeypatch, shipped):
    # the lanes led at every swept batch: the fit knows nothing above the last one
    limits = {**calibration.DEFAULTS["cpu"]["hopfield_retrieve"], "cpp_lane_max_batch": shipped}
    monkeypatch.setattr(calibration, "shipped", lambda device_type, name=None: {"hopfield_retrieve": limits})
    rows = [{"B": b, "cpp_p20": 1.0, "gemm_p20": 2.0, "sdpa_p20": 2.5} for b in (1, 16, 64, 256)]
    store = {"N": 8_000, "d": 64, "key_bytes": 8_000 * 64 * 4, "rows": rows}
    value, _ = calibrate._lane_threshold({"small": store})
    rows[-1]["cpp_p20"] = 3.0  # now it lost at 256: the fit stands
    lost, _ = calibrate._lane_threshold({"small": store})
    assert value == max(256, shipped) and lost == 64


def test_cli_calibrate(clean, capsys):
    out = clean / "cli.json"
    assert main(["bench", "calibrate", "--small-store", "2048,64", "--large-store", f"{(8 << 20) // 256},64",
                 "--batches", "2,1", "--repeat", "3", "--salience-max-n", "500", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"MNEMONIX_CALIBRATION={out}" in text and "noisy" in text
    data = json.loads(out.read_text())
    if HAS_CPP:
        found = set(data["thresholds"]["hopfield_retrieve"])
        amx = {"amx_min_batch_bfloat16", "amx_max_batch_bfloat16"} if HAS_AMX else set()
        assert {"cpp_max_batch", "cpp_max_batch_large_store"} | amx <= found <= {
            "cpp_max_batch", "cpp_max_batch_large_store", "gemm_max_batch"} | amx
        assert [r["N"] for r in data["measurements"]["salience_topk"]["rows"]] == [125, 500, 125, 500]
        assert "salience_topk.cpp_max_work" in text
    assert main(["bench", "calibrate", "--small-store", "12"]) == 2
    assert "N,d" in capsys.readouterr().err
    assert main(["bench", "calibrate", "--batches", "1,0"]) == 2


def test_policy_choices_are_forgotten_with_the_thresholds_and_bounded(clean, monkeypatch):
    path = clean / "cal.json"
    path.write_text(json.dumps(_doc(cpp_max_batch=2)))
    monkeypatch.setenv(calibration.ENV, str(path))
    keys = torch.randn(2048, 64)
    assert hops.cpu_forward_order(2, keys)[0] == "cpp"  # memoised under this file's thresholds
    path.write_text(json.dumps(_doc(cpp_max_batch=1)))
    assert hops.cpu_forward_order(2, keys)[0] == "cpp"  # not re-read until reload ...
    calibration.reload()
    assert hops.cpu_forward_order(2, keys)[0] != "cpp"  # ... which forgets the choices too
    monkeypatch.setenv(calibration.ENV, "default")  # another value of the variable: its own choices
    assert hops.cpu_forward_order(2, keys)[0] == "cpp"
    monkeypatch.setattr(calibration, "MEMO_MAX", 8)
    for b in range(1, 40):
        hops.cpu_forward_order(b, keys)
        assert len(calibration.policy_memo("hopfield_retrieve", "cpu")) <= 8


def test_the_variable_is_read_on_every_call(monkeypatch):
    monkeypatch.setenv(calibration.ENV, "some value é")
    assert calibration._env() == "some value é"
    monkeypatch.delenv(calibration.ENV)
    assert calibration._env() is None
    monkeypatch.setattr(calibration, "_ENVIRON_DATA", None)  # not CPython's os._Environ: the plain get
    monkeypatch.setenv(calibration.ENV, "default")
    assert calibration._env() == "default"


def test_wide_keys_go_to_the_gemm_path_only_where_the_rule_is_set(clean, monkeypatch):
    keys = torch.empty(1000, 1024)
    assert hops.cpu_forward_order(64, keys)[0] == "sdpa"  # the defaults: no wide-key rule
    path = clean / "cal.json"
    path.write_text(json.dumps(_doc(gemm_wide_min_dim=1024, gemm_wide_min_batch=64, gemm_max_scores=500_000)))
    monkeypatch.setenv(calibration.ENV, str(path))
    assert hops.cpu_forward_order(64, keys)[0] == "gemm"
    assert hops.cpu_forward_order(500, keys)[0] == "gemm"  # B x N = 500,000: at the cap
    assert hops.cpu_forward_order(501, keys)[0] == "sdpa"  # past it: the flash kernel
    assert hops.cpu_forward_order(63, keys)[0] == "sdpa"  # below the batch: the flash kernel (split)
    assert hops.cpu_forward_order(64, torch.empty(1000, 512))[0] == "sdpa"  # narrower keys
    assert hops.cpu_forward_order(64, torch.empty(5000, 1024))[0] == "sdpa"  # a store that streams (20 MB)


def test_wide_keys_on_a_store_that_streams_take_the_lanes_only_where_the_rule_is_set(clean, monkeypatch):
    if hb._core_retrieval() is None:
        pytest.fail("the C++ extension is part of every install")
    streams, cached = torch.empty(10_000, 2048), torch.empty(1000, 1024)  # 80 MB and 4 MB of keys
    rule = dict(cpp_lane_max_batch=128, cpp_lane_max_dims=256, cpp_max_batch_large_store=32,
                cpp_large_store_max_dims=256, cpp_small_store_max_dims=256, cpp_small_store_min_batch=1)
    path = clean / "cal.json"
    path.write_text(json.dumps(_doc(**rule)))
    monkeypatch.setenv(calibration.ENV, str(path))
    assert hops.cpu_forward_order(16, streams)[0] != "cpp"  # no large-store lane rule: d > 256
    path.write_text(json.dumps(_doc(**rule, cpp_lane_max_dims_large_store=4096)))
    calibration.reload()
    # from cpp_lane_min_batch_large_store (16), not the kernel's first lane batch (8)
    assert [hops.cpu_forward_order(b, streams)[0] == "cpp" for b in (8, 15, 16, 32, 33)] == \
        [False, False, True, True, False]
    path.write_text(json.dumps(_doc(**rule, cpp_lane_max_dims_large_store=4096, cpp_lane_min_batch_large_store=8)))
    calibration.reload()
    first = hb._core_retrieval().lane_min_batch
    assert [hops.cpu_forward_order(b, streams)[0] == "cpp" for b in (first - 1, first, 32)] == [False, True, True]
    # ... or from the first lane batch only on keys of cpp_lane_first_batch_min_bytes_large_store
    bound = 10_000 * 2048 * 4  # the streaming store's bytes
    for least, from_first in ((bound, True), (bound + 1, False), (0, False)):
        path.write_text(json.dumps(_doc(**rule, cpp_lane_max_dims_large_store=4096,
                                        cpp_lane_first_batch_min_bytes_large_store=least)))
        calibration.reload()
        assert [hops.cpu_forward_order(b, streams)[0] == "cpp" for b in (first - 1, first, 16)] == \
            [False, from_first, True], least
    assert hops.cpu_forward_order(16, torch.empty(10_000, 2048), torch.empty(10_000, 4097))[0] != "cpp"  # dv
    assert hops.cpu_forward_order(16, torch.empty(2048, 2048))[0] == "cpp"  # 16 MB: streams too
    assert hops.cpu_forward_order(16, torch.empty(2047, 4096))[0] != "cpp"  # few rows: queries split
    assert hops.cpu_forward_order(16, cached)[0] != "cpp"  # a cache-sized store keeps the flash kernel
    path.write_text(json.dumps(_doc(**{**rule, "cpp_max_batch_large_store": 16}, cpp_lane_max_dims_large_store=4096)))
    calibration.reload()
    assert [hops.cpu_forward_order(b, streams)[0] == "cpp" for b in (16, 17)] == [True, False]
    # ... past it while B x max(d, dv) <= cpp_lane_max_work_large_store, float32 only
    path.write_text(json.dumps(_doc(**{**rule, "cpp_max_batch_large_store": 16}, cpp_lane_max_dims_large_store=4096,
                                    cpp_lane_max_work_large_store=64 * 2048, cpp_lane_max_batch_float16=128)))
    calibration.reload()
    assert [hops.cpu_forward_order(b, streams)[0] == "cpp" for b in (16, 64, 65)] == [True, True, False]
    assert hops.cpu_forward_order(64, streams, torch.empty(10_000, 2049))[0] != "cpp"  # dv counts: 32 there
    assert hops.cpu_forward_order(32, streams, torch.empty(10_000, 4096))[0] == "cpp"
    assert [hops.cpu_forward_order(b, streams.half())[0] == "cpp" for b in (16, 17)] == [True, False]  # 16-bit
    # 16-bit keys up to their own lane batch (bfloat16's 0 here: none)
    path.write_text(json.dumps(_doc(**rule, cpp_lane_max_dims_large_store=4096, cpp_lane_max_batch_float16=32)))
    calibration.reload()
    half = streams.half()
    assert [hops.cpu_forward_order(b, half)[0] == "cpp" for b in (2, 16, 32, 33)] == [False, True, True, False]
    assert hops.cpu_forward_order(16, streams.bfloat16())[0] != "cpp"
    assert hops.cpu_forward_order(16, cached.half())[0] != "cpp"


def test_the_16_bit_b_x_d_rule_stops_at_the_lanes_batch_where_one_is_set(clean, monkeypatch):
    # past the kernel's first lane batch the B x d rule's batches run the lanes: no further than
    # cpp_lane_max_batch_<dtype> (when set), which the B x d rule alone would pass at narrower keys
    if hb._core_retrieval() is None:
        pytest.fail("the C++ extension is part of every install")
    path = clean / "cal.json"
    monkeypatch.setenv(calibration.ENV, str(path))
    keys = {d: torch.empty(10_000, d, dtype=torch.float16) for d in (128, 1024)}
    for lanes, wanted in ((192, [True, True, False, True, False]), (0, [True, True, True, True, False])):
        path.write_text(json.dumps(_doc(cpp_max_dims_float16=64 << 10, cpp_min_batch_float16=1,
                                        cpp_lane_max_batch_float16=lanes, cpp_lane_max_dims=256)))
        calibration.reload()
        got = [hops.cpu_forward_order(b, keys[d])[0] == "cpp" for b, d in ((4, 128), (192, 128), (256, 128),
                                                                           (64, 1024), (65, 1024))]
        assert got == wanted, lanes


def test_wide_keys_on_few_rows_take_the_lanes_at_one_group_or_from_two(clean, monkeypatch):
    # cpp_lane_max_dims_few_rows: on fewer than cpp_few_rows rows, B = one lane group (its rows
    # shared by the threads) or from two groups on, never the batches between (two groups, one
    # per thread, at twice the cost); float32 only, off by default
    core = hb._core_retrieval()
    if core is None:
        pytest.fail("the C++ extension is part of every install")
    group = core.lane_one_group_batch
    path = clean / "cal.json"
    monkeypatch.setenv(calibration.ENV, str(path))
    rule = dict(cpp_lane_max_batch=128, cpp_lane_max_dims=256, cpp_few_rows=2048, cpp_small_store_max_dims=256,
                cpp_small_store_min_batch=1, cpp_max_batch=1, cpp_max_batch_few_rows=32, gemm_wide_min_dim=1 << 20,
                cpp_large_store_max_dims=256)
    few, wide = torch.empty(1000, 1024), torch.empty(1000, 2049)
    batches = (group - 1, group, group + 1, 2 * group - 1, 2 * group, 128, 129)
    for dims, wanted in ((0, [False] * 7), (2048, [False, True, False, False, True, True, False])):
        path.write_text(json.dumps(_doc(**rule, cpp_lane_max_dims_few_rows=dims)))
        calibration.reload()
        assert [hops.cpu_forward_order(b, few)[0] == "cpp" for b in batches] == wanted, dims
        assert hops.cpu_forward_order(group, wide)[0] != "cpp"  # wider than the rule
        assert hops.cpu_forward_order(group, few, torch.empty(1000, 2049))[0] != "cpp"  # values too
        assert hops.cpu_forward_order(group, torch.empty(2048, 1024))[0] != "cpp"  # not few rows (4 MB: cached)
        assert hops.cpu_forward_order(2 * group, few.half())[0] != "cpp"  # 16-bit rows: their own rules
    path.write_text(json.dumps(_doc(**rule, cpp_lane_max_dims_few_rows=2048, cpp_lane_max_work_large_store=64 * 1024)))
    calibration.reload()  # ... and B x max(d, dv) within the float32 lanes' work bound, where one is set
    assert [hops.cpu_forward_order(b, few)[0] == "cpp" for b in (64, 65)] == [True, False]


def test_16_bit_lanes_reach_their_large_batch_only_on_keys_of_the_dtypes_min_bytes(clean, monkeypatch):
    if hb._core_retrieval() is None:
        pytest.fail("the C++ extension is part of every install")
    rule = dict(cpp_lane_max_dims=256, cpp_min_bytes_bfloat16=64 << 20, cpp_max_dims_bfloat16=512,
                cpp_min_batch_bfloat16=0, cpp_lane_max_batch_bfloat16=0)
    path = clean / "cal.json"
    path.write_text(json.dumps(_doc(**rule)))
    monkeypatch.setenv(calibration.ENV, str(path))
    large, small = torch.empty(1 << 19, 128, dtype=torch.bfloat16), torch.empty(100_000, 128, dtype=torch.bfloat16)
    assert hops.cpu_forward_order(16, large)[0] != "cpp"  # no such rule (the default 0)
    path.write_text(json.dumps(_doc(**rule, cpp_lane_max_batch_large_bfloat16=64)))
    calibration.reload()
    # 128 MB of keys: the lanes from their first batch to 64; B = 4 is the row scan's (B x d <= 512)
    first = hb._core_retrieval().lane_min_batch
    assert [hops.cpu_forward_order(b, large)[0] == "cpp" for b in (4, first - 1, first, 64, 65)] == \
        [True, False, True, True, False]
    assert hops.cpu_forward_order(16, small)[0] != "cpp"  # 26 MB: under cpp_min_bytes_bfloat16
    assert hops.cpu_forward_order(16, torch.empty(1 << 16, 512, dtype=torch.bfloat16))[0] != "cpp"  # d > 256
    assert hops.cpu_forward_order(16, torch.empty(1 << 19, 128, dtype=torch.float16))[0] != "cpp"  # float16: 0


def test_16_bit_row_scan_takes_keys_up_to_its_max_dim_under_the_dtypes_min_bytes(clean, monkeypatch):
    if hb._core_retrieval() is None:
        pytest.fail("the C++ extension is part of every install")
    rule = dict(cpp_min_bytes_bfloat16=64 << 20, cpp_max_dims_bfloat16=512, cpp_min_batch_bfloat16=0,
                cpp_lane_max_batch_bfloat16=0)
    path = clean / "cal.json"
    path.write_text(json.dumps(_doc(**rule)))
    monkeypatch.setenv(calibration.ENV, str(path))
    small = torch.empty(10_000, 128, dtype=torch.bfloat16)  # 2.6 MB: under cpp_min_bytes_bfloat16
    assert hops.cpu_forward_order(1, small)[0] != "cpp"  # no such rule (the default 0)
    path.write_text(json.dumps(_doc(**rule, cpp_row_scan_max_dim_bfloat16=128)))
    calibration.reload()
    # d <= 128: the row scan while B x d <= 512; wider keys keep the flash kernel at any batch
    assert [hops.cpu_forward_order(b, small)[0] == "cpp" for b in (1, 4, 5)] == [True, True, False]
    assert [hops.cpu_forward_order(b, torch.empty(1000, 64, dtype=torch.bfloat16))[0] == "cpp"
            for b in (8, 9)] == [True, False]
    assert hops.cpu_forward_order(1, torch.empty(1000, 256, dtype=torch.bfloat16))[0] != "cpp"
    assert hops.cpu_forward_order(1, torch.empty(10_000, 128, dtype=torch.float16))[0] == "cpp"  # float16: its own


def test_bfloat16_split_takes_mid_batches_from_the_cpp_kernel_inside_its_rows_and_bytes(clean, monkeypatch):
    # with the bfloat16 split on: from cpp_split_min_rows_bfloat16 rows under
    # cpp_split_max_bytes_bfloat16, a batch of 4..32 queries with B x d >= 512 goes to the flash
    # kernel first; every other call keeps the C++ kernel's rules, and float16 is never split
    if hb._core_retrieval() is None:
        pytest.fail("the C++ extension is part of every install")
    rule = dict(cpp_min_bytes_bfloat16=64 << 20, cpp_max_dims_bfloat16=1024, cpp_min_batch_bfloat16=0,
                cpp_lane_max_batch_bfloat16=0, cpp_row_scan_max_dim_bfloat16=256, cpp_max_batch_narrow_bfloat16=64,
                cpp_max_batch_narrow_float16=32, cpp_split_min_rows_bfloat16=5000,
                cpp_split_max_bytes_bfloat16=64 << 20)
    path = clean / "cal.json"
    monkeypatch.setenv(calibration.ENV, str(path))

    def first(b, n, d, dtype=torch.bfloat16):
        return hops.cpu_forward_order(b, torch.empty(n, d, dtype=dtype))[0]

    path.write_text(json.dumps(_doc(**rule, flash_split_bfloat16=0)))
    calibration.reload()
    assert [first(b, 10_000, 128) for b in (4, 8)] == ["cpp", "cpp"]  # the split off: the C++ kernel's rules
    path.write_text(json.dumps(_doc(**rule, flash_split_bfloat16=1)))
    calibration.reload()
    assert [first(b, 10_000, 128) for b in (1, 3, 4, 8, 9)] == ["cpp", "cpp", "sdpa", "sdpa", "sdpa"]  # 9: B x d
    assert [first(b, 10_000, 32) for b in (8, 15, 16, 32, 33)] == ["cpp", "cpp", "sdpa", "sdpa", "cpp"]  # one block
    assert [first(b, 4999, 128) for b in (4, 8)] == ["cpp", "cpp"]  # fewer rows
    assert first(8, (64 << 20) // 256, 128) == "cpp" and first(8, (64 << 20) // 256 - 1, 128) == "sdpa"  # bytes
    assert [first(b, 10_000, 256) for b in (2, 4)] == ["cpp", "sdpa"]  # d = 256: the row scan to B = 2
    assert first(4, 10_000, 128, torch.float16) == "cpp"
    values = torch.empty(10_000, 64, dtype=torch.bfloat16)  # dv != d: the flash kernel cannot run it
    assert hops.cpu_forward_order(8, torch.empty(10_000, 128, dtype=torch.bfloat16), values)[0] == "cpp"


@pytest.mark.parametrize("n", [1000, 10_000])
def test_very_wide_keys_go_to_the_gemm_path_from_gemm_min_batch(clean, monkeypatch, n):
    wide = torch.empty(n, 4096)
    assert hops.cpu_forward_order(64, wide)[0] == "gemm"  # the defaults: every batch past the C++ kernel's
    path = clean / "cal.json"
    path.write_text(json.dumps(_doc(gemm_min_dim=3072, gemm_min_batch=96)))
    monkeypatch.setenv(calibration.ENV, str(path))
    assert hops.cpu_forward_order(95, wide)[0] == "sdpa"  # below the batch: the flash kernel
    assert hops.cpu_forward_order(96, wide)[0] == "gemm"
    assert hops.cpu_forward_order(4096, wide)[0] == "gemm"  # no cap on B x N
    assert hops.cpu_forward_order(96, torch.empty(n, 3072))[0] == "gemm"
    assert hops.cpu_forward_order(4096, torch.empty(n, 3071))[0] == "sdpa"  # narrower keys
    assert hops.cpu_forward_order(1, wide)[0] == "cpp"  # the C++ kernel's batches come first
