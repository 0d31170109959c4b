"""Speed-policy thresholds: measured on this machine by ``mnemonix bench calibrate``, else shipped.

The speed policies of :mod:`mnemonix.ops` (never their capability checks: a threshold only
reorders the backends that *can* run the inputs) read their crossovers here, from the first
of:

1. ``MNEMONIX_CALIBRATION=path``: a file written by ``mnemonix bench calibrate --out path``
   (``MNEMONIX_CALIBRATION=default`` forces the shipped defaults; the test suite sets it);
2. the per-user file that ``mnemonix bench calibrate`` writes by default,
   ``$XDG_CACHE_HOME/mnemonix/calibration-<device name>.json`` (``~/.cache`` without
   ``XDG_CACHE_HOME``);
3. the shipped thresholds (:func:`shipped`): :data:`DEFAULTS`, the constants measured on the
   2-core AMD EPYC development machine (bench/NOTES.md), with the overrides of the first
   :data:`CPU_PROFILES` entry whose pattern the CPU's name matches (CPUs measured since).
   ``MNEMONIX_CALIBRATION=default`` gives :data:`DEFAULTS` alone, whatever the CPU, so that the
   tests see the same policy on every machine.

A file gives the thresholds of one device type (``"device": "cpu"`` or ``"cuda"``); keys it
leaves out keep their shipped value. A bad file named by ``MNEMONIX_CALIBRATION`` raises
:class:`mnemonix._io.FormatError` naming the file and field (the user asked for it
explicitly); a bad per-user file gives a warning once and the defaults (a stale cache must not
break every call). Resolved once per process and device type (and value of the variable);
:func:`reload` forgets it.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from mnemonix._io import FormatError

__all__ = ["ENV", "FORMAT", "VERSION", "DEFAULTS", "CPU_PROFILES", "GPU_GUESSES", "thresholds", "policy_memo",
           "shipped", "user_path", "validate", "reload"]

ENV = "MNEMONIX_CALIBRATION"
FORMAT = "mnemonix-calibration"
VERSION = 1

# Shipped thresholds per device type: op -> name -> value (non-negative integers).
# CPU: the backend grid on the 2-core AMD EPYC development machine (bench/NOTES.md, "Backend
# grid"; N 1e3..1e6, d 32..12,288, B 1..4,096, every backend forced), refit after the C++
# kernel put the queries across the lanes (from B = 16, d <= 256) and split the queries over
# the threads on stores under 2,048 rows (bench/NOTES.md, "Query lanes"): the single-read C++
# kernel leads up to B = 32 for narrow keys (d <= 48) on any store; on cache-sized stores of
# wider keys (< 4 MB) up to B = 64 while B x d <= 8,192, and always up to B = 16 (side by side
# at N = 1e3: d = 128, B = 64: 282 us against flash 306; d = 1,024, B = 16: 836 against 975;
# d = 512, B = 32 lost, 696 against 625); on stores under 2,048 rows (the query split) of keys
# 8 wide or wider, narrow ones too, up to B = 256 while B x d <= 8,192 (N = 1e3, d = 32,
# B = 256: 337 us against flash 363; d = 64, B = 128: 264 against 344; d = 4 lost, 586 against
# 336); up to B = 32 on larger ones; past it torch's flash
# kernel (sdpa), except the blocked GEMM path once d >= 4,096 (GEMM-bound) and for narrow keys
# up to gemm_max_batch while B x N <= gemm_max_scores (no batch today: the C++ kernel covers
# them). No B x d cap on stores that stream (cpp_large_store_max_dims: above every batch that
# cpp_max_batch_large_store allows; the Xeon profile sets one), and no wide-key GEMM rule
# (gemm_wide_min_dim above every d: on this CPU the flash kernel led at d = 1,024, B >= 64).
# These EPYC values predate the flash kernel over key parts (split-K), which makes it faster at
# small batches: its crossovers with the C++ kernel are unmeasured there (bench/NOTES.md).
# salience_topk: the exact C++ recall up to B = 64 at any N (it splits the keys over the
# threads when B is small or the keys outgrow the caches), up to B = 256 for keys of d <= 32
# (B = 256: 0.46-0.67x the GEMM-fed recall's time at N = 1e4..1e6, 0.83-1.11x at N = 1e3;
# B = 512 won at N = 1e4 but lost at N = 1e3, 1.14x; B = 1,024 lost, 1.03-1.35x),
# and while B x N x d <= 2^18; the same recall fed by torch's GEMM beyond (bench/NOTES.md,
# "Salience" and "Few rows").
DEFAULTS: dict[str, dict[str, dict[str, int]]] = {
    "cpu": {
        "hopfield_retrieve": {"cpp_max_batch": 64, "cpp_small_store_max_dims": 8192,
                              "cpp_small_store_min_batch": 16, "cpp_max_batch_large_store": 32,
                              "cpp_max_batch_narrow": 32, "cpp_few_rows": 2048, "cpp_few_rows_min_dim": 8,
                              "cpp_max_batch_few_rows": 256,
                              "cpp_large_store_bytes": 4 << 20, "cpp_large_store_max_dims": 1 << 20,
                              "narrow_dim": 48, "gemm_max_batch": 32,
                              "gemm_max_scores": 2_000_000, "gemm_min_dim": 4096,
                              # ... from this batch on (past the C++ kernel's; 0: every batch there)
                              "gemm_min_batch": 0,
                              "gemm_wide_min_dim": 1 << 20, "gemm_wide_min_batch": 64,
                              # the query-lane scan (8 lanes wide with AVX2, 16 with AVX-512) up to
                              # this batch past the rules above: off in these defaults (the CPU
                              # profiles below set it where it was measured)
                              "cpp_lane_max_batch": 0,
                              # ... for keys and values up to this wide (the kernel's lanes take
                              # up to 4,096; measured against the flash kernel to 256 on the Xeon)
                              "cpp_lane_max_dims": 256,
                              # ... and on stores that stream (past cpp_large_store_bytes) of
                              # cpp_few_rows rows or more, up to this wide while B <=
                              # cpp_max_batch_large_store too (0: no such rule; the Xeon profile
                              # sets one)
                              "cpp_lane_max_dims_large_store": 0,
                              # ... from this batch: below 16 queries a 16-lane vector runs half
                              # empty, and on the Xeon the split flash kernel led at d = 512
                              # (N = 1e4, B = 8: 1.00 ms against 1.14; N = 1e5: 16.6 against 19.4)
                              # and on 40 MB at d = 1,024 (2.43 against 2.7-2.9), though the lanes
                              # led at d = 2,048 (N = 1e4: 4.7 against 7.0) and from 120 MB at
                              # d = 1,024 (8.2 against 10.2; bench/NOTES.md, "Query lanes from 8")
                              "cpp_lane_min_batch_large_store": 16,
                              # ... but from the kernel's first lane batch on keys of this many bytes
                              # or more (0: no such rule; the Xeon profile sets one)
                              "cpp_lane_first_batch_min_bytes_large_store": 0,
                              # ... and past cpp_max_batch_large_store while B x max(d, dv) <= this,
                              # float32 only (0: no such rule; the Xeon profile sets one)
                              "cpp_lane_max_work_large_store": 0,
                              # ... and on stores of fewer than cpp_few_rows rows, float32 keys and
                              # values up to this wide at B = 16 or from 32 (0: no such rule; the Xeon
                              # profile sets one)
                              "cpp_lane_max_dims_few_rows": 0,
                              # 16-bit operands (bench/NOTES.md, "16-bit operands"): the Xeon's
                              # float16 fit, whose flash kernel has no 16-bit GEMM unit to use
                              # (unmeasured on the EPYC, which has none for either dtype)
                              "cpp_max_batch_narrow_float16": 32, "cpp_max_dims_float16": 512,
                              "cpp_min_batch_float16": 1, "cpp_min_bytes_float16": 0,
                              "cpp_max_batch_narrow_bfloat16": 32, "cpp_max_dims_bfloat16": 512,
                              "cpp_min_batch_bfloat16": 1, "cpp_min_bytes_bfloat16": 0,
                              "cpp_lane_max_batch_float16": 0, "cpp_lane_max_batch_bfloat16": 0,
                              # ... and up to this batch on keys of cpp_min_bytes_<dtype> or more
                              # (d, dv <= cpp_lane_max_dims; 0: no such rule)
                              "cpp_lane_max_batch_large_float16": 0, "cpp_lane_max_batch_large_bfloat16": 0,
                              # keys up to this wide take the row scan's B x d rule on keys under
                              # cpp_min_bytes_<dtype> too (0: none; that bound is 0 here anyway)
                              "cpp_row_scan_max_dim_float16": 0, "cpp_row_scan_max_dim_bfloat16": 0,
                              # 1: torch's flash kernel runs bfloat16 operands over key parts where
                              # it has fewer query blocks than threads, as it does float32 ones
                              # (backends.hopfield.flash_key_parts), merged in float32 (0: unsplit;
                              # the Xeon profile sets it)
                              "flash_split_bfloat16": 0,
                              # ... and then takes bfloat16 calls of 4..32 queries with B x d >= 512
                              # from the C++ kernel on keys of this many rows or more, under this
                              # many bytes (ops.hopfield._flash_split_first; the Xeon profile sets them)
                              "cpp_split_min_rows_bfloat16": 0, "cpp_split_max_bytes_bfloat16": 0,
                              # bfloat16 on AMX tiles (backends.hopfield_amx, where the CPU has
                              # them): batches of amx_min_batch..amx_max_batch queries, and from keys
                              # amx_wide_dim wide amx_wide_min_batch..amx_wide_max_batch
                              # (ops.hopfield._amx_first; 0: never; the Xeon profile sets them)
                              "amx_min_batch_bfloat16": 0, "amx_max_batch_bfloat16": 0,
                              "amx_wide_dim_bfloat16": 0, "amx_wide_min_batch_bfloat16": 0,
                              "amx_wide_max_batch_bfloat16": 0,
                              # ... and from this batch on keys of amx_large_min_bytes or more
                              "amx_min_batch_large_bfloat16": 0, "amx_large_min_bytes_bfloat16": 0,
                              # ... and from this batch on keys under amx_small_max_bytes
                              "amx_min_batch_small_bfloat16": 0, "amx_small_max_bytes_bfloat16": 0,
                              # ... and up to this batch on keys of amx_stream_min_bytes or more
                              "amx_stream_max_batch_bfloat16": 0, "amx_stream_min_bytes_bfloat16": 0},
        "salience_topk": {"cpp_max_batch": 64, "cpp_max_work": 1 << 18, "narrow_dim": 32,
                          "cpp_max_batch_narrow": 256, "gemm_chunk_scores": 384 << 10},
    },
    "cuda": {},  # Triton first at every shape: no CUDA speed policy has a threshold yet
}

# Shipped overrides of DEFAULTS["cpu"] for other CPUs: (regular expression searched in the CPU's
# name, as benchmark.environment.device_name gives it, {op: {threshold: value}}); the first
# match applies. Each comes from the grids on such a machine (bench/NOTES.md, "Intel Xeon").
CPU_PROFILES: tuple[tuple[str, dict[str, dict[str, int]]], ...] = (
    # 2-core Intel Xeon VM (AVX-512; MKL's GEMM ~300 GFLOP/s, 22 GB/s): the GEMM-fed paths win
    # from smaller batches than on the EPYC (bench/NOTES.md, "Intel Xeon").
    (r"Intel\(R\) Xeon", {
        # salience: C++ recall up to B = 16 (B = 64: 1.29-2.06x the GEMM-fed recall's time, but
        # 0.76 at N = 1e3, d = 32, which cpp_max_work keeps), narrow keys too (d = 32, B = 16:
        # 0.63-0.82; B = 64 lost from N = 1e4); the GEMM-fed recall's chunks of 1.5 M scores
        # (6 MB: the selection reads them from this VM's L3) for keys of d >= 128 too, not 384 k
        # (N = 1e4, d = 128, B = 1,024: 26.8 ms against 30.4; N = 1e5, B = 256: 53.2 against 57.4;
        # N = 1e3: within 4%)
        # cpp_max_work 2^23 keeps the C++ recall at N = 1e3, d = 128, B = 64 (0.85-0.92x the
        # GEMM-fed recall's time in four grids; N = 1e3, d = 32, B = 256, also at 8.2 M
        # multiply-adds: 0.78-1.15x, a tie)
        "salience_topk": {"cpp_max_batch": 16, "cpp_max_work": 1 << 23, "cpp_max_batch_narrow": 16,
                          "gemm_chunk_scores": 1536 << 10},
        # hopfield, refit once the flash kernel took small batches over key parts (split-K): on
        # stores that stream, B x d <= 256 (N = 1e4, d = 128, B = 4: cpp 0.406 ms against flash
        # 0.355; N = 1e5, d = 32, B = 8: 1.75 against 1.20), narrow keys up to B = 4 (N = 1e4,
        # d = 32, B = 8: 0.187 against 0.145); on cache-sized ones B x d <= 2,048 with no batch
        # always allowed, up to B = 32 on few rows (N = 1e3: d = 1,024, B = 4: 0.393 against
        # 0.350; d = 32, B = 32: 0.069 against 0.082)
        # and the GEMM path for keys of d >= 1,024 on cache-sized stores from B = 64 while
        # B x N <= gemm_max_scores, where the flash kernel runs unsplit (N = 1e3, d = 1,024,
        # B = 64: 1.48 ms against 1.59; B = 256: 4.80 against 4.98; B = 32, split: 0.893 against
        # GEMM 1.03); never for narrow keys past the C++ kernel (gemm_max_batch at its batch: the
        # split flash kernel leads there, N = 1e4, d = 32, B = 8: 0.145 ms against GEMM 0.255)
        # Refit on cache-sized stores with shapes the grid lacks (bench/NOTES.md, "Cache-sized
        # stores"): many rows keep the C++ kernel at B = 1 only (cpp_max_batch; N = 1e4, d = 64,
        # B = 2: 0.073 ms against split flash 0.066, B = 16: 0.358 against 0.239; N = 3,000,
        # d = 96, B = 2: 0.040 against 0.033), few rows while B x d <= 256 and always B = 1
        # (N = 1e3, d = 64, B = 4: 19.4 against 23.4 us; d = 128, B = 4: 30.9 against 26.4), narrow
        # keys to B = 2 (N = 1e4, d = 32, B = 3: 0.083 against 0.065; N = 1e5, B = 4: 0.78
        # against 0.62; N = 1e6, B = 4: 8.3 against 9.6, the one loss, still 0.54x SDPA)
        # With AVX-512 the C++ kernel's query-lane scan runs 16 lanes wide, ~2x faster (bench/NOTES.md,
        # "AVX-512 query lanes"): from B = 16 to 128 (d, dv <= 256) it takes the call again, at
        # 0.63-1.26x the time of the best of our other backends over 48 shapes (N = 1e3..1e5,
        # d = 32..256, geometric mean 0.93); from B = 256 the flash kernel's GEMMs lead
        "hopfield_retrieve": {"cpp_large_store_max_dims": 256, "cpp_max_batch_narrow": 2, "gemm_max_batch": 2,
                              "cpp_lane_max_batch": 128,
                              "cpp_small_store_max_dims": 256, "cpp_small_store_min_batch": 1,
                              "cpp_max_batch": 1, "cpp_max_batch_few_rows": 32, "gemm_wide_min_dim": 1024,
                              # bfloat16: the flash kernel's GEMMs run on AMX here (N = 1e4, d = 1,024,
                              # B = 1: 0.68 ms against the C++ kernel's 1.63), so the C++ kernel keeps
                              # narrow keys and stores of 64 MB up to B x d = 512 (N = 1e6, d = 128,
                              # B = 4: 37 against 53 ms)
                              "cpp_min_batch_bfloat16": 0, "cpp_min_bytes_bfloat16": 64 << 20,
                              # float16: the 16-lane scan while torch's flash kernel runs one task
                              # (B <= 32: 16-bit calls are not split over the keys), at 0.47-0.86x
                              # its time from N = 1e4 (B = 16; N = 1e3, d >= 128: 1.13-1.23x), and
                              # since the lane scan transposes its queries once per scan, up to
                              # B = 192 (d <= 256: 0.61-1.02x over 27 shapes, N = 1e3..1e6; B = 256
                              # 0.84-1.17x; bench/NOTES.md, "float16 lanes to B = 192"). bfloat16:
                              # AMX wins even there
                              "cpp_lane_max_batch_float16": 192,
                              # ... and wider float16 keys while B x d <= 64k (the row scan, the lanes
                              # from B = 8): d = 512..4,096 at B = 2-4 took 0.45-0.87x the flash
                              # kernel's time at every N = 1e3..1e5 (27 of 27 shapes; d = 8,192-12,288
                              # too, 0.50-0.75x), B = 16-64 at d = 512..2,048 0.64-0.95x (N = 1e3,
                              # d = 2,048, B = 32: 1.04), B = 8 a tie (0.59-1.10); d = 8,192, B = 16 lost
                              # (1.29-1.63x; bench/NOTES.md, "float16: wide keys to B x d = 64k"); no
                              # further than the lanes' 192 (d = 128, B = 256 lost: 1.09-1.18x)
                              "cpp_max_dims_float16": 64 << 10,
                              # bfloat16 on stores of 64 MB or more (cpp_min_bytes_bfloat16): the lanes
                              # to B = 64, where one read of the keys serves 16 queries at a time and
                              # AMX's GEMMs read them per block of queries (N = 1e6, d = 128, B = 16:
                              # 0.66-0.68x; B = 32 0.82-0.85; B = 64 0.59-0.61, two grids; d = 32,
                              # 61 MiB, just under: B = 64 0.63-0.68; bench/NOTES.md, "bfloat16 lanes
                              # on large stores"). Smaller stores were mixed (N = 1e5, d = 128, B = 64:
                              # 1.11-1.18x), as were wider keys (N = 1e5, d = 1,024, B = 32: 1.40-1.49x)
                              "cpp_lane_max_batch_large_bfloat16": 64,
                              # ... and on smaller stores keys up to d = 128 take the row scan while
                              # B x d <= 512 (cpp_max_dims_bfloat16): d = 128, B <= 4 led the flash
                              # kernel at every N (0.53-1.01x over three grids; N = 1e4, B = 1:
                              # 0.75-0.87x), d = 64, B = 8 too (0.84x), where d = 256 and 512 at
                              # B = 1 lost (1.10-1.76x; bench/NOTES.md, "bfloat16 row scan on
                              # smaller stores")
                              # (to d = 256 since the split: d = 256, B = 2 took 0.74-0.79x the
                              # split flash kernel's time at N = 1e4..1e5, 0.59x at N = 1e3)
                              "cpp_row_scan_max_dim_bfloat16": 256,
                              # ... and since the lanes start at B = 8 (one group to 16 on small
                              # stores), while B x d <= 1,024, not 512: d = 64 to B = 16 (0.57-0.72x
                              # the flash kernel's time at N = 1e3..1e5, B = 8-16), d = 128 at B = 8
                              # (0.90-0.97x), and on stores of 64 MiB or more d = 512 to B = 2
                              # (N = 1e5: 0.48x), d = 1,024 at B = 1 (a tie). B x d = 2,048 went too
                              # far: N = 1e5, d = 2,048, B = 1 1.12x, N = 1e3, d = 100, B = 20 1.35x
                              # (two lane groups of 16 and 4 queries, one per thread), d = 256, B = 8
                              # 1.14-1.18x (bench/NOTES.md, "bfloat16: B x d to 1,024")
                              "cpp_max_dims_bfloat16": 1024,
                              # bfloat16 on the flash kernel over key parts (one query block of 32
                              # runs on one thread): 0.55-0.92x the unsplit kernel's time at
                              # N = 1e3..1e5, d = 128..12,288, B = 4..32 (N = 1e4, d = 128, B = 16:
                              # 0.29 ms against 0.53; bench/NOTES.md, "bfloat16 on the flash kernel
                              # over key parts"); float16 lost (1.1-1.4x), its kernel has no AMX
                              "flash_split_bfloat16": 1,
                              # ... which then outruns the C++ row scan from 5,000 rows under 64 MiB
                              # at B = 4..32, B x d >= 512: N = 1e4..1e5, d = 64..256, 0.55-0.89x the
                              # C++ kernel's time (N = 1e4, d = 128, B = 8: 0.30 ms against 0.52);
                              # at N = 1e3 it lost (1.04-1.49x), on 77-128 MiB (1.05-1.22x at
                              # d = 64..128, B = 4) and at B <= 2 (d = 256: 1.29-1.35x; bench/NOTES.md,
                              # "bfloat16: the policy after the split")
                              "cpp_split_min_rows_bfloat16": 5000, "cpp_split_max_bytes_bfloat16": 64 << 20,
                              # bfloat16 on AMX tiles, float32 logits and sums (the weights as two
                              # bfloat16 terms): at B = 32..64 it took 0.47-0.96x the time of the
                              # policy's choice before at d = 32..128 (N = 1e3..1e6; N = 1e6, d = 32,
                              # B = 32: 1.00), B = 16 0.69-0.98x once a lone query tile had its own
                              # blocking (N = 1e3, d = 128: 59 us against 86); from d = 1,024 at
                              # B = 64..256 0.26-0.96x (N = 1e5, d = 1,024, B = 64: 53 ms against 205;
                              # N = 1e4, d = 12,288, B = 100: 122 against 379); B = 16..32 at
                              # d = 1,024 tied or lost (0.98-1.22x), B >= 1,024 lost everywhere
                              # (1.14-1.98x), and d <= 128 at B = 256 but two (1.02-1.12x); B = 8
                              # tied or lost (1.0-1.11x; bench/NOTES.md, "bfloat16 on AMX tiles")
                              "amx_min_batch_bfloat16": 16, "amx_max_batch_bfloat16": 64,
                              "amx_wide_dim_bfloat16": 1024, "amx_wide_min_batch_bfloat16": 64,
                              "amx_wide_max_batch_bfloat16": 256,
                              # ... and on keys of 128 MiB or more from B = 4: N = 1e5, d = 1,024,
                              # B = 4..32 0.76-0.93x (4: 23.9 ms against 31.5), N = 1e6, d = 128,
                              # B = 4..16 1.00-0.79x; B = 1 lost (1.66x: the packing)
                              "amx_min_batch_large_bfloat16": 4, "amx_large_min_bytes_bfloat16": 128 << 20,
                              # ... and on keys under 4 MiB from B = 8 (N = 1e3, d = 128: 39 us
                              # against 67; N = 1e3, d = 1,024, B = 8..32 0.87-0.89x; N = 1e4,
                              # d = 32..128 0.73-1.02x), where larger stores tied or lost at B = 8
                              # (N = 1e4, d = 1,024: 1.06x; N = 1e5, d = 128: 1.01x)
                              "amx_min_batch_small_bfloat16": 8, "amx_small_max_bytes_bfloat16": 4 << 20,
                              # ... and up to B = 512 on keys of 16 MiB or more, once the running out
                              # was rescaled only when a max moved by more than 8: there torch's
                              # flash kernel re-reads the keys for every block of 64 queries (N = 1e5,
                              # B = 256: d = 128 0.65-0.93x, d = 256 0.59, d = 512 0.51; N = 1e6,
                              # d = 32..128, B = 256 0.66-0.87; B = 512 0.60-0.95 from 24 MiB; N = 1e4,
                              # d = 1,024, B = 512 0.81), where B = 512 on 12 MiB lost (1.12x), B = 256
                              # on 10 MiB tied (1.04) and B = 1,024 lost even on 244 MiB (1.15-1.28;
                              # bench/NOTES.md, "AMX: conditional rescaling, a band for large stores")
                              "amx_stream_max_batch_bfloat16": 512, "amx_stream_min_bytes_bfloat16": 16 << 20,
                              # float32 keys wider than 256 on stores that stream: the lanes up to
                              # B = 32 (cpp_max_batch_large_store), at 0.43-0.93x the time of the
                              # policy's choice before (flash or GEMM) at 12 shapes, N = 3,000..1e5,
                              # d = 1,024..4,096 (N = 1e4, d = 2,048, B = 16: 6.0 ms against 9.3;
                              # N = 1e5, d = 1,024, B = 32: 47 against 67); at B = 64 they lost at
                              # d = 4,096 (1.23-1.47x) and N <= 1e4 (1.02-1.05x); on cache-sized
                              # stores at B = 16 (N = 1e3, d = 512 and 1,024: 1.26-1.28x), and on
                              # fewer rows than cpp_few_rows (N = 1e3, d = 2,048, B = 16: 1.15-1.18x).
                              # float16 takes the same rule up to its lane batch (32): 0.68-0.91x
                              # the flash kernel's time at 13 shapes, N = 3,000..1e5, d = 512..4,096
                              # (bfloat16 keeps AMX: cpp_lane_max_batch_bfloat16 is 0)
                              "cpp_lane_max_dims_large_store": 4096,
                              # ... and from B = 8 on keys of 64 MiB or more (below, from B = 16:
                              # cpp_lane_min_batch_large_store), where the half-empty lanes took
                              # 0.64-0.81x the split flash kernel's time at B = 8 (N = 1e4,
                              # d = 2,048: 6.5 ms against 8.0; d = 4,096: 12.5 against 19.5; N = 3e4,
                              # d = 1,024: 8.7 against 11.0; N = 1e5: 0.73-0.74) but 40 MB at
                              # d = 1,024 read 0.84-1.06 over four runs and d = 512 lost on 20 MB
                              # (1.04-1.20; 200 MB: 0.98-1.08; bench/NOTES.md, "Half-empty lanes on
                              # large stores")
                              "cpp_lane_first_batch_min_bytes_large_store": 64 << 20,
                              # ... and past B = 32 while B x d <= 128k (d = 1,024 to B = 128, 2,048 to
                              # 64; 4,096 stays at 32, where B = 64 lost, 1.23-1.47x): B = 64-128 at
                              # d = 1,024-2,048 took 0.76-0.95x the flash kernel's time (8 of 8 shapes,
                              # N = 1e4 and 1e5; GEMM 0.82-1.17), d = 512 tied (0.93-1.04; bench/NOTES.md,
                              # "Half-empty lanes on large stores")
                              "cpp_lane_max_work_large_store": 128 << 10,
                              # ... and on fewer than 2,048 rows (cpp_few_rows) keys up to 2,048 wide at
                              # B = 16 (one lane group whose rows the threads share) and from B = 32
                              # while B x d <= 128k as above (d = 2,048, B = 128: GEMM 4.57 ms, lanes 5.23):
                              # 0.70-0.96x the flash kernel's time at N = 1e3, d = 512-2,048, B = 16,
                              # 32-96 (21 shapes over two grids), where B = 24 took 0.99-1.15x (two
                              # lane groups, one per thread; bench/NOTES.md, "Lanes on few rows")
                              "cpp_lane_max_dims_few_rows": 2048,
                              # keys of d >= 4,096 (gemm_min_dim) take the GEMM path from B = 32 only:
                              # below it the flash kernel led (N = 3e4, d = 4,096, B = 4: 44 ms against
                              # GEMM 68; B = 8: 53 against 84; N = 1e4, d = 6,144, B = 16: 38 against
                              # 43), from it the GEMM path (N = 3,000, d = 8,192, B = 32: 19 against
                              # 25; d = 4,096, B = 48: 0.76-0.85x; B = 64: 0.87-0.95x; d = 12,288,
                              # B = 100: 0.51x; at d = 4,096, B = 32 a tie on 1e3 rows, and the
                              # lanes take stores that stream)
                              "gemm_min_batch": 32},
    }),
    # 2-core AMD EPYC of the Zen 3 generation (family 25, model 1, Milan; AVX2, no AVX-512,
    # 512 KB of L2 per core): the C++ kernel's query-lane scan, 8 lanes wide, leads the flash
    # kernel from B = 16 to 128 at d, dv <= 1,024 on every store size N = 1e3..1e6 (bench/NOTES.md,
    # "AMD EPYC, Zen 3"; cpp / flash per shape, geometric mean over three saved runs, then over
    # the shapes: B = 16 0.81, B = 32 0.93, B = 64 0.94, B = 128 0.94, the worst shape 1.13; this
    # VM's run-to-run noise is +-15%) and loses at B = 256 (1.15; up to 1.37) and at d = 2,048
    # from B = 64 (1.13-1.21); the row scan's query split on few rows stops at B = 128 (N = 1e3,
    # d = 32, B = 256: 1.10x flash)
    (r"AMD EPYC \(family 25, model 1\)", {
        "hopfield_retrieve": {"cpp_lane_max_batch": 128, "cpp_lane_max_dims": 1024, "cpp_max_batch_few_rows": 128,
                              # float16: torch's flash kernel converts (no float16 unit): the C++
                              # kernel took 0.06-0.56x its time at every shape measured (N = 1e3..1e5,
                              # d = 32..12,288, B = 1..512; d = 1,024, B = 512: 0.81x), so it takes the
                              # lanes at every batch and wider keys up to B = 256 or B x d <= 256k.
                              # bfloat16: the flash kernel's GEMMs are faster here, so the C++ kernel
                              # keeps narrow keys to B = 128 (0.83-0.98x; B = 512: 1.10x), B x d <= 8,192
                              # (d = 128, B = 32: 0.61-0.97x, B = 128: 0.93-1.03; d = 1,024, B = 8:
                              # 0.55-0.83, B = 32 lost, 1.18-1.39) and the row scan's batches (B < 16
                              # then; the lanes take B >= 8 since, 0.6x the row scan's time at 8 lanes
                              # on the Xeon, d = 2,048-4,096) at any d (d = 4,096, B = 8: 0.47);
                              # from B = 16 the 8-wide lanes lost at d = 4,096 (1.05-1.20x), though
                              # the row scan past them still led
                              # (d = 12,288, B = 16-100: 0.39-0.67x, left to flash)
                              "cpp_lane_max_batch_float16": 1 << 20, "cpp_max_dims_float16": 256 << 10,
                              "cpp_min_batch_float16": 256,
                              "cpp_max_batch_narrow_bfloat16": 128, "cpp_max_dims_bfloat16": 8192,
                              "cpp_min_batch_bfloat16": 15,
                              # float32 keys of d >= 3,072 past the C++ kernel: the GEMM path from
                              # B = 96, the flash kernel below (saved grid backend_grid-cpu-zen3-wide-keys,
                              # N = 1e3..1e4, d = 3,072..6,144, GEMM / flash time: B = 64 1.00-1.71,
                              # geometric mean 1.22; B = 128 0.78-1.08, 0.93; B = 512 0.65-0.89, 0.79;
                              # N = 1e4, d = 12,288, B = 100: 0.86). At d = 2,048 neither led below
                              # B = 512 (B = 128-256: 0.92-1.23), so the flash kernel keeps it
                              "gemm_min_dim": 3072, "gemm_min_batch": 96},
    }),
    # 2-core AMD EPYC of the Zen 5 generation (family 26; AVX-512 on full 512-bit units): the
    # C++ kernel's 16-lane scan beats every other path at every batch measured, to B = 16,384
    # (d <= 256: 0.36-0.67x the best of the flash kernel and the GEMM path over 58 shapes,
    # N = 1e3..1e6; bench/NOTES.md, "AMD EPYC, Zen 5"), and to keys and values of 4,096
    # (cpp_lane_max_dims): 0.38-0.72x the flash kernel's time from d = 300 (N = 1e4, d = 1,024,
    # B = 64: 9.0 ms against 18.5; "Wide lanes"). Past the lanes (d > 4,096) the row scan keeps
    # B <= 16 on stores that stream (it lost at B = 32 for d = 1,024: 13.8 ms against flash
    # 11.5), and the GEMM path takes cache-sized stores of d >= 1,024 from B = 256 (row scan
    # era, N = 1e3, d = 1,024, B = 256: 6.61 ms against flash 7.01)
    (r"AMD EPYC \(family 26,", {
        "hopfield_retrieve": {"cpp_lane_max_batch": 1 << 20, "cpp_lane_max_dims": 4096,
                              "cpp_max_batch_large_store": 16,
                              "gemm_wide_min_dim": 1024, "gemm_wide_min_batch": 256,
                              # float16: torch's flash kernel has no float16 unit to use here
                              # (N = 1e4, d = 128, B = 16: 8.6x the C++ kernel's time); the C++
                              # kernel takes every batch of keys up to 256 wide (the lanes: 0.27-0.40x
                              # its time at B = 1,024-4,096) and wider ones up to B = 256 or while
                              # B x d <= 256k (d = 1,024, B = 256: 0.69-0.72x; d = 12,288, B = 100:
                              # 0.45x; d = 1,024, B = 1,024 lost, 1.17-1.29x). bfloat16: its GEMMs
                              # run on AVX512-BF16, so the C++ kernel keeps the lanes, B x d <= 8,192
                              # and B <= 100 at any d (past the lanes: d = 4,096, B = 12: 0.76x;
                              # d = 12,288, B = 16: 0.69-0.73x, B = 64: 0.80-0.97x, B = 100:
                              # 0.71-0.87x, B = 256 lost, 1.95x); the lanes lose at d = 1,024,
                              # B = 4,096 (1.25x; B = 1,024: 0.88-0.96x), left to them
                              "cpp_lane_max_batch_float16": 1 << 20, "cpp_max_dims_float16": 256 << 10,
                              "cpp_min_batch_float16": 256,
                              "cpp_lane_max_batch_bfloat16": 1 << 20, "cpp_max_dims_bfloat16": 8192,
                              "cpp_min_batch_bfloat16": 100},
    }),
)

# What we expect on the GPU machines we use, marked unmeasured: the CUDA policies (Triton
# first, then torch) have no threshold, so there is nothing to override yet; their hosts'
# CPUs (16+ cores) should move the CPU crossovers up, which only `calibrate` on them can tell.
GPU_GUESSES: dict[str, dict[str, Any]] = {
    "NVIDIA H100": {"measured": False, "thresholds": {},
                    "note": "guess: Triton wins at every batch (hopfield split-N at small B, tiled at large B)"},
    "NVIDIA H200": {"measured": False, "thresholds": {},
                    "note": "guess: as H100 (same SM90 kernels, more bandwidth)"},
}

_CACHE: dict[tuple[str, str | None], dict[str, dict[str, int]]] = {}
_MEMOS: dict[tuple[str, str, str | None], dict] = {}
_WARNED: set[str] = set()
# A policy memo holds at most this many choices (then starts again): a bound for callers whose
# shapes never repeat, far above what a serving loop's few shapes need.
MEMO_MAX = 4096


def _env() -> str | None:
    """``os.environ.get(ENV)`` in ~30 ns instead of ~700 (unset, ``get`` raises and catches a
    KeyError): the policies read it on every call. ``os.environ``'s own store, which its
    ``__setitem__`` / ``__delitem__`` (and so ``monkeypatch.setenv``) keep current; the plain
    ``get`` where a Python has no such store."""
    raw = _ENVIRON_DATA.get(_ENV_KEY) if _ENVIRON_DATA is not None else None
    if raw is None:
        return None if _ENVIRON_DATA is not None else os.environ.get(ENV)
    return os.environ.decodevalue(raw)


_ENVIRON_DATA = getattr(os.environ, "_data", None)
try:
    _ENV_KEY = os.environ.encodekey(ENV)
except AttributeError:  # not CPython's os._Environ
    _ENVIRON_DATA = None


def thresholds(op: str, device: torch.device | str) -> dict[str, int]:
    """The thresholds of ``op`` for inputs on ``device`` (a device or its type, ``"cpu"``: the
    policies pass the string, since ``torch.device.type`` costs ~0.4 us per call; a dict the
    caller must not modify)."""
    return _table(device if type(device) is str else device.type, _env()).get(op, {})


def _table(device_type: str, env: str | None) -> dict[str, dict[str, int]]:
    table = _CACHE.get((device_type, env))
    if table is None:
        table = _CACHE[(device_type, env)] = _resolve(device_type, env)
    return table


def policy_memo(op: str, device_type: str) -> dict:
    """A dict in which the speed policy of ``op`` keeps the choices it made under the current
    thresholds (keyed by shape), so that a call repeating a shape costs one lookup (the
    policy's arithmetic cost ~3 us per call hot, ~30 after a kernel that evicted the caches).
    It is forgotten with the thresholds (:func:`reload`, another value of the variable); a
    policy empties it before it passes :data:`MEMO_MAX` entries."""
    key = (op, device_type, _env())
    memo = _MEMOS.get(key)
    if memo is None:
        memo = _MEMOS[key] = {}
    return memo


def reload() -> None:
    """Forget the resolved thresholds (after ``calibrate`` wrote a file, or in tests)."""
    _CACHE.clear()
    _MEMOS.clear()
    _WARNED.clear()


def user_path(device_name: str) -> Path:
    """The per-user calibration file of a device (its name made file-safe)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", device_name).strip("_") or "device"
    return root / "mnemonix" / f"calibration-{slug}.json"


def shipped(device_type: str, name: str | None = None) -> dict[str, dict[str, int]]:
    """The shipped thresholds of a device type: :data:`DEFAULTS` with the overrides of the first
    :data:`CPU_PROFILES` pattern found in ``name`` (default: this machine's device name)."""
    base = DEFAULTS.get(device_type, {})
    if device_type != "cpu":
        return base
    name = _device_name(device_type) if name is None else name
    for pattern, overrides in CPU_PROFILES:
        if re.search(pattern, name):
            return _merge(base, overrides)
    return base


def _device_name(device_type: str) -> str:
    from mnemonix.benchmark.environment import device_name

    return device_name(torch.device(device_type))


def _resolve(device_type: str, env: str | None) -> dict[str, dict[str, int]]:
    if env is not None and env.strip().lower() in ("default", "defaults"):
        return DEFAULTS.get(device_type, {})
    name = _device_name(device_type)  # read once: the profile and the per-user file
    base = shipped(device_type, name)
    if env:
        return _merge(base, _load(Path(env), device_type))
    path = user_path(name)
    if not path.is_file():
        return base
    try:
        return _merge(base, _load(path, device_type))
    except (OSError, FormatError) as exc:
        if str(path) not in _WARNED:
            _WARNED.add(str(path))
            warnings.warn(f"ignoring the calibration file {str(path)!r} ({exc}); using the shipped defaults. "
                          f"Rerun `mnemonix bench calibrate` or delete the file", stacklevel=4)
        return base


def _merge(base: dict[str, dict[str, int]], found: dict[str, dict[str, int]] | None):
    if not found:
        return base
    merged = {op: dict(values) for op, values in base.items()}
    for op, values in found.items():
        merged.setdefault(op, {}).update(values)
    return merged


def _load(path: Path, device_type: str) -> dict[str, dict[str, int]] | None:
    """The thresholds of a calibration file for ``device_type`` (None: the file is for another type)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FormatError(f"{ENV}: calibration file {str(path)!r} does not exist") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"calibration file {str(path)!r} is not JSON ({exc})") from exc
    validate(data, str(path))
    return data["thresholds"] if data["device"] == device_type else None


def validate(data: Any, where: str = "calibration") -> None:
    """Raise :class:`FormatError` naming ``where`` and the field unless ``data`` is a valid calibration."""
    def bad(field: str, expected: str, got: Any) -> FormatError:
        return FormatError(f"calibration file {where!r}: field {field!r} must be {expected}, got {got!r}")

    if not isinstance(data, dict):
        raise bad("(top level)", "an object", type(data).__name__)
    if data.get("format") != FORMAT:
        raise bad("format", repr(FORMAT), data.get("format"))
    if data.get("version") != VERSION:
        raise bad("version", str(VERSION), data.get("version"))
    if data.get("device") not in DEFAULTS:
        raise bad("device", f"one of {sorted(DEFAULTS)}", data.get("device"))
    table = data.get("thresholds")
    if not isinstance(table, dict):
        raise bad("thresholds", "an object", type(table).__name__)
    known = DEFAULTS[data["device"]]
    for op, values in table.items():
        if op not in known or not isinstance(values, dict):
            raise bad(f"thresholds.{op}", f"an object of a known op ({sorted(known)})", values)
        for name, value in values.items():
            field = f"thresholds.{op}.{name}"
            if name not in known[op]:
                raise bad(field, f"a known threshold ({sorted(known[op])})", value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(field, "an integer >= 0", value)
