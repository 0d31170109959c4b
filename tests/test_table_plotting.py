"""The one table printer (``mnemonix._table``, used by the CLI and the benches) and the one
``pyplot()`` helper (``mnemonix._plotting``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mnemonix import _plotting
from mnemonix._table import format_number, format_table
from mnemonix.commands.demo import DemoContext

ROOT = Path(__file__).resolve().parents[1]


def test_plain_table_is_what_the_demo_printed() -> None:
    text = format_table(["name", "value"], [["a", 0.5], ["longer", 12345.0], ["tiny", 0.001], ["n", 3]])
    assert text.splitlines() == [
        "  name    value   ",
        "  ------  --------",
        "  a       0.500   ",
        "  longer  1.23e+04",
        "  tiny    0.001   ",
        "  n       3       ",
    ]


def test_markdown_table_is_what_the_benches_printed(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench._common import print_table
    finally:
        sys.path.remove(str(ROOT))
    rows = [{"impl": "fused", "ms": 1.234567, "note": None}, {"impl": "torch", "ms": 10.0}]
    print_table(rows, ["impl", "ms", "note"])
    assert capsys.readouterr().out.splitlines() == [
        "| impl  | ms    | note |",
        "| ----- | ----- | ---- |",
        "| fused | 1.235 |      |",
        "| torch | 10    |      |",
    ]


def test_demo_context_table_prints_the_plain_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    DemoContext(out_dir=tmp_path).table(["a", "b"], [[1, 2.0]])
    assert capsys.readouterr().out == format_table(["a", "b"], [[1, 2.0]]) + "\n"
    assert format_number(2.0) == "2.000" and format_number(1e-5) == "1e-05" and format_number(-3e6) == "-3e+06"


def test_pyplot_selects_agg_once_and_keeps_a_chosen_backend() -> None:
    code = ("import matplotlib; from mnemonix._plotting import pyplot; plt = pyplot(); "
            "print(matplotlib.get_backend().lower(), plt is pyplot())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["agg", "True"]
    code = ("import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot; "
            "from mnemonix._plotting import pyplot; pyplot(); print(matplotlib.get_backend().lower())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_pyplot_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert not _plotting.available()
    with pytest.raises(ImportError, match=r"mnemonix\[demo\]"):
        _plotting.pyplot()


def test_no_other_backend_selection_left() -> None:
    hits = [p for p in (ROOT / "python").rglob("*.py") if 'matplotlib.use("Agg")' in p.read_text()]
    assert hits == [ROOT / "python" / "mnemonix" / "_plotting.py"]
