"""``mnemonix bench calibrate``: measure the crossovers of the speed policies on this machine.

Today one policy has thresholds: ``hopfield_retrieve`` on the CPU sends a batch of at most
``cpp_max_batch`` queries (``cpp_max_batch_large_store`` once the keys of a group pass
``cpp_large_store_bytes``; ``cpp_max_batch_narrow`` at any size for keys of at most
``narrow_dim`` columns) to the fused C++ kernel, moderate ones to the blocked GEMM path (up to
``gemm_max_batch`` while B x N <= ``gemm_max_scores`` for narrow keys, from
``gemm_wide_min_batch`` under the same cap for keys of d >= ``gemm_wide_min_dim``, and from
``gemm_min_batch`` once d >= ``gemm_min_dim``), larger ones to torch's flash kernel (``sdpa``).
Calibration times the three forced backends side by side (interleaved,
:func:`mnemonix.benchmark.timing.measure`) over a sweep of batch sizes at a cache-sized store
and at a store far larger than the caches; a threshold is the swept B that best splits where a
backend's p20 beats the others (at or below it) from where it does not (a step fit, see
:func:`crossover`): the C++ kernel against the other two on each store, then the GEMM path
against the flash kernel past the C++ kernel's threshold on the cache-sized store, and (where
the kernel's query lanes are 16 wide) ``cpp_lane_max_batch`` from the batches of at least 16 on
both stores.
``cpp_max_batch_narrow``, ``cpp_small_store_max_dims`` (the B x d cap on cache-sized stores),
``cpp_small_store_min_batch`` (the batch that cap always allows), ``cpp_few_rows``,
``cpp_few_rows_min_dim`` and ``cpp_max_batch_few_rows`` (stores of few rows, where the kernel
splits the queries),
``cpp_large_store_bytes``, ``cpp_large_store_max_dims`` (the B x d cap on stores that stream),
``narrow_dim``, ``gemm_max_scores``, ``gemm_min_dim``, ``gemm_min_batch``, ``gemm_wide_min_dim``,
``gemm_wide_min_batch``, ``cpp_lane_max_dims`` and ``cpp_lane_max_dims_large_store`` (the lanes' key
widths) are not
measured (two store sizes of d = 64 and 128 cannot place them) and keep their shipped values
(:func:`mnemonix.calibration.shipped`), as do the 16-bit policy's (``cpp_*_float16``,
``cpp_*_bfloat16``: the sweep times float32 keys). Where the CPU has AMX bfloat16 tiles a third
sweep times the forced ``amx``, ``sdpa`` and ``cpp`` backends on bfloat16 keys of 10 MB
(:data:`AMX_STORE`, between the small- and large-store bands) and places the AMX band,
``amx_min_batch_bfloat16`` .. ``amx_max_batch_bfloat16``, as the swept interval of batches that
best explains where ``amx`` wins (:func:`interval`); its other bands (``amx_wide_*``,
``amx_*_large``, ``amx_*_small``, ``amx_stream_*``) keep their shipped values. ``salience_topk`` on the CPU
sends calls of at most ``cpp_max_work``
screened multiply-adds (B x N x d) to the exact C++ recall and larger ones to the same recall
fed by torch's GEMM (``gemm``), except batches of at most ``cpp_max_batch`` queries (not
measured: always ``cpp``; nor ``cpp_max_batch_narrow`` for keys of at most ``narrow_dim``
features): its sweep times them (and the torch path) over a ladder of work
sizes at B = 1 and B = 256 and fits the step on the work of the batches past
``cpp_max_batch``. On CUDA the Hopfield sweep times ``triton`` against ``torch``
and records them, but no CUDA policy has a threshold to write.

The file (:mod:`mnemonix.calibration` reads it) holds the thresholds, every measurement, and
the environment of the run (device name, versions, commit).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mnemonix import _io, calibration, ops
from mnemonix.backends import hopfield as hb
from mnemonix.backends import hopfield_amx
from mnemonix.backends.salience_cpp import core_salience
from mnemonix.benchmark import environment
from mnemonix.benchmark.timing import measure
from mnemonix.ops import hopfield as hops
from mnemonix.ops import salience as salience_op

# (N, d) of float32 keys: 2 MB (in the caches' reach, < 4 MB) and 154 MB (far beyond them).
DEFAULT_STORES = {"small": (8_000, 64), "large": (300_000, 128)}
DEFAULT_BATCHES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
OP = "hopfield_retrieve"
# (N, d) of the bfloat16 keys the AMX band is placed on (10 MB: past the Xeon profile's small-store
# band, under its stream band), and the batches swept there
AMX_STORE = (40_000, 128)
AMX_BATCHES = (4, 8, 16, 32, 64, 128, 256)
_AMX_BAND = ("amx_min_batch_bfloat16", "amx_max_batch_bfloat16")
_AMX_SHIPPED = ("amx_wide_dim_bfloat16", "amx_wide_min_batch_bfloat16", "amx_wide_max_batch_bfloat16",
                "amx_min_batch_large_bfloat16", "amx_large_min_bytes_bfloat16", "amx_min_batch_small_bfloat16",
                "amx_small_max_bytes_bfloat16", "amx_stream_max_batch_bfloat16", "amx_stream_min_bytes_bfloat16")


def _capable(device: torch.device, names: Sequence[str], keys: torch.Tensor, queries: torch.Tensor) -> list[str]:
    inputs = hops.HopfieldInputs(queries, keys, None, None, 1.0, False, False)
    return [n for n in names if not hops.SPEC.backend(n).not_supported_reasons(inputs)]


def sweep(n: int, d: int, batches: Sequence[int], device: torch.device, *, repeat: int = 7,
          budget_s: float = 3.0, dtype: torch.dtype = torch.float32,
          wanted: Sequence[str] | None = None) -> dict[str, Any]:
    """p20 and p50 (seconds) of each capable backend of ``hopfield_retrieve`` (of ``wanted``;
    default: the device's float32 candidates) at every batch size, on operands of ``dtype``."""
    gen = torch.Generator(device=device).manual_seed(n + d)
    keys = (torch.rand(n, d, generator=gen, device=device) * 2 - 1).to(dtype)
    beta = 1.0 / math.sqrt(d)
    if wanted is None:
        wanted = ("triton", "torch") if device.type == "cuda" else ("cpp", "gemm", "sdpa")
    rows = []
    for b in batches:
        queries = (torch.rand(b, d, generator=gen, device=device) * 2 - 1).to(dtype)
        names = _capable(device, wanted, keys, queries)
        candidates: dict[str, Callable[[], object]] = {
            name: (lambda name=name, q=queries: ops.hopfield_retrieve(q, keys, beta=beta, backend=name))
            for name in names}
        timings = measure(candidates, device, repeat=repeat, budget_s=budget_s)
        rows.append({"B": b, **{f"{name}_p20": t.p20 for name, t in timings.items()},
                     **{f"{name}_p50": t.p50 for name, t in timings.items()}})
    return {"N": n, "d": d, "key_bytes": n * d * keys.element_size(), "dtype": str(dtype).removeprefix("torch."),
            "backends": list(wanted), "rows": rows}


# The lane sweep's extension: batches x4 while B <= LANE_SWEEP_MAX_BATCH and B x N x d <=
# LANE_SWEEP_MAX_WORK (the 2 MB store to B = 4,096; the large one not at all: ~0.5 s a call)
LANE_SWEEP_MAX_BATCH = 4096
LANE_SWEEP_MAX_WORK = 1 << 31


def _extend_lane_sweep(measured: dict[str, Any], device: torch.device, *, repeat: int, budget_s: float,
                       report: Callable[[str], None]) -> None:
    """Where the query-lane scan still leads at a store's largest swept batch, sweep batches 4x
    larger until it loses or the limits above: the lane rule's crossover can lie far past the
    row scan's batches (on a Zen 5 EPYC it led at every batch to 16,384; bench/NOTES.md)."""
    core = hb._core_retrieval()
    for store in measured.values() if core is not None else ():
        while store["rows"] and store["d"] <= core.lane_max_dims:
            last = store["rows"][-1]
            b = last["B"] * 4
            if (last["B"] < core.lane_min_batch or not _leads(last, "cpp", ("gemm", "sdpa")) or b > LANE_SWEEP_MAX_BATCH
                    or b * store["N"] * store["d"] > LANE_SWEEP_MAX_WORK):
                break
            row = sweep(store["N"], store["d"], [b], device, repeat=repeat, budget_s=budget_s)["rows"][0]
            store["rows"].append(row)
            report(f"    B={b} (the lanes led at B={last['B']}): {_times(row)}")


def _times(row: dict[str, Any]) -> str:
    """A swept row's p20 times, one ``name 1.23 ms`` per backend."""
    return "  ".join(f"{k[:-4]} {v * 1e3:.3g} ms" for k, v in row.items() if k.endswith("_p20"))


def _leads(row: dict[str, Any], fast: str, others: Sequence[str]) -> bool | None:
    """Whether ``fast`` was at least as fast as each of ``others`` timed in ``row`` (p20); None
    when ``fast`` was not timed."""
    mine = row.get(f"{fast}_p20")
    if mine is None:
        return None
    rivals = [row[f"{o}_p20"] for o in others if f"{o}_p20" in row]
    return not rivals or mine <= min(rivals)


def crossover(rows: list[dict[str, Any]], fast: str, others: Sequence[str], key: str = "B") -> int | None:
    """The threshold T (0 or a swept ``key``: B, or the work) that best explains where ``fast``
    beats every other backend (p20): fewest swept points that disagree with "``fast`` wins iff
    ``key`` <= T" (a step fit, so one noisy point on either side does not move it; a tie takes the
    smaller T). None when ``fast`` was not measured (not capable here)."""
    ordered = sorted(rows, key=lambda r: r[key])
    won = [_leads(row, fast, others) for row in ordered]
    if None in won:
        return None
    best, best_errors = 0, sum(won)  # T = 0: every win disagrees
    for i, row in enumerate(ordered):
        errors = won[: i + 1].count(False) + won[i + 1:].count(True)
        if errors < best_errors:
            best, best_errors = row[key], errors
    return best


def interval(rows: list[dict[str, Any]], fast: str, others: Sequence[str], key: str = "B") -> tuple[int, int] | None:
    """The band (low, high) of swept ``key`` values that best explains where ``fast`` beats every
    other backend (p20): fewest swept points that disagree with "``fast`` wins iff low <= ``key``
    <= high" (a step fit on both sides; ties take the lowest, then narrowest band). (0, 0) when
    no band beats "never"; None when ``fast`` was not measured."""
    ordered = sorted(rows, key=lambda r: r[key])
    won = [_leads(row, fast, others) for row in ordered]
    if None in won:
        return None
    best, best_errors = (0, 0), sum(won)  # never: every win disagrees
    for i in range(len(ordered)):
        for j in range(i, len(ordered)):
            errors = won[:i].count(True) + won[i:j + 1].count(False) + won[j + 1:].count(True)
            if errors < best_errors:
                best, best_errors = (ordered[i][key], ordered[j][key]), errors
    return best


SALIENCE_SHAPES = tuple((b, n, 64) for b in (1, 256) for n in (125, 500, 2_000, 8_000, 32_000, 128_000)
                        if b * n <= 512_000)
"""(B, N, d) of the salience sweep: work B x N x d from 8 k to 33 M multiply-adds (B = 256: past
the unmeasured ``cpp_max_batch``)."""


def salience_sweep(device: torch.device, shapes: Sequence[tuple[int, int, int]] = SALIENCE_SHAPES, *,
                   repeat: int = 7, budget_s: float = 3.0) -> dict[str, Any]:
    """p20 and p50 (seconds) of the forced ``cpp``, ``gemm`` and ``torch`` backends of ``salience_topk``
    (k = 10, float32, payloads of 16) at each (B, N, d)."""
    rows = []
    for b, n, d in shapes:
        gen = torch.Generator(device=device).manual_seed(b * n + d)
        args = (torch.randn(b, d, generator=gen, device=device), torch.randn(n, d, generator=gen, device=device),
                torch.randn(n, 16, generator=gen, device=device))
        log_s = torch.randn(n, generator=gen, device=device, dtype=torch.float64)
        candidates: dict[str, Callable[[], object]] = {
            name: (lambda name=name, args=args, log_s=log_s: ops.salience_topk(*args, k=10, log_salience=log_s,
                                                                                backend=name))
            for name in ("cpp", "gemm", "torch")}
        timings = measure(candidates, device, repeat=repeat, budget_s=budget_s)
        rows.append({"B": b, "N": n, "d": d, "work": b * n * d, **{f"{k}_p20": t.p20 for k, t in timings.items()},
                     **{f"{k}_p50": t.p50 for k, t in timings.items()}})
    return {"backends": ["cpp", "gemm", "torch"], "rows": rows}


def calibrate(device: torch.device, *, stores: dict[str, tuple[int, int]] | None = None,
              batches: Sequence[int] = DEFAULT_BATCHES, repeat: int = 7, budget_s: float = 3.0,
              report: Callable[[str], None] = print,
              salience_shapes: Sequence[tuple[int, int, int]] = SALIENCE_SHAPES,
              amx_store: tuple[int, int] = AMX_STORE, amx_batches: Sequence[int] = AMX_BATCHES) -> dict[str, Any]:
    """Measure the sweeps and return the calibration document (not written)."""
    stores = dict(stores or DEFAULT_STORES)
    env = environment.record(device)
    measured: dict[str, Any] = {}
    for label, (n, d) in stores.items():
        report(f"  {OP} {label} store N={n} d={d} ({n * d * 4 / 2**20:.1f} MB), B in {list(batches)}")
        measured[label] = sweep(n, d, batches, device, repeat=repeat, budget_s=budget_s)
        for row in measured[label]["rows"]:
            report(f"    B={row['B']}: {_times(row)}")
    found: dict[str, int] = {}
    skipped: dict[str, str] = {}
    thresholds: dict[str, dict[str, int]] = {}
    measurements: dict[str, Any] = {OP: measured}
    if device.type == "cpu":
        _extend_lane_sweep(measured, device, repeat=repeat, budget_s=budget_s, report=report)
        found, skipped = _cpu_thresholds(measured)
        amx_found, amx_skipped, amx_measured = _amx_band(device, amx_store, amx_batches, repeat, budget_s, report)
        found.update(amx_found)
        skipped.update(amx_skipped)
        if amx_measured is not None:
            measured["amx"] = amx_measured
        thresholds, measurements["salience_topk"] = _salience_threshold(device, salience_shapes, repeat, budget_s,
                                                                        report)
    if found:
        thresholds[OP] = found
    return {
        "format": calibration.FORMAT, "version": calibration.VERSION, "device": device.type,
        "device_name": env["device_name"], "measured": True, "thresholds": thresholds,
        "not_measured": {f"{OP}.{k}": why for k, why in skipped.items()},
        "notes": {"salience_topk": "CPU: cpp_max_work (cpp vs gemm); CUDA: Triton first (no threshold)",
                  "timing": "interleaved rounds, p20 of each backend; shared machines make single runs noisy"},
        "measurements": measurements, "environment": env,
    }


def _salience_threshold(device: torch.device, shapes: Sequence[tuple[int, int, int]], repeat: int, budget_s: float,
                        report: Callable[[str], None]) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """``{"salience_topk": {"cpp_max_work": T}}`` from the salience sweep (empty when the C++
    recall is not built or nothing was swept), and the sweep."""
    report(f"  salience_topk: cpp vs gemm (and torch), (B, N, d) in {list(shapes)}")
    if core_salience() is None or not shapes:
        return {}, {"skipped": "mnemonix._core.salience is not built" if shapes else "no shape swept"}
    swept = salience_sweep(device, shapes, repeat=repeat, budget_s=budget_s)
    for row in swept["rows"]:
        report(f"    B={row['B']} N={row['N']}: " + "  ".join(f"{name} {row[name + '_p20'] * 1e3:.3g} ms"
                                                         for name in swept["backends"]))
    limits = calibration.shipped("cpu")["salience_topk"]  # the batch limits: not measured, kept
    value = crossover([r for r in swept["rows"] if not salience_op.cpp_by_batch(r["B"], r["d"], limits)], "cpp",
                      ("gemm",), key="work")
    return ({"salience_topk": {"cpp_max_work": value}} if value is not None else {}), swept


def _amx_band(device: torch.device, store: tuple[int, int], batches: Sequence[int], repeat: int, budget_s: float,
              report: Callable[[str], None]) -> tuple[dict[str, int], dict[str, str], dict[str, Any] | None]:
    """The AMX band (``amx_min_batch_bfloat16``, ``amx_max_batch_bfloat16``) from a bfloat16 sweep
    of ``amx`` against ``sdpa`` and ``cpp``, why the other AMX thresholds keep their shipped
    values, and the sweep (None where the CPU has no AMX tiles: then nothing is swept)."""
    skipped = {name: "not measured (one bfloat16 store of d = 128 places the main band only): keeps the shipped value"
               for name in _AMX_SHIPPED}
    if not hopfield_amx.available():
        why = "this CPU has no AMX bfloat16 tiles (or MNEMONIX_AMX=0): the band keeps its shipped value"
        return {}, {**skipped, **dict.fromkeys(_AMX_BAND, why)}, None
    n, d = store
    report(f"  {OP} bfloat16 on AMX: N={n} d={d} ({n * d * 2 / 2**20:.1f} MB), B in {list(batches)}")
    swept = sweep(n, d, batches, device, repeat=repeat, budget_s=budget_s, dtype=torch.bfloat16,
                  wanted=("amx", "sdpa", "cpp"))
    for row in swept["rows"]:
        report(f"    B={row['B']}: {_times(row)}")
    band = interval(swept["rows"], "amx", ("sdpa", "cpp"))
    if band is None:
        return {}, {**skipped, **dict.fromkeys(_AMX_BAND, "the AMX kernel was not timed")}, swept
    return dict(zip(_AMX_BAND, band)), skipped, swept


def _cpu_thresholds(measured: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    """The CPU thresholds the sweeps place, and why the others keep their shipped values."""
    defaults = calibration.shipped("cpu")[OP]
    found: dict[str, int] = {}
    skipped = {name: "not measured: keeps the shipped value"
               for name in ("cpp_max_batch_narrow", "cpp_small_store_max_dims", "cpp_small_store_min_batch",
                            "cpp_few_rows", "cpp_few_rows_min_dim", "cpp_max_batch_few_rows",
                            "cpp_large_store_bytes", "cpp_large_store_max_dims", "narrow_dim", "gemm_max_scores",
                            "gemm_min_dim", "gemm_min_batch", "gemm_wide_min_dim", "gemm_wide_min_batch",
                            "cpp_lane_max_dims", "cpp_lane_max_dims_large_store")}
    for label, name in (("small", "cpp_max_batch"), ("large", "cpp_max_batch_large_store")):
        store = measured.get(label)
        if store is None:
            skipped[name] = f"no {label} store swept"
            continue
        large = store["key_bytes"] >= defaults["cpp_large_store_bytes"]
        if large != (label == "large") or store["d"] <= defaults["narrow_dim"] or store["N"] < defaults["cpp_few_rows"]:
            skipped[name] = (f"the {label} store is on the wrong side of cpp_large_store_bytes "
                             f"({defaults['cpp_large_store_bytes']}), not wider than narrow_dim "
                             f"({defaults['narrow_dim']}, whose keys have cpp_max_batch_narrow) or has fewer "
                             f"than cpp_few_rows rows ({defaults['cpp_few_rows']})")
            continue
        value = crossover(_row_scan_batches(store["rows"]), "cpp", ("gemm", "sdpa"))
        if value is None:
            skipped[name] = "the C++ kernel cannot run here (mnemonix._core.retrieval not built)"
        else:
            found[name] = value
    value, why = _lane_threshold(measured)
    if value is None:
        skipped["cpp_lane_max_batch"] = why
    else:
        found["cpp_lane_max_batch"] = value
    beyond = [r for r in measured.get("small", {}).get("rows", []) if r["B"] > found.get("cpp_max_batch", 0)]
    value = crossover(beyond, "gemm", ("sdpa",)) if beyond else None
    if value is None:
        skipped["gemm_max_batch"] = "no batch of the cache-sized store swept past the C++ kernel's threshold"
    else:
        found["gemm_max_batch"] = max(value, found.get("cpp_max_batch", 0))
    return found, skipped


def _row_scan_batches(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The swept batches that place ``cpp_max_batch*``: those under lane_min_batch, which the row
    scan runs (the batches across the query lanes have a rule of their own,
    :func:`_lane_threshold`), or all of them where the kernel is not built."""
    core = hb._core_retrieval()
    return rows if core is None else [r for r in rows if r["B"] < core.lane_min_batch]


def _lane_threshold(measured: dict[str, Any]) -> tuple[int | None, str]:
    """``cpp_lane_max_batch`` from the swept batches the C++ kernel scans across its query lanes (B >=
    lane_min_batch, d <= lane_max_dims, both stores in one step fit against the GEMM path and
    the flash kernel), or None and why not. Where the fit lands on the largest batch swept (the
    lanes led to the end of the sweep) it says nothing above it: a larger shipped value stands."""
    core = hb._core_retrieval()
    if core is None:
        return None, "the C++ kernel is not built: the rule stays off"
    rows = [r for store in measured.values() if store["d"] <= core.lane_max_dims
            for r in store["rows"] if r["B"] >= core.lane_min_batch]
    if not rows:
        return None, f"no batch of lane_min_batch ({core.lane_min_batch}) queries or more swept"
    value = crossover(rows, "cpp", ("gemm", "sdpa"))
    if value is None:
        return None, "the C++ kernel was not timed"
    if value == max(r["B"] for r in rows):
        value = max(value, calibration.shipped("cpu")[OP]["cpp_lane_max_batch"])
    return value, ""


def write(doc: dict[str, Any], out: str | os.PathLike[str] | None) -> Path:
    """Write ``doc`` atomically to ``out`` (default: the per-user file of its device); returns the path."""
    calibration.validate(doc, "calibration being written")
    path = Path(out) if out is not None else calibration.user_path(doc["device_name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    _io.atomic_write_bytes(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    calibration.reload()
    return path
