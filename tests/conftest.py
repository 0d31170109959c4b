"""Test configuration: where Triton runs, GPU markers, shared fixtures.

The rule for Triton in tests (the whole suite must pass on a CPU machine *and* on a CUDA one):

- Without CUDA, Triton kernels run in the interpreter on CPU tensors (``TRITON_INTERPRET=1``,
  set here before any kernel module is imported: Triton reads it when a kernel is decorated).
- With CUDA, the interpreter is off and kernels are compiled: a compiled kernel given CPU
  tensors would read host pointers as device addresses. So a test that forces
  ``backend="triton"`` (or calls a Triton launcher) puts its inputs on the ``triton_device``
  fixture's device -- CUDA when present, else the CPU -- and compares results on the CPU.
- Tests marked ``gpu`` need a real CUDA device and skip, with a reason, without one.
- Tests under the ``fake_device`` fixture (:func:`mnemonix.testing.fake_cuda`) run Triton in
  the interpreter inside a fake CUDA device; they skip, with a reason, where kernels are
  compiled (a CUDA machine), whose own ``gpu`` tests cover the same ground for real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Speed policies use their shipped thresholds in tests, whatever `mnemonix bench calibrate`
# measured on this machine (tests of the calibration set the variable themselves).
os.environ["MNEMONIX_CALIBRATION"] = "default"

TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # The marker, not ``item.keywords``: keywords also hold folder names (a checkout under gpu/).
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> torch.Generator:
    """A seeded CPU generator; tests draw fresh inputs from it.

    The seed is fresh on every run (``MNEMONIX_TEST_SEED`` fixes it) and a failing test's report
    shows it, so a failure drawn once in CI can be replayed.
    """
    fixed = os.environ.get("MNEMONIX_TEST_SEED")
    seed = int(fixed) if fixed else int.from_bytes(os.urandom(4), "little")
    request.node.add_report_section("setup", "rng", f"MNEMONIX_TEST_SEED={seed}")
    return torch.Generator().manual_seed(seed)


def triton_device_for(backend: str | None = "triton") -> torch.device:
    """Where a test's inputs must live for ``backend``: CUDA for Triton when CUDA exists, else the CPU."""
    return torch.device("cuda") if HAS_CUDA and backend == "triton" else torch.device("cpu")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test: on small inputs a parallel region costs more than the work
    (on a shared 2-core box above all). Modules use it with ``pytestmark = usefixtures``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def triton_device() -> torch.device:
    """The device on which forced Triton backends run here (see the module docstring)."""
    return triton_device_for("triton")


@pytest.fixture
def fake_device() -> Iterator:
    """A strict :func:`mnemonix.testing.fake_cuda` around the test (Triton interpreted inside)."""
    if not TRITON_INTERPRETED:
        pytest.skip("fake_cuda runs Triton in the interpreter; here kernels are compiled for the real GPU")
    from mnemonix.testing import fake_cuda

    with fake_cuda() as fc:
        yield fc
