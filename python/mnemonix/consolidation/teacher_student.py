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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from mnemonix import _checks
from mnemonix.consolidation import _args
from mnemonix.consolidation.data import ImageDataset
from mnemonix.consolidation.vae import MAX_LATENT_DIM, VAE, VAE_KINDS, vae_for
from mnemonix.hopfield import ModernHopfield
from mnemonix.ops.hopfield import SPEC as _RETRIEVE_SPEC

#: Inverse temperature of the replay store: "very high", so that a noise cue retrieves a single
#: stored item (on 8x8 digits and on 64x64x3 scenes scaled to [-1, 1]).
DEFAULT_BETA = 1000.0


# -- Hopfield stage ------------------------------------------------------------------------------
def to_patterns(images: torch.Tensor) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] -> Hopfield patterns [N, C*H*W] in [-1, 1] (float32)."""
    _checks.tensor("images", images, ndim=4, dtypes=None)
    return (images.reshape(images.shape[0], -1).float() * 2.0 - 1.0).contiguous()


def from_patterns(patterns: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_patterns`, clamped to [0, 1]: patterns [N, C*H*W] -> [N, C, H, W]."""
    _checks.tensor("patterns", patterns, ndim=2, dtypes=None)
    if isinstance(image_shape, (str, bytes)) or not isinstance(image_shape, Sequence):
        raise TypeError(f"image_shape must be a sequence of ints (C, H, W), got {type(image_shape).__name__}")
    shape = tuple(_args.integer("image_shape[]", s, low=1) for s in image_shape)
    if math.prod(shape) != patterns.shape[1]:
        raise ValueError(f"image_shape {shape} holds {math.prod(shape)} values but patterns have "
                         f"{patterns.shape[1]} per row")
    return ((patterns.float() + 1.0) * 0.5).clamp(0.0, 1.0).reshape(-1, *image_shape)


def build_hopfield(images: torch.Tensor, *, beta: float = DEFAULT_BETA, backend: str | None = None) -> ModernHopfield:
    """Store images [N, C, H, W] (in [0, 1]) in a :class:`~mnemonix.hopfield.ModernHopfield`."""
    _checks.tensor("images", images, ndim=4, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16))
    if 0 in images.shape:
        raise ValueError(f"images must hold at least one non-empty image to store, got an empty dataset of shape "
                         f"{tuple(images.shape)}")
    _args.finite_tensor("images", images)
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
    """``n`` uniform-noise cues in [-1, 1], [n, dim], reproducible from ``seed``.

    They are drawn on ``device`` itself (``None``: the CPU) by a generator seeded there: the same
    seed gives the same cues on every run on one device type, but CPU and CUDA draw different
    streams.
    """
    n = _args.integer("n", n, low=1)
    dim = _args.integer("dim", dim, low=1)
    seed = _args.seed("seed", seed)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    dev = torch.device("cpu") if device is None else _args.resolve_device(device)
    g = torch.Generator(device=dev).manual_seed(seed)
    return (torch.rand(n, dim, generator=g, device=dev) * 2.0 - 1.0).to(dtype=dtype)


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

    ``progress(k)`` is called after each batch with the number of cues done in it. The cues
    are drawn on the store's device (see :func:`noise_cues`); the results live there too.
    """
    if not isinstance(hopfield, ModernHopfield):
        raise TypeError(f"hopfield must be a mnemonix.hopfield.ModernHopfield, got {type(hopfield).__name__}")
    n = _args.integer("n", n, low=1)
    batch_size = _args.integer("batch_size", batch_size, low=1)
    seed = _args.seed("seed", seed)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be None or a callable, got {type(progress).__name__}")
    stored = hopfield.patterns
    from_patterns(stored[:0], image_shape)  # checks image_shape against the pattern size
    cues = noise_cues(n, stored.shape[1], seed=seed, dtype=stored.dtype, device=stored.device)
    states, nearest = [], []
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        r = hopfield.retrieve(cues[start : start + batch_size], with_energy=False)
        states.append(r.states)
        nearest.append(r.nearest)
        if progress is not None:
            progress(min(batch_size, n - start))
    if stored.device.type == "cuda":  # one sync: the time covers the kernels, not just their launch
        torch.cuda.synchronize(stored.device)
    seconds = time.perf_counter() - t0
    return Replay(from_patterns(torch.cat(states), image_shape), torch.cat(nearest), seconds)


# -- linear probe ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearProbe:
    """A ridge-regression linear classifier on standardised features (closed form), computed in
    float64 on the features' device.

    Attributes: mean, std [F]; weight [F + 1, K]; classes [K] (the sorted distinct labels).
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # [F + 1, K]
    classes: torch.Tensor  # [K]

    @staticmethod
    def _check(features: torch.Tensor, labels: object, n_features: int | None = None, *, with_labels: bool = True
               ) -> None:
        _checks.tensor("features", features, ndim=2, dtypes=(torch.float32, torch.float64, torch.float16,
                                                            torch.bfloat16))
        if features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features must hold at least one row and one column, got shape {tuple(features.shape)}")
        if n_features is not None and features.shape[1] != n_features:
            raise ValueError(f"features must be [N, {n_features}] (the probe's feature count), "
                             f"got shape {tuple(features.shape)}")
        if with_labels:
            _checks.tensor("labels", labels, ndim=1, dtypes=(torch.int64, torch.int32, torch.int16, torch.int8,
                                                             torch.uint8))
            if labels.shape[0] != features.shape[0]:
                raise ValueError(f"labels must be [N] = [{features.shape[0]}] like features, got {tuple(labels.shape)}")
            _args.on_device("labels", labels, features.device, "features")

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, *, ridge: float = 1e-2) -> LinearProbe:
        """Fit on features [N, F] (finite) and integer labels [N] on the same device."""
        cls._check(features, labels)
        ridge = _args.real("ridge", ridge, low=0.0, low_open=True)
        _args.finite_tensor("features", features)
        x = features.double()
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        xs = torch.cat([(x - mean) / std, ones], 1)
        classes, y = labels.long().unique(return_inverse=True)
        onehot = torch.nn.functional.one_hot(y, classes.numel()).double()
        eye = torch.eye(xs.shape[1], dtype=x.dtype, device=x.device)
        gram = xs.T @ xs + ridge * x.shape[0] * eye
        weight = torch.linalg.solve(gram, xs.T @ onehot)
        return cls(mean, std, weight, classes)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Class labels [N] of features [N, F] (on the probe's device)."""
        self._check(features, None, self.mean.shape[0], with_labels=False)
        _args.finite_tensor("features", features)
        _args.on_device("features", features, self.mean.device, "the probe")
        x = (features.double() - self.mean) / self.std
        xs = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
        return self.classes[(xs @ self.weight).argmax(1)]

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of ``labels`` [N] predicted right from features [N, F] (one host sync)."""
        self._check(features, labels, self.mean.shape[0])
        return float((self.predict(features) == labels).double().mean())


def chance_accuracy(train_labels: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Accuracy of always predicting the most frequent training label."""
    _checks.tensor("train_labels", train_labels, ndim=1, dtypes=None)
    _checks.tensor("test_labels", test_labels, ndim=1, dtypes=None)
    if train_labels.numel() == 0 or test_labels.numel() == 0:
        raise ValueError("train_labels and test_labels must each hold at least one label")
    _args.on_device("test_labels", test_labels, train_labels.device, "train_labels")
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

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise TypeError / ValueError naming the first bad field (checked again by
        :func:`run_teacher_student`, since fields may be changed after construction)."""
        _args.integer("n_stored", self.n_stored, low=1)
        if self.n_replay is not None:
            _args.integer("n_replay", self.n_replay, low=1)
        if self.latent_dim is not None:
            _args.integer("latent_dim", self.latent_dim, low=1, high=MAX_LATENT_DIM)
        _args.integer("epochs", self.epochs, low=0)
        _args.integer("batch_size", self.batch_size, low=1)
        _args.real("lr", self.lr, low=0.0, low_open=True)
        _args.real("kl_weight", self.kl_weight, low=0.0)
        _args.real("beta", self.beta, low=0.0, low_open=True)
        _args.integer("hopfield_batch", self.hopfield_batch, low=1)
        _args.seed("seed", self.seed)
        _checks.choice("backend", self.backend, _RETRIEVE_SPEC.names, none_ok=True)


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


def _check_training(vae: VAE, images: torch.Tensor, labels: torch.Tensor, heldout: ImageDataset,
                    on_epoch: object, on_batch: object) -> None:
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a mnemonix.consolidation.VAE, got {type(vae).__name__}")
    vae.check_images(images)
    _checks.tensor("labels", labels, ndim=1, dtypes=(torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8))
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be [n] = [{images.shape[0]}], got {tuple(labels.shape)}")
    _args.on_device("labels", labels, vae.device, "the VAE")
    if not isinstance(heldout, ImageDataset):
        raise TypeError(f"heldout must be an ImageDataset, got {type(heldout).__name__}")
    vae.check_images(heldout.images, "heldout.images")
    for name, fn in (("on_epoch", on_epoch), ("on_batch", on_batch)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be None or a callable, got {type(fn).__name__}")
    _args.finite_tensor("images", images)


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
    the training latents with ``labels`` [n] and tested on ``heldout``. Row 0: before training.

    ``images``, ``labels`` and ``heldout`` must live on the VAE's device. The losses are summed
    on the device: one host sync per epoch, none per batch. Seeds the global torch RNG with
    ``seed`` (dropout, latent sampling); every argument is checked before that.
    """
    _check_training(vae, images, labels, heldout, on_epoch, on_batch)
    epochs = _args.integer("epochs", epochs, low=0)
    batch_size = _args.integer("batch_size", batch_size, low=1)
    lr = _args.real("lr", lr, low=0.0, low_open=True)
    kl_weight = _args.real("kl_weight", kl_weight, low=0.0)
    seed = _args.seed("seed", seed)
    dev = vae.device
    g = torch.Generator(device=dev).manual_seed(seed)
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
        sums = torch.zeros(3, dtype=torch.float64, device=dev)  # loss, recon, kl: summed on the device
        perm = torch.randperm(n, generator=g, device=dev)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if idx.numel() < 2 and n >= 2:  # batch norm needs two items
                continue
            loss, recon, kl = vae.loss_terms(images[idx], kl_weight=kl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), recon.detach(), kl.detach()]).double() * idx.numel()
            if on_batch is not None:
                on_batch()
        loss_sum, recon_sum, kl_sum = (sums / n).tolist()  # the epoch's one sync
        seconds = time.perf_counter() - t0
        vae.eval()
        mse, acc = evaluate(vae, (images, labels), heldout)
        row = EpochLog(epoch, loss_sum, recon_sum, kl_sum, mse, acc, seconds)
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
        """Recall through the trained VAE: cues [B, C, H, W] (on the VAE's device) -> reconstructions."""
        return self.vae.reconstruct(self.vae.check_images(cues, "cues"))

    def history_rows(self) -> list[dict[str, float]]:
        return [asdict(r) for r in self.history]


def _prepare(data: ImageDataset, cfg: ConsolidationConfig, vae: VAE | None) -> tuple[int, int]:
    """Check the arguments of :func:`run_teacher_student` -> (n_stored, n_replay); builds nothing."""
    if not isinstance(cfg, ConsolidationConfig):
        raise TypeError(f"config must be None or a ConsolidationConfig, got {type(cfg).__name__}")
    cfg.check()
    if not isinstance(data, ImageDataset):
        raise TypeError(f"data must be an ImageDataset, got {type(data).__name__}")
    if len(data) < 2:
        raise ValueError(f"data must hold at least 2 items (stored + held-out), got {len(data)}")
    if cfg.n_stored > len(data) - 1:
        raise ValueError(f"n_stored must be <= {len(data) - 1} (data holds {len(data)} items and at least one must "
                         f"be held out), got {cfg.n_stored}")
    if vae is not None:
        if not isinstance(vae, VAE):
            raise TypeError(f"vae must be None or a mnemonix.consolidation.VAE, got {type(vae).__name__}")
        if vae.image_shape != data.image_shape:
            raise ValueError(f"data.images must be [B, {', '.join(map(str, vae.image_shape))}] for "
                             f"{type(vae).__name__} (image_shape {vae.image_shape}), got shape "
                             f"{tuple(data.images.shape)}")
    elif data.image_shape not in (shapes := [cls.image_shape for cls in VAE_KINDS.values()]):  # builds no VAE
        raise ValueError(f"data.images must hold images of one of the shapes {shapes} (the VAEs), got shape "
                         f"{tuple(data.images.shape)}")
    return cfg.n_stored, cfg.n_replay or cfg.n_stored


def run_teacher_student(
    data: ImageDataset,
    config: ConsolidationConfig | None = None,
    *,
    vae: VAE | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> TeacherStudentResult:
    """The teacher-student loop: store ``config.n_stored`` items of ``data`` in a modern Hopfield
    network, replay them from noise through the fused op, train a VAE on the replays (held-out
    items: the rest of ``data``), and report recall through the VAE.

    Parameters
    ----------
    data : ImageDataset
        At least 2 items; ``config.n_stored`` of them are stored, the rest held out.
    config : ConsolidationConfig, optional
        ``n_stored`` must be <= ``len(data) - 1`` (ValueError otherwise; nothing is clamped).
    vae : VAE, optional
        Defaults to the one matching the images' shape (:func:`vae_for`); a given VAE is moved
        to ``device`` and trained in place.
    progress : bool
        Show tqdm progress bars.
    device : None, str or torch.device
        Where everything runs: ``None`` means CUDA when available, else the CPU. The data is
        copied there; the result's tensors, VAE and Hopfield store live there.
    """
    cfg = ConsolidationConfig() if config is None else config
    n_stored, n_replay = _prepare(data, cfg, vae)
    dev = _args.resolve_device(device)
    _args.flag("progress", progress)
    torch.manual_seed(cfg.seed)  # weight initialisation
    model = (vae if vae is not None else vae_for(data.image_shape, cfg.latent_dim)).to(dev)
    stored, heldout = (part.to(dev) for part in data.split(n_stored, seed=cfg.seed))
    hop = build_hopfield(stored.images, beta=cfg.beta, backend=cfg.backend)

    bar = _bar(progress, n_replay, "hopfield replay")
    replay = replay_from_noise(hop, n_replay, data.image_shape, seed=cfg.seed + 1, batch_size=cfg.hopfield_batch,
                               progress=(bar.update if bar is not None else None))
    if bar is not None:
        bar.close()
    replay_labels = stored.classes[replay.nearest]
    exact = float(((replay.images - stored.images[replay.nearest]).abs().amax(dim=(1, 2, 3)) < 1e-3).double().mean())

    bar = _bar(progress, cfg.epochs * math.ceil(n_replay / cfg.batch_size), "vae training")
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
        "device": str(dev), "beta": cfg.beta, "replay_seconds": replay.seconds, "replay_exact_fraction": exact,
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
