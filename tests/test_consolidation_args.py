"""Bad arguments to every public function and constructor of mnemonix.consolidation.

Property (hypothesis): for each argument, generated bad values (wrong types, NaN/Inf, out of
range, empty, huge, wrong shapes/dtypes/devices) raise only TypeError / ValueError (FormatError
is a ValueError) whose message names the argument, and leave every piece of state unchanged:
the VAE's weights and mode, the extended model's store, the global RNG, the output folder.
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix.consolidation import (
    ConsolidationConfig,
    ExtendedModel,
    ImageDataset,
    LinearProbe,
    TinyVAE,
    boundary_extension,
    build_hopfield,
    build_vae,
    interpolation,
    latent_space_2d,
    load_dataset,
    load_mnist,
    load_vae,
    make_shapes3d,
    prototypical_distortion,
    render_scene,
    render_scenes,
    replay_from_noise,
    run_pipeline,
    run_teacher_student,
    sample_factors,
    save_vae,
    threshold_sweep,
    train_vae,
    vae_for,
    vector_arithmetic,
)
from mnemonix.consolidation.analysis import pca, plot_history, plot_threshold_sweep
from mnemonix.consolidation.data import factor_values
from mnemonix.consolidation.teacher_student import chance_accuracy, from_patterns, noise_cues, to_patterns

OUT_DIR = Path("/nonexistent-mnemonix-consolidation-out")  # must never be created


# -- shared objects (module level: hypothesis reuses them across examples) ------------------------
@functools.cache
def world() -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 8, 8, generator=g)
    labels = (torch.arange(40) % 4)[:, None]
    ds = ImageDataset(images, labels, ("digit",), "digit")
    torch.manual_seed(0)
    vae = TinyVAE(latent_dim=4).eval()
    ext = ExtendedModel(vae, threshold=0.2).store(images[:10])
    probe = LinearProbe.fit(torch.randn(40, 3, generator=g), labels[:, 0])
    hop = build_hopfield(images[:20])
    return {"ds": ds, "vae": vae, "ext": ext, "probe": probe, "hop": hop, "images": images, "labels": labels[:, 0]}


@functools.cache
def reference() -> tuple:
    """The state every failed call must leave alone, cloned once."""
    w = world()
    return ({k: v.clone() for k, v in w["vae"].state_dict().items()}, w["vae"].training, w["vae"].device,
            w["ext"].hopfield, w["ext"].traces, w["ext"].threshold)


def unchanged() -> bool:
    """Compare the live state with :func:`reference` (no copies: equality only)."""
    w, ref = world(), reference()
    live = w["vae"].state_dict()
    return (live.keys() == ref[0].keys() and all(torch.equal(live[k], ref[0][k]) for k in live)
            and (w["vae"].training, w["vae"].device, w["ext"].hopfield, w["ext"].traces, w["ext"].threshold) == ref[1:])


# -- bad-value strategies -----------------------------------------------------------------------
OTHER = st.one_of(st.text(max_size=3), st.lists(st.integers(), max_size=2), st.complex_numbers(),
                  st.just(object()), st.just(torch.tensor(1.5)), st.just(b"x"))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def bad_int(low: int | None = None, high: int | None = None, *, none_ok: bool = False) -> st.SearchStrategy:
    """Non-ints (floats such as 2.7 or 2.0, bools, strings, ...) and ints outside [low, high]."""
    parts = [FLOATS, st.booleans(), OTHER]
    if low is not None:
        parts.append(st.integers(max_value=low - 1) | st.sampled_from([low - 1, -(2**70)]))
    if high is not None:
        parts.append(st.integers(min_value=high + 1) | st.sampled_from([high + 1, 2**70]))
    if not none_ok:
        parts.append(st.none())
    return st.one_of(parts)


def bad_real(low: float | None = None, *, low_open: bool = False, high: float | None = None,
             inf_ok: bool = False, none_ok: bool = False) -> st.SearchStrategy:
    """Non-numbers, NaN, +-Inf (unless inf_ok) and numbers outside the valid range; ``low_open``:
    the valid range excludes ``low`` itself (so ``low`` is a bad value)."""
    parts = [st.booleans(), OTHER, st.just(math.nan)]
    if not inf_ok:
        parts.append(st.sampled_from([math.inf, -math.inf]))
    if low is not None:
        below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False, allow_infinity=False)
        parts.append(below)
    if high is not None:
        parts.append(st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False))
    if not none_ok:
        parts.append(st.none())
    return st.one_of(parts)


SEED = bad_int(0, 2**63 - 1)
FLAG = st.one_of(st.integers(), FLOATS, OTHER, st.none())
DEVICE = st.one_of(st.sampled_from(["meta", "gpu", "cuda:99", "", "cpu:x", "tpu"]), st.integers(), FLOATS,
                   st.lists(st.text(max_size=2), max_size=2))
GENERATOR = st.one_of(st.sampled_from(["seed", 0, 1.5, np.random.default_rng(0)]), st.text(max_size=3))
PATH = st.one_of(st.integers(), FLOATS, st.none(), st.lists(st.text(max_size=2), max_size=2), st.just(""),
                 st.just("a\0b"))
PATH_OPT = PATH.filter(lambda p: p is not None)


def bad_tensor(shape: tuple[int, ...], *, float_only: bool = True) -> st.SearchStrategy:
    """Non-tensors, wrong rank, wrong sizes, empty, wrong dtypes, NaN/Inf."""
    options = [
        None, list(np.zeros(shape).tolist()) if len(shape) < 3 else [[0.0]], np.zeros(shape, np.float32), "x",
        torch.zeros(shape[:-1]), torch.zeros((*shape, 1)), torch.zeros((0, *shape[1:])),
        torch.zeros((shape[0], shape[-1] + 1) if len(shape) == 2 else (shape[0], *shape[1:-1], shape[-1] + 1)),
        torch.zeros(shape, dtype=torch.complex64), torch.zeros(shape, dtype=torch.bool),
        torch.zeros(shape, device="meta"),
    ]
    if float_only:
        options += [torch.zeros(shape, dtype=torch.int64), torch.full(shape, math.nan), torch.full(shape, math.inf)]
    return st.sampled_from(options)


# -- the probes: (name, argument, call(value), strategy of bad values) ----------------------------
W = world
PROBES: list[tuple[str, str, Callable[[object], object], st.SearchStrategy]] = [
    # data
    ("ImageDataset", "images", lambda v: ImageDataset(v, W()["ds"].labels, ("digit",), "digit"),
     st.sampled_from([None, np.zeros((40, 1, 8, 8), np.float32), torch.zeros(40, 8, 8), torch.zeros(0, 1, 8, 8),
                      torch.zeros(40, 1, 0, 8), torch.zeros(40, 1, 8, 8, dtype=torch.long),
                      torch.full((40, 1, 8, 8), math.nan), torch.full((40, 1, 8, 8), 1.5), -torch.ones(40, 1, 8, 8),
                      torch.zeros(39, 1, 8, 8)])),
    ("ImageDataset", "labels", lambda v: ImageDataset(W()["images"], v, ("digit",), "digit"),
     st.sampled_from([None, np.zeros((40, 1)), torch.zeros(40, 1), torch.zeros(39, 1, dtype=torch.long),
                      torch.zeros(40, dtype=torch.long), torch.zeros(40, 1, dtype=torch.bool)])),
    ("ImageDataset", "class_factor", lambda v: ImageDataset(W()["images"], W()["ds"].labels, ("digit",), v),
     st.one_of(st.text(max_size=4).filter(lambda s: s != "digit"), st.integers(), st.none())),
    ("ImageDataset", "factor_names", lambda v: ImageDataset(W()["images"], W()["ds"].labels, v, "digit"),
     st.sampled_from([["digit"], ("digit", "x"), (1,), "digit", None])),
    ("factor", "factor", lambda v: W()["ds"].factor(v), st.one_of(st.text(max_size=3), st.integers(), st.none())),
    ("subset", "index", lambda v: W()["ds"].subset(v),
     st.sampled_from([None, 3, [1, 2], torch.zeros(3), torch.zeros(2, 2, dtype=torch.long), torch.tensor([40]),
                      torch.zeros(40, dtype=torch.bool), torch.zeros(5, dtype=torch.bool), slice(50, 60)])),
    ("split", "n_first", lambda v: W()["ds"].split(v), bad_int(1, 39)),
    ("split", "seed", lambda v: W()["ds"].split(10, seed=v), SEED),
    ("to", "device", lambda v: W()["ds"].to(v), DEVICE),
    ("factor_values", "name", lambda v: factor_values(v, 0), st.one_of(st.text(max_size=3), st.integers())),
    ("render_scene", "factors", lambda v: render_scene(v, size=4),
     st.sampled_from([[2.7] * 6, [0] * 5, [[0] * 6], [0, 0, 0, 0, 4, 0], [-1, 0, 0, 0, 0, 0], ["a"] * 6,
                      [True] * 6, [math.nan] * 6, None, [0, 0, 0, 0, 0, 10**20]])),
    ("render_scene", "size", lambda v: render_scene([0] * 6, size=v), bad_int(1, 1024)),
    ("render_scene", "zoom", lambda v: render_scene([0] * 6, size=4, zoom=v), bad_real(0.0, low_open=True)),
    ("sample_factors", "n", lambda v: sample_factors(v), bad_int(1, 10**8)),
    ("sample_factors", "seed", lambda v: sample_factors(3, seed=v), SEED),
    ("render_scenes", "factors", lambda v: render_scenes(v, size=4),
     st.sampled_from([np.zeros((2, 5)), np.full((2, 6), 2.5), np.zeros(6), "abc", np.full((1, 6), -1)])),
    ("make_shapes3d", "n", lambda v: make_shapes3d(v, size=4), bad_int(1, 10**8)),
    ("make_shapes3d", "size", lambda v: make_shapes3d(2, size=v), bad_int(1, 1024)),
    ("make_shapes3d", "zoom", lambda v: make_shapes3d(2, size=4, zoom=v), bad_real(0.0, low_open=True)),
    ("make_shapes3d", "seed", lambda v: make_shapes3d(2, size=4, seed=v), SEED),
    ("load_mnist", "path", lambda v: load_mnist(v), PATH),
    ("load_mnist", "limit", lambda v: load_mnist("/nonexistent.npz", limit=v), bad_int(1, none_ok=True)),
    ("load_dataset", "data", lambda v: load_dataset(v), st.one_of(st.text(max_size=5), st.integers(), st.none())),
    ("load_dataset", "n", lambda v: load_dataset("digits", n=v), bad_int(1, 1797, none_ok=True)),
    ("load_dataset", "seed", lambda v: load_dataset("shapes", n=2, seed=v), SEED),
    # VAEs
    ("TinyVAE", "latent_dim", lambda v: TinyVAE(latent_dim=v), bad_int(1, 65536)),
    ("TinyVAE", "dropout", lambda v: TinyVAE(dropout=v), bad_real(0.0, high=1.0) | st.just(1.0)),
    ("build_vae", "kind", lambda v: build_vae(v), st.one_of(st.text(max_size=4), st.integers(), st.none(),
                                                            st.lists(st.text(), max_size=1))),
    ("vae_for", "image_shape", lambda v: vae_for(v),
     st.sampled_from([(2.7,), (1, 8.5, 8), "abc", 3, None, (1, 9, 9), (True, 8, 8), (1, 8, 8, 1)])),
    ("VAE.forward", "images", lambda v: W()["vae"](v), bad_tensor((2, 1, 8, 8), float_only=False)),
    ("VAE.forward", "sample", lambda v: W()["vae"](W()["images"][:2], sample=v), FLAG.filter(lambda f: f is not None)),
    ("VAE.reconstruct", "images", lambda v: W()["vae"].reconstruct(v),
     bad_tensor((2, 1, 8, 8), float_only=False).filter(lambda t: not (isinstance(t, torch.Tensor) and t.ndim == 4
                                                                      and t.shape[0] == 0))),
    ("VAE.reconstruct", "batch_size", lambda v: W()["vae"].reconstruct(W()["images"][:2], batch_size=v), bad_int(1)),
    ("VAE.latents", "images", lambda v: W()["vae"].latents(v), st.sampled_from([None, torch.zeros(2, 3, 8, 8)])),
    ("VAE.decode", "z", lambda v: W()["vae"].decode(v), bad_tensor((2, 4), float_only=False)),
    ("VAE.decode_eval", "z", lambda v: W()["vae"].decode_eval(v), st.sampled_from([None, torch.zeros(2, 5)])),
    ("VAE.loss", "kl_weight", lambda v: W()["vae"].loss(W()["images"][:2], kl_weight=v), bad_real(0.0)),
    ("VAE.sample", "generator", lambda v: W()["vae"].sample(torch.zeros(2, 4), torch.zeros(2, 4), v), GENERATOR),
    ("VAE.sample", "logvar", lambda v: W()["vae"].sample(torch.zeros(2, 4), v),
     st.sampled_from([None, torch.zeros(3)])),
    ("save_vae", "path", lambda v: save_vae(W()["vae"], v), PATH),
    ("save_vae", "vae", lambda v: save_vae(v, "/nonexistent/x"), st.sampled_from([None, torch.nn.Linear(1, 1), "vae"])),
    ("load_vae", "path", lambda v: load_vae(v), PATH),
    ("load_vae", "device", lambda v: load_vae("/nonexistent", device=v), DEVICE),
    # teacher-student
    *[("ConsolidationConfig", name, (lambda n: lambda v: ConsolidationConfig(**{n: v}))(name), strat)
      for name, strat in [
          ("n_stored", bad_int(1)), ("n_replay", bad_int(1, none_ok=True)),
          ("latent_dim", bad_int(1, 65536, none_ok=True)), ("epochs", bad_int(0)), ("batch_size", bad_int(1)),
          ("lr", bad_real(0.0, low_open=True)), ("kl_weight", bad_real(0.0)), ("beta", bad_real(0.0, low_open=True)),
          ("hopfield_batch", bad_int(1)), ("seed", SEED), ("backend", st.one_of(st.integers(), OTHER.filter(
              lambda o: not isinstance(o, str))))]],
    ("run_teacher_student", "data", lambda v: run_teacher_student(v, ConsolidationConfig(n_stored=5, epochs=0)),
     st.sampled_from([None, W()["images"], "digits"])),
    ("run_teacher_student", "config", lambda v: run_teacher_student(W()["ds"], v), st.sampled_from([{}, "cfg", 3])),
    ("run_teacher_student", "n_stored", lambda v: run_teacher_student(W()["ds"], ConsolidationConfig(n_stored=v)),
     st.integers(min_value=40, max_value=10**12)),
    ("run_teacher_student", "vae", lambda v: run_teacher_student(W()["ds"], ConsolidationConfig(n_stored=5), vae=v),
     st.sampled_from(["tiny", torch.nn.Linear(1, 1), 3])),
    ("run_teacher_student", "device", lambda v: run_teacher_student(W()["ds"], ConsolidationConfig(n_stored=5),
                                                                    device=v), DEVICE),
    ("run_teacher_student", "progress", lambda v: run_teacher_student(W()["ds"], ConsolidationConfig(n_stored=5),
                                                                      progress=v), FLAG),
    ("build_hopfield", "images", lambda v: build_hopfield(v),
     st.sampled_from([None, np.zeros((3, 1, 8, 8)), torch.zeros(3, 64), torch.zeros(0, 1, 8, 8),
                      torch.zeros(3, 1, 8, 8, dtype=torch.long), torch.full((3, 1, 8, 8), math.inf)])),
    ("replay_from_noise", "hopfield", lambda v: replay_from_noise(v, 4, (1, 8, 8)), st.sampled_from([None, "h"])),
    ("replay_from_noise", "n", lambda v: replay_from_noise(W()["hop"], v, (1, 8, 8)), bad_int(1)),
    ("replay_from_noise", "batch_size", lambda v: replay_from_noise(W()["hop"], 4, (1, 8, 8), batch_size=v),
     bad_int(1)),
    ("replay_from_noise", "seed", lambda v: replay_from_noise(W()["hop"], 4, (1, 8, 8), seed=v), SEED),
    ("replay_from_noise", "image_shape", lambda v: replay_from_noise(W()["hop"], 4, v),
     st.sampled_from([(2.7,), (1, 8, 9), "abc", None, (1, 8, 8.0)])),
    ("replay_from_noise", "progress", lambda v: replay_from_noise(W()["hop"], 4, (1, 8, 8), progress=v),
     st.sampled_from([1, "bar"])),
    ("noise_cues", "n", lambda v: noise_cues(v, 3), bad_int(1)),
    ("noise_cues", "dim", lambda v: noise_cues(2, v), bad_int(1)),
    ("noise_cues", "dtype", lambda v: noise_cues(2, 3, dtype=v), st.sampled_from([torch.int64, "float32", None])),
    ("noise_cues", "device", lambda v: noise_cues(2, 3, device=v), DEVICE),
    ("to_patterns", "images", lambda v: to_patterns(v), st.sampled_from([None, torch.zeros(2, 64)])),
    ("from_patterns", "image_shape", lambda v: from_patterns(torch.zeros(2, 64), v),
     st.sampled_from([(2.7,), (1, 8, 9), (1, 8, 8.0), "18", None])),
    ("LinearProbe.fit", "features", lambda v: LinearProbe.fit(v, torch.zeros(2, dtype=torch.long)),
     bad_tensor((2, 3)).filter(lambda t: not (isinstance(t, torch.Tensor) and t.shape == (2, 4)))),
    ("LinearProbe.fit", "labels", lambda v: LinearProbe.fit(torch.zeros(2, 3), v),
     st.sampled_from([None, torch.zeros(2), torch.zeros(3, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long)])),
    ("LinearProbe.fit", "ridge", lambda v: LinearProbe.fit(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long),
                                                           ridge=v), bad_real(0.0, low_open=True)),
    ("LinearProbe.predict", "features", lambda v: W()["probe"].predict(v), bad_tensor((2, 3)).filter(
        lambda t: not (isinstance(t, torch.Tensor) and t.dtype.is_floating_point and t.shape == (2, 3)))),
    ("chance_accuracy", "test_labels", lambda v: chance_accuracy(torch.zeros(3), v),
     st.sampled_from([None, torch.zeros(0), torch.zeros(2, 2)])),
    *[("train_vae", name, (lambda n: lambda v: train_vae(W()["vae"], W()["images"], W()["labels"], W()["ds"],
                                                        **{"epochs": 1, n: v}))(name), strat)
      for name, strat in [("epochs", bad_int(0)), ("batch_size", bad_int(1)), ("lr", bad_real(0.0, low_open=True)),
                          ("kl_weight", bad_real(0.0)), ("seed", SEED),
                          ("on_epoch", st.sampled_from([1, "f"])), ("on_batch", st.sampled_from([1, "f"]))]],
    ("train_vae", "images", lambda v: train_vae(W()["vae"], v, W()["labels"], W()["ds"], epochs=1),
     bad_tensor((40, 1, 8, 8))),
    ("train_vae", "labels", lambda v: train_vae(W()["vae"], W()["images"], v, W()["ds"], epochs=1),
     st.sampled_from([None, torch.zeros(40), torch.zeros(39, dtype=torch.long)])),
    ("train_vae", "heldout", lambda v: train_vae(W()["vae"], W()["images"], W()["labels"], v, epochs=1),
     st.sampled_from([None, W()["images"]])),
    # extended model
    ("ExtendedModel", "vae", lambda v: ExtendedModel(v, threshold=0.1), st.sampled_from([None, "vae"])),
    ("ExtendedModel", "threshold", lambda v: ExtendedModel(W()["vae"], threshold=v), bad_real(0.0, inf_ok=True)),
    ("ExtendedModel", "beta", lambda v: ExtendedModel(W()["vae"], threshold=0.1, beta=v),
     bad_real(0.0, low_open=True)),
    ("ExtendedModel", "metric", lambda v: ExtendedModel(W()["vae"], threshold=0.1, metric=v),
     st.one_of(st.text(max_size=4), st.none(), st.integers())),
    ("ExtendedModel", "backend", lambda v: ExtendedModel(W()["vae"], threshold=0.1, backend=v), st.integers()),
    ("ExtendedModel.store", "images", lambda v: W()["ext"].store(v), bad_tensor((3, 1, 8, 8), float_only=False)),
    ("ExtendedModel.noisy_cues", "noise", lambda v: W()["ext"].noisy_cues(v), bad_real(0.0)),
    ("ExtendedModel.noisy_cues", "seed", lambda v: W()["ext"].noisy_cues(0.1, seed=v), SEED),
    ("ExtendedModel.noisy_cues", "index", lambda v: W()["ext"].noisy_cues(0.1, index=v),
     st.sampled_from([[0, 1], torch.zeros(2), torch.tensor([10]), torch.tensor([-11]), torch.zeros(3, dtype=torch.bool),
                      torch.zeros(2, 2, dtype=torch.long), 3])),
    ("ExtendedModel.recall", "cues", lambda v: W()["ext"].recall(v), bad_tensor((2, 68))),
    ("ExtendedModel.recall", "batch_size", lambda v: W()["ext"].recall(torch.zeros(2, 68), batch_size=v), bad_int(1)),
    ("ExtendedModel.rebuild", "sensory", lambda v: W()["ext"].rebuild(torch.zeros(2, 4), v), bad_tensor((2, 64))),
    ("ExtendedModel.rebuild", "latent", lambda v: W()["ext"].rebuild(v, torch.zeros(2, 64)),
     st.sampled_from([None, torch.zeros(2, 5), torch.zeros(2, 4, dtype=torch.long)])),
    ("threshold_sweep", "thresholds", lambda v: threshold_sweep(W()["vae"], W()["images"][:4], v),
     st.sampled_from([0.1, "0.1", [], [0.1, -1.0], [math.nan], None])),
    ("threshold_sweep", "noise", lambda v: threshold_sweep(W()["vae"], W()["images"][:4], [0.1], noise=v),
     bad_real(0.0)),
    ("threshold_sweep", "seed", lambda v: threshold_sweep(W()["vae"], W()["images"][:4], [0.1], seed=v), SEED),
    ("threshold_sweep", "images", lambda v: threshold_sweep(W()["vae"], v, [0.1]), bad_tensor((4, 1, 8, 8))),
    # analyses
    ("latent_space_2d", "vae", lambda v: latent_space_2d(v, W()["ds"]), st.sampled_from([None, "vae"])),
    ("latent_space_2d", "data", lambda v: latent_space_2d(W()["vae"], v), st.sampled_from([None, W()["images"]])),
    ("latent_space_2d", "path", lambda v: latent_space_2d(W()["vae"], W()["ds"], path=v), PATH_OPT),
    ("interpolation", "a", lambda v: interpolation(W()["vae"], v, W()["images"][0]), bad_tensor((1, 8, 8))),
    ("interpolation", "steps", lambda v: interpolation(W()["vae"], W()["images"][0], W()["images"][1], steps=v),
     bad_int(2, 1000)),
    ("vector_arithmetic", "class_a", lambda v: vector_arithmetic(W()["vae"], W()["ds"], class_a=v, class_b=1),
     st.one_of(st.integers().filter(lambda i: i not in (0, 2, 3)), FLOATS, OTHER)),
    ("vector_arithmetic", "factor", lambda v: vector_arithmetic(W()["vae"], W()["ds"], factor=v),
     st.one_of(st.text(max_size=3), st.integers())),
    ("prototypical_distortion", "data", lambda v: prototypical_distortion(W()["vae"], v), st.sampled_from([None, 3])),
    ("boundary_extension", "vae", lambda v: boundary_extension(v, np.zeros((1, 6))),
     st.sampled_from([None, TinyVAE()])),
    ("pca", "k", lambda v: pca(torch.zeros(5, 3), v), bad_int(1, 3)),
    ("plot_history", "history", lambda v: plot_history(v, "/nonexistent/x.png"), st.sampled_from([[], None, [1]])),
    ("plot_threshold_sweep", "rows", lambda v: plot_threshold_sweep(v, "/nonexistent/x.png"),
     st.sampled_from([[], None, ["row"]])),
    # pipeline: every argument is checked before OUT_DIR is created
    *[("run_pipeline", name, (lambda n: lambda v: run_pipeline(**{"out_dir": OUT_DIR, n: v}))(name), strat)
      for name, strat in [("data", st.one_of(st.text(max_size=5), st.integers(), st.none())),
                          ("out_dir", PATH), ("epochs", bad_int(0, none_ok=True)), ("quick", FLAG), ("seed", SEED),
                          ("path", PATH_OPT), ("progress", FLAG), ("dataset", st.sampled_from(["digits", 3])),
                          ("device", DEVICE)]],
]


@pytest.mark.parametrize("where,argument,call,bad", PROBES, ids=[f"{p[0]}-{p[1]}" for p in PROBES])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_argument_is_refused_by_name_and_changes_nothing(where, argument, call, bad, data):
    value = data.draw(bad, label=argument)
    rng = torch.get_rng_state()
    with pytest.raises((TypeError, ValueError)) as info:
        call(value)
    assert argument in str(info.value), f"{where}: the message does not name {argument!r}: {info.value}"
    assert torch.equal(rng, torch.get_rng_state()), f"{where}({argument}={value!r}) used the global RNG"
    assert unchanged(), f"{where}({argument}={value!r}) changed state before failing"
    assert not OUT_DIR.exists()


# -- specific cases that the issue reported -------------------------------------------------------
def test_n_stored_beyond_the_data_is_refused_not_clamped():
    with pytest.raises(ValueError, match=r"n_stored must be <= 39 \(data holds 40 items"):
        run_teacher_student(W()["ds"], ConsolidationConfig(n_stored=10**9))


def test_float_shapes_and_sizes_are_refused_not_truncated():
    with pytest.raises(TypeError, match="image_shape"):
        vae_for((2.7,))
    with pytest.raises(ValueError, match="size must be >= 1"):
        make_shapes3d(2, size=0)
    with pytest.raises(ValueError, match="whole-number"):
        render_scene([0.5, 0, 0, 0, 0, 0])


def test_generators_must_be_torch_generators_on_the_right_device():
    with pytest.raises(TypeError, match="generator must be None or a torch.Generator"):
        TinyVAE.sample(torch.zeros(2, 3), torch.zeros(2, 3), generator="seed")
    g = torch.Generator().manual_seed(1)
    a = TinyVAE.sample(torch.zeros(2, 3), torch.zeros(2, 3), generator=g)
    assert a.shape == (2, 3)


# -- a lint that keeps device bugs out: every tensor factory in the package names its device -------
_FACTORIES = {"ones", "zeros", "eye", "arange", "linspace", "rand", "randn", "randint", "randperm", "empty", "full",
              "tensor", "Generator", "logspace"}
PACKAGE = Path(__file__).resolve().parents[1] / "python" / "mnemonix" / "consolidation"


def test_every_tensor_factory_in_the_package_names_its_device():
    """A torch factory without ``device=`` creates a CPU tensor, which crashes when it meets CUDA
    data (the class of bug of the linear probe's ``torch.ones`` / ``torch.eye``). Each call must
    pass ``device=`` or carry a ``# cpu:`` comment saying why the CPU is right there."""
    offenders = []
    for file in sorted(PACKAGE.glob("*.py")):
        source = file.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                continue
            if node.func.attr in _FACTORIES and not any(k.arg == "device" for k in node.keywords):
                if "# cpu:" not in lines[node.lineno - 1]:
                    offenders.append(f"{file.name}:{node.lineno}: torch.{node.func.attr}")
    assert offenders == []
