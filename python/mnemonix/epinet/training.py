"""Split-task continual learning with and without the episodic memory (:func:`train_split`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from mnemonix import _checks
from mnemonix.epinet.clock import SalienceClock
from mnemonix.epinet.data import Tasks, load_digits_tasks
from mnemonix.epinet.memory import checked_device
from mnemonix.epinet.model import EpiNet

__all__ = ["TrainConfig", "TrainResult", "train_split", "resolve_device"]

VARIANTS = ("memory", "no_memory")


@dataclass
class TrainConfig:
    """Settings of :func:`train_split` (defaults: Split-digits, a few seconds on a CPU).

    :meth:`validate` (called by :func:`train_split`) checks every field.
    """

    tasks: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    epochs_per_task: int = 5
    batch_size: int = 32
    lr: float = 2e-3
    beta: float = 1.0
    latent_dim: int = 64
    hidden_dim: int = 128
    num_experts: int = 4
    memory_capacity: int = 300
    top_k: int = 5
    alpha: float = 1e-3
    store_per_step: int = 4
    seed: int = 0
    max_steps_per_task: int | None = None

    def validate(self) -> None:
        """Raise TypeError / ValueError naming the field (``config.<field>``) that is out of range."""
        if isinstance(self.tasks, (str, bytes)) or not isinstance(self.tasks, Sequence) or not self.tasks:
            raise ValueError(f"config.tasks must be a non-empty sequence of class tuples, got {self.tasks!r}")
        for t, classes in enumerate(self.tasks):
            if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
                raise ValueError(f"config.tasks[{t}] must be a non-empty sequence of class labels, got {classes!r}")
            for label in classes:
                _checks.nonneg_int(f"config.tasks[{t}] label", label)
        for name in ("epochs_per_task", "batch_size", "latent_dim", "hidden_dim", "num_experts",
                     "memory_capacity", "top_k", "store_per_step"):
            _checks.positive_int(f"config.{name}", getattr(self, name))
        _checks.nonneg_int("config.seed", self.seed)
        if self.max_steps_per_task is not None:
            _checks.positive_int("config.max_steps_per_task", self.max_steps_per_task)
        _checks.positive_float("config.lr", self.lr)
        for name in ("beta", "alpha"):
            _checks.nonneg_float(f"config.{name}", getattr(self, name))


@dataclass
class TrainResult:
    """Accuracy on every task's test split after each task, per variant ("memory", "no_memory")."""

    config: TrainConfig
    accuracy: dict[str, list[list[float]]] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)
    memory_size: int = 0
    device: str = "cpu"

    def table(self) -> tuple[list[str], list[list[object]]]:
        """(header, rows) of the forgetting table."""
        n_tasks = len(self.config.tasks)
        header = ["variant", "after task"] + [f"acc task {t} {list(self.config.tasks[t])}" for t in range(n_tasks)]
        rows = []
        for variant, per_stage in self.accuracy.items():
            for stage, accs in enumerate(per_stage):
                rows.append([variant, stage] + [round(a, 3) for a in accs])
        return header, rows

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict of the config and the results."""
        return {"config": asdict(self.config), "accuracy": self.accuracy, "final_loss": self.final_loss,
                "memory_size": self.memory_size, "device": self.device}


def resolve_device(device: torch.device | str | None) -> torch.device:
    """None: CUDA when available, else the CPU; otherwise the given device (checked)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return checked_device("device", device)


def _checked_data(data: object, device: torch.device) -> tuple[Tasks, torch.Tensor]:
    """The four tensors on ``device`` (labels int64), and the training labels kept on the CPU for indexing."""
    names = ("x_train", "y_train", "x_test", "y_test")
    if not isinstance(data, Sequence) or len(data) != 4:
        raise TypeError(f"data must be a 4-tuple {names}, got {type(data).__name__}")
    out = []
    for i, name in enumerate(names):
        value = data[i]
        if i % 2 == 0:
            _checks.tensor(f"data {name}", value, ndim=4, dtypes=(torch.float64, *_checks.FLOAT_DTYPES))
            if value.shape[-1] != value.shape[-2] or value.shape[-1] < 4:
                raise ValueError(f"data {name} must hold square images of side >= 4, got {tuple(value.shape)}")
            _checks.finite(f"data {name}", value)
        else:
            _checks.tensor(f"data {name}", value, ndim=1, dtypes=None)
            if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"data {name} must hold integer labels, got {value.dtype}")
            if value.shape[0] != data[i - 1].shape[0]:
                raise ValueError(f"data {name} must have {data[i - 1].shape[0]} labels (one per image), "
                                 f"got {value.shape[0]}")
            value = value.to(torch.int64)
        out.append(value)
    if out[0].shape[1:] != out[2].shape[1:]:
        raise ValueError(f"data x_train and x_test must share one image shape, got {tuple(out[0].shape[1:])} "
                         f"and {tuple(out[2].shape[1:])}")
    labels_cpu = out[1].cpu()
    moved = tuple(t.to(device, torch.float32) if i % 2 == 0 else t.to(device) for i, t in enumerate(out))
    return moved, labels_cpu  # type: ignore[return-value]


def _accuracy(model: EpiNet, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Fraction of correct predictions (one host sync)."""
    return float(_correct_fraction(model, x, y, batch))


@torch.no_grad()
def _correct_fraction(model: EpiNet, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Fraction of correct predictions, a 0-dim float64 tensor on the device (read by the caller: no sync here)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    for start in range(0, len(y), batch):
        logits, _ = model(x[start:start + batch])
        correct += (logits.argmax(1) == y[start:start + batch]).sum()
    model.train()
    return correct.double() / max(1, len(y))


def _build(cfg: TrainConfig, data: Tasks, use_memory: bool, device: torch.device) -> tuple[EpiNet, SalienceClock]:
    """The model (initialised on the CPU from ``cfg.seed``, then moved: the same weights on every device)."""
    torch.manual_seed(cfg.seed)
    clock = SalienceClock(cfg.alpha, source="steps")
    model = EpiNet(
        latent_dim=cfg.latent_dim, num_classes=int(max(max(t) for t in cfg.tasks)) + 1,
        image_size=data[0].shape[-1], in_channels=data[0].shape[1], hidden_dim=cfg.hidden_dim,
        num_experts=cfg.num_experts, memory_capacity=cfg.memory_capacity, top_k=cfg.top_k, clock=clock,
        use_memory=use_memory,
    )
    return model.to(device), clock


def _step(model: EpiNet, opt: torch.optim.Optimizer, cfg: TrainConfig, xb: torch.Tensor, yb: torch.Tensor,
          g: torch.Generator) -> torch.Tensor:
    """One optimisation step (replay, then storing a few samples); returns the loss, still on the device."""
    logits, z = model(xb)
    per_sample = F.cross_entropy(logits, yb, reduction="none")
    loss = per_sample.mean()
    if model.use_memory:
        replay = model.replay_batch(cfg.batch_size, generator=g)
        if replay is not None:
            logits_m, _ = model(replay[0])
            loss = loss + cfg.beta * F.cross_entropy(logits_m, replay[1])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if model.use_memory:
        store = torch.randperm(len(yb), generator=g, device=g.device)[: cfg.store_per_step].to(
            yb.device, non_blocking=True)  # drawn on the CPU: copied without a host wait
        model.memorize(xb[store], z[store], yb[store], per_sample[store].detach() + 1e-6)
    return loss.detach()


def _train_variant(cfg: TrainConfig, data: Tasks, labels_cpu: torch.Tensor, use_memory: bool, progress: bool,
                   device: torch.device) -> tuple[list[list[float]], float, int]:
    from tqdm.auto import tqdm

    x_train, y_train, x_test, y_test = data
    model, clock = _build(cfg, data, use_memory, device)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)  # CPU: the same sample order on every device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    accuracy: list[list[float]] = []
    last_loss = torch.full((), float("nan"), device=device)
    # each task's test rows, found once on the host (boolean masks on the device would sync at every evaluation)
    y_test_cpu = y_test.cpu()
    test_sets = [torch.isin(y_test_cpu, torch.tensor(t)).nonzero().squeeze(1).to(device, non_blocking=True)
                 for t in cfg.tasks]
    name = "memory" if use_memory else "no memory"
    for t_idx, classes in enumerate(cfg.tasks):
        in_task = torch.isin(labels_cpu, torch.tensor(classes, device="cpu")).nonzero().squeeze(1)
        total = cfg.epochs_per_task * math.ceil(len(in_task) / cfg.batch_size)
        if cfg.max_steps_per_task is not None:
            total = min(total, cfg.max_steps_per_task)
        bar = tqdm(total=total, desc=f"{name}: task {t_idx} {list(classes)}", disable=not progress, leave=False)
        step = 0
        while step < total:
            perm = in_task[torch.randperm(len(in_task), generator=g, device="cpu")]
            for start in range(0, len(perm), cfg.batch_size):
                if step >= total:
                    break
                batch = perm[start:start + cfg.batch_size].to(device, non_blocking=True)
                last_loss = _step(model, opt, cfg, x_train[batch], y_train[batch], g)
                clock.tick()
                step += 1
                bar.update(1)
                if progress:  # the only per-step host sync, and only with a progress bar
                    bar.set_postfix(loss=f"{float(last_loss):.3f}", memory=len(model.memory))
        bar.close()
        accuracy.append(torch.stack([_correct_fraction(model, x_test[m], y_test[m]) for m in test_sets]).tolist())
    return accuracy, float(last_loss), len(model.memory)


def train_split(
    config: TrainConfig | None = None,
    *,
    data: Tasks | None = None,
    progress: bool = True,
    variants: Sequence[str] = VARIANTS,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Continual learning on a sequence of class subsets, with and without the episodic memory.

    Trains on task 0's classes, then task 1's, ... (default: digits {0..4}
    then {5..9}). With memory: each step adds ``beta`` x the cross-entropy on
    a replay sample from the memory, then stores ``store_per_step`` samples of
    the batch with initial salience = their loss; the decoder sees the recall.
    Without memory: the same network and schedule, recall zeros, no replay.

    Parameters
    ----------
    config : TrainConfig, optional
        Checked with :meth:`TrainConfig.validate`.
    data : (x_train [n, C, H, H], y_train [n], x_test [m, C, H, H], y_test [m]), optional
        Floating images, integer labels (any integer dtype), on any device: moved once
        to ``device``. Default: scikit-learn's bundled digits (:func:`load_digits_tasks`).
    progress : bool
        Show tqdm progress bars (the bar's loss display costs one host sync per step).
    variants : subset of ("memory", "no_memory")
    device : torch.device or str, optional
        Where the model, its episodic memory and the data live. None (default):
        CUDA when available, else the CPU. Initial weights and the sample order come
        from CPU generators seeded by ``config.seed``, so they are the same on every device.

    Returns
    -------
    TrainResult with ``accuracy[variant][after_task][task]`` and the device used.
    """
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    cfg.validate()
    _checks.flag("progress", progress)
    if isinstance(variants, str) or not isinstance(variants, Sequence):
        raise TypeError(f"variants must be a sequence of names among {VARIANTS}, got {type(variants).__name__}")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"variants must be among {VARIANTS}, got {v!r}")
    dev = resolve_device(device)
    checked, labels_cpu = _checked_data(load_digits_tasks(cfg.seed) if data is None else data, dev)
    for t, classes in enumerate(cfg.tasks):
        if not bool(torch.isin(labels_cpu, torch.tensor(classes, device="cpu")).any()):
            raise ValueError(f"config.tasks[{t}] = {list(classes)} has no training samples in data y_train")
    result = TrainResult(config=cfg, device=str(dev))
    for v in variants:
        acc, loss, size = _train_variant(cfg, checked, labels_cpu, v == "memory", progress, dev)
        result.accuracy[v] = acc
        result.final_loss[v] = loss
        if v == "memory":
            result.memory_size = size
    return result
