"""Test helpers that ship with mnemonix (usable by downstream projects' test suites).

- :func:`fake_cuda` (:mod:`mnemonix.testing.fake_device`): run code as if on a CUDA machine,
  on the CPU, and catch device mixes, ``.numpy()`` of device data, generators on the wrong
  device and host syncs.
"""

from mnemonix.testing.fake_device import FakeCuda, FakeDeviceError, SyncEvent, fake_cuda, is_fake_cuda

__all__ = ["FakeCuda", "FakeDeviceError", "SyncEvent", "fake_cuda", "is_fake_cuda"]
