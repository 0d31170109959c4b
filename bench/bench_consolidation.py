"""pytest-benchmark suite of the consolidation model (small sizes; see compare_consolidation.py
for the paper-scale Hopfield stage). Run: ``pytest bench/bench_consolidation.py``."""

from __future__ import annotations

import pytest
import torch

from mnemonix.consolidation import LargeVAE, TinyVAE, build_hopfield, load_digits, make_shapes3d, replay_from_noise


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_replay_digits_1000_from_noise(benchmark, digits):
    hop = build_hopfield(digits.images[:1000])
    benchmark(lambda: replay_from_noise(hop, 1000, digits.image_shape, batch_size=1000))


@pytest.mark.parametrize("n", [256, 1024])
def test_replay_shapes_from_noise(benchmark, n):
    scenes = make_shapes3d(n, seed=0)
    hop = build_hopfield(scenes.images)
    benchmark(lambda: replay_from_noise(hop, n, scenes.image_shape, batch_size=512))


def _train_step(vae, x):
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    vae.train()

    def step():
        loss, _ = vae.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def test_tiny_vae_train_step_batch64(benchmark, digits):
    benchmark(_train_step(TinyVAE(), digits.images[:64]))


def test_large_vae_train_step_batch32(benchmark):
    benchmark(_train_step(LargeVAE(), make_shapes3d(32, seed=0).images))


def test_render_shapes_100(benchmark):
    benchmark(lambda: make_shapes3d(100, seed=0))
