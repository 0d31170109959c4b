"""Devices in mnemonix.consolidation: host syncs stay out of per-batch loops (counted on the CPU
with a TorchFunctionMode), ``device=None`` resolves to CUDA when available, and on a CUDA
machine (``gpu`` marker) the teacher-student loop, the extended model and every analysis run
with their outputs on the device."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from mnemonix.consolidation import (
    ConsolidationConfig,
    ExtendedModel,
    ImageDataset,
    LargeVAE,
    LinearProbe,
    TinyVAE,
    boundary_extension,
    interpolation,
    latent_space_2d,
    load_digits,
    load_vae,
    prototypical_distortion,
    run_pipeline,
    run_teacher_student,
    sample_factors,
    save_vae,
    threshold_sweep,
    train_vae,
    vector_arithmetic,
)
from mnemonix.consolidation._args import resolve_device

_SYNCS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "nonzero", "cpu"}


class CountHostSyncs(TorchFunctionMode):
    """Counts the tensor -> host conversions made outside torch itself (each one is a device
    sync on CUDA). torch's own are left out: Adam reads its step counters with ``.item()``, but
    they live on the CPU whatever the parameters' device, so they never sync a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _SYNCS:
            caller = sys._getframe(1).f_code.co_filename
            if f"{os.sep}torch{os.sep}" not in caller:
                self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def small_digits() -> ImageDataset:
    return load_digits().subset(slice(0, 160))


def test_vae_training_syncs_once_per_epoch_not_per_batch(small_digits):
    """Host syncs of one epoch do not grow with the number of batches (the loss is summed on
    the device): 2 batches and 8 batches cost the same number of syncs."""
    images, labels = small_digits.images[:48], small_digits.classes[:48]
    held = small_digits.subset(slice(48, 64))
    counts = []
    for batch_size in (24, 6):
        torch.manual_seed(0)
        vae = TinyVAE()
        with CountHostSyncs() as mode:
            train_vae(vae, images, labels, held, epochs=1, batch_size=batch_size)
        counts.append(mode.count)
    assert counts[0] == counts[1], f"syncs grow with the batch count: {counts} for 2 and 8 batches"


def test_prototypical_distortion_and_boundary_extension_do_not_sync_per_item(small_digits):
    torch.manual_seed(0)
    vae = TinyVAE().eval()
    counts = []
    for n in (20, 80):
        with CountHostSyncs() as mode:
            prototypical_distortion(vae, small_digits.subset(slice(0, n)))
        counts.append(mode.count)
    assert counts[0] == counts[1]
    large = LargeVAE().eval()
    counts = []
    for n in (1, 3):
        with CountHostSyncs() as mode:
            boundary_extension(large, sample_factors(n, seed=1), zooms=(0.9, 1.1), grid=(0.8, 1.0, 1.2))
        counts.append(mode.count)
    assert counts[0] == counts[1]


def test_device_none_means_cuda_when_available(small_digits, tmp_path):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    res = run_teacher_student(small_digits, ConsolidationConfig(n_stored=100, epochs=0))
    assert res.vae.device.type == expected and res.summary["device"].startswith(expected)
    assert res.replay.images.device.type == expected and res.heldout.images.device.type == expected


def test_explicit_cpu_keeps_everything_on_the_cpu(small_digits):
    res = run_teacher_student(small_digits, ConsolidationConfig(n_stored=100, epochs=1), device="cpu")
    assert res.summary["device"] == "cpu"
    assert {t.device.type for t in (res.replay.images, res.hopfield.patterns, res.stored.labels)} == {"cpu"}


def test_model_methods_refuse_tensors_on_another_device():
    # meta tensors hold no data: refused as such by mnemonix._checks.tensor, before any device comparison
    # (the other-device messages are checked on CUDA below)
    vae = TinyVAE()
    with pytest.raises(ValueError, match="images is on the meta device"):
        vae.encode(torch.zeros(2, 1, 8, 8, device="meta"))
    with pytest.raises(ValueError, match="mean is on the meta device"):
        TinyVAE.sample(torch.zeros(2, 3, device="meta"), torch.zeros(2, 3, device="meta"),
                       generator=torch.Generator())


# -- on a CUDA device ------------------------------------------------------------------------------
def _on_cuda(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cuda" for t in tensors)


@pytest.fixture(scope="module")
def cuda_run(small_digits):
    return run_teacher_student(small_digits, ConsolidationConfig(n_stored=120, epochs=2, batch_size=16, seed=1),
                               device="cuda")


@pytest.mark.gpu
def test_teacher_student_runs_on_cuda(cuda_run, small_digits):
    res = cuda_run
    assert res.summary["device"].startswith("cuda") and res.vae.device.type == "cuda"
    assert _on_cuda(res.replay.images, res.replay.nearest, res.hopfield.patterns, res.stored.images,
                    res.heldout.images, res.heldout.labels)
    assert all(np.isfinite(r.train_loss) for r in res.history[1:])
    assert res.history[-1].heldout_mse < res.history[0].heldout_mse
    assert res.summary["replay_exact_fraction"] >= 0.9
    assert _on_cuda(res.recall(res.heldout.images[:4]))
    cpu = run_teacher_student(small_digits, ConsolidationConfig(n_stored=120, epochs=0, seed=1), device="cpu")
    assert torch.equal(cpu.stored.labels, res.stored.labels.cpu())  # the same split on every device


@pytest.mark.gpu
def test_linear_probe_on_cuda():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(500, 4, device="cuda", generator=g)
    y = (x[:, 0] > 0).long()
    probe = LinearProbe.fit(x[:400], y[:400])
    assert _on_cuda(probe.weight, probe.classes, probe.predict(x[400:]))
    assert probe.accuracy(x[400:], y[400:]) > 0.9


@pytest.mark.gpu
def test_extended_model_on_cuda(cuda_run):
    images = cuda_run.heldout.images[:20]
    model = ExtendedModel(cuda_run.vae, threshold=0.0).store(images)
    cues = model.noisy_cues(0.0, index=torch.arange(5, device="cuda"))
    out = model.recall(cues)
    assert _on_cuda(cues, out.images, out.latent, out.sensory, out.nearest, model.traces.sensory)
    assert torch.equal(out.nearest, torch.arange(5, device="cuda"))
    rows = threshold_sweep(cuda_run.vae, images.cpu(), [0.0, 0.3, 1.5])  # CPU images are moved to the VAE
    assert rows[0].retrieval_accuracy > 0.9 and rows[-1].mean_features == 0


@pytest.mark.gpu
def test_every_analysis_runs_on_cuda(cuda_run, tmp_path):
    vae, held = cuda_run.vae, cuda_run.heldout
    lat = latent_space_2d(vae, held, path=tmp_path / "lat.png")
    assert isinstance(lat.coords, np.ndarray) and lat.coords.shape == (len(held), 2) and lat.figure.exists()
    it = interpolation(vae, held.images[0], held.images[1], steps=5, path=tmp_path / "it.png")
    assert _on_cuda(it.images) and it.figure.exists()
    classes = held.classes.unique().tolist()
    va = vector_arithmetic(vae, held, class_a=classes[0], class_b=classes[1], path=tmp_path / "va.png")
    assert 0 <= va.success_rate <= 1 and va.figure.exists()
    proto = prototypical_distortion(vae, held.to("cpu"), path=tmp_path / "proto.png")  # CPU data is moved
    assert proto.output_distance >= 0 and proto.figure.exists()
    large = LargeVAE().to("cuda").eval()
    be = boundary_extension(large, sample_factors(2, seed=3), zooms=(0.9, 1.2), path=tmp_path / "be.png")
    assert len(be.output_zooms) == 2 and be.figure.exists()


@pytest.mark.gpu
def test_vae_file_moves_between_devices(cuda_run, tmp_path):
    save_vae(cuda_run.vae, tmp_path / "v.safetensors")
    on_cpu = load_vae(tmp_path / "v.safetensors", device="cpu")
    on_cuda = load_vae(tmp_path / "v.safetensors")  # None: CUDA when available
    assert on_cuda.device.type == "cuda" and on_cpu.device.type == "cpu"
    x = cuda_run.heldout.images[:8]
    torch.testing.assert_close(on_cuda.reconstruct(x).cpu(), on_cpu.reconstruct(x.cpu()), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="images is on cpu but the VAE is on cuda"):
        on_cuda.reconstruct(x.cpu())
    with pytest.raises(ValueError, match="generator is a generator on cpu but it draws for tensors on cuda"):
        TinyVAE.sample(torch.zeros(2, 3, device="cuda"), torch.zeros(2, 3, device="cuda"), generator=torch.Generator())


@pytest.mark.gpu
def test_pipeline_quick_on_cuda(tmp_path):
    res = run_pipeline("digits", tmp_path, quick=True, epochs=1, device="cuda")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"].startswith("cuda") and res.result.vae.device.type == "cuda"
    assert load_vae(tmp_path / "vae.safetensors").device.type == "cuda"
