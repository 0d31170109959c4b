"""The physical floor of a shape, measured on this machine in the same run.

floor(shape) = max(bytes that must be read once / measured read bandwidth,
                   flops / measured GEMM rate of torch.mm in the same dtype).
The bandwidth is one read of a large buffer (CPU: a sum; CUDA: a device-to-device copy,
read + write); the GEMM rate is a large ``torch.mm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnemonix.benchmark.timing import measure


@dataclass(frozen=True)
class Floors:
    bandwidth: float  # bytes / s, one read
    gemm_flops: float  # flop / s of torch.mm in this dtype

    def of(self, *, bytes_read: float = 0.0, flops: float = 0.0) -> float:
        """Seconds: the larger of the memory floor and the compute floor."""
        return max(bytes_read / self.bandwidth, flops / self.gemm_flops)


_CACHE: dict[tuple[str, torch.dtype], Floors] = {}


def measure_floors(device: torch.device, dtype: torch.dtype = torch.float32) -> Floors:
    """Bandwidth and GEMM rate of ``device`` (cached per device and dtype for the process)."""
    key = (str(device), dtype)
    if key in _CACHE:
        return _CACHE[key]
    n_bytes = (512 if device.type == "cuda" else 128) << 20
    buf = torch.ones(n_bytes // torch.finfo(dtype).bits * 8, device=device, dtype=dtype)
    if device.type == "cuda":
        dst = torch.empty_like(buf)
        t = measure({"copy": lambda: dst.copy_(buf)}, device, repeat=15)["copy"].p20
        bandwidth = 2 * n_bytes / t  # read + write
    else:
        t = measure({"sum": lambda: buf.sum()}, device, repeat=7)["sum"].p20
        bandwidth = n_bytes / t
    m = 4096 if device.type == "cuda" else 1024
    a = torch.randn(m, 1024, device=device, dtype=dtype)
    b = torch.randn(1024, m, device=device, dtype=dtype)
    t = measure({"mm": lambda: a @ b}, device, repeat=7)["mm"].p20
    floors = Floors(bandwidth=bandwidth, gemm_flops=2 * m * 1024 * m / t)
    _CACHE[key] = floors
    return floors
