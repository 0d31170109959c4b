"""The extended model: hippocampal traces hold a conceptual part and a sensory residual.

Spens & Burgess (2024), "extended model": after consolidation, an item is encoded in the
modern Hopfield network as ``[sensory part, conceptual part]``. The conceptual part is the
VAE latent (what the generative model can predict); the sensory part keeps only what it
predicts badly: the residual ``x - vae(x)`` where its absolute value exceeds an error
threshold, 0 elsewhere. Recall from a noisy cue retrieves a trace; the item is rebuilt as
``decode(recalled latent) + recalled residual`` (clamped to [0, 1]). A higher threshold stores
fewer sensory features and leans more on the generative model (more prototypical, less exact
recall): :func:`threshold_sweep` traces that trade-off (the paper's error-threshold plot).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mnemonix import _checks
from mnemonix.consolidation import _args
from mnemonix.consolidation.teacher_student import DEFAULT_BETA
from mnemonix.consolidation.vae import VAE
from mnemonix.hopfield import ModernHopfield
from mnemonix.ops.hopfield import SPEC as _RETRIEVE_SPEC


def _check_threshold(threshold: object, name: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(threshold).__name__}")
    t = _args.as_float(threshold)
    if math.isnan(t) or t < 0:
        raise ValueError(f"{name} must be a number >= 0 (an absolute pixel error), got {threshold!r}")
    return t


def _check_index(index: object, n: int) -> torch.Tensor:
    """An integer index [k] with values in [-n, n) or a boolean mask [n] (one host sync)."""
    if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.is_complex() or index.ndim != 1:
        got = f"dtype {index.dtype}, shape {tuple(index.shape)}" if isinstance(index, torch.Tensor) else \
            type(index).__name__
        raise TypeError(f"index must be None or a 1-d integer or boolean tensor, got {got}")
    _checks.tensor("index", index, dtypes=None)  # refuses meta: an index must hold values
    if index.dtype == torch.bool:
        if index.shape[0] != n:
            raise ValueError(f"index is a boolean mask of {index.shape[0]} values, expected {n} (one per trace)")
        return index
    # checked before use: an out-of-range index on CUDA is a device-side assert, not an error
    if index.numel() and not bool(((index >= -n) & (index < n)).all()):
        raise ValueError(f"index must hold trace indices in [{-n}, {n - 1}], got values outside")
    return index


@dataclass(frozen=True)
class Traces:
    """Encoded items: sensory [N, P] (residual where |error| > threshold, else 0), latent
    [N, latent_dim], n_features [N] (int64, sensory values stored per item)."""

    sensory: torch.Tensor
    latent: torch.Tensor
    n_features: torch.Tensor

    def vectors(self) -> torch.Tensor:
        """The Hopfield patterns [N, P + latent_dim]: ``[sensory, latent]``."""
        return torch.cat([self.sensory, self.latent], dim=1).contiguous()


@dataclass(frozen=True)
class ExtendedRecall:
    """images [B, C, H, W] (rebuilt), latent [B, z] and sensory [B, P] (recalled parts),
    nearest [B] (index of the stored trace retrieved)."""

    images: torch.Tensor
    latent: torch.Tensor
    sensory: torch.Tensor
    nearest: torch.Tensor


class ExtendedModel:
    """Traces ``[sensory residual, VAE latent]`` in a modern Hopfield network.

    Parameters
    ----------
    vae : VAE
        A trained VAE (the consolidated generative model); used in eval mode.
    threshold : float >= 0
        Absolute per-value error above which a pixel value's residual is stored. Above the
        largest error nothing sensory is stored and recall is the VAE's decoding of the
        recalled latent; at 0 every mispredicted value is stored.
    beta : float
        Inverse temperature of the trace store (high: single traces are recalled).
    metric : {"euclidean", "dot"}
        ``"dot"`` is the plain update ``X^T softmax(beta X q)``, which favours traces of large
        norm (latents are centred, so a noisy cue often falls into another item's trace).
        ``"euclidean"`` (default) stores each trace with one extra coordinate ``|x|^2 / 2`` and
        cues with ``-1`` there, so the logits become ``beta (q.x - |x|^2/2)``: the same fused
        update, retrieving the trace nearest to the cue in Euclidean distance.
    backend : str or None
        Forwarded to :func:`mnemonix.ops.hopfield_retrieve`.
    """

    def __init__(self, vae: VAE, *, threshold: float, beta: float = DEFAULT_BETA, metric: str = "euclidean",
                 backend: str | None = None) -> None:
        if not isinstance(vae, VAE):
            raise TypeError(f"vae must be a mnemonix.consolidation.VAE, got {type(vae).__name__}")
        threshold = _check_threshold(threshold)
        beta = _args.real("beta", beta, low=0.0, low_open=True)
        _checks.choice("metric", metric, ("euclidean", "dot"))
        _checks.choice("backend", backend, _RETRIEVE_SPEC.names, none_ok=True)
        self.vae = vae
        self.threshold, self.beta, self.metric, self.backend = threshold, beta, metric, backend
        self.hopfield: ModernHopfield | None = None
        self.traces: Traces | None = None

    @property
    def n_pixels(self) -> int:
        c, h, w = self.vae.image_shape
        return c * h * w

    @torch.no_grad()
    def _latent_residual(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent [N, z], residual ``x - decode(latent)`` [N, P]) of images [N, C, H, W]."""
        self.vae.check_images(images)
        _args.finite_tensor("images", images)
        latent = self.vae.latents(images)
        recon = self.vae.decode_eval(latent)
        return latent.float(), (images.float() - recon).reshape(images.shape[0], -1)

    def _traces(self, latent: torch.Tensor, residual: torch.Tensor) -> Traces:
        keep = residual.abs() > self.threshold
        return Traces(torch.where(keep, residual, torch.zeros_like(residual)), latent, keep.sum(1))

    def encode(self, images: torch.Tensor) -> Traces:
        """images [N, C, H, W] in [0, 1] -> :class:`Traces`."""
        return self._traces(*self._latent_residual(images))

    def store(self, images: torch.Tensor) -> ExtendedModel:
        """Encode ``images`` and store their traces (replacing earlier ones)."""
        return self._store_traces(self.encode(images))

    def _store_traces(self, traces: Traces) -> ExtendedModel:
        vectors = traces.vectors()
        if self.metric == "euclidean":
            vectors = torch.cat([vectors, 0.5 * (vectors**2).sum(1, keepdim=True)], dim=1)
        self.hopfield = ModernHopfield(vectors, beta=self.beta, max_iter=1, backend=self.backend)
        self.traces = traces
        return self

    def noisy_cues(self, noise: float = 0.1, *, seed: int = 0, index: torch.Tensor | None = None) -> torch.Tensor:
        """Stored traces (all, or ``index``: integer or boolean [N]) plus Gaussian noise of std
        ``noise`` -> cues [B, P + z] on the traces' device (the noise is drawn there from ``seed``)."""
        if self.traces is None:
            raise ValueError("no traces stored: call store(images) first")
        noise = _args.real("noise", noise, low=0.0)
        seed = _args.seed("seed", seed)
        vec = self.traces.vectors()
        if index is not None:
            vec = vec[_check_index(index, vec.shape[0])]
        g = torch.Generator(device=vec.device).manual_seed(seed)
        return vec + noise * torch.randn(vec.shape, generator=g, device=vec.device, dtype=vec.dtype)

    @torch.no_grad()
    def rebuild(self, latent: torch.Tensor, sensory: torch.Tensor) -> torch.Tensor:
        """``clamp(decode(latent) + sensory, 0, 1)``: latent [B, z], sensory [B, P] -> images [B, C, H, W]."""
        self.vae._check_latents(latent, "latent")
        _checks.tensor("sensory", sensory, ndim=2)
        if sensory.shape != (latent.shape[0], self.n_pixels):
            raise ValueError(f"sensory must be [B, {self.n_pixels}] with B = {latent.shape[0]} like latent, "
                             f"got shape {tuple(sensory.shape)}")
        _args.on_device("sensory", sensory, self.vae.device, "the VAE")
        _args.finite_tensor("sensory", sensory)
        return self._rebuild(latent, sensory)

    def _rebuild(self, latent: torch.Tensor, sensory: torch.Tensor) -> torch.Tensor:
        """:meth:`rebuild` of checked parts (recall's own, finite outputs of the fused op: no host sync)."""
        decoded = self.vae.decode_eval(latent)
        return (decoded + sensory.reshape(decoded.shape)).clamp(0.0, 1.0)

    @torch.no_grad()
    def recall(self, cues: torch.Tensor, *, batch_size: int = 1024) -> ExtendedRecall:
        """Retrieve traces from cues [B, P + z] (on the traces' device) and rebuild the items."""
        if self.hopfield is None:
            raise ValueError("no traces stored: call store(images) first")
        dim = self.n_pixels + self.vae.latent_dim
        _checks.tensor("cues", cues, ndim=2)
        if cues.shape[1] != dim or cues.shape[0] == 0:
            raise ValueError(f"cues must be [B, {dim}] with B >= 1 (sensory {self.n_pixels} + latent "
                             f"{self.vae.latent_dim}), got shape {tuple(cues.shape)}")
        _args.on_device("cues", cues, self.hopfield.patterns.device, "the trace store")
        _args.finite_tensor("cues", cues)
        batch_size = _args.integer("batch_size", batch_size, low=1)
        q = cues.float()
        if self.metric == "euclidean":  # the cue's coordinate against the traces' |x|^2 / 2
            q = torch.cat([q, q.new_full((q.shape[0], 1), -1.0)], dim=1)
        r = self.hopfield.retrieve(q, batch_size=batch_size, with_energy=False)
        sensory, latent = r.states[:, : self.n_pixels], r.states[:, self.n_pixels : dim]
        return ExtendedRecall(self._rebuild(latent, sensory), latent, sensory, r.nearest)


@dataclass(frozen=True)
class SweepRow:
    """One threshold of :func:`threshold_sweep`: mean sensory features stored per item (and as a
    fraction of the pixel values), recall MSE against the originals, and the fraction of cues
    that retrieved their own trace."""

    threshold: float
    mean_features: float
    feature_fraction: float
    recall_mse: float
    retrieval_accuracy: float


def threshold_sweep(
    vae: VAE,
    images: torch.Tensor,
    thresholds: Sequence[float],
    *,
    noise: float = 0.1,
    beta: float = DEFAULT_BETA,
    metric: str = "euclidean",
    seed: int = 0,
    backend: str | None = None,
) -> list[SweepRow]:
    """Store ``images`` at each threshold, recall from noisy cues, and report error and storage.

    ``images`` are moved to the VAE's device; the sweep runs there.
    """
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a mnemonix.consolidation.VAE, got {type(vae).__name__}")
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence):
        raise TypeError(f"thresholds must be a sequence of floats, got {type(thresholds).__name__}")
    ts = [_check_threshold(t, f"thresholds[{i}]") for i, t in enumerate(thresholds)]
    if not ts:
        raise ValueError("thresholds must hold at least one value, got none")
    _checks.tensor("images", images, ndim=4)
    images = _args.finite_tensor("images", vae.check_images(_args.movable("images", images).to(vae.device)))
    noise = _args.real("noise", noise, low=0.0)
    seed = _args.seed("seed", seed)
    ExtendedModel(vae, threshold=ts[0], beta=beta, metric=metric, backend=backend)  # checks beta, metric, backend
    rows = []
    target = torch.arange(images.shape[0], device=images.device)
    latent, residual = None, None
    for t in ts:
        model = ExtendedModel(vae, threshold=t, beta=beta, metric=metric, backend=backend)
        if latent is None or residual is None:  # the VAE pass is shared by every threshold
            latent, residual = model._latent_residual(images)
        model._store_traces(model._traces(latent, residual))
        assert model.traces is not None
        out = model.recall(model.noisy_cues(noise, seed=seed))
        feats, mse, acc = torch.stack([  # one host sync per threshold
            model.traces.n_features.double().mean(), ((out.images - images.float()) ** 2).double().mean(),
            (out.nearest == target).double().mean()]).tolist()
        rows.append(SweepRow(threshold=t, mean_features=feats, feature_fraction=feats / model.n_pixels,
                             recall_mse=mse, retrieval_accuracy=acc))
    return rows
