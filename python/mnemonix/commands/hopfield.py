"""Hopfield section of ``mnemonix demo``: classical, dense and modern networks on 8x8 digits.

scikit-learn's bundled digits (1,797 images, no download) become patterns in [-1, 1]
(binarised to +-1 for the binary networks). Cues are corrupted copies of stored patterns:
``noise`` replaces a fraction of the pixels by uniform random values, ``half`` blanks the
bottom half of the image (0 = unknown for the continuous network, random +-1 for the binary
ones). Each network retrieves from the same cues; the table reports how
often the retrieval is closest to the right stored pattern, the fraction of wrong pixels and
the time.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mnemonix._plotting import pyplot
from mnemonix.commands.demo import DemoContext
from mnemonix.hopfield import ClassicalHopfield, DenseHopfield, ModernHopfield


def load_digit_patterns(count: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` distinct random digits as float32 patterns [count, 64] in [-1, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(digits.data), size=count, replace=False)
    x = torch.from_numpy(digits.data[pick].astype(np.float32) / 8.0 - 1.0)
    return x, digits.target[pick]


def corrupt(patterns: torch.Tensor, kind: str, generator: torch.Generator, fraction: float = 0.25) -> torch.Tensor:
    """Noisy (a fraction of pixels uniform in [-1, 1]) or half-masked (bottom half = 0) copies."""
    cues = patterns.clone()
    if kind == "noise":
        hit = torch.rand(cues.shape, generator=generator) < fraction
        cues[hit] = torch.rand(int(hit.sum()), generator=generator) * 2 - 1
    elif kind == "half":
        cues.view(-1, 8, 8)[:, 4:, :] = 0.0
    else:
        raise ValueError(f"kind must be 'noise' or 'half', got {kind!r}")
    return cues


def binarise(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, 1.0, -1.0)


def binary_cue(cues: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """+-1 cues for the binary networks; unknown pixels (exactly 0) become random +-1."""
    coin = torch.where(torch.rand(cues.shape, generator=generator) < 0.5, 1.0, -1.0)
    return torch.where(cues == 0, coin, binarise(cues))


def recall_scores(states: torch.Tensor, stored: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(fraction whose nearest stored pattern is the target, mean fraction of wrong pixels)."""
    nearest = torch.cdist(states.float(), stored.float()).argmin(-1)
    wrong = (binarise(states) != binarise(stored[targets])).float().mean()
    return float((nearest == targets).float().mean()), float(wrong)


def demo_section(ctx: DemoContext) -> None:
    count = 40 if ctx.quick else 200
    queries = 40 if ctx.quick else 200
    gen = torch.Generator().manual_seed(ctx.seed)  # cues are drawn on the CPU, then moved: same on every device
    patterns, _ = load_digit_patterns(count, ctx.seed)
    patterns = patterns.to(ctx.device)
    binary = binarise(patterns)
    targets = torch.randint(0, count, (queries,), generator=gen).to(ctx.device)
    networks = {
        "classical": (ClassicalHopfield(binary, max_iter=20), True),
        "dense (exp)": (DenseHopfield(binary, interaction="exponential", max_iter=5), True),
        "modern": (ModernHopfield(patterns, beta=8.0, max_iter=3), False),
    }
    rows: list[list[object]] = []
    shown: dict[str, dict[str, torch.Tensor]] = {}
    for kind in ("noise", "half"):
        cues = corrupt(patterns[targets].cpu(), kind, gen).to(ctx.device)
        shown[kind] = {"stored": patterns[targets], "cue": cues}
        cues_binary = binary_cue(cues.cpu(), gen).to(ctx.device)
        for name, (net, is_binary) in networks.items():
            stored = binary if is_binary else patterns
            net.retrieve((cues_binary if is_binary else cues)[:2])  # warm-up: first-call costs out of the timing
            t0 = time.perf_counter()
            states = net.retrieve(cues_binary if is_binary else cues).states
            if states.is_cuda:  # time the work, not the launch
                torch.cuda.synchronize(states.device)
            elapsed = time.perf_counter() - t0
            accuracy, wrong = recall_scores(states, stored, targets)
            rows.append([kind, name, count, queries, accuracy, wrong, elapsed * 1e3])
            shown[kind][name] = states
    print(f"  {count} stored digits (8x8, 64 pixels), {queries} corrupted cues per kind")
    ctx.table(["cue", "network", "stored", "queries", "recall acc", "wrong pixels", "time ms"], rows)
    path = _figure(ctx, shown, list(networks))
    ctx.figures.append(path)


def _figure(ctx: DemoContext, shown: dict[str, dict[str, torch.Tensor]], names: list[str]):
    plt = pyplot()
    examples = 6
    lines = ["stored", "cue", *names]
    fig, axes = plt.subplots(len(lines), 2 * examples, figsize=(2 * examples * 0.9, len(lines) * 0.95))
    for col_block, kind in enumerate(("noise", "half")):
        for i in range(examples):
            col = col_block * examples + i
            for row, line in enumerate(lines):
                ax = axes[row, col]
                ax.imshow(shown[kind][line][i].reshape(8, 8).cpu().numpy(), cmap="gray_r", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(line, fontsize=7, rotation=0, ha="right", va="center")
            axes[0, col].set_title(kind if i == 0 else "", fontsize=8, loc="left")
    fig.suptitle("Hopfield retrieval of 8x8 digits: noisy cues (left), half-masked cues (right)", fontsize=9)
    path = ctx.out_dir / "hopfield_digits.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
