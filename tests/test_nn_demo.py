"""The attention-MIL demo section and example (mnemonix.nn.HopfieldPooling on bags of digits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnemonix.commands import nn as mil

ROOT = Path(__file__).resolve().parent.parent


def test_bags_are_balanced_padded_and_labelled():
    x, y, _, _ = mil.load_digit_images(0)
    bags = mil.make_bags(x, y, 40, np.random.default_rng(0))
    assert bags.instances.shape == (40, 16, 64) and bags.labels.mean() == 0.5
    holds = ((bags.digits == mil.TARGET_DIGIT) & ~bags.padding).any(dim=1).float()
    assert (holds == bags.labels).all()
    sizes = (~bags.padding).sum(dim=1)
    assert int(sizes.min()) >= 8 and int(sizes.max()) <= 16
    assert (bags.instances[bags.padding] == 0).all()


def test_demo_section_reaches_the_accuracy_target(tmp_path, capsys):
    from mnemonix.commands.demo import DemoContext

    ctx = DemoContext(out_dir=tmp_path, quick=True, seed=1)
    mil.demo_section(ctx)
    row = [line.split() for line in capsys.readouterr().out.splitlines() if "HopfieldPooling" in line][0]
    assert float(row[-1]) >= 0.9, "held-out bag accuracy"
    assert ctx.figures[0].exists() and ctx.figures[0].stat().st_size > 10_000


@pytest.mark.slow  # a fresh interpreter imports torch, sklearn and matplotlib: ~20 s here
def test_example_script_runs(tmp_path):
    out = tmp_path / "mil.png"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "attention_mil_digits.py"), "--epochs", "1",
                           "--bags", "64", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "held-out accuracy" in proc.stdout and out.exists()
