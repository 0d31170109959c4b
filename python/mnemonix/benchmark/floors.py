"""The physical floor of a shape, measured on this machine in the same run.

floor(shape) = max(bytes that must be read once / measured read bandwidth,
                   flops / measured GEMM rate of torch.mm in the same dtype,
                           on the CPU at least float32's).
The bandwidth is one read of a buffer (CPU: a float32 sum; CUDA: a device-to-device copy, read
+ write); the GEMM rate is a large ``torch.mm`` in the dtype. On the CPU the read is measured twice: from
memory, over a buffer twice the last-level cache (at least 128 MB), and from that cache, over a
quarter of it. A shape whose bytes fit in half the cache (a benchmark reads the same data call
after call) gets the cache's rate, a larger one memory's: with one buffer of 128 MB, a CPU with
a 480 MB L3 measured its L3 (44 GB/s) and put memory-bound kernels at 1.85x a floor they were
in fact at (25 GB/s from memory).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mnemonix.benchmark.timing import measure

_MIN_BUFFER = 128 << 20
_MAX_BUFFER = 2 << 30  # a memory read over at most 2 GB, whatever the cache reports


@dataclass(frozen=True)
class Floors:
    bandwidth: float  # bytes / s, one read from memory
    gemm_flops: float  # flop / s of torch.mm in this dtype (CPU: or in float32, if faster)
    cache_bandwidth: float | None = None  # bytes / s, one read of data the last-level cache holds
    cache_bytes: int = 0  # the last-level cache's size (0: unknown, every shape reads from memory)

    def of(self, *, bytes_read: float = 0.0, flops: float = 0.0) -> float:
        """Seconds: the larger of the memory floor (at the cache's rate while ``bytes_read`` fits
        in half the last-level cache) and the compute floor."""
        cached = self.cache_bandwidth is not None and bytes_read <= self.cache_bytes // 2
        return max(bytes_read / (self.cache_bandwidth if cached else self.bandwidth), flops / self.gemm_flops)


def last_level_cache_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The size of the CPU's last-level data cache in bytes, from Linux's sysfs (0 if unknown)."""
    best_level, size = 0, 0
    try:
        for index in root.glob("index*"):
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            value = int(text[:-1] if text[-1:] in "KMG" else text) * scale
            if level > best_level:
                best_level, size = level, value
    except (OSError, ValueError):
        return 0
    return size


_CACHE: dict[tuple[str, torch.dtype], Floors] = {}


def _read_rate(n_bytes: int, device: torch.device, dtype: torch.dtype, repeat: int) -> float:
    buf = torch.ones(n_bytes // torch.finfo(dtype).bits * 8, device=device, dtype=dtype)
    if device.type == "cuda":
        dst = torch.empty_like(buf)
        return 2 * n_bytes / measure({"copy": lambda: dst.copy_(buf)}, device, repeat=repeat)["copy"].p20
    return n_bytes / measure({"sum": lambda: buf.sum()}, device, repeat=repeat)["sum"].p20


def _gemm_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Flop / s of a large ``torch.mm`` in ``dtype``."""
    m = 4096 if device.type == "cuda" else 1024
    a = torch.randn(m, 1024, device=device, dtype=dtype)
    b = torch.randn(1024, m, device=device, dtype=dtype)
    return 2 * m * 1024 * m / measure({"mm": lambda: a @ b}, device, repeat=7)["mm"].p20


def measure_floors(device: torch.device, dtype: torch.dtype = torch.float32) -> Floors:
    """Bandwidth and GEMM rate of ``device`` (cached per device and dtype for the process)."""
    key = (str(device), dtype)
    if key in _CACHE:
        return _CACHE[key]
    if device.type == "cpu" and dtype != torch.float32:
        # the CPU's reads are float32 sums whatever the dtype: float32's; and a CPU without a unit
        # for the dtype converts (torch's float16 mm on an AVX-512 EPYC: ~1/50 of its float32
        # rate) where the kernels compute such operands in float32: the faster GEMM rate
        base = measure_floors(device, torch.float32)
        _CACHE[key] = replace(base, gemm_flops=max(_gemm_rate(device, dtype), base.gemm_flops))
        return _CACHE[key]
    cache_bandwidth, cache_bytes = None, 0
    if device.type == "cuda":
        bandwidth = _read_rate(512 << 20, device, dtype, 15)
    else:  # a float32 sum: bytes are bytes, and a 16-bit sum converts (float16: 2x slower)
        cache_bytes = last_level_cache_bytes()
        bandwidth = _read_rate(min(_MAX_BUFFER, max(_MIN_BUFFER, 2 * cache_bytes)), device, torch.float32, 7)
        if cache_bytes >= 4 << 20:
            cache_bandwidth = _read_rate(cache_bytes // 4, device, torch.float32, 7)
    floors = Floors(bandwidth=bandwidth, gemm_flops=_gemm_rate(device, dtype), cache_bandwidth=cache_bandwidth,
                    cache_bytes=cache_bytes)
    _CACHE[key] = floors
    return floors
