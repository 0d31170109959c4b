"""Every CLI failure is one line ``error: ...`` naming the flag or path, and a non-zero exit:
2 when the command line is wrong, 1 when a well-formed command fails; never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemonix import _io
from mnemonix.cli import build_parser, main
from mnemonix.commands import _args
from mnemonix.plastic import PlasticMemory, tokenize

COMMANDS_DIR = Path(__file__).resolve().parents[1] / "python" / "mnemonix" / "commands"


def run_failing(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in-process; assert exactly one ``error:`` line on stderr and no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return rc, lines[0]


@pytest.fixture
def names(tmp_path: Path) -> Path:
    path = tmp_path / "names.txt"
    path.write_text("emma\nemily\nbob\n", encoding="utf-8")
    return path


@pytest.fixture
def plastic_file(tmp_path: Path) -> Path:
    mem = PlasticMemory()
    mem.learn_many([tokenize(n) for n in ("emma", "emily", "bob")], progress=False)
    path = tmp_path / "mem.npz"
    mem.save(path)
    return path


# -- the command line is wrong: exit 2 ------------------------------------------------------------
BAD_VALUES = [
    (["epinet", "--beta", "-1"], "--beta"),
    (["epinet", "--store-per-step", "0"], "--store-per-step"),
    (["epinet", "--epochs", "-2"], "--epochs"),
    (["epinet", "--epochs", "0"], "--epochs"),
    (["epinet", "--lr", "nan"], "--lr"),
    (["epinet", "--lr", "0"], "--lr"),
    (["epinet", "--alpha", "inf"], "--alpha"),
    (["epinet", "--capacity", "x"], "--capacity"),
    (["epinet", "--top-k", "9", "--capacity", "4"], "--top-k"),
    (["epinet", "--seed", "-1"], "--seed"),
    (["epinet", "--device", "tpu"], "--device"),
    (["memoria", "loop", "--steps", "-5"], "--steps"),
    (["memoria", "loop", "--width", "0"], "--width"),
    (["memoria", "loop", "--stm-capacity", "-1"], "--stm-capacity"),
    (["memoria", "loop", "--initial-lifespan", "nan"], "--initial-lifespan"),
    (["memoria", "juggle"], "mode"),
    (["plastic", "infer", "x.npz", "e", "-n", "0"], "-n"),
    (["plastic", "infer", "x.npz", "e", "--seed", "-3"], "--seed"),
    (["plastic", "learn", "f.txt", "--limit", "-1"], "--limit"),
    (["plastic", "learn"], "FILE"),
    (["consolidate", "--epochs", "-1"], "--epochs"),
    (["consolidate", "--data", "mnist"], "--path"),
    (["consolidate", "--data", "shapes3d"], "--path"),
    (["demo", "--only", "nope"], "--only"),
    (["demo", "--seed", "1.5"], "--seed"),
    (["bogus"], "COMMAND"),
    (["epinet", "--no-such-flag"], "--no-such-flag"),
    ([], "COMMAND"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD_VALUES, ids=[" ".join(a) or "empty" for a, _ in BAD_VALUES])
def test_bad_values_are_refused_before_running(argv: list[str], flag: str, capsys) -> None:
    rc, line = run_failing(argv, capsys)
    assert rc == 2 and flag in line


def test_missing_inputs_exit_2_naming_the_path(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing"
    for argv, flag in [
        (["plastic", "learn", str(missing)], "FILE"),
        (["plastic", "stats", str(missing)], ""),
        (["plastic", "infer", str(missing), "e"], ""),
        (["demo", "--names", str(missing)], "--names"),
        (["consolidate", "--data", "mnist", "--path", str(missing)], "--path"),
        (["epinet", "--mnist", str(missing)], "--mnist"),
    ]:
        rc, line = run_failing(argv, capsys)
        assert rc == 2 and str(missing) in line and flag in line
        assert "does not exist" in line or "is not a folder" in line


def test_cuda_requested_without_cuda(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (["epinet", "--device", "cuda"], ["memoria", "loop", "--device", "cuda"],
                 ["consolidate", "--device", "cuda"], ["demo", "--device", "cuda"]):
        rc, line = run_failing(argv, capsys)
        assert rc == 2 and "--device cuda" in line and "not available" in line


# -- output paths -----------------------------------------------------------------------------------
def test_output_path_problems_name_the_flag(tmp_path: Path, names: Path, capsys) -> None:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    long_name = str(tmp_path / ("n" * 260 + ".npz"))
    cases = [
        (["plastic", "learn", str(names), "--quiet", "--save", str(tmp_path)], "--save", "is a directory"),
        (["memoria", "loop", "--steps", "2", "--save", str(tmp_path)], "--save", "is a directory"),
        (["epinet", "--json", str(tmp_path)], "--json", "is a directory"),
        (["plastic", "learn", str(names), "--quiet", "--save", long_name], "--save", "longer than"),
        (["plastic", "learn", str(names), "--quiet", "--save", str(a_file / "x.npz")], "--save", "not a folder"),
        (["demo", "--out", str(a_file)], "--out", "not a folder"),
        (["consolidate", "--out", str(a_file)], "--out", "not a folder"),
        (["consolidate", "--out", str(tmp_path / ("d" * 300))], "--out", "longer than"),
    ]
    for argv, flag, reason in cases:
        rc, line = run_failing(argv, capsys)
        assert rc == 2 and flag in line and reason in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.txt", "plain.txt"]  # nothing written


def test_read_only_output_is_a_runtime_error(tmp_path: Path, names: Path, monkeypatch, capsys) -> None:
    target = tmp_path / "ro.npz"
    target.write_bytes(b"old")
    real_access = os.access
    # As root every file is writable: simulate what a user (or a read-only mount) is told.
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == target else real_access(p, mode))
    rc, line = run_failing(["plastic", "learn", str(names), "--quiet", "--save", str(target)], capsys)
    assert rc == 1 and "--save" in line and "read-only" in line and target.read_bytes() == b"old"
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == folder else real_access(p, mode))
    rc, line = run_failing(["plastic", "learn", str(names), "--quiet", "--save", str(folder / "m.npz")], capsys)
    assert rc == 1 and "cannot create files" in line and str(folder) in line


def test_missing_parent_folders_and_long_names_save(tmp_path: Path, names: Path, capsys) -> None:
    for target in (tmp_path / "a" / "b" / "m.npz", tmp_path / ("n" * 246 + ".npz")):
        assert main(["plastic", "learn", str(names), "--quiet", "--save", str(target)]) == 0
        assert len(PlasticMemory.load(target)) > 0
    _args.check_output_file("--json", tmp_path / "new" / "r.json")  # a folder still to create is fine


# -- the command fails while running: exit 1 ------------------------------------------------------
def _junk(path: Path) -> None:
    path.write_bytes(b"junk")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _flipped(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x55
    path.write_bytes(bytes(raw))


def _other_format(path: Path) -> None:
    _io.save_arrays(path, {"x": np.zeros(2)}, format="mnemonix.memoria", version=1)


def _pickled(path: Path) -> None:
    np.savez(path, obj=np.array([{"a": 1}], dtype=object))


def _not_mnemonix(path: Path) -> None:
    np.savez(path, x=np.zeros(3))


def _bad_graph(path: Path) -> None:
    arrays, meta, _ = _io.load_arrays(path, format="mnemonix.plastic", max_version=99)
    arrays["offsets"] = arrays["offsets"][::-1].copy()
    _io.save_arrays(path, arrays, format="mnemonix.plastic", version=1, meta=meta)


CORRUPTIONS = [_junk, _truncated, _flipped, _other_format, _pickled, _not_mnemonix, _bad_graph]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=[c.__name__.strip("_") for c in CORRUPTIONS])
@pytest.mark.parametrize("action", [["stats"], ["infer", "{path}", "e"]], ids=["stats", "infer"])
def test_corrupt_files_are_one_line(plastic_file: Path, corrupt, action: list[str], capsys) -> None:
    corrupt(plastic_file)
    argv = ["plastic", action[0], str(plastic_file), *action[2:]]
    rc, line = run_failing(argv, capsys)
    assert rc == 1 and str(plastic_file) in line


def test_inputs_of_the_wrong_kind(tmp_path: Path, capsys) -> None:
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ok\n\xff\xfe\n")
    rc, line = run_failing(["plastic", "learn", str(binary), "--quiet"], capsys)
    assert rc == 1 and "FILE" in line and "not UTF-8" in line
    rc, line = run_failing(["plastic", "stats", str(tmp_path)], capsys)
    assert rc == 1 and "is a directory" in line and str(tmp_path) in line
    rc, line = run_failing(["plastic", "learn", str(tmp_path)], capsys)
    assert rc == 1 and "is a directory" in line


def test_missing_matplotlib_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)
    rc, line = run_failing(["demo", "--quick", "--only", "hopfield", "--device", "cpu", "--out", str(tmp_path)],
                           capsys)
    assert rc == 1 and "matplotlib" in line and "mnemonix[demo]" in line


# -- subprocess: the real entry point --------------------------------------------------------------
def test_real_process_prints_one_line_and_debug_prints_the_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk")
    cmd = [sys.executable, "-m", "mnemonix", "plastic", "stats", str(junk)]
    env = {k: v for k, v in os.environ.items() if k != "MNEMONIX_DEBUG"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env | {"MNEMONIX_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "FormatError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_usage_error_line_in_full(capsys) -> None:
    assert main(["epinet", "--beta", "-1"]) == 2
    assert capsys.readouterr().err == (
        "error: argument --beta: must be a finite number >= 0, got -1 (see 'mnemonix epinet --help')\n")


# -- flags and devices ------------------------------------------------------------------------------
def _all_option_strings(parser) -> set[str]:
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        for sub in getattr(action, "choices", None).values() if isinstance(action.choices, dict) else ():
            found |= _all_option_strings(sub)
    return found


def test_messages_name_only_flags_that_exist() -> None:
    flags = _all_option_strings(build_parser())
    named = set()
    for source in [*COMMANDS_DIR.glob("*.py"), COMMANDS_DIR.parent / "cli.py"]:
        for literal in re.findall(r"f?\"[^\"\n]*\"", source.read_text()):
            named |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", literal))
    assert {"--save", "--device", "--epochs", "--capacity"} <= named
    assert named - flags - {"--help", "--version"} == set(), named - flags


def test_every_computing_command_offers_device_defaulting_to_auto() -> None:
    parser = build_parser()
    for argv in (["demo"], ["epinet"], ["memoria", "loop"], ["consolidate"]):
        args = parser.parse_args(argv)
        assert args.device == "auto", argv
    sub = next(a for a in parser._actions if isinstance(a.choices, dict))
    for name in ("demo", "epinet", "memoria", "consolidate"):
        assert "CUDA when" in sub.choices[name].format_help()


@pytest.mark.parametrize("available", [False, True])
def test_auto_device_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch, available: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert _args.resolve_device("auto") == torch.device("cuda" if available else "cpu")
    assert _args.resolve_device("cpu") == torch.device("cpu")


class _Stop(ValueError):
    pass


def _recording(calls: list[dict]):
    def fake(*args, **kwargs):
        calls.append(kwargs)
        raise _Stop("stopped by the test after the call")

    return fake


@pytest.mark.parametrize(
    ("argv", "module", "name"),
    [
        (["epinet", "--device", "cpu", "--no-progress"], "mnemonix.epinet", "train_split"),
        (["consolidate", "--device", "cpu", "--quick"], "mnemonix.consolidation.pipeline", "run_pipeline"),
        (["demo", "--device", "cpu", "--only", "epinet"], "mnemonix.epinet", "train_split"),
        (["demo", "--device", "cpu", "--only", "consolidate"], "mnemonix.consolidation.teacher_student",
         "run_teacher_student"),
    ],
)
def test_device_is_passed_to_the_models(argv, module, name, tmp_path, monkeypatch, capsys) -> None:
    import importlib

    calls: list[dict] = []
    monkeypatch.setattr(importlib.import_module(module), name, _recording(calls))
    if argv[0] in ("demo", "consolidate"):
        argv = [*argv, "--out", str(tmp_path / "out")]
    rc, line = run_failing(argv, capsys)
    assert rc == 1 and "stopped by the test" in line
    assert len(calls) == 1 and torch.device(calls[0]["device"]) == torch.device("cpu")


def test_memoria_loop_builds_the_memory_on_the_device(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import mnemonix.memoria as memoria

    seen = []

    class Recording(memoria.Memoria):
        def __init__(self, *args, **kwargs):
            seen.append((kwargs["device"], kwargs["generator"].device))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(memoria, "Memoria", Recording)
    assert main(["memoria", "loop", "--steps", "2", "--width", "3", "--hidden", "4", "--device", "cpu"]) == 0
    assert seen == [(torch.device("cpu"), torch.device("cpu"))]


def test_demo_reports_its_device(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--only", "plastic", "--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("device: cpu")


@settings(max_examples=200, deadline=None)
@given(value=st.integers(-(10**20), 10**20) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
       minimum=st.integers(-3, 3))
def test_argument_types_accept_exactly_the_documented_values(value, minimum: int) -> None:
    import argparse
    import math

    text = str(value)
    for parse, ok in (
        (_args.int_at_least(minimum), lambda: _integer(text) is not None and _integer(text) >= minimum),
        (_args.finite_float(float(minimum)), lambda: _number(text) is not None and math.isfinite(_number(text))
         and _number(text) >= minimum),
        (_args.finite_float(float(minimum), strict=True), lambda: _number(text) is not None
         and math.isfinite(_number(text)) and _number(text) > minimum),
    ):
        try:
            parse(text)
        except argparse.ArgumentTypeError as exc:
            assert not ok(), (text, exc)
            assert text in str(exc) or repr(text) in str(exc)
        else:
            assert ok(), text


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def test_help_and_usage_errors_do_not_import_torch() -> None:
    code = ("import sys; from mnemonix.cli import main; rc = main(['epinet', '--beta', '-1']); "
            "print(rc, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["2", "False"]
