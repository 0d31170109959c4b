"""``mnemonix memoria`` command."""

from __future__ import annotations

from mnemonix.cli import main
from mnemonix.memoria import Memoria


def test_memoria_loop_and_save(tmp_path, capsys) -> None:
    path = tmp_path / "m.npz"
    code = main(["memoria", "loop", "--steps", "4", "--width", "5", "--hidden", "8", "--stm-capacity", "6",
                 "--num-reminded-stm", "2", "--save", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "edges" in out and "saved" in out
    loaded = Memoria.load(path)
    assert len(loaded.engrams) > 0 and loaded.timestep == 4


def test_memoria_tutorial(capsys) -> None:
    assert main(["memoria", "tutorial"]) == 0
    assert "len(memoria.engrams)" in capsys.readouterr().out


def test_memoria_bad_argument(capsys) -> None:
    assert main(["memoria", "loop", "--steps", "0"]) == 2
    assert "argument --steps: must be >= 1, got 0" in capsys.readouterr().err
