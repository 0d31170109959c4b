"""Generative consolidation (Spens & Burgess 2024): Hopfield replay trains a VAE.

A modern Hopfield network (:class:`mnemonix.hopfield.ModernHopfield`, the "hippocampus")
stores items in one shot; replay from random noise (batched through the fused
:func:`mnemonix.ops.hopfield_retrieve`) trains a VAE (the "neocortex"), whose latent space
then supports semantic decoding, interpolation, vector arithmetic, and prototypical and
boundary distortions. The extended model stores ``[poorly predicted sensory residual, VAE
latent]`` traces in a Hopfield network.

Modules: :mod:`.data` (digits, procedural Shapes3D, local MNIST/Shapes3D), :mod:`.vae`
(large/small/tiny VAEs, save/load), :mod:`.teacher_student` (replay + training),
:mod:`.analysis` (numbers + figures), :mod:`.extended` (sensory + conceptual traces),
:mod:`.pipeline` (the whole simulation, used by ``mnemonix consolidate``), :mod:`.tensor_file`
(the checksummed safetensors-layout file behind :func:`save_vae` / :func:`load_vae`, VAE format
version 2).

Devices: ``run_teacher_student``, ``run_pipeline`` and ``load_vae`` take ``device=None``, which
means CUDA when available, else the CPU. Methods of models (``VAE``, ``ExtendedModel``,
``LinearProbe``) require their inputs on the model's device (ValueError otherwise); the analysis
functions and ``threshold_sweep`` move their data to the VAE's device.
"""

from __future__ import annotations

from mnemonix.consolidation.analysis import (
    boundary_extension,
    interpolation,
    latent_space_2d,
    prototypical_distortion,
    vector_arithmetic,
)
from mnemonix.consolidation.data import (
    SHAPES3D_FACTORS,
    ImageDataset,
    load_dataset,
    load_digits,
    load_mnist,
    load_shapes3d,
    make_shapes3d,
    render_scene,
    render_scenes,
    sample_factors,
)
from mnemonix.consolidation.extended import ExtendedModel, ExtendedRecall, SweepRow, Traces, threshold_sweep
from mnemonix.consolidation.pipeline import run_pipeline
from mnemonix.consolidation.teacher_student import (
    DEFAULT_BETA,
    ConsolidationConfig,
    EpochLog,
    LinearProbe,
    Replay,
    TeacherStudentResult,
    build_hopfield,
    replay_from_noise,
    run_teacher_student,
    train_vae,
)
from mnemonix.consolidation.vae import VAE, LargeVAE, SmallVAE, TinyVAE, build_vae, load_vae, save_vae, vae_for

__all__ = [
    "DEFAULT_BETA", "SHAPES3D_FACTORS", "VAE", "ConsolidationConfig", "EpochLog", "ExtendedModel", "ExtendedRecall",
    "ImageDataset", "LargeVAE", "LinearProbe", "Replay", "SmallVAE", "SweepRow", "TeacherStudentResult", "TinyVAE",
    "Traces", "boundary_extension", "build_hopfield", "build_vae", "interpolation", "latent_space_2d",
    "load_dataset", "load_digits", "load_mnist", "load_shapes3d", "load_vae", "make_shapes3d",
    "prototypical_distortion", "render_scene", "render_scenes", "replay_from_noise", "run_pipeline",
    "run_teacher_student", "sample_factors", "save_vae", "threshold_sweep", "train_vae", "vae_for",
    "vector_arithmetic",
]
