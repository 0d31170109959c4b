"""``mnemonix plastic eval`` / ``curriculum``: the split, the baselines, the orders and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mnemonix import _io
from mnemonix.cli import main
from mnemonix.plastic.baselines import AddOneNgram, CharVocab
from mnemonix.plastic.curriculum import Trace, information_bits, order_names
from mnemonix.plastic.evaluation import check_names, default_test_size, split_names

NAMES_PATH = Path(__file__).resolve().parents[1] / "data" / "names.txt"


@pytest.fixture(scope="module")
def names() -> list[str]:
    return [line.strip() for line in NAMES_PATH.read_text().splitlines() if line.strip()]


@pytest.fixture
def subset(tmp_path: Path, names: list[str]) -> Path:
    """A small names file: every 40th name of the bundled list (800 names, all letters)."""
    path = tmp_path / "names.txt"
    path.write_text("\n".join(names[:32_000:40]) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- the split
def test_split_follows_makemore(names: list[str]) -> None:
    split = split_names(names)
    assert len(split.test) == 1000 == default_test_size(len(names))
    assert len(split.validation) == 1000 and len(split.learn) == len(names) - 2000
    assert sorted(split.learn + split.validation + split.test) == sorted(names)
    again = split_names(names)
    assert again.test == split.test and again.learn == split.learn
    assert split_names(names, seed=1).test != split.test
    small = split_names(names[:500])
    assert (len(small.test), len(small.validation), len(small.learn)) == (50, 45, 405)
    assert len(split_names(names[:500], test_size=7).test) == 7
    with pytest.raises(ValueError, match=r"test_size must be in \[1, number of names - 2\] = \[1, 498\]"):
        split_names(names[:500], test_size=499)
    with pytest.raises(ValueError, match=r"min\(1000, 10% of 9\) = 0"):
        split_names(names[:9])


def test_check_names_refuses_tokens_and_control_characters(tmp_path: Path) -> None:
    assert check_names(["ann", "zoë"], "f.txt") == ["ann", "zoë"]
    with pytest.raises(_io.FormatError, match=r"'f.txt': name 2 \('mary_ann'\) holds '_' at index 4, the stop token"):
        check_names(["ann", "mary_ann"], "f.txt")
    with pytest.raises(_io.FormatError, match="the start token"):
        check_names([">x"], "f.txt")
    with pytest.raises(_io.FormatError, match="a control character"):
        check_names(["a\x07b"], "f.txt")
    with pytest.raises(_io.FormatError, match="holds no names"):
        check_names([], "f.txt")


# ---------------------------------------------------------------------------- baselines
def test_add_one_ngram_by_hand() -> None:
    vocab = CharVocab(["ab", "b"])
    assert vocab.size == 3 and vocab.encode("ba") == [2, 1]
    bigram = AddOneNgram(vocab, 1).fit(["ab", "b"])
    # events: (., a) (a, b) (b, .) (., b) (b, .); p(b | .) = (1 + 1) / (2 + 3)
    total, n = bigram.log_probs(["b"])
    assert n == 2
    assert total == pytest.approx(math.log(2 / 5) + math.log((2 + 1) / (2 + 3)))
    rows = bigram.counts + 1.0
    assert np.allclose((rows / rows.sum(axis=1, keepdims=True)).sum(axis=1), 1.0)
    trigram = AddOneNgram(vocab, 2).fit(["ab"])
    assert trigram.nll(["ab"]) == pytest.approx(-math.log((1 + 1) / (1 + 3)))
    drawn = trigram.sample(30, seed=4)
    assert drawn == trigram.sample(30, seed=4) and all(set(s) <= {"a", "b"} for s in drawn)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        bigram.nll(["abc"])


# ---------------------------------------------------------------------------- curriculum
def test_orders() -> None:
    sample = ["anna", "bo", "christopher", "al", "bo", "zyx"]
    assert order_names(sample, "file") == sample
    assert order_names(sample, "shortest") == ["bo", "al", "bo", "zyx", "anna", "christopher"]
    shuffled = order_names(sample, "random", seed=3)
    assert sorted(shuffled) == sorted(sample) and shuffled == order_names(sample, "random", seed=3)
    bits = information_bits(sample, sample)
    assert np.all(np.diff(bits[np.argsort(bits, kind="stable")]) >= 0)
    by_entropy = order_names(sample, "entropy", bits=bits)
    assert [bits[sample.index(s)] for s in by_entropy] == sorted(bits)
    assert bits[sample.index("christopher")] > bits[sample.index("bo")]
    with pytest.raises(ValueError, match="order must be one of"):
        order_names(sample, "alphabetical")


def test_rate_deviation() -> None:
    assert Trace("x", samples=[1, 2, 4], cumulative_bits=[10.0, 20.0, 40.0]).rate_deviation == 0.0
    assert Trace("x", samples=[1, 2], cumulative_bits=[15.0, 20.0]).rate_deviation == pytest.approx(0.25)


# ---------------------------------------------------------------------------- CLI
def test_eval_cli(subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(["plastic", "eval", str(subset), "--quick", "--mlp-seconds", "0.5", "--samples", "100",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    for model in ("plastic memory", "plastic, k-grams only", "bigram (add-one)", "trigram (add-one)",
                  "MLP (Bengio 2003)", "plastic graph walk (infer)"):
        assert model in text
    assert "held-out NLL of 80 test names" in text and "scoring the 80 test names" in text
    result = json.loads((out / "eval.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(result["curves"]) == {"plastic memory", "bigram (add-one)", "trigram (add-one)", "MLP (Bengio 2003)"}
    assert [n for n, _ in result["curves"]["plastic memory"]] == [100, 648]
    assert rows["plastic graph walk (infer)"]["learned"] == 1.0  # the walk ends at a learned leaf
    for row in rows.values():
        if row["test_nll"] is not None:
            assert 0.5 < row["test_nll"] < math.log(27)  # better than uniform over 26 letters + stop
        if row["novel"] is not None:
            assert row["novel"] + row["learned"] == pytest.approx(1.0)
    assert rows["plastic memory"]["test_nll"] < rows["bigram (add-one)"]["test_nll"]
    assert (out / "eval.png").stat().st_size > 0


def test_curriculum_cli(subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cur"
    assert main(["plastic", "curriculum", str(subset), "--points", "4", "--orders", "file,shortest,entropy",
                 "--out", str(out), "--quiet"]) == 0
    assert "rate deviation" in capsys.readouterr().out
    traces = json.loads((out / "curriculum.json").read_text())["traces"]
    assert [t["order"] for t in traces] == ["file", "shortest", "entropy"]
    for t in traces:
        assert t["samples"][-1] == 648 and np.all(np.diff(t["cumulative_bits"]) > 0)
    # On tokenised names the graph is a radix tree: whatever the order, the same nodes at the end.
    assert len({t["nodes"][-1] for t in traces}) == 1 and len({t["levels"][-1] for t in traces}) == 1
    assert (out / "curriculum.png").stat().st_size > 0


def test_cli_bad_input(tmp_path: Path, subset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert main(["plastic", "eval", str(empty), "--out", str(tmp_path / "o")]) == 1
    assert "error: FILE" in (err := capsys.readouterr().err) and "holds no names" in err
    bad = tmp_path / "bad.txt"
    bad.write_text("ann\nmary_ann\n", encoding="utf-8")
    assert main(["plastic", "curriculum", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "holds '_' at index 4, the stop token" in capsys.readouterr().err
    assert main(["plastic", "eval", str(subset), "--test-size", "800", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --test-size 800") and "holds 800 names" in err and "at most 798" in err
    assert main(["plastic", "curriculum", str(subset), "--orders", "file,alpha"]) == 2
    assert "argument --orders: expected a comma-separated list" in capsys.readouterr().err
    assert main(["plastic", "eval", str(subset), "--mlp-seconds", "-1"]) == 2
    assert "argument --mlp-seconds" in capsys.readouterr().err
    assert main(["plastic", "eval", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["plastic", "eval", str(subset), "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("ann\nbob\n", encoding="utf-8")
    assert main(["plastic", "eval", str(tiny), "--out", str(tmp_path / "o")]) == 1
    assert "test_size must be in" in capsys.readouterr().err
