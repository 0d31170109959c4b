"""Shared infrastructure: persistence (atomic, checksummed, code-free), dispatch errors, checks, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mnemonix import _checks, _dispatch, _io
from mnemonix.cli import main


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.standard_normal((5, 3)).astype(np.float32), "ids": np.arange(7, dtype=np.int64)}


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _io.save_arrays(path, _arrays(), format="test.fmt", version=2, meta={"beta": 1.5})
    arrays, meta, version = _io.load_arrays(path, format="test.fmt", max_version=2)
    assert version == 2 and meta == {"beta": 1.5}
    for key, value in _arrays().items():
        np.testing.assert_array_equal(arrays[key], value)


def test_load_rejects_newer_version_other_format_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    _io.save_arrays(path, _arrays(), format="test.fmt", version=3)
    with pytest.raises(_io.FormatError, match="newer"):
        _io.load_arrays(path, format="test.fmt", max_version=2)
    with pytest.raises(_io.FormatError, match="format"):
        _io.load_arrays(path, format="other.fmt", max_version=9)
    # Flip one payload byte of array "a" inside the (uncompressed) zip: checksum must catch it.
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a.npy")
    payload_end = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size
    raw[payload_end - 3] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(_io.FormatError):
        _io.load_arrays(bad, format="test.fmt", max_version=3)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(_io.FormatError, match="not a readable"):
        _io.load_arrays(garbage, format="test.fmt", max_version=3)
    with pytest.raises(FileNotFoundError):
        _io.load_arrays(tmp_path / "missing.npz", format="test.fmt", max_version=3)


def test_load_never_unpickles(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    header = json.dumps({"format": "test.fmt", "version": 1, "meta": {}, "checksum": "x"}).encode()
    np.savez(path, __meta__=np.frombuffer(header, np.uint8), obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(_io.FormatError):
        _io.load_arrays(path, format="test.fmt", max_version=1)


def test_crash_mid_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.npz"
    _io.save_arrays(path, _arrays(), format="test.fmt", version=1, meta={"gen": 1})
    before = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        _io.save_arrays(path, {"a": np.zeros(3)}, format="test.fmt", version=1, meta={"gen": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temp file left behind


def test_killed_writer_process_leaves_old_file(tmp_path: Path) -> None:
    """A writer killed mid-write (os._exit inside the write) never tears the target."""
    path = tmp_path / "m.npz"
    _io.save_arrays(path, _arrays(), format="test.fmt", version=1)
    before = path.read_bytes()
    code = (
        "import os, numpy as np\n"
        "from mnemonix import _io\n"
        "real_fsync = os.fsync\n"
        "def die(fd):\n"
        "    os._exit(9)\n"
        "os.fsync = die\n"
        f"_io.save_arrays({str(path)!r}, {{'a': np.ones(10**6)}}, format='test.fmt', version=1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == 9
    assert path.read_bytes() == before
    _io.load_arrays(path, format="test.fmt", max_version=1)


@dataclasses.dataclass(frozen=True)
class _ToyInputs:
    x: torch.Tensor
    needs_grad: bool = False

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype


def test_dispatch_lists_every_backend_reason() -> None:
    spec = _dispatch.OpSpec("op", (
        _dispatch.Backend("gpu_only", run=lambda: None, devices=frozenset({"cuda"})),
        _dispatch.Backend("fp32_only", run=lambda: None, dtypes=frozenset({torch.float32})),
    ))
    x = torch.zeros(2, 3, dtype=torch.float16)
    with pytest.raises(ValueError) as err:
        _dispatch.dispatch(spec, _ToyInputs(x))
    msg = str(err.value)
    assert "gpu_only" in msg and "fp32_only" in msg and "(2, 3)" in msg and "float16" in msg
    with pytest.raises(ValueError, match="backend must be one of"):
        _dispatch.dispatch(spec, _ToyInputs(x), "nope")
    assert _dispatch.dispatch(spec, _ToyInputs(x.float())).name == "fp32_only"
    with pytest.raises(ValueError, match="forward only"):
        _dispatch.dispatch(spec, _ToyInputs(x.float(), needs_grad=True))


def test_dispatch_policy_orders_capable_backends_and_forcing_bypasses_it() -> None:
    both = (_dispatch.Backend("a", run=lambda: "a"), _dispatch.Backend("b", run=lambda: "b"))
    spec = _dispatch.OpSpec("op", both, policy=lambda inputs, backends: ["b", "a"])
    x = torch.zeros(3)
    assert _dispatch.dispatch(spec, _ToyInputs(x)).name == "b"
    assert _dispatch.dispatch(spec, _ToyInputs(x), "a").name == "a"
    only_a = _dispatch.OpSpec("op", both, policy=lambda inputs, backends: ["a"])
    assert _dispatch.dispatch(only_a, _ToyInputs(x)).name == "a"


def test_default_policy_never_picks_interpreted_triton() -> None:
    tri = _dispatch.Backend("triton", run=lambda: None, needs_triton=True)
    plain = _dispatch.Backend("torch", run=lambda: None)
    spec = _dispatch.OpSpec("op", (tri, plain))
    assert _dispatch.dispatch(spec, _ToyInputs(torch.zeros(2))).name == "torch"


def test_checks_name_the_argument() -> None:
    with pytest.raises(TypeError, match="keys must be a torch.Tensor"):
        _checks.tensor("keys", [1, 2])
    with pytest.raises(ValueError, match=r"keys must have 2 dimensions, got shape \(3,\)"):
        _checks.tensor("keys", torch.zeros(3), ndim=2)
    with pytest.raises(TypeError, match="keys must have dtype"):
        _checks.tensor("keys", torch.zeros(3, dtype=torch.int32), ndim=1)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        _checks.positive_float("beta", float("nan"))
    with pytest.raises(ValueError, match="k must be >= 1"):
        _checks.positive_int("k", 0)
    with pytest.raises(ValueError, match="x must be finite"):
        _checks.finite("x", torch.tensor([1.0, float("inf")]))


def test_cli_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert "mnemonix" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "mnemonix", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_import_does_not_import_triton() -> None:
    code = "import sys, mnemonix, mnemonix.ops, mnemonix.hopfield; print('triton' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
