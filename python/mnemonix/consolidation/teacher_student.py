"""Consolidation as teacher-student learning (Spens & Burgess 2024, Nat. Hum. Behav.).

A modern Hopfield network (Ramsauer et al. 2020) is the fast "hippocampal" store: it encodes
each item in one shot. Random-noise cues make it replay its memories (at high inverse
temperature each cue falls into one stored attractor); the replayed items train a VAE, the
slow "neocortical" generative model. Afterwards recall can go through the VAE.

The research code retrieves its 10,000 memories one query at a time in numpy; here all noise
cues go through :func:`mnemonix.ops.hopfield_retrieve` in batches (one fused pass over the
stored patterns per batch).

Items are stored in the Hopfield network scaled to [-1, 1] (``2x - 1``), the cues are uniform
noise in [-1, 1], and replayed items are mapped back to [0, 1] for the VAE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from mnemonix import _checks
from mnemonix.consolidation.data import ImageDataset
from mnemonix.consolidation.vae import VAE, vae_for
from mnemonix.hopfield import ModernHopfield

#: Inverse temperature of the replay store: "very high", so that a noise cue retrieves a single
#: stored item (on 8x8 digits and on 64x64x3 scenes scaled to [-1, 1]).
DEFAULT_BETA = 1000.0


# -- Hopfield stage ------------------------------------------------------------------------------
def to_patterns(images: torch.Tensor) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] -> Hopfield patterns [N, C*H*W] in [-1, 1] (float32)."""
    return (images.reshape(images.shape[0], -1).float() * 2.0 - 1.0).contiguous()


def from_patterns(patterns: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_patterns`, clamped to [0, 1]."""
    return ((patterns.float() + 1.0) * 0.5).clamp(0.0, 1.0).reshape(-1, *image_shape)


def build_hopfield(images: torch.Tensor, *, beta: float = DEFAULT_BETA, backend: str | None = None) -> ModernHopfield:
    """Store images [N, C, H, W] (in [0, 1]) in a :class:`~mnemonix.hopfield.ModernHopfield`."""
    _checks.tensor("images", images, ndim=4)
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image to store, got an empty dataset")
    return ModernHopfield(to_patterns(images), beta=beta, max_iter=1, backend=backend)


@dataclass(frozen=True)
class Replay:
    """Items replayed from noise: images [n, C, H, W] in [0, 1], nearest [n] (index of the stored
    item each cue fell into), seconds spent in retrieval."""

    images: torch.Tensor
    nearest: torch.Tensor
    seconds: float

    @property
    def coverage(self) -> float:
        """Fraction of distinct stored items among the replays' nearest indices (of those replayed)."""
        return float(self.nearest.unique().numel()) / max(int(self.nearest.numel()), 1)


def noise_cues(n: int, dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float32,
               device: str | torch.device | None = None) -> torch.Tensor:
    """``n`` uniform-noise cues in [-1, 1], [n, dim], reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, dim, generator=g) * 2.0 - 1.0).to(device=device, dtype=dtype)


def replay_from_noise(
    hopfield: ModernHopfield,
    n: int,
    image_shape: tuple[int, ...],
    *,
    seed: int = 0,
    batch_size: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> Replay:
    """Retrieve ``n`` items from uniform-noise cues, ``batch_size`` cues per fused call.

    ``progress(k)`` is called after each batch with the number of cues done in it.
    """
    n = _checks.positive_int("n", n)
    batch_size = _checks.positive_int("batch_size", batch_size)
    stored = hopfield.patterns
    cues = noise_cues(n, stored.shape[1], seed=seed, dtype=stored.dtype, device=stored.device)
    states, nearest = [], []
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        r = hopfield.retrieve(cues[start : start + batch_size], with_energy=False)
        states.append(r.states)
        nearest.append(r.nearest)
        if progress is not None:
            progress(min(batch_size, n - start))
    seconds = time.perf_counter() - t0
    return Replay(from_patterns(torch.cat(states), image_shape), torch.cat(nearest), seconds)


# -- linear probe ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearProbe:
    """A ridge-regression linear classifier on standardised features (closed form)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # [F + 1, K]
    classes: torch.Tensor  # [K]

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, *, ridge: float = 1e-2) -> LinearProbe:
        x = features.double()
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        xs = torch.cat([(x - mean) / std, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        classes, y = labels.unique(return_inverse=True)
        onehot = torch.nn.functional.one_hot(y, classes.numel()).double()
        gram = xs.T @ xs + ridge * x.shape[0] * torch.eye(xs.shape[1], dtype=x.dtype)
        weight = torch.linalg.solve(gram, xs.T @ onehot)
        return cls(mean, std, weight, classes)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.double() - self.mean) / self.std
        xs = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        return self.classes[(xs @ self.weight).argmax(1)]

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(features) == labels).double().mean())


def chance_accuracy(train_labels: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Accuracy of always predicting the most frequent training label."""
    values, counts = train_labels.unique(return_counts=True)
    return float((test_labels == values[counts.argmax()]).double().mean())


# -- training ----------------------------------------------------------------------------------
@dataclass
class ConsolidationConfig:
    """Settings of :func:`run_teacher_student`. Sizes default to the quick digits configuration."""

    n_stored: int = 1000
    n_replay: int | None = None  # None: as many noise cues as stored items (the paper: 10,000 / 10,000)
    latent_dim: int | None = None  # None: the VAE's default (20 large/small, 10 tiny)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    kl_weight: float = 1.0
    beta: float = DEFAULT_BETA
    hopfield_batch: int = 1024
    seed: int = 0
    backend: str | None = None

    def check(self) -> None:
        _checks.positive_int("n_stored", self.n_stored)
        if self.n_replay is not None:
            _checks.positive_int("n_replay", self.n_replay)
        if self.latent_dim is not None:
            _checks.positive_int("latent_dim", self.latent_dim)
        _checks.nonneg_int("epochs", self.epochs)
        _checks.positive_int("batch_size", self.batch_size)
        _checks.positive_float("lr", self.lr)
        if not (isinstance(self.kl_weight, (int, float)) and math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"kl_weight must be a finite number >= 0, got {self.kl_weight!r}")
        _checks.positive_float("beta", self.beta)
        _checks.positive_int("hopfield_batch", self.hopfield_batch)


@dataclass(frozen=True)
class EpochLog:
    """One row of the loss history (epoch 0 is the untrained VAE)."""

    epoch: int
    train_loss: float
    train_recon: float
    train_kl: float
    heldout_mse: float
    probe_accuracy: float
    seconds: float


@torch.no_grad()
def evaluate(
    vae: VAE, train: ImageDataset | tuple[torch.Tensor, torch.Tensor], heldout: ImageDataset
) -> tuple[float, float]:
    """(held-out reconstruction MSE per pixel, probe accuracy on held-out latents).

    The probe is fit on the latents of ``train`` (images, class labels) and tested on the
    held-out items' latents and class labels.
    """
    train_images, train_labels = (train.images, train.classes) if isinstance(train, ImageDataset) else train
    recon = vae.reconstruct(heldout.images)
    mse = float(((recon - heldout.images) ** 2).mean())
    probe = LinearProbe.fit(vae.latents(train_images), train_labels)
    return mse, probe.accuracy(vae.latents(heldout.images), heldout.classes)


@torch.no_grad()
def probe_by_factor(vae: VAE, images: torch.Tensor, labels: torch.Tensor, heldout: ImageDataset) -> dict[str, float]:
    """Semantic decoding accuracy of every factor: a linear probe fit on the latents of
    ``images`` with ``labels`` [n, F] and tested on ``heldout``; also each factor's chance rate
    (``<factor>_chance``)."""
    z_train, z_test = vae.latents(images), vae.latents(heldout.images)
    out: dict[str, float] = {}
    for j, name in enumerate(heldout.factor_names):
        if labels[:, j].unique().numel() < 2:
            continue
        out[name] = LinearProbe.fit(z_train, labels[:, j]).accuracy(z_test, heldout.labels[:, j])
        out[f"{name}_chance"] = chance_accuracy(labels[:, j], heldout.labels[:, j])
    return out


def train_vae(
    vae: VAE,
    images: torch.Tensor,
    labels: torch.Tensor,
    heldout: ImageDataset,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    kl_weight: float = 1.0,
    seed: int = 0,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_batch: Callable[[], None] | None = None,
) -> list[EpochLog]:
    """Train ``vae`` on ``images`` [n, C, H, W] (the replayed items), logging per epoch the
    held-out reconstruction error and the semantic decoding accuracy of a linear probe fit on
    the training latents with ``labels`` [n] and tested on ``heldout``. Row 0: before training."""
    vae.check_images(images)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be [n] = [{images.shape[0]}], got {tuple(labels.shape)}")
    epochs = _checks.nonneg_int("epochs", epochs)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout and latent sampling
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    mse, acc = evaluate(vae, (images, labels), heldout)
    history = [EpochLog(0, math.nan, math.nan, math.nan, mse, acc, 0.0)]
    if on_epoch is not None:
        on_epoch(history[0])
    n = images.shape[0]
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        vae.train()
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        perm = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if idx.numel() < 2 and n >= 2:  # batch norm needs two items
                continue
            loss, parts = vae.loss(images[idx], kl_weight=kl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k in sums:
                sums[k] += parts[k] * idx.numel()
            if on_batch is not None:
                on_batch()
        seconds = time.perf_counter() - t0
        vae.eval()
        mse, acc = evaluate(vae, (images, labels), heldout)
        row = EpochLog(epoch, sums["loss"] / n, sums["recon"] / n, sums["kl"] / n, mse, acc, seconds)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    vae.eval()
    return history


@dataclass
class TeacherStudentResult:
    """Everything :func:`run_teacher_student` produced."""

    vae: VAE
    hopfield: ModernHopfield
    stored: ImageDataset
    heldout: ImageDataset
    replay: Replay
    history: list[EpochLog]
    summary: dict[str, float | int | str] = field(default_factory=dict)

    def recall(self, cues: torch.Tensor) -> torch.Tensor:
        """Recall through the trained VAE: images [B, C, H, W] -> reconstructions."""
        return self.vae.reconstruct(cues)

    def history_rows(self) -> list[dict[str, float]]:
        return [asdict(r) for r in self.history]


def run_teacher_student(
    data: ImageDataset,
    config: ConsolidationConfig | None = None,
    *,
    vae: VAE | None = None,
    progress: bool = False,
) -> TeacherStudentResult:
    """The teacher-student loop: store ``config.n_stored`` items of ``data`` in a modern Hopfield
    network, replay them from noise through the fused op, train a VAE on the replays (held-out
    items: the rest of ``data``), and report recall through the VAE.

    ``vae`` defaults to the one matching the images' shape (:func:`vae_for`).
    """
    cfg = config or ConsolidationConfig()
    cfg.check()
    if not isinstance(data, ImageDataset):
        raise TypeError(f"data must be an ImageDataset, got {type(data).__name__}")
    if len(data) < 2:
        raise ValueError(f"data must hold at least 2 items (stored + held-out), got {len(data)}")
    n_stored = min(cfg.n_stored, len(data) - 1)
    torch.manual_seed(cfg.seed)  # weight initialisation
    model = vae if vae is not None else vae_for(data.image_shape, cfg.latent_dim)
    model.check_images(data.images[:1], "data.images")
    stored, heldout = data.split(n_stored, seed=cfg.seed)
    hop = build_hopfield(stored.images, beta=cfg.beta, backend=cfg.backend)
    n_replay = cfg.n_replay or n_stored

    bar = _bar(progress, n_replay, "hopfield replay")
    replay = replay_from_noise(hop, n_replay, data.image_shape, seed=cfg.seed + 1, batch_size=cfg.hopfield_batch,
                               progress=(bar.update if bar is not None else None))
    if bar is not None:
        bar.close()
    replay_labels = stored.classes[replay.nearest]
    exact = float(((replay.images - stored.images[replay.nearest]).abs().amax(dim=(1, 2, 3)) < 1e-3).double().mean())

    steps = cfg.epochs * math.ceil(n_replay / cfg.batch_size)
    bar = _bar(progress, steps, "vae training")
    history = train_vae(
        model, replay.images, replay_labels, heldout, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
        kl_weight=cfg.kl_weight, seed=cfg.seed,
        on_batch=(lambda: bar.update(1)) if bar is not None else None,
        on_epoch=(lambda r: bar.set_postfix(mse=f"{r.heldout_mse:.4f}", probe=f"{r.probe_accuracy:.2f}"))
        if bar is not None else None,
    )
    if bar is not None:
        bar.close()
    chance = chance_accuracy(replay_labels, heldout.classes)
    by_factor = probe_by_factor(model, replay.images, stored.labels[replay.nearest], heldout)
    trained = [r.seconds for r in history[1:]]
    summary: dict[str, float | int | str] = {
        "n_stored": n_stored, "n_heldout": len(heldout), "n_replay": n_replay,
        "image_shape": "x".join(map(str, data.image_shape)), "vae": model.kind, "latent_dim": model.latent_dim,
        "beta": cfg.beta, "replay_seconds": replay.seconds, "replay_exact_fraction": exact,
        "replay_coverage": replay.coverage, "epochs": cfg.epochs,
        "heldout_mse_untrained": history[0].heldout_mse, "heldout_mse_final": history[-1].heldout_mse,
        "probe_accuracy_untrained": history[0].probe_accuracy, "probe_accuracy_final": history[-1].probe_accuracy,
        "probe_chance": chance, **{f"probe_{k}": v for k, v in by_factor.items()},
        "seconds_per_epoch": (sum(trained) / len(trained)) if trained else 0.0,
    }
    return TeacherStudentResult(model, hop, stored, heldout, replay, history, summary)


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", leave=False)
