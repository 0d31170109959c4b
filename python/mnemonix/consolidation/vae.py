"""Convolutional variational autoencoders (Kingma & Welling 2013) for the consolidation model.

- :class:`LargeVAE` -- 64x64x3, the layer list of the paper's supplementary (Spens & Burgess
  2024, A.2.1): dropout 0.2 on the input; four 4x4 convolutions with 32/64/128/256 filters
  (stride 2, "same" padding), each with batch norm and LeakyReLU; global average pooling;
  dense mean and log-variance; sampling. Decoder: dense to 4096, reshape to 256x4x4, four
  (2x upsample, 3x3 convolution) stages with 128/64/32/3 filters, batch norm + LeakyReLU after
  the first three, a sigmoid on the output.
- :class:`SmallVAE` -- 28x28x1 (MNIST): the same pattern with two convolutions.
- :class:`TinyVAE` -- 8x8x1 (scikit-learn digits): the quick default.

All take images [B, C, H, W] in [0, 1] and return ``VAEOutput(recon, mean, logvar, z)``.
The loss is the negative ELBO: per-image binary cross-entropy summed over pixels plus
``kl_weight`` times the KL divergence to N(0, I).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnemonix import _io

_VAE_FORMAT = "mnemonix.consolidation.VAE"
_VAE_VERSION = 1


@dataclass(frozen=True)
class VAEOutput:
    """recon [B, C, H, W] in [0, 1]; mean, logvar, z [B, latent_dim]."""

    recon: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    pad = (kernel - 1) // 2 if stride == 1 else (kernel - stride + 1) // 2
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]


def _up_block(c_in: int, c_out: int, *, last: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]
    if not last:
        layers += [nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
    return layers


class VAE(nn.Module):
    """Base class: subclasses define ``image_shape``, ``encoder_body`` (-> features [B, F]),
    ``to_mean``/``to_logvar`` and ``decoder`` (latent -> logits [B, C, H, W])."""

    kind: str = "vae"
    image_shape: tuple[int, int, int]

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be an int >= 1, got {latent_dim!r}")
        self.latent_dim = latent_dim

    # subclasses set these
    encoder_body: nn.Module
    to_mean: nn.Module
    to_logvar: nn.Module
    decoder: nn.Module

    def check_images(self, images: torch.Tensor, name: str = "images") -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{name} must be [B, {', '.join(map(str, self.image_shape))}] for {type(self).__name__} "
                f"(image_shape {self.image_shape}), got shape {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one image, got an empty batch")
        return images

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, C, H, W] -> (mean, logvar) [B, latent_dim]."""
        h = self.encoder_body(self.check_images(images).float())
        return self.to_mean(h), self.to_logvar(h).clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents [B, latent_dim] -> images [B, C, H, W] in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be [B, {self.latent_dim}], got shape {tuple(z.shape)}")
        return self.decoder(z.float())

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, images: torch.Tensor, *, sample: bool | None = None) -> VAEOutput:
        """Encode, sample (in training mode, or when ``sample=True``) and decode."""
        mean, logvar = self.encode(images)
        do_sample = self.training if sample is None else sample
        z = self.sample(mean, logvar) if do_sample else mean
        return VAEOutput(torch.sigmoid(self.decode_logits(z)), mean, logvar, z)

    def loss(self, images: torch.Tensor, *, kl_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO averaged over the batch; also returns its parts (floats)."""
        mean, logvar = self.encode(images)
        z = self.sample(mean, logvar) if self.training else mean
        logits = self.decode_logits(z)
        target = images.float().clamp(0.0, 1.0)
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / images.shape[0]
        kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp()) / images.shape[0]
        total = recon + kl_weight * kl
        return total, {"loss": float(total.detach()), "recon": float(recon.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Deterministic reconstruction (decode of the mean latent) in eval mode, batched."""
        was = self.training
        self.eval()
        try:
            outs = [self.decode(self.encode(images[i : i + batch_size])[0]) for i in range(0, len(images), batch_size)]
        finally:
            self.train(was)
        return torch.cat(outs) if outs else images.new_zeros((0, *self.image_shape))

    @torch.no_grad()
    def latents(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Mean latents [N, latent_dim] in eval mode, batched."""
        self.check_images(images)
        was = self.training
        self.eval()
        try:
            return torch.cat([self.encode(images[i : i + batch_size])[0] for i in range(0, len(images), batch_size)])
        finally:
            self.train(was)

    @torch.no_grad()
    def decode_eval(self, z: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Decode latents [N, latent_dim] in eval mode, batched -> [N, C, H, W]."""
        was = self.training
        self.eval()
        try:
            return torch.cat([self.decode(z[i : i + batch_size]) for i in range(0, len(z), batch_size)])
        finally:
            self.train(was)


class LargeVAE(VAE):
    """The paper's large VAE for 64x64x3 images (supplementary A.2.1)."""

    kind = "large"
    image_shape = (3, 64, 64)

    def __init__(self, latent_dim: int = 20, *, dropout: float = 0.2) -> None:
        super().__init__(latent_dim)
        self.encoder_body = nn.Sequential(
            nn.Dropout(dropout),
            *_conv_block(3, 32, 4, 2), *_conv_block(32, 64, 4, 2),
            *_conv_block(64, 128, 4, 2), *_conv_block(128, 256, 4, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.to_mean = nn.Linear(256, latent_dim)
        self.to_logvar = nn.Linear(256, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 4096), nn.Unflatten(1, (256, 4, 4)),
            *_up_block(256, 128), *_up_block(128, 64), *_up_block(64, 32), *_up_block(32, 3, last=True),
        )


class SmallVAE(VAE):
    """A reduced VAE for 28x28x1 images (MNIST): two convolutions each way."""

    kind = "small"
    image_shape = (1, 28, 28)

    def __init__(self, latent_dim: int = 20, *, dropout: float = 0.2) -> None:
        super().__init__(latent_dim)
        self.encoder_body = nn.Sequential(
            nn.Dropout(dropout), *_conv_block(1, 32, 4, 2), *_conv_block(32, 64, 4, 2),  # 28 -> 14 -> 7
            nn.Flatten(),
        )
        self.to_mean = nn.Linear(64 * 7 * 7, latent_dim)
        self.to_logvar = nn.Linear(64 * 7 * 7, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 64 * 7 * 7), nn.Unflatten(1, (64, 7, 7)),
            *_up_block(64, 32), *_up_block(32, 1, last=True),
        )


class TinyVAE(VAE):
    """A tiny VAE for 8x8x1 images (scikit-learn digits)."""

    kind = "tiny"
    image_shape = (1, 8, 8)

    def __init__(self, latent_dim: int = 10, *, dropout: float = 0.1) -> None:
        super().__init__(latent_dim)
        self.encoder_body = nn.Sequential(
            nn.Dropout(dropout), *_conv_block(1, 32, 3, 1), *_conv_block(32, 64, 4, 2),  # 8 -> 8 -> 4
            nn.Flatten(), nn.Linear(64 * 16, 128), nn.LeakyReLU(0.2),
        )
        self.to_mean = nn.Linear(128, latent_dim)
        self.to_logvar = nn.Linear(128, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.LeakyReLU(0.2), nn.Linear(128, 32 * 16), nn.Unflatten(1, (32, 4, 4)),
            *_up_block(32, 32), nn.Conv2d(32, 1, 3, padding=1),
        )


VAE_KINDS: dict[str, type[VAE]] = {"large": LargeVAE, "small": SmallVAE, "tiny": TinyVAE}


def build_vae(kind: str, latent_dim: int | None = None, **kwargs) -> VAE:
    """A VAE by kind: ``"large"`` (64x64x3), ``"small"`` (28x28x1) or ``"tiny"`` (8x8x1)."""
    if kind not in VAE_KINDS:
        raise ValueError(f"kind must be one of {sorted(VAE_KINDS)}, got {kind!r}")
    cls = VAE_KINDS[kind]
    return cls(**kwargs) if latent_dim is None else cls(latent_dim, **kwargs)


def vae_for(image_shape: tuple[int, ...], latent_dim: int | None = None, **kwargs) -> VAE:
    """The VAE whose input is ``image_shape`` (C, H, W)."""
    shape = tuple(int(s) for s in image_shape)
    for kind, cls in VAE_KINDS.items():
        if cls.image_shape == shape:
            return build_vae(kind, latent_dim, **kwargs)
    raise ValueError(f"image_shape must be one of {[c.image_shape for c in VAE_KINDS.values()]}, got {shape}")


def save_vae(vae: VAE, path: str | os.PathLike[str]) -> None:
    """Write kind, latent size and the state dict atomically (loadable with ``weights_only=True``)."""
    payload = {
        "format": _VAE_FORMAT, "version": _VAE_VERSION, "kind": vae.kind, "latent_dim": vae.latent_dim,
        "state_dict": {k: v.detach().cpu() for k, v in vae.state_dict().items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    _io.atomic_write_bytes(path, buf.getvalue())


def load_vae(path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> VAE:
    """Read a VAE written by :func:`save_vae` (``torch.load(weights_only=True)``: no code runs)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"path {p!r} does not exist")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise _io.FormatError(f"{p!r} is not a readable mnemonix VAE file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != _VAE_FORMAT:
        raise _io.FormatError(f"{p!r} is not a mnemonix VAE file")
    if int(payload.get("version", -1)) > _VAE_VERSION:
        raise _io.FormatError(f"{p!r} has format version {payload.get('version')}, newer than this mnemonix reads "
                              f"(<= {_VAE_VERSION}): upgrade mnemonix")
    vae = build_vae(str(payload["kind"]), int(payload["latent_dim"]))
    try:
        vae.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise _io.FormatError(f"{p!r} holds weights that do not fit a {payload['kind']} VAE ({exc})") from exc
    vae.eval()
    return vae.to(device) if device is not None else vae
