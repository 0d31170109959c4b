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

import inspect
import math
import numbers
import os
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnemonix import _checks, _io
from mnemonix.consolidation import _args, tensor_file

_VAE_FORMAT = "mnemonix.consolidation.VAE"
#: Version 2: checksummed safetensors layout (version 1 was a torch.save pickle).
_VAE_VERSION = 2
#: Largest latent size a VAE takes (and a file may declare).
MAX_LATENT_DIM = 65536


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
    ``to_mean``/``to_logvar`` and ``decoder`` (latent -> logits [B, C, H, W]).

    Inputs must live on the VAE's device (:attr:`device`); a tensor elsewhere is a ValueError.
    """

    kind: str = "vae"
    image_shape: tuple[int, int, int]

    def __init__(self, latent_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, numbers.Integral):
            raise TypeError(f"latent_dim must be an int >= 1, got {type(latent_dim).__name__} {latent_dim!r}")
        if not 1 <= latent_dim <= MAX_LATENT_DIM:
            raise ValueError(f"latent_dim must be an int >= 1 and <= {MAX_LATENT_DIM}, got {latent_dim!r}")
        self.latent_dim = int(latent_dim)
        self.dropout = _args.real("dropout", dropout, low=0.0, high=1.0, high_open=True)

    # subclasses set these
    encoder_body: nn.Module
    to_mean: nn.Module
    to_logvar: nn.Module
    decoder: nn.Module

    @property
    def device(self) -> torch.device:
        """The device of the VAE's weights."""
        return next(self.parameters()).device

    def check_images(self, images: torch.Tensor, name: str = "images") -> torch.Tensor:
        """Check images [B, C, H, W] (B >= 1, floating point, on the VAE's device); no host sync."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{name} must be [B, {', '.join(map(str, self.image_shape))}] for {type(self).__name__} "
                f"(image_shape {self.image_shape}), got shape {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one image, got an empty batch")
        if not images.is_floating_point():
            raise TypeError(f"{name} must hold floating-point pixels in [0, 1], got dtype {images.dtype}")
        return _args.on_device(name, images, self.device, "the VAE")

    def _check_latents(self, z: torch.Tensor, name: str = "z") -> torch.Tensor:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
        if z.ndim != 2 or z.shape[1] != self.latent_dim or z.shape[0] == 0:
            raise ValueError(f"{name} must be [B, {self.latent_dim}] with B >= 1, got shape {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {z.dtype}")
        return _args.on_device(name, z, self.device, "the VAE")

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, C, H, W] -> (mean, logvar) [B, latent_dim]."""
        h = self.encoder_body(self.check_images(images).float())
        return self.to_mean(h), self.to_logvar(h).clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents [B, latent_dim] -> images [B, C, H, W] in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """latents [B, latent_dim] -> logits [B, C, H, W]."""
        return self.decoder(self._check_latents(z).float())

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + exp(logvar / 2) * eps``, eps ~ N(0, I) drawn on ``mean``'s device (``generator``
        must live there too)."""
        if not isinstance(mean, torch.Tensor) or not isinstance(logvar, torch.Tensor):
            bad = "mean" if not isinstance(mean, torch.Tensor) else "logvar"
            raise TypeError(f"{bad} must be a torch.Tensor, got {type(mean if bad == 'mean' else logvar).__name__}")
        for name, value in (("mean", mean), ("logvar", logvar)):
            if not value.is_floating_point():
                raise TypeError(f"{name} must be floating point, got dtype {value.dtype}")
            _checks.tensor(name, value, dtypes=None)  # refuses meta
        if mean.shape != logvar.shape:
            raise ValueError(f"logvar must have the shape of mean {tuple(mean.shape)}, got {tuple(logvar.shape)}")
        _args.on_device("logvar", logvar, mean.device, "mean")
        gen = _args.generator("generator", generator, mean.device)
        eps = torch.randn(mean.shape, generator=gen, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, images: torch.Tensor, *, sample: bool | None = None) -> VAEOutput:
        """Encode, sample (in training mode, or when ``sample=True``) and decode."""
        if sample is not None:
            _args.flag("sample", sample)
        mean, logvar = self.encode(images)
        do_sample = self.training if sample is None else sample
        z = self.sample(mean, logvar) if do_sample else mean
        return VAEOutput(torch.sigmoid(self.decode_logits(z)), mean, logvar, z)

    def loss_terms(self, images: torch.Tensor, *, kl_weight: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(negative ELBO, reconstruction term, KL term), each a 0-d tensor on the VAE's device
        averaged over the batch: no host sync, for training loops."""
        kl_weight = _args.real("kl_weight", kl_weight, low=0.0)
        mean, logvar = self.encode(images)
        z = self.sample(mean, logvar) if self.training else mean
        logits = self.decode_logits(z)
        target = images.float().clamp(0.0, 1.0)
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / images.shape[0]
        kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp()) / images.shape[0]
        return recon + kl_weight * kl, recon, kl

    def loss(self, images: torch.Tensor, *, kl_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO averaged over the batch; also returns its parts as floats (one host sync;
        training loops use :meth:`loss_terms`)."""
        total, recon, kl = self.loss_terms(images, kl_weight=kl_weight)
        parts = torch.stack([total.detach(), recon.detach(), kl.detach()]).tolist()
        return total, dict(zip(("loss", "recon", "kl"), parts))

    def _batched(self, fn, x: torch.Tensor, batch_size: object, empty_shape: tuple[int, ...]) -> torch.Tensor:
        """``fn`` over batches of ``x`` in eval mode (the mode is restored), concatenated."""
        bs = _args.integer("batch_size", batch_size, low=1)
        if x.shape[0] == 0:
            return x.new_zeros((0, *empty_shape), dtype=torch.float32)
        was = self.training
        self.eval()
        try:
            return torch.cat([fn(x[i : i + bs]) for i in range(0, x.shape[0], bs)])
        finally:
            self.train(was)

    def _check_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Like :meth:`check_images` but an empty batch is allowed (batched helpers return empty)."""
        if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[0] == 0:
            if tuple(images.shape[1:]) != self.image_shape:
                self.check_images(images)
            return images
        return self.check_images(images)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Deterministic reconstruction (decode of the mean latent) in eval mode, batched:
        images [N, C, H, W] -> [N, C, H, W] (N = 0 gives an empty result)."""
        images = self._check_batch(images)
        return self._batched(lambda x: self.decode(self.encode(x)[0]), images, batch_size, self.image_shape)

    @torch.no_grad()
    def latents(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Mean latents [N, latent_dim] of images [N, C, H, W] in eval mode, batched."""
        images = self._check_batch(images)
        return self._batched(lambda x: self.encode(x)[0], images, batch_size, (self.latent_dim,))

    @torch.no_grad()
    def decode_eval(self, z: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Decode latents [N, latent_dim] in eval mode, batched -> [N, C, H, W]."""
        if not (isinstance(z, torch.Tensor) and z.ndim == 2 and z.shape == (0, self.latent_dim)):
            self._check_latents(z)
        return self._batched(self.decode, z, batch_size, self.image_shape)


class LargeVAE(VAE):
    """The paper's large VAE for 64x64x3 images (supplementary A.2.1)."""

    kind = "large"
    image_shape = (3, 64, 64)

    def __init__(self, latent_dim: int = 20, *, dropout: float = 0.2) -> None:
        super().__init__(latent_dim, dropout=dropout)
        self.encoder_body = nn.Sequential(
            nn.Dropout(self.dropout),
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
        super().__init__(latent_dim, dropout=dropout)
        self.encoder_body = nn.Sequential(
            nn.Dropout(self.dropout), *_conv_block(1, 32, 4, 2), *_conv_block(32, 64, 4, 2),  # 28 -> 14 -> 7
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
        super().__init__(latent_dim, dropout=dropout)
        self.encoder_body = nn.Sequential(
            nn.Dropout(self.dropout), *_conv_block(1, 32, 3, 1), *_conv_block(32, 64, 4, 2),  # 8 -> 8 -> 4
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
    """A VAE by kind: ``"large"`` (64x64x3), ``"small"`` (28x28x1) or ``"tiny"`` (8x8x1);
    ``kwargs`` (``dropout``) go to its constructor."""
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, one of {sorted(VAE_KINDS)}, got {type(kind).__name__}")
    if kind not in VAE_KINDS:
        raise ValueError(f"kind must be one of {sorted(VAE_KINDS)}, got {kind!r}")
    cls = VAE_KINDS[kind]
    return cls(**kwargs) if latent_dim is None else cls(latent_dim, **kwargs)


def vae_for(image_shape: tuple[int, ...], latent_dim: int | None = None, **kwargs) -> VAE:
    """The VAE whose input is ``image_shape`` (C, H, W)."""
    if isinstance(image_shape, (str, bytes)) or not isinstance(image_shape, Sequence):
        raise TypeError(f"image_shape must be a sequence of 3 ints (C, H, W), got {type(image_shape).__name__}")
    shape = tuple(_args.integer("image_shape[]", s) for s in image_shape)
    for kind, cls in VAE_KINDS.items():
        if cls.image_shape == shape:
            return build_vae(kind, latent_dim, **kwargs)
    raise ValueError(f"image_shape must be one of {[c.image_shape for c in VAE_KINDS.values()]}, got {shape}")


# -- persistence -------------------------------------------------------------------------------
def save_vae(vae: VAE, path: str | os.PathLike[str]) -> None:
    """Write ``vae`` to ``path`` atomically in the version-2 VAE format.

    The file is a checksummed tensor file in the safetensors layout
    (:mod:`mnemonix.consolidation.tensor_file`): the state dict (float32 weights, int64
    batch-norm counters, taken to the CPU) and the metadata ``format``, ``version``, ``kind``,
    ``latent_dim`` and ``dropout``, all covered by a SHA-256 checksum.

    Raises
    ------
    TypeError
        ``vae`` is not a :class:`VAE`, or ``path`` not a path.
    ValueError
        A weight of ``vae`` is NaN or Inf (:func:`load_vae` would refuse the file).
    """
    if not isinstance(vae, VAE) or type(vae) not in VAE_KINDS.values():
        raise TypeError(f"vae must be a LargeVAE, SmallVAE or TinyVAE, got {type(vae).__name__}")
    p = _args.path_like("path", path)
    if os.path.isdir(p):
        raise ValueError(f"path {p!r} is a directory: pass a file name such as {os.path.join(p, 'vae.safetensors')!r}")
    tensors = {}
    for name, value in vae.state_dict().items():
        t = value.detach()
        t = t.float() if t.is_floating_point() else t
        _args.finite_tensor(f"vae weight {name!r}", t)  # one sync per tensor, at save time only
        tensors[name] = t
    meta = {"format": _VAE_FORMAT, "version": str(_VAE_VERSION), "kind": vae.kind,
            "latent_dim": str(vae.latent_dim), "dropout": repr(float(vae.dropout))}
    tensor_file.write(p, tensors, meta)


def _meta_field(path: str, meta: dict[str, str], key: str) -> str:
    if key not in meta:
        raise _io.FormatError(f"{path!r}: field {key!r} is missing")
    return meta[key]


def _check_meta(path: str, meta: dict[str, str]) -> tuple[str, int, float]:
    """(kind, latent_dim, dropout) from version-2 metadata."""
    fmt = _meta_field(path, meta, "format")
    if fmt != _VAE_FORMAT:
        raise _io.FormatError(f"{path!r}: field 'format' is {fmt!r}, not a mnemonix VAE file ({_VAE_FORMAT!r})")
    version = _meta_field(path, meta, "version")
    if not version.isdigit() or len(version) > 6:
        raise _io.FormatError(f"{path!r}: field 'version' must be a decimal int, got {version!r}")
    if int(version) > _VAE_VERSION:
        raise _io.FormatError(f"{path!r}: field 'version' is {version}, newer than this mnemonix reads "
                              f"(<= {_VAE_VERSION}): upgrade mnemonix")
    if int(version) != _VAE_VERSION:
        raise _io.FormatError(f"{path!r}: field 'version' is {version}, expected {_VAE_VERSION}")
    unknown = set(meta) - {"format", "version", "kind", "latent_dim", "dropout"}
    if unknown:
        raise _io.FormatError(f"{path!r}: field(s) {sorted(unknown)} are not part of VAE format {_VAE_VERSION}")
    kind, latent, dropout = (_meta_field(path, meta, k) for k in ("kind", "latent_dim", "dropout"))
    if kind not in VAE_KINDS:
        raise _io.FormatError(f"{path!r}: field 'kind' must be one of {sorted(VAE_KINDS)}, got {kind!r}")
    if not (latent.isdigit() and len(latent) <= 6 and 1 <= int(latent) <= MAX_LATENT_DIM):
        raise _io.FormatError(f"{path!r}: field 'latent_dim' must be an int in [1, {MAX_LATENT_DIM}], got {latent!r}")
    try:
        p_drop = float(dropout)
    except ValueError:
        p_drop = math.nan
    if not 0.0 <= p_drop < 1.0:
        raise _io.FormatError(f"{path!r}: field 'dropout' must be a number in [0, 1), got {dropout!r}")
    return kind, int(latent), p_drop


def _vae_from_state(path: str, kind: str, latent_dim: int, dropout: float, state: dict[str, torch.Tensor]) -> VAE:
    """Build the VAE and load ``state`` after checking it against the architecture: the same
    tensor names, shapes and dtypes, finite weights, batch-norm variances >= 0 and counters >= 0."""
    mean_w = state.get("to_mean.weight")
    # latent_dim decides how much the new model allocates: it must agree with a tensor that the
    # file really holds before anything is built (a crafted header cannot ask for terabytes).
    if not isinstance(mean_w, torch.Tensor) or mean_w.ndim != 2 or mean_w.shape[0] != latent_dim:
        got = tuple(mean_w.shape) if isinstance(mean_w, torch.Tensor) else None
        raise _io.FormatError(f"{path!r}: field 'latent_dim' is {latent_dim} but tensor 'to_mean.weight' has shape "
                              f"{got}, expected [{latent_dim}, features]")
    vae = build_vae(kind, latent_dim, dropout=dropout)
    expected = vae.state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise _io.FormatError(f"{path!r}: field 'tensors' does not fit a {kind} VAE (missing {missing[:5]}, "
                              f"unexpected {extra[:5]})")
    for name, ref in expected.items():
        got = state[name]
        if got.dtype != ref.dtype:
            raise _io.FormatError(f"{path!r}: field '{name}.dtype' must be {ref.dtype}, got {got.dtype}")
        if got.shape != ref.shape:
            raise _io.FormatError(f"{path!r}: field '{name}.shape' must be {list(ref.shape)} for a {kind} VAE with "
                                  f"latent_dim {latent_dim}, got {list(got.shape)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise _io.FormatError(f"{path!r}: field {name!r} holds NaN or Inf values")
        if (name.endswith("running_var") or name.endswith("num_batches_tracked")) and bool((got < 0).any()):
            raise _io.FormatError(f"{path!r}: field {name!r} holds negative values")
    vae.load_state_dict(state)
    return vae.eval()


_LEGACY_HINT = ("load it once with load_vae(path, allow_legacy=True), only if you trust its source, and re-save it "
                "with save_vae(vae, path) to get a checksummed version-2 file")


def _load_legacy(path: str) -> tuple[str, int, float, dict[str, torch.Tensor]]:
    """Read a version-1 file (a ``torch.save`` zip, ``weights_only=True``): no checksum, so
    only the semantic checks of :func:`_vae_from_state` guard it."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
        if any(i.compress_type != zipfile.ZIP_STORED for i in infos) or sum(i.file_size for i in infos) > \
                os.path.getsize(path):
            raise _io.FormatError(f"{path!r}: field 'zip members' declare more bytes than the file holds")
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except _io.FormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is a bad file
        raise _io.FormatError(f"{path!r} is not a readable version-1 mnemonix VAE file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != _VAE_FORMAT:
        raise _io.FormatError(f"{path!r}: field 'format' is missing: not a mnemonix VAE file")
    if payload.get("version") != 1:
        raise _io.FormatError(f"{path!r}: field 'version' is {payload.get('version')!r} in a version-1 (torch) file")
    kind, latent, state = payload.get("kind"), payload.get("latent_dim"), payload.get("state_dict")
    if kind not in VAE_KINDS:
        raise _io.FormatError(f"{path!r}: field 'kind' must be one of {sorted(VAE_KINDS)}, got {kind!r}")
    if isinstance(latent, bool) or not isinstance(latent, int) or not 1 <= latent <= MAX_LATENT_DIM:
        raise _io.FormatError(f"{path!r}: field 'latent_dim' must be an int in [1, {MAX_LATENT_DIM}], got {latent!r}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _io.FormatError(f"{path!r}: field 'state_dict' must map names to tensors")
    return kind, latent, inspect.signature(VAE_KINDS[kind]).parameters["dropout"].default, state


def load_vae(path: str | os.PathLike[str], *, device: str | torch.device | None = None,
             allow_legacy: bool = False) -> VAE:
    """Read a VAE written by :func:`save_vae`, in eval mode, on ``device``.

    Parameters
    ----------
    path : str or os.PathLike
        A version-2 file (checksummed safetensors layout). Every field is checked: the
        checksum over the whole file, declared sizes against the file before anything is
        allocated, then the architecture (tensor names, shapes and dtypes of ``kind`` with
        ``latent_dim``), finite weights, batch-norm variances and counters >= 0.
    device : None, str or torch.device
        Where the VAE goes: ``None`` means CUDA when available, else the CPU.
    allow_legacy : bool
        Also read a version-1 file (``torch.save`` of mnemonix <= 0.1, read with
        ``weights_only=True``). Such files carry no checksum, so they are refused by default;
        opt in only for a file you trust, then re-save it with :func:`save_vae`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    mnemonix._io.FormatError
        The file is not a valid VAE file; the message names the file and the field.
    """
    p = _args.path_like("path", path)
    dev = _args.resolve_device(device)
    _args.flag("allow_legacy", allow_legacy)
    if os.path.isfile(p):
        with open(p, "rb") as fh:
            magic = fh.read(4)
        if magic == b"PK\x03\x04":  # a zip archive: torch.save, the version-1 format
            if not allow_legacy:
                raise _io.FormatError(f"{p!r} is a version-1 VAE file (torch.save, no checksum) that cannot be "
                                      f"verified: {_LEGACY_HINT}")
            warnings.warn(f"{p!r} is an unverified version-1 VAE file: re-save it with save_vae", stacklevel=2)
            kind, latent, dropout, state = _load_legacy(p)
            return _vae_from_state(p, kind, latent, dropout, state).to(dev)
    state, meta = tensor_file.read(p)
    kind, latent, dropout = _check_meta(p, meta)
    return _vae_from_state(p, kind, latent, dropout, state).to(dev)
