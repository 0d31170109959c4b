"""The grid scripts' command line (bench/backend_grid.py, shared by bench/salience_grid.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
try:
    from bench import backend_grid
finally:
    sys.path.remove(str(ROOT))


def test_shapes_parse_and_bad_lists_name_the_flag():
    assert backend_grid._shape_list("1000:32:4,10:8:1") == [(1000, 32, 4), (10, 8, 1)]
    for bad in ("", "1000:32", "1000:32:0", "a:b:c", "1:2:3:4"):
        with pytest.raises(argparse.ArgumentTypeError, match="--shapes must be N:d:B"):
            backend_grid._shape_list(bad)


def test_run_grid_measures_only_the_given_shapes_with_the_given_repeat(tmp_path, capsys):
    seen = []

    def measure_one(n, d, b, repeat, skip):
        seen.append((n, d, b, repeat))
        assert skip == frozenset()
        return {"N": n, "d": d, "B": b, "chosen": "cpp", "auto": 1.0, "cpp": 1.0, "peer:sdpa": 2.0 * b}

    out = tmp_path / "grid.jsonl"
    code = backend_grid.run_grid(["--out", str(out), "--shapes", "5:3:1,7:2:2", "--repeat", "11"],
                                 description="test", out=out, quick_help="", shapes=lambda quick: [(1, 1, 1)],
                                 measure_one=measure_one, backends=("cpp",))
    assert code == 0 and seen == [(5, 3, 1, 11), (7, 2, 2, 11)]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["N"], r["B"]) for r in rows] == [(5, 1), (7, 2)] and all("environment" in r for r in rows)
    assert "2 shapes: auto within 5% of the best peer at 2 (faster at 2)" in capsys.readouterr().out


def test_skip_leaves_candidates_out_but_keeps_auto_and_a_peer(tmp_path, capsys):
    cands = {"auto": 1, "cpp": 2, "peer:sdpa": 3, "peer:plain": 4}
    assert backend_grid.without(cands, frozenset({"peer:plain", "cpp"})) == {"auto": 1, "peer:sdpa": 3}
    for bad in ({"auto"}, {"peer:sdpa", "peer:plain"}):
        with pytest.raises(SystemExit, match="would leave no auto or no peer"):
            backend_grid.without(cands, frozenset(bad))
    skipped = []

    def measure_one(n, d, b, repeat, skip):
        skipped.append(skip)
        return {"N": n, "d": d, "B": b, "chosen": "cpp", "auto": 1.0, "cpp": 1.0, "peer:sdpa": 2.0}

    out = tmp_path / "grid.jsonl"
    assert backend_grid.run_grid(["--out", str(out), "--shapes", "5:3:1", "--skip", "peer:plain,gemm"],
                                 description="test", out=out, quick_help="", shapes=lambda quick: [],
                                 measure_one=measure_one, backends=("cpp",)) == 0
    assert skipped == [frozenset({"peer:plain", "gemm"})]
