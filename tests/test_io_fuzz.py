"""File fuzzing of the npz container and a ``kill -9`` crash test of the save path.

Every damaged file must load as exactly the saved state or raise ``FormatError`` -- never
another exception, never a different state -- with bounded memory. CI runs every section
boundary and a few hundred random byte flips; ``-m slow`` flips every byte.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from fuzz.files import section_boundaries  # tests/ is on sys.path (rootdir-relative imports)

from mnemonix import _io

FMT = "fuzz.fmt"
META = {"beta": 1.5, "names": ["a", "b"], "n": 7}


def saved_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "keys": rng.standard_normal((6, 4)).astype(np.float32),
        "ids": np.arange(5, dtype=np.int64),
        "fortran": np.asfortranarray(rng.standard_normal((2, 3))),
        "empty": np.zeros((0, 3), dtype=np.float16),
        "flags": np.array([True, False]),
        "scalar": np.array(3, dtype=np.uint8),
    }


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "orig.npz"
    _io.save_arrays(path, saved_state(), format=FMT, version=2, meta=META)
    return path.read_bytes()


class Outcome:
    """Counts of each outcome, and the largest Python allocation peak of one load."""

    def __init__(self) -> None:
        self.identical = self.rejected = 0
        self.peak = 0

    def check(self, path: Path, data: bytes, what: str) -> None:
        path.write_bytes(data)
        tracemalloc.reset_peak()
        try:
            arrays, meta, version = _io.load_arrays(path, format=FMT, max_version=2)
        except _io.FormatError:
            self.rejected += 1
        else:  # any other exception fails the test with its traceback
            expected = saved_state()
            assert meta == META and version == 2 and sorted(arrays) == sorted(expected), what
            for key, value in expected.items():
                assert arrays[key].dtype == value.dtype and np.array_equal(arrays[key], value), (what, key)
            self.identical += 1
        self.peak = max(self.peak, tracemalloc.get_traced_memory()[1])


@pytest.fixture
def outcome():
    tracemalloc.start()
    try:
        yield Outcome()
    finally:
        tracemalloc.stop()


def test_truncation_at_every_section_boundary(original: bytes, tmp_path: Path, outcome: Outcome) -> None:
    (tmp_path / "orig.npz").write_bytes(original)
    cuts = section_boundaries(original, tmp_path / "orig.npz")
    assert len(cuts) > 30
    for cut in cuts:
        for length in {cut - 1, cut, cut + 1} & set(range(len(original))):
            outcome.check(tmp_path / "t.npz", original[:length], f"truncated to {length}")
    assert outcome.identical == 0 and outcome.rejected > 3 * 25
    assert outcome.peak < 1 << 20, outcome.peak  # the file is ~4 KiB: no load allocates a MiB


def _flip(raw: bytes, pos: int, mask: int) -> bytes:
    data = bytearray(raw)
    data[pos] ^= mask
    return bytes(data)


def _reseal(raw: bytes) -> bytes:
    """Recompute the trailing digest, as someone crafting a file would: the parser is then on its own."""
    return raw[:-64] + hashlib.sha256(raw[:-64]).hexdigest().encode()


def _version_1(tmp_path: Path) -> bytes:
    arrays = saved_state()
    header = {"format": FMT, "version": 2, "meta": META, "checksum": _io._checksum(arrays)}
    path = tmp_path / "v1.npz"
    np.savez(path, __meta__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    return path.read_bytes()


def _flip_cases(raw: bytes, mode: str, positions: list[tuple[int, int]]):
    for pos, mask in positions:
        flipped = _flip(raw, pos, mask)
        if mode == "resealed" and pos < len(raw) - 64:
            flipped = _reseal(flipped)
        yield flipped, f"{mode}: byte {pos} ^ {mask:#x}"


@pytest.mark.parametrize("mode", ["digest", "resealed", "version 1"])
def test_random_byte_flips(original: bytes, tmp_path: Path, outcome: Outcome, mode: str) -> None:
    raw = _version_1(tmp_path) if mode == "version 1" else original
    rng = random.Random(20240610)
    positions = [(rng.randrange(len(raw)), rng.randrange(1, 256)) for _ in range(300)]
    for data, what in _flip_cases(raw, mode, positions):
        outcome.check(tmp_path / "f.npz", data, what)
    if mode == "digest":  # the digest covers every byte but itself: every flip is caught
        assert outcome.identical == 0 and outcome.rejected == 300
    else:  # flips in bytes zip ignores (timestamps, local copies of sizes) may load the same state
        assert outcome.rejected > 150
    assert outcome.peak < 1 << 20, outcome.peak  # the file is ~4 KiB: no load allocates a MiB


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["digest", "resealed", "version 1"])
def test_every_byte_flipped(original: bytes, tmp_path: Path, outcome: Outcome, mode: str) -> None:
    raw = _version_1(tmp_path) if mode == "version 1" else original
    rng = random.Random(11)
    positions = [(pos, rng.choice((0x01, 0x80, 0xFF, rng.randrange(1, 256)))) for pos in range(len(raw))]
    for data, what in _flip_cases(raw, mode, positions):
        outcome.check(tmp_path / "f.npz", data, what)
    assert outcome.rejected > len(positions) // 2 and outcome.peak < 1 << 20
    if mode == "digest":
        assert outcome.identical == 0


# -- kill -9 while saving ----------------------------------------------------------------------------
CHILD = """
import sys
import numpy as np
from mnemonix import _io
path, i = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
while True:
    i += 1
    _io.save_arrays(path, {"x": np.full(200_000, i, dtype=np.int64)}, format="crash", version=1, meta={"i": i})
"""


def _load_state(path: Path) -> int:
    arrays, meta, _ = _io.load_arrays(path, format="crash", max_version=1)
    assert arrays["x"].shape == (200_000,) and bool((arrays["x"] == meta["i"]).all())
    return int(meta["i"])


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_kill_9_while_saving_leaves_old_or_new_state_and_no_temp_pile(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    _io.save_arrays(path, {"x": np.full(200_000, 0, dtype=np.int64)}, format="crash", version=1, meta={"i": 0})
    rng = random.Random(3)
    last, progressed, start = 0, 0, time.monotonic()
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(last)], stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        child.kill()  # SIGKILL: no cleanup handler runs
        child.wait()
        child.stdout.close()
        state = _load_state(path)  # always a whole state: the old one or a newer one
        assert state >= last
        progressed += state > last
        last = state
        # The killed child's temp may remain; earlier ones were removed by the next save.
        assert len(_temps(tmp_path)) <= 1, _temps(tmp_path)
    assert progressed >= 3 and time.monotonic() - start < 60  # some kills landed after saves
    _io.save_arrays(path, {"x": np.full(200_000, -1, dtype=np.int64)}, format="crash", version=1, meta={"i": -1})
    assert _temps(tmp_path) == [] and _load_state(path) == -1
