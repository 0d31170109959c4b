"""Generative consolidation: Hopfield replay, VAEs, teacher-student training, extended model,
procedural Shapes3D, analyses, persistence, CLI."""

from __future__ import annotations

import colorsys
import json
import math

import numpy as np
import pytest
import torch

from mnemonix import _io
from mnemonix.cli import main as cli_main
from mnemonix.consolidation import (
    ConsolidationConfig,
    ExtendedModel,
    ImageDataset,
    LargeVAE,
    SmallVAE,
    TinyVAE,
    boundary_extension,
    build_hopfield,
    interpolation,
    latent_space_2d,
    load_digits,
    load_mnist,
    load_shapes3d,
    load_vae,
    make_shapes3d,
    prototypical_distortion,
    render_scene,
    replay_from_noise,
    run_teacher_student,
    sample_factors,
    save_vae,
    threshold_sweep,
    vae_for,
    vector_arithmetic,
)
from mnemonix.consolidation.data import SHAPES3D_SIZES, factor_values
from mnemonix.consolidation.teacher_student import LinearProbe, from_patterns, to_patterns
from mnemonix.hopfield import ModernHopfield


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These small convolutions run fastest on one thread (and CI runs two test workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits()


@pytest.fixture(scope="module")
def trained(digits):
    """A tiny VAE trained for a few epochs on Hopfield replays of 900 digits."""
    cfg = ConsolidationConfig(n_stored=900, epochs=6, batch_size=64, seed=3)
    return run_teacher_student(digits, cfg)


# -- Hopfield stage ----------------------------------------------------------------------------
def _separated_patterns(rng: torch.Generator, n: int, d: int) -> torch.Tensor:
    return torch.randint(0, 2, (n, d), generator=rng).float() * 2 - 1  # random +-1: pairwise overlap ~ sqrt(d)


@pytest.mark.parametrize("n,d", [(1, 16), (37, 64), (200, 300)])
def test_high_beta_recall_from_noise_returns_stored_items(rng, n, d):
    x = _separated_patterns(rng, n, d)
    beta = 1000.0  # "very high", as in the paper
    cues = torch.rand(257, d, generator=rng) * 2 - 1
    r = ModernHopfield(x, beta=beta).retrieve(cues, batch_size=64, with_energy=False)
    sims = cues.double() @ x.double().T
    expected = sims.argmax(1)
    top2 = sims.topk(min(2, n), dim=1).values
    # a cue whose two best overlaps differ by < 30/beta is a near-tie (a mixture is then correct)
    clear = (top2[:, 0] - top2[:, -1]) * beta > 30.0 if n > 1 else torch.ones(len(cues), dtype=torch.bool)
    assert clear.float().mean() > 0.9  # well separated: almost every cue has a clear winner
    assert torch.equal(r.nearest[clear], expected[clear])  # argmax agreement 100%
    torch.testing.assert_close(r.states[clear], x[expected[clear]], atol=1e-4, rtol=0)


def test_replay_from_noise_on_digits_recalls_stored_items(digits):
    stored = digits.images[:400]
    hop = build_hopfield(stored)
    rep = replay_from_noise(hop, 300, digits.image_shape, seed=1, batch_size=128)
    assert rep.images.shape == (300, 1, 8, 8) and rep.nearest.shape == (300,)
    cues = (torch.rand(300, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert torch.equal(rep.nearest, (cues.double() @ to_patterns(stored).double().T).argmax(1))
    exact = (rep.images - stored[rep.nearest]).abs().flatten(1).amax(1) < 1e-4
    assert exact.float().mean() >= 0.95  # the rest are near-ties between almost identical digits
    assert rep.images.min() >= 0 and rep.images.max() <= 1


def test_low_beta_returns_metastable_mixtures(rng):
    x = _separated_patterns(rng, 20, 64)
    cues = torch.rand(50, 64, generator=rng) * 2 - 1
    # beta -> 0: softmax is uniform, every state is the mean of the stored patterns
    tiny = ModernHopfield(x, beta=1e-5).retrieve(cues, with_energy=False).states
    torch.testing.assert_close(tiny, x.mean(0).expand_as(tiny), atol=1e-3, rtol=0)
    # low beta: the state mixes several patterns: far from every stored pattern, with a smaller norm
    low = ModernHopfield(x, beta=0.02).retrieve(cues, with_energy=False).states
    dist = torch.cdist(low, x).min(1).values
    assert bool((dist > 0.25 * math.sqrt(64)).all())
    assert bool((low.norm(dim=1) < 0.9 * math.sqrt(64)).all())
    # the same cues at high beta land on stored patterns
    high = ModernHopfield(x, beta=1000.0).retrieve(cues, with_energy=False).states
    landed = torch.cdist(high, x).min(1).values < 1e-3
    # the rest are near-ties: cues whose two best patterns' logits are within 30 (a weight of
    # e^-30 or more on the runner-up). Over 400 seeds the widest such gap was 13.8 and at most 2
    # of 50 cues were ties; the fixed share asked before (>= 95% landed) failed once in CI, at a
    # seed with 3 ties.
    top2 = (1000.0 * cues @ x.T).topk(2, dim=1).values
    assert bool((landed | (top2[:, 0] - top2[:, 1] < 30.0)).all()) and landed.float().mean() >= 0.85


def test_pattern_scaling_round_trip(rng):
    img = torch.rand(5, 3, 4, 4, generator=rng)
    p = to_patterns(img)
    assert p.shape == (5, 48) and p.min() >= -1 and p.max() <= 1
    torch.testing.assert_close(from_patterns(p, (3, 4, 4)), img)


# -- teacher-student training ------------------------------------------------------------------
def test_replay_training_lowers_error_and_lifts_probe_accuracy(trained):
    hist = trained.history
    assert [r.epoch for r in hist] == list(range(7))
    assert hist[-1].heldout_mse < 0.7 * hist[0].heldout_mse
    chance = trained.summary["probe_chance"]
    assert 0.05 < chance < 0.2
    assert hist[-1].probe_accuracy > chance + 0.3
    assert all(math.isfinite(r.train_loss) for r in hist[1:])
    assert trained.summary["replay_exact_fraction"] >= 0.95
    recalled = trained.recall(trained.heldout.images[:5])
    assert recalled.shape == (5, 1, 8, 8)


def test_linear_probe_separates_linear_classes(rng):
    x = torch.randn(1300, 5, generator=rng)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    probe = LinearProbe.fit(x[:1000], y[:1000])
    assert probe.accuracy(x[1000:], y[1000:]) > 0.93  # least squares, not max-margin: ~0.98 on average


def test_run_teacher_student_is_deterministic(digits):
    small = digits.subset(slice(0, 200))
    cfg = ConsolidationConfig(n_stored=150, epochs=1, seed=5)
    a = run_teacher_student(small, cfg)
    b = run_teacher_student(small, cfg)
    assert torch.equal(a.replay.nearest, b.replay.nearest)
    assert a.history[-1].heldout_mse == pytest.approx(b.history[-1].heldout_mse, rel=1e-5)


# -- extended model ----------------------------------------------------------------------------
def test_threshold_monotone_in_features(trained):
    images = trained.heldout.images[:60]
    thresholds = sorted(float(t) for t in torch.rand(12, generator=torch.Generator().manual_seed(0)))
    counts = [ExtendedModel(trained.vae, threshold=t).encode(images).n_features for t in [0.0, *thresholds, 2.0]]
    for lo, hi in zip(counts[:-1], counts[1:]):
        assert bool((hi <= lo).all())
    rows = threshold_sweep(trained.vae, images, [0.0, 0.1, 0.3, 0.6, 1.5])
    feats = [r.mean_features for r in rows]
    assert feats == sorted(feats, reverse=True) and feats[0] == 64 and feats[-1] == 0


def test_threshold_above_max_error_stores_nothing_and_recall_is_vae_decoding(trained):
    images = trained.heldout.images[:50]
    model = ExtendedModel(trained.vae, threshold=1.0)  # pixel errors are < 1 (images and outputs in [0, 1])
    model.store(images)
    assert int(model.traces.n_features.sum()) == 0 and not bool(model.traces.sensory.any())
    out = model.recall(model.noisy_cues(0.05, seed=2))
    assert not bool(out.sensory.any())
    torch.testing.assert_close(out.images, trained.vae.decode_eval(out.latent))


def test_threshold_zero_with_clean_cues_rebuilds_items(trained):
    images = trained.heldout.images[:40]
    model = ExtendedModel(trained.vae, threshold=0.0).store(images)
    out = model.recall(model.noisy_cues(0.0))
    assert torch.equal(out.nearest, torch.arange(40))
    torch.testing.assert_close(out.images, images, atol=1e-4, rtol=0)


def test_extended_dot_metric_runs(trained):
    images = trained.heldout.images[:20]
    model = ExtendedModel(trained.vae, threshold=0.2, metric="dot").store(images)
    out = model.recall(model.noisy_cues(0.0))
    assert out.images.shape == images.shape


def test_extended_bad_inputs(trained):
    vae = trained.vae
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        ExtendedModel(vae, threshold=-0.1)
    with pytest.raises(ValueError, match="threshold"):
        ExtendedModel(vae, threshold=float("nan"))
    with pytest.raises(ValueError, match="threshold"):
        threshold_sweep(vae, trained.heldout.images[:4], [0.1, -1.0])
    with pytest.raises(ValueError, match="metric"):
        ExtendedModel(vae, threshold=0.1, metric="cosine")
    model = ExtendedModel(vae, threshold=0.1)
    with pytest.raises(ValueError, match="no traces stored"):
        model.recall(torch.zeros(1, 74))
    model.store(trained.heldout.images[:4])
    with pytest.raises(ValueError, match=r"cues must be \[B, 74\]"):
        model.recall(torch.zeros(1, 64))
    with pytest.raises(ValueError, match="image_shape"):
        model.store(torch.rand(3, 1, 28, 28))


# -- procedural Shapes3D -----------------------------------------------------------------------
def test_generator_is_deterministic_and_labels_match_factors():
    a = make_shapes3d(12, seed=7)
    b = make_shapes3d(12, seed=7)
    c = make_shapes3d(12, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)
    assert a.images.shape == (12, 3, 64, 64) and a.images.dtype == torch.float32
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert torch.equal(a.labels, torch.from_numpy(sample_factors(12, seed=7)))
    for name, size in SHAPES3D_SIZES.items():
        col = a.factor(name)
        assert bool((col >= 0).all() and (col < size).all())
    for i in range(12):
        assert np.array_equal(render_scene(a.labels[i].numpy()), a.images[i].numpy())


def _hue(pixel: torch.Tensor) -> float:
    return colorsys.rgb_to_hsv(*pixel.tolist())[0]


def _hue_close(h: float, target: float) -> bool:
    d = abs(h - target) % 1.0
    return min(d, 1 - d) < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generator_pixels_show_the_drawn_factors(seed):
    ds = make_shapes3d(16, seed=seed)
    for img, f in zip(ds.images, ds.labels.tolist()):
        floor, wall, obj = (factor_values(n, f[i]) for i, n in enumerate(("floor_hue", "wall_hue", "object_hue")))
        assert _hue_close(_hue(img[:, 63, 0]), floor)  # bottom-left corner: floor
        assert _hue_close(_hue(img[:, 0, 0]), wall) and _hue_close(_hue(img[:, 0, 63]), wall)  # top: walls
        w = 0.28 * float(factor_values("scale", f[3]))
        row = int(((0.62 - w) + 1) / 2 * 64)  # the object's middle, image centre column
        assert _hue_close(_hue(img[:, row, 32]), obj)


def test_generator_scale_and_shape_change_the_object():
    base = [0, 3, 6, 0, 0, 7]
    sizes = []
    for s in range(SHAPES3D_SIZES["scale"]):
        img = render_scene([*base[:3], s, *base[4:]])
        ref = render_scene([*base[:3], 0, *base[4:]])
        sizes.append(int((np.abs(img - render_scene([0, 3, 6, 0, 0, 7])) > 0).any(0).sum()) if s else 0)
        assert img.shape == ref.shape
    assert sizes == sorted(sizes)  # larger scale -> more pixels differ from the smallest object
    shapes = [render_scene([*base[:4], k, base[5]]) for k in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(shapes[i], shapes[j])


def test_generator_bad_inputs():
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        make_shapes3d(0)
    with pytest.raises(ValueError, match="factor shape must be in"):
        render_scene([0, 0, 0, 0, 4, 0])
    with pytest.raises(ValueError, match="factors must be 6 indices"):
        render_scene([0, 0, 0])
    with pytest.raises(ValueError, match="zoom"):
        render_scene([0] * 6, zoom=0)


# -- VAEs --------------------------------------------------------------------------------------
def test_large_vae_shapes_and_one_training_step():
    torch.manual_seed(0)
    vae = LargeVAE(latent_dim=20)
    x = make_shapes3d(2, seed=0).images
    out = vae(x)
    assert out.recon.shape == (2, 3, 64, 64) and out.mean.shape == (2, 20) and out.logvar.shape == (2, 20)
    assert float(out.recon.detach().min()) >= 0 and float(out.recon.detach().max()) <= 1
    layers = [m for m in vae.encoder_body if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in layers] == [32, 64, 128, 256] and all(m.kernel_size == (4, 4) for m in layers)
    assert isinstance(vae.encoder_body[0], torch.nn.Dropout) and vae.encoder_body[0].p == 0.2
    dec = [m for m in vae.decoder if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in dec] == [128, 64, 32, 3] and all(m.kernel_size == (3, 3) for m in dec)
    assert vae.decoder[0].out_features == 4096
    before = vae.to_mean.weight.detach().clone()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    loss, parts = vae.loss(x)
    loss.backward()
    opt.step()
    assert math.isfinite(parts["loss"]) and not torch.equal(before, vae.to_mean.weight)


def test_small_and_tiny_vae_shapes():
    assert SmallVAE(latent_dim=7).eval()(torch.rand(3, 1, 28, 28)).recon.shape == (3, 1, 28, 28)
    out = TinyVAE(latent_dim=5).eval()(torch.rand(4, 1, 8, 8))
    assert out.recon.shape == (4, 1, 8, 8) and out.z.shape == (4, 5)
    assert isinstance(vae_for((1, 28, 28)), SmallVAE) and isinstance(vae_for((3, 64, 64)), LargeVAE)


def test_vae_bad_inputs(digits):
    vae = TinyVAE()
    with pytest.raises(ValueError, match=r"images must be \[B, 1, 8, 8\] for TinyVAE"):
        vae(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="empty batch"):
        vae(torch.rand(0, 1, 8, 8))
    with pytest.raises(ValueError, match="latent_dim must be an int >= 1"):
        TinyVAE(latent_dim=0)
    with pytest.raises(ValueError, match="image_shape must be one of"):
        vae_for((1, 9, 9))
    with pytest.raises(ValueError, match=r"data.images must be \[B, 3, 64, 64\]"):
        run_teacher_student(digits.subset(slice(0, 50)), ConsolidationConfig(n_stored=20, epochs=0), vae=LargeVAE())
    with pytest.raises(ValueError, match="empty dataset"):
        ImageDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, 1, dtype=torch.long), ("digit",), "digit")
    with pytest.raises(ValueError, match="at least 2 items"):
        run_teacher_student(digits.subset(slice(0, 1)), ConsolidationConfig(epochs=0))
    with pytest.raises(ValueError, match="epochs"):
        run_teacher_student(digits, ConsolidationConfig(epochs=-1))
    with pytest.raises(ValueError, match="beta"):
        run_teacher_student(digits, ConsolidationConfig(beta=0.0))
    with pytest.raises(ValueError, match="empty dataset"):
        build_hopfield(torch.zeros(0, 1, 8, 8))


# -- persistence -------------------------------------------------------------------------------
def test_vae_save_load_round_trip(tmp_path, trained):
    path = tmp_path / "vae.safetensors"
    save_vae(trained.vae, path)
    loaded = load_vae(path, device="cpu")
    x = trained.heldout.images[:8]
    torch.testing.assert_close(loaded.reconstruct(x), trained.vae.reconstruct(x))
    assert loaded.latent_dim == trained.vae.latent_dim and type(loaded) is type(trained.vae)


def test_vae_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(_io.FormatError):
        load_vae(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(_io.FormatError, match="version-1 VAE file"):
        load_vae(other)
    with pytest.raises(_io.FormatError, match="not a mnemonix VAE"), pytest.warns(UserWarning, match="unverified"):
        load_vae(other, allow_legacy=True)
    with pytest.raises(FileNotFoundError):
        load_vae(tmp_path / "missing.pt")


# -- local loaders -----------------------------------------------------------------------------
def test_load_mnist_from_local_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), y_train=np.arange(6))
    ds = load_mnist(path)
    assert ds.images.shape == (6, 1, 28, 28) and ds.images.max() <= 1 and ds.classes.tolist() == list(range(6))
    assert len(load_mnist(path, limit=3)) == 3
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 8, 8)), y_train=np.zeros(2))
    with pytest.raises(ValueError, match=r"\[N, 28, 28\]"):
        load_mnist(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_mnist(tmp_path / "nope.npz")


def test_load_shapes3d_from_local_npz(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    labels = np.stack([rng.choice([0.0, 0.1, 0.2], 5) for _ in range(6)], 1)
    path = tmp_path / "shapes.npz"
    np.savez(path, images=images, labels=labels)
    ds = load_shapes3d(path)
    assert ds.images.shape == (5, 3, 64, 64)
    np.testing.assert_allclose(ds.images.permute(0, 2, 3, 1).numpy(), images / 255.0, atol=1e-6)
    for j in range(6):
        np.testing.assert_array_equal(ds.labels[:, j].numpy(), np.unique(labels[:, j], return_inverse=True)[1])
    np.savez(tmp_path / "nolabels.npz", images=images)
    with pytest.raises(ValueError, match="labels"):
        load_shapes3d(tmp_path / "nolabels.npz")


# -- analyses ----------------------------------------------------------------------------------
def test_analyses_return_numbers_and_write_figures(tmp_path, trained):
    held = trained.heldout.subset(slice(0, 300))
    lat = latent_space_2d(trained.vae, held, path=tmp_path / "latent.png")
    assert lat.coords.shape == (300, 2) and 0 < sum(lat.explained_variance) <= 1 + 1e-9
    assert 0 < lat.separation < 1 and lat.figure.stat().st_size > 1000
    it = interpolation(trained.vae, held.images[0], held.images[1], steps=6, path=tmp_path / "interp.png")
    assert it.images.shape == (6, 1, 8, 8) and it.figure.exists()
    va = vector_arithmetic(trained.vae, held, class_a=0, class_b=1, path=tmp_path / "va.png")
    assert va.success_rate > va.baseline_rate + 0.3 and va.figure.exists()
    proto = prototypical_distortion(trained.vae, held, path=tmp_path / "proto.png")
    assert proto.output_distance < proto.input_distance and proto.fraction_closer > 0.5 and proto.figure.exists()


def test_boundary_extension_runs_on_large_vae(tmp_path):
    torch.manual_seed(0)
    vae = LargeVAE().eval()
    be = boundary_extension(vae, sample_factors(2, seed=4), zooms=(0.9, 1.2), path=tmp_path / "be.png")
    assert len(be.output_zooms) == 2 and all(min(be.zoom_grid) <= z <= max(be.zoom_grid) for z in be.output_zooms)
    assert be.figure.exists()
    with pytest.raises(ValueError, match="64x64x3"):
        boundary_extension(TinyVAE(), sample_factors(2))


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_consolidate_quick_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["consolidate", "--quick", "--epochs", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["vae"] == "tiny" and len(summary["threshold_sweep"]) == 7
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 3
    for name in ("training.png", "latent_space.png", "threshold_sweep.png", "extended_recall.png", "vae.safetensors",
                 "hopfield.npz"):
        assert (out / name).stat().st_size > 0
    assert load_vae(out / "vae.safetensors").kind == "tiny"
    assert len(ModernHopfield.load(out / "hopfield.npz")) == summary["n_stored"]
    assert "extended model" in capsys.readouterr().out
    assert cli_main(["consolidate", "--data", "mnist", "--out", str(out)]) == 2  # needs --path


def test_cli_consolidate_local_mnist_file(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), y_train=np.arange(30) % 3)
    out = tmp_path / "run"
    assert cli_main(["consolidate", "--data", "mnist", "--path", str(path), "--quick", "--epochs", "1",
                     "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vae"] == "small" and summary["n_stored"] == 24 and summary["image_shape"] == "1x28x28"


def test_demo_section_runs(tmp_path, capsys):
    assert cli_main(["demo", "--quick", "--only", "consolidate", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "probe accuracy" in text and (tmp_path / "consolidation_training.png").exists()


def test_load_shapes3d_h5(tmp_path):
    """The original 3dshapes.h5 layout; without h5py the error says what to install or do."""
    path = tmp_path / "3dshapes.h5"
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    labels = np.tile(np.array([[0.0, 0.1, 0.2, 0.75, 1.0, -30.0]]), (3, 1))
    try:
        import h5py
    except ImportError:
        path.write_bytes(b"\x89HDF\r\n\x1a\n")
        with pytest.raises(ValueError, match="needs h5py"):
            load_shapes3d(path)
        return
    with h5py.File(path, "w") as fh:
        fh["images"], fh["labels"] = images, labels
    ds = load_shapes3d(path)
    assert ds.images.shape == (3, 3, 64, 64) and bool((ds.labels == 0).all())


def test_prototypical_distortion_matches_per_class_means(digits):
    """The vectorised prototypes (one matrix product) equal a plain per-class loop."""
    held = digits.subset(slice(0, 90))
    torch.manual_seed(0)
    vae = TinyVAE().eval()
    proto = prototypical_distortion(vae, held)
    x, y = held.images, held.classes
    ref = torch.stack([x[y == c].mean(0) for c in y.tolist()])
    assert proto.input_distance == pytest.approx(float(((x - ref) ** 2).flatten(1).mean(1).mean()), rel=1e-5)
    out = vae.reconstruct(x)
    assert proto.output_distance == pytest.approx(float(((out - ref) ** 2).flatten(1).mean(1).mean()), rel=1e-5)
