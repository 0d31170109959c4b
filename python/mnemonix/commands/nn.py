"""Hopfield-layers section of ``mnemonix demo``: attention-MIL on bags of 8x8 digits.

Multiple-instance learning (Ilse et al. 2018; Widrich et al. 2020, DeepRC): a *bag* of 8x8
digit images (scikit-learn's bundled set, no download) is positive when it holds at least one
image of the target digit. Each instance is embedded by a small MLP, a
:class:`mnemonix.nn.HopfieldPooling` layer (one learned state pattern, several heads) pools the
bag into one vector, and a linear layer classifies it. Bags vary in size (padding mask); the
test bags are built from images never seen in training. The figure shows, for a few test bags,
the attention of the pooling pattern over the bag's instances: it lands on the target digits.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnemonix import _plotting
from mnemonix.commands.demo import DemoContext
from mnemonix.nn import HopfieldPooling

TARGET_DIGIT = 9


@dataclass
class Bags:
    """Padded bags: instances [bags, max_size, 64], padding [bags, max_size] (True = padding),
    labels [bags] (1.0 = holds the target digit), digit labels [bags, max_size] (-1 = padding)."""

    instances: torch.Tensor
    padding: torch.Tensor
    labels: torch.Tensor
    digits: torch.Tensor


def make_bags(images: np.ndarray, digits: np.ndarray, count: int, rng: np.random.Generator, *,
              sizes: tuple[int, int] = (8, 16), target: int = TARGET_DIGIT) -> Bags:
    """``count`` bags of ``sizes[0]..sizes[1]`` instances drawn from ``images``, half of them positive."""
    hits, misses = np.flatnonzero(digits == target), np.flatnonzero(digits != target)
    width = sizes[1]
    x = np.zeros((count, width, images.shape[1]), np.float32)
    pad = np.ones((count, width), bool)
    which = np.full((count, width), -1, np.int64)
    labels = np.zeros(count, np.float32)
    for i in range(count):
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        positive = i % 2 == 0
        n_hits = int(rng.integers(1, 3)) if positive else 0
        pick = np.concatenate([rng.choice(hits, n_hits, replace=False),
                               rng.choice(misses, size - n_hits, replace=False)])
        rng.shuffle(pick)
        x[i, :size], pad[i, :size], which[i, :size] = images[pick], False, digits[pick]
        labels[i] = float(positive)
    return Bags(torch.from_numpy(x), torch.from_numpy(pad), torch.from_numpy(labels), torch.from_numpy(which))


class AttentionMIL(nn.Module):
    """Instance MLP -> Hopfield pooling (one learned state pattern) -> linear bag classifier."""

    def __init__(self, features: int = 64, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width))
        self.pool = HopfieldPooling(input_size=width, hidden_size=16, num_heads=heads, quantity=1, scaling=0.5)
        self.classify = nn.Linear(width, 1)

    def forward(self, instances: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Bag logits [bags] from instances [bags, size, features] and padding [bags, size]."""
        pooled = self.pool(self.encode(instances), stored_pattern_padding_mask=padding)
        return self.classify(pooled)[:, 0]

    @torch.no_grad()
    def attention(self, instances: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Attention over each bag's instances [bags, size], averaged over the heads."""
        xi = self.pool.get_association_matrix(self.encode(instances), stored_pattern_padding_mask=padding)
        return xi.mean(dim=1)[:, 0]


def load_digit_images(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bundled 8x8 digits in [0, 1], split by image into train (2/3) and test (1/3) pools."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.data))
    cut = 2 * len(order) // 3
    x = (data.data / 16.0).astype(np.float32)
    return x[order[:cut]], data.target[order[:cut]], x[order[cut:]], data.target[order[cut:]]


def train(model: AttentionMIL, bags: Bags, *, epochs: int, batch: int = 32, lr: float = 2e-3,
          seed: int = 0) -> list[float]:
    """Adam on the bag-level binary cross-entropy; returns the mean loss per epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(bags.labels), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            logits = model(bags.instances[idx], bags.padding[idx])
            loss = nn.functional.binary_cross_entropy_with_logits(logits, bags.labels[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(order))
    return history


@torch.no_grad()
def accuracy(model: AttentionMIL, bags: Bags) -> float:
    return float(((model(bags.instances, bags.padding) > 0).float() == bags.labels).float().mean())


@contextlib.contextmanager
def _one_thread():
    """Bags of 16 x 64 are tiny: one thread beats OpenMP hand-offs (which stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_mil(seed: int = 0, *, train_bags: int = 800, test_bags: int = 400, epochs: int = 10):
    """Build bags, train, evaluate: (model, test bags, test accuracy, loss history, seconds)."""
    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = load_digit_images(seed)
    rng = np.random.default_rng(seed)
    train_set, test_set = make_bags(x_tr, y_tr, train_bags, rng), make_bags(x_te, y_te, test_bags, rng)
    model = AttentionMIL()
    with _one_thread():
        t0 = time.perf_counter()
        history = train(model.train(), train_set, epochs=epochs, seed=seed)
        seconds = time.perf_counter() - t0
        acc = accuracy(model.eval(), test_set)
    return model, test_set, acc, history, seconds


def demo_section(ctx: DemoContext) -> None:
    model, test_set, acc, history, seconds = run_mil(ctx.seed, epochs=6 if ctx.quick else 10)
    ctx.table(["model", "epochs", "train s", "final loss", "held-out acc"],
              [["HopfieldPooling MIL", len(history), seconds, history[-1], acc]])
    path = plot_attention(model, test_set, ctx.out_dir / "nn_attention_mil.png")
    ctx.figures.append(path)


def plot_attention(model: AttentionMIL, bags: Bags, path, shown: int = 3):
    """Images of ``shown`` positive test bags with the pooling attention over their instances."""
    plt = _plotting.pyplot()
    positive = torch.nonzero(bags.labels > 0)[:shown, 0]
    weights = model.attention(bags.instances[positive], bags.padding[positive])
    width = bags.instances.shape[1]
    fig, axes = plt.subplots(2 * len(positive), width, figsize=(width * 0.8, 3.2 * len(positive)))
    for row, bag in enumerate(positive.tolist()):
        for j in range(width):
            image_ax, bar_ax = axes[2 * row, j], axes[2 * row + 1, j]
            image_ax.axis("off")
            bar_ax.set_ylim(0, 1)
            bar_ax.set_xticks([])
            bar_ax.set_yticks([] if j else [0, 1])
            if bags.padding[bag, j]:
                bar_ax.axis("off")
                continue
            digit = int(bags.digits[bag, j])
            image_ax.imshow(bags.instances[bag, j].reshape(8, 8).numpy(), cmap="gray_r")
            image_ax.set_title(str(digit), color="crimson" if digit == TARGET_DIGIT else "black", fontsize=9)
            bar_ax.bar([0], [float(weights[row, j])], color="crimson" if digit == TARGET_DIGIT else "gray")
    fig.suptitle(f"HopfieldPooling attention over bag instances (target digit {TARGET_DIGIT})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
