"""Segment and manifest fields of a saved :class:`~mnemonix.store.MemoryStore`, and their checks.

Every check raises :class:`mnemonix._io.FormatError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from mnemonix._io import FormatError
from mnemonix.store._blocks import COLUMNS, Block, empty_columns, row_bytes
from mnemonix.store._index import Run
from mnemonix.store._validate import METRICS

__all__ = ["row_bytes"]

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16", torch.int8: "int8"}
FROM_NAME = {v: k for k, v in DTYPE_NAMES.items()}
_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+\.safetensors$")


def manifest_of(store, uid: str, generation: int, segments: list[dict], tomb: dict) -> dict:
    spec = store._spec
    return {
        "uid": uid, "generation": generation, "dim": spec.dim, "value_dim": spec.value_dim,
        "dtype": DTYPE_NAMES[spec.dtype],
        "value_dtype": None if spec.value_dtype is None else DTYPE_NAMES[spec.value_dtype],
        "metric": spec.metric, "rows": store._n_rows, "live": store._n_live, "next_id": store._next_id,
        "max_norm": store._max_norm, "segments": segments, "tombstones": tomb,
    }


def _int(file, m, name, low=0) -> int:
    v = m.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise FormatError(f"{str(file)!r}: field {name!r} must be an int >= {low}, got {v!r}")
    return v


def _file_entry(file, entry, name) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not _FILE_NAME.match(entry["file"]):
        raise FormatError(f"{str(file)!r}: field {name!r} must name a .safetensors file in the store, got {entry!r}")
    _int(file, entry, "bytes")
    if not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64:
        raise FormatError(f"{str(file)!r}: field {name}.sha256 must be a SHA-256 hex digest")


def check_manifest_fields(file: Path, m: dict) -> None:
    """Types and consistency of every manifest field (the checksum is already checked)."""
    for name, low in (("generation", 1), ("dim", 1), ("rows", 0), ("live", 0), ("next_id", 0)):
        _int(file, m, name, low)
    if m["live"] > m["rows"]:
        raise FormatError(f"{str(file)!r}: field 'live' ({m['live']}) exceeds field 'rows' ({m['rows']})")
    if m.get("value_dim") is not None:
        _int(file, m, "value_dim", 1)
    if m.get("dtype") not in FROM_NAME:
        raise FormatError(f"{str(file)!r}: field 'dtype' must be one of {sorted(FROM_NAME)}, got {m.get('dtype')!r}")
    if (m.get("value_dtype") is None) != (m.get("value_dim") is None) or (
            m.get("value_dtype") is not None and m["value_dtype"] not in FROM_NAME):
        raise FormatError(f"{str(file)!r}: field 'value_dtype' {m.get('value_dtype')!r} does not fit value_dim")
    if m.get("metric") not in METRICS:
        raise FormatError(f"{str(file)!r}: field 'metric' must be one of {list(METRICS)}, got {m.get('metric')!r}")
    norm = m.get("max_norm")
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm < 0:
        raise FormatError(f"{str(file)!r}: field 'max_norm' must be a finite number >= 0, got {norm!r}")
    if not isinstance(m.get("uid"), str) or not re.fullmatch(r"[0-9a-f]{1,64}", m["uid"]):
        raise FormatError(f"{str(file)!r}: field 'uid' must be a hex string, got {m.get('uid')!r}")
    segments = m.get("segments")
    if not isinstance(segments, list):
        raise FormatError(f"{str(file)!r}: field 'segments' must be a list")
    covered = 0
    for i, entry in enumerate(segments):
        _file_entry(file, entry, f"segments[{i}]")
        if _int(file, entry, "start") != covered:
            raise FormatError(f"{str(file)!r}: field segments[{i}].start must be {covered}, got {entry['start']}")
        covered += _int(file, entry, "rows", 1)
    if covered != m["rows"]:
        raise FormatError(f"{str(file)!r}: field 'segments' covers {covered} rows, field 'rows' says {m['rows']}")
    _file_entry(file, m.get("tombstones"), "tombstones")


def spec_args(m: dict) -> dict:
    return {"dim": m["dim"], "value_dim": m["value_dim"], "dtype": FROM_NAME[m["dtype"]], "metric": m["metric"],
            "value_dtype": None if m["value_dtype"] is None else FROM_NAME[m["value_dtype"]]}


def check_size(file: Path, entry: dict) -> None:
    if not file.is_file():
        raise FormatError(f"{str(file)!r}: missing, but the manifest names it")
    size = file.stat().st_size
    if size != entry["bytes"]:
        raise FormatError(f"{str(file)!r}: field 'bytes' says {entry['bytes']}, the file has {size} "
                          "(truncated or replaced)")


def expected_tensors(spec, rows: int) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    out = {"keys": (spec.dtype, (rows, spec.dim)), "ids": (torch.int64, (rows,)),
           "r0": (torch.float64, (rows,)), "tau": (torch.float64, (rows,))}
    if spec.dtype == torch.int8:
        out["scales"] = (torch.float32, (rows,))
    if spec.value_dim is not None:
        out["values"] = (spec.value_dtype, (rows, spec.value_dim))
    return out


def check_segment(file: Path, entry: dict, spec, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Names, dtypes and shapes of a segment's tensors against the manifest (reads no row)."""
    want = expected_tensors(spec, entry["rows"])
    extra = set(tensors) - set(want)
    if extra not in (set(), {"index_ids", "index_rows"}) or set(want) - set(tensors):
        raise FormatError(f"{str(file)!r}: holds tensors {sorted(tensors)}, expected {sorted(want)} "
                          "(and optionally index_ids, index_rows)")
    for name, (dtype, shape) in want.items():
        t = tensors[name]
        if t.dtype != dtype or tuple(t.shape) != shape:
            raise FormatError(f"{str(file)!r}: field {name!r} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}")
    if extra:
        a, b = tensors["index_ids"], tensors["index_rows"]
        if a.dtype != torch.int64 or b.dtype != torch.int64 or a.ndim != 1 or a.shape != b.shape \
                or a.shape[0] > entry["rows"]:
            raise FormatError(f"{str(file)!r}: fields 'index_ids'/'index_rows' must be int64 [m], m <= rows")
    if meta.get("start") != str(entry["start"]):
        raise FormatError(f"{str(file)!r}: metadata field 'start' is {meta.get('start')!r}, "
                          f"the manifest says {entry['start']}")


def segment_tensors(blocks: list[Block], live: torch.Tensor, a: int, z: int) -> dict[str, torch.Tensor]:
    """Rows ``[a, z)`` of every column (CPU, contiguous); an id index of live rows when ids are unsorted."""
    rows = torch.arange(a, z, device=live.device)
    out = {name: _row_range(blocks, name, a, z).cpu().contiguous()
           for name in COLUMNS if blocks[-1].columns[name] is not None}
    ids = out["ids"]
    if ids.numel() > 1 and not bool((ids[1:] > ids[:-1]).all()):
        keep = live[a:z].cpu()
        order = torch.argsort(ids[keep])
        out["index_ids"] = ids[keep][order].contiguous()
        out["index_rows"] = (rows.cpu()[keep][order]).contiguous()
    return out


def _row_range(blocks: list[Block], name: str, a: int, z: int) -> torch.Tensor:
    """Column ``name`` over global rows ``[a, z)``: a view when one block holds them all."""
    parts = [b.col(name)[max(a, b.start) - b.start: min(z, b.stop) - b.start]
             for b in blocks if b.n and b.start < z and b.stop > a]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def read_tombstones(path: Path, manifest: dict, device) -> torch.Tensor:
    """The live mask [rows] bool from the generation's tombstone bitmap (read and checked in full)."""
    entry = manifest["tombstones"]
    file = path / entry["file"]
    check_size(file, entry)
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise FormatError(f"{str(file)!r}: field 'sha256' does not match the file: it is corrupted")
    try:
        bits = safetensors.torch.load(data)["dead_bits"]
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"{str(file)!r} is not a tombstone bitmap ({exc})") from exc
    rows = manifest["rows"]
    if bits.dtype != torch.uint8 or tuple(bits.shape) != ((rows + 7) // 8,):
        raise FormatError(f"{str(file)!r}: field 'dead_bits' must be uint8 [{(rows + 7) // 8}]")
    dead = torch.from_numpy(np.unpackbits(bits.numpy())[:rows].astype(bool))
    return (~dead).to(device)


def copied(blocks: list[Block], runs: list[Run], n_rows: int, spec, device) -> tuple[list[Block], list[Run]]:
    """Every mapped row copied into one in-memory block on ``device``, and the runs re-pointed at it."""
    columns = empty_columns(n_rows, spec, device)
    for b in blocks:
        for name, t in columns.items():
            if t is not None and b.n:
                t[b.start: b.stop] = b.col(name)
    out_runs = []
    for run in runs:
        if run.rows is None:
            out_runs.append(Run(columns["ids"][run.base: run.base + len(run)], None, run.base))
        else:
            out_runs.append(Run(run.ids.to(device, copy=True), run.rows.to(device, copy=True)))
    return [Block(0, n_rows, columns)], out_runs
