"""``mnemonix store`` info / build / search, and the demo section."""

from __future__ import annotations

import json

import numpy as np
import torch

from mnemonix import MemoryStore
from mnemonix.cli import main


def test_build_info_search_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((700, 8)).astype(np.float32)
    np.save(tmp_path / "keys.npy", keys)
    np.save(tmp_path / "q.npy", keys[[5, 600]])
    np.save(tmp_path / "allowed.npy", np.array([5, 17, 650], dtype=np.int64))
    path = tmp_path / "store"
    assert main(["store", "build", str(path), "--from", str(tmp_path / "keys.npy"), "--dtype", "int8",
                 "--chunk", "300"]) == 0
    assert main(["store", "build", str(path), "--from", str(tmp_path / "keys.npy"), "--chunk", "1000"]) == 0
    capsys.readouterr()
    assert main(["store", "info", str(path)]) == 0
    info = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
    assert info["live"] == "1400" and info["dtype"] == "int8" and info["generation"] == "4" and info["segments"] == "4"
    assert main(["store", "search", str(path), "--query", str(tmp_path / "q.npy"), "-k", "2",
                 "--filter", str(tmp_path / "allowed.npy")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines[0]["ids"][0] == 5 and lines[1]["ids"][0] == 650
    store = MemoryStore.load(path)
    assert torch.equal(store.search(torch.from_numpy(keys[[5, 600]]), 2, filter=[5, 17, 650])[1],
                       torch.tensor([r["ids"] for r in lines]))


def test_errors_name_the_argument(tmp_path, capsys):
    """Exit 2: the command line is wrong (a path that does not exist); 1: a valid command fails."""
    assert main(["store", "info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.arange(5))
    assert main(["store", "build", str(tmp_path / "s"), "--from", str(tmp_path / "bad.npy")]) == 1
    assert "--from must hold a 2-D float array" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["store", "search", str(tmp_path / "empty"), "--query", str(tmp_path / "bad.npy")]) == 1
    assert "not a MemoryStore directory" in capsys.readouterr().err


def test_demo_section(tmp_path, capsys):
    assert main(["demo", "--only", "store", "--out", str(tmp_path), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "removed 180 nines" in out and "same results after reload: True" in out
    assert "[7, 7, 7, 7, 7]" in out
