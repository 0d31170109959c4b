"""The physical floor of a shape, measured on this machine in the same run.

floor(shape) = max(bytes that must be read once / measured read bandwidth,
                   flops / measured GEMM rate of torch.mm in the same dtype,
                           on the CPU at least float32's).
The bandwidth is one read of a buffer (CPU: a float32 sum; CUDA: a device-to-device copy, read
+ write); the GEMM rate is a large ``torch.mm`` in the dtype. On the CPU the read is measured
twice: from memory, over a buffer twice the last-level cache (at least 128 MB), and from that
cache, over a quarter of it (at most 16 MB, read many times in one call). A shape whose bytes fit
in half the cache (a benchmark reads the same data call after call) gets the cache's rate, a
larger one memory's: with one buffer of 128 MB, a CPU with a 480 MB L3 measured its L3 (44 GB/s)
and put memory-bound kernels at 1.85x a floor they were in fact at (25 GB/s from memory).
Shapes whose bytes fit in the cores' own caches together (the level below the last one: every
thread's L2, 4 MB on a 2-core Xeon) get that level's rate, read over a quarter of it many times
in one call: measured over the last-level cache alone, a 2.6 MB store read 1.3x faster than "its
floor" (N = 1e4, d = 64, B = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mnemonix.benchmark.timing import measure

_MIN_BUFFER = 128 << 20
_MAX_BUFFER = 2 << 30  # a memory read over at most 2 GB, whatever the cache reports
_MAX_CACHE_BUFFER = 16 << 20  # the last-level cache's read over at most this much, many times


@dataclass(frozen=True)
class Floors:
    bandwidth: float  # bytes / s, one read from memory
    gemm_flops: float  # flop / s of torch.mm in this dtype (CPU: or in float32, if faster)
    cache_bandwidth: float | None = None  # bytes / s, one read of data the last-level cache holds
    cache_bytes: int = 0  # the last-level cache's size (0: unknown, every shape reads from memory)
    core_cache_bandwidth: float | None = None  # bytes / s, one read of data the cores' own caches hold
    core_cache_bytes: int = 0  # those caches' size, all the threads' together (0: unknown)

    def of(self, *, bytes_read: float = 0.0, flops: float = 0.0) -> float:
        """Seconds: the larger of the memory floor (at the cores' caches' rate while ``bytes_read``
        fits in them, at the last-level cache's while it fits in half of that) and the compute floor."""
        if self.core_cache_bandwidth is not None and bytes_read <= self.core_cache_bytes:
            rate = self.core_cache_bandwidth
        elif self.cache_bandwidth is not None and bytes_read <= self.cache_bytes // 2:
            rate = self.cache_bandwidth
        else:
            rate = self.bandwidth
        return max(bytes_read / rate, flops / self.gemm_flops)


def _cache_levels(root: Path) -> dict[int, tuple[int, int]]:
    """The data caches in Linux's sysfs: level -> (size in bytes, CPUs sharing one copy; 1 where
    ``shared_cpu_list`` is absent). Empty if unreadable."""
    levels: dict[int, tuple[int, int]] = {}
    try:
        for index in root.glob("index*"):
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            size = int(text[:-1] if text[-1:] in "KMG" else text) * scale
            shared = index / "shared_cpu_list"
            sharing = _cpu_count(shared.read_text()) if shared.exists() else 1
            levels[int((index / "level").read_text())] = (size, sharing)
    except (OSError, ValueError):
        return {}
    return levels


def last_level_cache_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The size of the CPU's last-level data cache in bytes, from Linux's sysfs (0 if unknown)."""
    levels = _cache_levels(root)
    return levels[max(levels)][0] if levels else 0


def core_cache_bytes(threads: int, root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The size of the cache level below the last one (sysfs), times the copies ``threads``
    threads use: one per thread when each core has its own (its ``shared_cpu_list`` holds one
    CPU), else one per group of CPUs sharing it. 0 if unknown or if there is one level only."""
    levels = _cache_levels(root)
    if len(levels) < 2:
        return 0
    size, sharing = levels[sorted(levels)[-2]]
    return size * max(1, -(-max(threads, 1) // sharing))


def _cpu_count(cpu_list: str) -> int:
    """CPUs in a sysfs list such as ``0``, ``0-1`` or ``0,2-3``."""
    count = 0
    for part in cpu_list.strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


_CACHE: dict[tuple[str, torch.dtype], Floors] = {}


def _read_rate(n_bytes: int, device: torch.device, dtype: torch.dtype, repeat: int, times: int = 1) -> float:
    """Bytes / s of one read of a buffer of ``n_bytes``, read ``times`` times in one call (a
    stride-0 view: a small buffer's read would otherwise be mostly the call's own cost)."""
    buf = torch.ones(n_bytes // torch.finfo(dtype).bits * 8, device=device, dtype=dtype)
    if device.type == "cuda":
        dst = torch.empty_like(buf)
        return 2 * n_bytes / measure({"copy": lambda: dst.copy_(buf)}, device, repeat=repeat)["copy"].p20
    view = buf.expand(times, buf.numel()) if times > 1 else buf
    return times * n_bytes / measure({"sum": lambda: view.sum()}, device, repeat=repeat)["sum"].p20


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
    cache_bandwidth, cache_bytes, core_bandwidth, core_bytes = None, 0, None, 0
    if device.type == "cuda":
        bandwidth = _read_rate(512 << 20, device, dtype, 15)
    else:  # a float32 sum: bytes are bytes, and a 16-bit sum converts (float16: 2x slower)
        cache_bytes = last_level_cache_bytes()
        bandwidth = _read_rate(min(_MAX_BUFFER, max(_MIN_BUFFER, 2 * cache_bytes)), device, torch.float32, 7)
        if cache_bytes >= 4 << 20:  # over at most 16 MB (a VM's share of a host's L3 may be far less
            # than sysfs says: over 120 MB of a "480 MB" L3 a 51 MB store read 1.3x faster than its floor)
            part = min(cache_bytes // 4, _MAX_CACHE_BUFFER)
            cache_bandwidth = _read_rate(part, device, torch.float32, 7, times=max(1, (128 << 20) // part))
        core_bytes = core_cache_bytes(torch.get_num_threads())
        if core_bytes >= 256 << 10 and (cache_bandwidth is None or core_bytes < cache_bytes):
            quarter = core_bytes // 4  # read 64 MB in all
            core_bandwidth = _read_rate(quarter, device, torch.float32, 7, times=max(1, (64 << 20) // quarter))
    floors = Floors(bandwidth=bandwidth, gemm_flops=_gemm_rate(device, dtype), cache_bandwidth=cache_bandwidth,
                    cache_bytes=cache_bytes, core_cache_bandwidth=core_bandwidth, core_cache_bytes=core_bytes)
    _CACHE[key] = floors
    return floors
