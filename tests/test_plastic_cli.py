"""``mnemonix plastic`` CLI and the plastic demo section."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnemonix.cli import main
from mnemonix.commands.demo import DemoContext
from mnemonix.commands.plastic import demo_section, synthetic_names
from mnemonix.plastic import PlasticMemory, tokenize


def test_learn_infer_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "names.txt"
    data.write_text("emma\nemily\n\nella\nbob\nemma\nzed\n", encoding="utf-8")
    saved = tmp_path / "mem.npz"
    assert main(["plastic", "learn", str(data), "--limit", "5", "--save", str(saved), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "learned 5 samples" in out and "saved to" in out
    mem = PlasticMemory.load(saved)
    expected = PlasticMemory()
    expected.learn_many([tokenize(n) for n in ["emma", "emily", "ella", "bob", "emma"]], progress=False)
    assert mem.nodes() == expected.nodes() and mem.edges() == expected.edges()

    assert main(["plastic", "infer", str(saved), "em"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split("\t")[0] == expected.infer(">em").completion == ">emma_"

    assert main(["plastic", "infer", str(saved), "e", "--mode", "sample", "--seed", "3", "-n", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith(">e") for line in lines)

    assert main(["plastic", "infer", str(saved), "xyz", "--raw"]) == 1
    assert "no node is a prefix" in capsys.readouterr().out

    assert main(["plastic", "stats", str(saved)]) == 0
    assert f"nodes {len(mem)}" in capsys.readouterr().out


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plastic", "learn", str(tmp_path / "missing.txt")]) == 2  # the command line names nothing
    assert "FILE" in (err := capsys.readouterr().err) and "does not exist" in err
    data = tmp_path / "d.txt"
    data.write_text("a\n")
    assert main(["plastic", "learn", str(data), "--limit", "0"]) == 2
    assert "argument --limit: must be >= 1" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert main(["plastic", "stats", str(tmp_path / "junk.npz")]) == 1  # a well-formed command that failed
    assert "not a readable mnemonix file" in capsys.readouterr().err


def test_demo_section_synthetic_and_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = DemoContext(out_dir=tmp_path, quick=True, seed=1)
    demo_section(ctx)
    out = capsys.readouterr().out
    assert "built-in synthetic names" in out and "greedy" in out
    names = tmp_path / "names.txt"
    names.write_text("\n".join(synthetic_names(200, seed=5)) + "\n")
    ctx = DemoContext(out_dir=tmp_path, quick=True, seed=1, names_path=names)
    demo_section(ctx)
    assert "learned 200 names" in capsys.readouterr().out
    assert all(p.exists() for p in ctx.figures)
