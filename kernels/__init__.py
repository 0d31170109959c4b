"""Triton kernels of mnemonix (device code only), installed as ``mnemonix.kernels``.

Each module holds one kernel family: the kernel, its inner-loop helpers and
the launcher that picks block sizes. Modules here import Triton at top level,
so import them only through :func:`mnemonix._triton.load_kernels`.
Every Triton feature used must exist in Triton 3.6 (the GPU machines' version).
"""
