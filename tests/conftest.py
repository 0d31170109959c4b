"""Test configuration.

Without CUDA, Triton kernels run in interpreter mode on CPU tensors
(``TRITON_INTERPRET=1``), which must be set before any kernel module is
imported. Tests marked ``gpu`` skip, with a reason, when CUDA is absent.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator; tests draw fresh inputs from it."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
