"""Probe targets: the models of ``mnemonix.consolidation`` (VAE, extended model, dataset, probe).

Every public function of the package is also probed, argument by argument, by
``tests/test_consolidation_args.py``; here the models' methods run under the suite's full
state snapshot (every weight and buffer, the trace store, the global RNGs).
"""

from __future__ import annotations

import functools
import os

import torch
from hypothesis import strategies as st

from mnemonix.consolidation import (
    ExtendedModel,
    ImageDataset,
    LinearProbe,
    TinyVAE,
    build_hopfield,
    load_vae,
    replay_from_noise,
    save_vae,
)

from .harness import (
    Target,
    bad_choice,
    bad_device,
    bad_flag,
    bad_generator,
    bad_int,
    bad_path,
    bad_real,
    bad_tensor,
    scratch_dir,
)

_G = torch.Generator().manual_seed(3)
IMAGES = torch.rand(6, 1, 8, 8, generator=_G)
LABELS = (torch.arange(6) % 3)[:, None]
LATENT = torch.randn(4, 4, generator=_G)
FEATURES = torch.randn(6, 3, generator=_G)
REAL = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INTS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


# Built once: a failed call must leave them as they are, which each probe checks by snapshot.
@functools.cache
def vae() -> TinyVAE:
    torch.manual_seed(0)
    return TinyVAE(latent_dim=4).eval()


@functools.cache
def extended() -> ExtendedModel:
    torch.manual_seed(0)
    return ExtendedModel(TinyVAE(latent_dim=4).eval(), threshold=0.2).store(IMAGES)


def dataset() -> ImageDataset:
    return ImageDataset(IMAGES, LABELS, ("digit",), "digit")


@functools.cache
def saved_vae() -> str:
    path = os.path.join(scratch_dir(), "vae.safetensors")
    save_vae(vae(), path)
    return path


CUES = extended().noisy_cues(0.1)


def _images(good: torch.Tensor, sized=(1, 2, 3), **kw):
    return st.one_of(bad_tensor(good, dtypes=REAL, sized=sized, **kw),
                     st.sampled_from([("dtype:int64", good.long()), ("dtype:bool", good > 0.5),
                                      ("dtype:complex64", good.to(torch.complex64))]))


TARGETS = [
    Target("VAE.encode", lambda m, **kw: m.encode(**kw), dict(images=IMAGES[:2]),
           dict(images=_images(IMAGES[:2], skip=("nonfinite",))), make=vae),
    Target("VAE.forward", lambda m, **kw: m(**kw), dict(images=IMAGES[:2], sample=False),
           dict(images=_images(IMAGES[:2], skip=("nonfinite",)),
                sample=bad_flag().filter(lambda b: b[1] is not None)), make=vae),
    Target("VAE.decode", lambda m, **kw: m.decode(**kw), dict(z=LATENT),
           dict(z=bad_tensor(LATENT, dtypes=REAL, sized=(1,), skip=("nonfinite",))), make=vae),
    Target("VAE.loss", lambda m, **kw: m.loss(**kw), dict(images=IMAGES[:2], kl_weight=1.0),
           dict(images=_images(IMAGES[:2], skip=("nonfinite",)), kl_weight=bad_real(0.0, low_open=False)), make=vae),
    Target("VAE.sample", lambda m, **kw: m.sample(**kw), dict(mean=LATENT, logvar=LATENT, generator=None),
           dict(mean=bad_tensor(LATENT, dtypes=REAL, sized=(0, 1), skip=("nonfinite",)),
                logvar=bad_tensor(LATENT, dtypes=REAL, sized=(0, 1), skip=("nonfinite",)),
                generator=bad_generator()), make=vae),
    Target("VAE.reconstruct", lambda m, **kw: m.reconstruct(**kw), dict(images=IMAGES[:2], batch_size=4),
           dict(images=_images(IMAGES[:2], skip=("nonfinite", "empty:0")), batch_size=bad_int()), make=vae),
    Target("save_vae", lambda m, **kw: save_vae(m, **kw), dict(path=os.path.join(scratch_dir(), "v.safetensors")),
           dict(path=bad_path()), make=vae),
    Target("load_vae", lambda _, **kw: load_vae(**kw), dict(path=saved_vae(), device=None, allow_legacy=False),
           dict(device=bad_device(), allow_legacy=bad_flag())),
    Target("ExtendedModel", lambda m, **kw: ExtendedModel(m, **kw),
           dict(threshold=0.2, beta=100.0, metric="euclidean", backend=None),
           dict(threshold=bad_real(0.0, low_open=False, inf_ok=True), beta=bad_real(),
                metric=bad_choice(("euclidean", "dot")),
                backend=bad_choice(("triton", "cpp", "sdpa", "gemm", "torch", "reference"), none_ok=True)), make=vae),
    Target("ExtendedModel.store", lambda m, **kw: m.store(**kw), dict(images=IMAGES[:3]),
           dict(images=_images(IMAGES[:3], skip=("empty:0",))), make=extended),
    Target("ExtendedModel.recall", lambda m, **kw: m.recall(**kw), dict(cues=CUES[:2], batch_size=8),
           dict(cues=bad_tensor(CUES[:2], dtypes=REAL, sized=(1,)), batch_size=bad_int()), make=extended),
    Target("ExtendedModel.noisy_cues", lambda m, **kw: m.noisy_cues(**kw), dict(noise=0.1, seed=0, index=None),
           dict(noise=bad_real(0.0, low_open=False), seed=bad_int(0, 2**63 - 1),
                index=st.sampled_from([("float", torch.zeros(2)), ("out of range", torch.tensor([6])),
                                       ("list", [0, 1]), ("meta", torch.zeros(2, dtype=torch.long, device="meta")),
                                       ("2-dim", torch.zeros(2, 2, dtype=torch.long))])), make=extended),
    Target("ExtendedModel.rebuild", lambda m, **kw: m.rebuild(**kw),
           dict(latent=LATENT[:2], sensory=torch.zeros(2, 64)),
           dict(latent=bad_tensor(LATENT[:2], dtypes=REAL, sized=(0, 1), skip=("nonfinite",)),
                sensory=bad_tensor(torch.zeros(2, 64), dtypes=REAL, sized=(0, 1))), make=extended),
    Target("ImageDataset", lambda _, **kw: ImageDataset(**kw),
           dict(images=IMAGES, labels=LABELS, factor_names=("digit",), class_factor="digit"),
           dict(images=_images(IMAGES, sized=()), labels=bad_tensor(LABELS, dtypes=INTS, sized=(0, 1)),
                class_factor=bad_choice(("digit",)))),
    Target("ImageDataset.subset", lambda d, **kw: d.subset(**kw), dict(index=torch.tensor([0, 2])),
           dict(index=st.sampled_from([("float", torch.zeros(2)), ("out of range", torch.tensor([9])),
                                       ("list", [0, 1]), ("meta", torch.zeros(2, dtype=torch.long, device="meta")),
                                       ("empty", torch.zeros(0, dtype=torch.long))])), make=dataset),
    Target("ImageDataset.split", lambda d, **kw: d.split(**kw), dict(n_first=2, seed=0),
           dict(n_first=bad_int(1, 5), seed=bad_int(0, 2**63 - 1)), make=dataset),
    Target("ImageDataset.to", lambda d, **kw: d.to(**kw), dict(device="cpu"), dict(device=bad_device()),
           make=dataset),
    Target("LinearProbe.fit", lambda _, **kw: LinearProbe.fit(**kw),
           dict(features=FEATURES, labels=LABELS[:, 0], ridge=0.01),
           dict(features=bad_tensor(FEATURES, dtypes=REAL, sized=(0,)),
                labels=bad_tensor(LABELS[:, 0], dtypes=INTS, sized=(0,)),
                ridge=bad_real())),
    Target("LinearProbe.predict", lambda p, **kw: p.predict(**kw), dict(features=FEATURES),
           dict(features=bad_tensor(FEATURES, dtypes=REAL, sized=(1,), skip=("empty:0",))),
           make=lambda: LinearProbe.fit(FEATURES, LABELS[:, 0])),
    Target("build_hopfield", lambda _, **kw: build_hopfield(**kw), dict(images=IMAGES, beta=10.0, backend=None),
           dict(images=_images(IMAGES, sized=()), beta=bad_real(),
                backend=bad_choice(("triton", "cpp", "sdpa", "gemm", "torch", "reference"), none_ok=True))),
    Target("replay_from_noise", lambda h, **kw: replay_from_noise(h, **kw),
           dict(n=3, image_shape=(1, 8, 8), seed=0, batch_size=2, progress=None),
           dict(n=bad_int(), seed=bad_int(0, 2**63 - 1), batch_size=bad_int(),
                image_shape=st.sampled_from([("float", (2.7,)), ("mismatch", (1, 8, 9)), ("str", "18"),
                                             ("None", None)])),
           make=lambda: build_hopfield(IMAGES, beta=10.0)),
]
