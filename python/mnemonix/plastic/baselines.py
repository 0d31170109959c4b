"""Baselines of the plastic-memory evaluation, as in makemore: counting n-grams and a small MLP.

Both work on names (no tokens) over a :class:`CharVocab` whose index 0 is the boundary
(the start context and the stop token, makemore's ``"."``), so a name of length L makes
L + 1 predictions, the stop included: the same events as the plastic predictor scoring
``">" + name + "_"``.

- :class:`AddOneNgram`: counting bigram (``context=1``) / trigram (``context=2``) with add-one
  (Laplace) smoothing: ``p(t | c) = (N(c, t) + 1) / (N(c) + V)``.
- :class:`BengioMLP`: Bengio et al. (2003): embeddings of the previous ``block`` characters,
  concatenated, one tanh hidden layer, softmax over the vocabulary; trained with AdamW for a
  bounded time (tqdm progress bar), keeping the parameters of the best validation loss.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CharVocab", "AddOneNgram", "BengioMLP", "MLPConfig"]


class CharVocab:
    """Characters of a list of names; index 0 is the boundary (start context and stop)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.chars = "".join(sorted(set("".join(names))))
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}

    @property
    def size(self) -> int:
        """Number of outcomes (characters + the stop)."""
        return len(self.chars) + 1

    def encode(self, name: str) -> list[int]:
        try:
            return [self.index[c] for c in name]
        except KeyError as exc:
            raise ValueError(f"name {name!r} holds {exc.args[0]!r}, which is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 1] for i in ids)

    def events(self, names: Sequence[str], context: int) -> tuple[np.ndarray, np.ndarray]:
        """Every prediction of ``names``: contexts int64 [events, context] (0-padded) and targets [events]."""
        ctx, tgt = [], []
        for name in names:
            ids = [0] * context + self.encode(name) + [0]
            for j in range(context, len(ids)):
                ctx.append(ids[j - context : j])
                tgt.append(ids[j])
        return np.asarray(ctx, dtype=np.int64).reshape(-1, context), np.asarray(tgt, dtype=np.int64)


class AddOneNgram:
    """Counting n-gram over characters with add-one smoothing (``context`` previous characters)."""

    def __init__(self, vocab: CharVocab, context: int) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        self.vocab = vocab
        self.context = context
        self.counts = np.zeros((vocab.size,) * (context + 1), dtype=np.int64)

    def _flat(self, ctx: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        flat = np.zeros(len(tgt), dtype=np.int64)
        for k in range(self.context):
            flat = flat * self.vocab.size + ctx[:, k]
        return flat * self.vocab.size + tgt

    def fit(self, names: Sequence[str]) -> AddOneNgram:
        """Count every event of ``names`` (adds to what was counted before)."""
        ctx, tgt = self.vocab.events(names, self.context)
        self.counts += np.bincount(self._flat(ctx, tgt), minlength=self.counts.size).reshape(self.counts.shape)
        return self

    def log_probs(self, names: Sequence[str]) -> tuple[float, int]:
        """(sum of log p in nats, number of predictions) over ``names``."""
        ctx, tgt = self.vocab.events(names, self.context)
        flat = self._flat(ctx, tgt)
        rows = self.counts.reshape(-1, self.vocab.size)
        row = flat // self.vocab.size
        p = (rows[row, tgt] + 1.0) / (rows.sum(axis=1)[row] + self.vocab.size)
        return float(np.log(p).sum()), len(tgt)

    def nll(self, names: Sequence[str]) -> float:
        total, n = self.log_probs(names)
        return -total / n

    def sample(self, n: int, seed: int, max_length: int = 50) -> list[str]:
        """``n`` names drawn from the smoothed model (numpy Generator seeded with ``seed``)."""
        rng = np.random.default_rng(seed)
        rows = self.counts.reshape(-1, self.vocab.size) + 1.0
        probs = rows / rows.sum(axis=1, keepdims=True)
        cdf = np.cumsum(probs, axis=1)
        ctx = np.zeros((n, self.context), dtype=np.int64)
        out = np.zeros((n, max_length), dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        for step in range(max_length):
            row = np.zeros(n, dtype=np.int64)
            for k in range(self.context):
                row = row * self.vocab.size + ctx[:, k]
            u = rng.random(n)[:, None]
            nxt = np.minimum((cdf[row] <= u).sum(axis=1), self.vocab.size - 1)
            nxt[~alive] = 0
            out[:, step] = nxt
            alive &= nxt != 0
            ctx = np.concatenate([ctx[:, 1:], nxt[:, None]], axis=1)
        return [self.vocab.decode(row_ids[: _stop(row_ids)].tolist()) for row_ids in out]


def _stop(ids: np.ndarray) -> int:
    zeros = np.flatnonzero(ids == 0)
    return int(zeros[0]) if len(zeros) else len(ids)


@dataclass(frozen=True)
class MLPConfig:
    """Sizes and training budget of :class:`BengioMLP` (makemore's MLP, Bengio et al. 2003)."""

    block: int = 3
    embedding: int = 16
    hidden: int = 256
    batch: int = 128
    lr: float = 1e-2
    final_lr: float = 5e-4
    weight_decay: float = 1e-4
    max_steps: int = 200_000
    eval_every: int = 500


class BengioMLP:
    """Embedding -> concatenation -> tanh hidden layer -> logits over the vocabulary."""

    def __init__(self, vocab: CharVocab, config: MLPConfig = MLPConfig(), seed: int = 0) -> None:
        import torch

        self.vocab = vocab
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)
        torch_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        with torch.random.fork_rng():
            torch.manual_seed(torch_seed)
            v, c = vocab.size, config
            self.model = torch.nn.Sequential(
                torch.nn.Embedding(v, c.embedding),
                torch.nn.Flatten(),
                torch.nn.Linear(c.block * c.embedding, c.hidden),
                torch.nn.Tanh(),
                torch.nn.Linear(c.hidden, v),
            )
        self.steps = 0

    def _tensors(self, names: Sequence[str]):  # -> (contexts [E, block] int64, targets [E] int64)
        import torch

        ctx, tgt = self.vocab.events(names, self.config.block)
        return torch.from_numpy(ctx), torch.from_numpy(tgt)

    def train(self, names: Sequence[str], validation: Sequence[str], seconds: float, *,
              progress: bool = True, desc: str = "MLP") -> float:
        """Train for at most ``seconds`` (and ``max_steps``); keep the best validation parameters.

        The learning rate decays geometrically from ``lr`` to ``final_lr`` over the time budget.
        Runs on one thread (restored after). Returns the best validation NLL (nats per character).
        """

        with _one_thread():
            return self._train(names, validation, seconds, progress, desc)

    def _train(self, names: Sequence[str], validation: Sequence[str], seconds: float, progress: bool,
               desc: str) -> float:
        import torch
        from tqdm.auto import tqdm

        x, y = self._tensors(names)
        vx, vy = self._tensors(validation)
        c = self.config
        opt = torch.optim.AdamW(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        best = (math.inf, None)
        t0 = time.perf_counter()
        # The bar counts seconds of the time budget (the number of steps depends on the machine).
        with tqdm(total=round(seconds, 1), desc=desc, unit="s", leave=False, disable=not progress,
                  bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s{postfix}") as bar:
            for step in range(c.max_steps):
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds:
                    break
                for group in opt.param_groups:
                    group["lr"] = c.lr * (c.final_lr / c.lr) ** (elapsed / max(seconds, 1e-9))
                idx = torch.randint(0, len(y), (c.batch,), generator=self.generator)
                loss = torch.nn.functional.cross_entropy(self.model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.steps += 1
                if step % c.eval_every == 0:
                    best = self._keep_best(best, vx, vy)
                if step % 50 == 0:
                    bar.set_postfix_str(f"{self.steps} steps, best validation NLL {best[0]:.3f}", refresh=False)
                    bar.update(round(min(time.perf_counter() - t0, seconds), 1) - bar.n)
        best = self._keep_best(best, vx, vy)
        if best[1] is not None:
            self.model.load_state_dict(best[1])
        return best[0]

    def _keep_best(self, best, vx, vy):
        loss = self._nll_tensors(vx, vy)
        if loss < best[0]:
            return loss, {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return best

    def _nll_tensors(self, x, y) -> float:
        import torch

        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(self.model(x), y, reduction="mean"))

    def nll(self, names: Sequence[str]) -> float:
        with _one_thread():
            return self._nll_tensors(*self._tensors(names))

    def sample(self, n: int, seed: int, max_length: int = 50) -> list[str]:
        with _one_thread():
            return self._sample(n, seed, max_length)

    def _sample(self, n: int, seed: int, max_length: int) -> list[str]:
        import torch

        gen = torch.Generator().manual_seed(seed)
        ctx = torch.zeros(n, self.config.block, dtype=torch.int64)
        out = torch.zeros(n, max_length, dtype=torch.int64)
        alive = torch.ones(n, dtype=torch.bool)
        with torch.no_grad():
            for step in range(max_length):
                probs = torch.softmax(self.model(ctx), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
                nxt[~alive] = 0
                out[:, step] = nxt
                alive &= nxt != 0
                if not alive.any():
                    break
                ctx = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
        return [self.vocab.decode(row[: _stop(row)].tolist()) for row in out.numpy()]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: for a 20k-parameter model more threads only add synchronisation
    (and, on a busy machine, spinning threads slow each step down tenfold)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
