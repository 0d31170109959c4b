"""EpisodicMemory files: every field is validated on load (FormatError naming it); version 1 still loads."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemonix import _io
from mnemonix.epinet import EpisodicMemory, SalienceClock, load_mnist_tasks
from mnemonix.epinet.data import read_idx

FMT, VERSION = EpisodicMemory.FORMAT, EpisodicMemory.VERSION


def saved_memory(tmp_path, *, dtype=torch.float32, input_shape=(1, 2, 2), n=5, capacity=6):
    g = torch.Generator().manual_seed(0)
    clock = SalienceClock(0.2, source="steps", start=3.0)
    mem = EpisodicMemory(capacity, 3, payload_dim=2, input_shape=input_shape, clock=clock, dtype=dtype)
    for _ in range(2):
        mem.add(torch.randn(n, 2, generator=g), torch.randn(n, 3, generator=g), torch.rand(n, generator=g) + 0.1,
                torch.randint(10, (n,), generator=g),
                x=None if input_shape is None else torch.randn(n, *input_shape, generator=g))
        clock.tick()
    path = tmp_path / "memory.npz"
    mem.save(path)
    return mem, path


def contents(path):
    arrays, meta, version = _io.load_arrays(path, format=FMT, max_version=VERSION)
    return arrays, meta, version


def assert_same_memory(a: EpisodicMemory, b: EpisodicMemory) -> None:
    assert (len(a), a.capacity, a.input_shape, a.dtype, a._next_seq) == (len(b), b.capacity, b.input_shape, b.dtype,
                                                                         b._next_seq)
    for name in ("c", "z", "x", "y", "r0", "tau", "c_norms"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None and vb is None) or torch.equal(va, vb), name
    assert torch.equal(a._seq[: len(a)], b._seq[: len(b)])
    assert (a.clock.alpha, a.clock.source, a.clock.now()) == (b.clock.alpha, b.clock.source, b.clock.now())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_exact_and_defaults_to_the_saved_device(tmp_path, dtype):
    mem, path = saved_memory(tmp_path, dtype=dtype)
    back = EpisodicMemory.load(path)
    assert back.device == torch.device("cpu")  # saved from the CPU
    assert_same_memory(mem, back)
    assert EpisodicMemory.load(path, device="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        EpisodicMemory.load(path, device="meta")


def test_version_1_files_still_load(tmp_path):
    mem, path = saved_memory(tmp_path, input_shape=None)
    arrays, meta, _ = contents(path)
    arrays["log_r0"] = np.log(arrays.pop("r0"))
    meta.pop("device")
    v1 = tmp_path / "v1.npz"
    _io.save_arrays(v1, arrays, format=FMT, version=1, meta=meta)
    back = EpisodicMemory.load(v1)
    torch.testing.assert_close(back.r0, mem.r0, rtol=1e-15, atol=0)
    torch.testing.assert_close(back.log_salience(), mem.log_salience(), rtol=0, atol=1e-15)


def _meta_edit(key, value):
    def edit(arrays, meta):
        meta[key] = value
    return edit


def _clock_edit(key, value):
    def edit(arrays, meta):
        meta["clock"][key] = value
    return edit


def _array_edit(key, fn):
    def edit(arrays, meta):
        arrays[key] = fn(arrays[key])
    return edit


def _nan_at(a, value=np.nan):
    a = a.copy()
    a.reshape(-1)[a.size // 2] = value
    return a


BAD_FILES = {
    "capacity zero": (_meta_edit("capacity", 0), "capacity"),
    "capacity str": (_meta_edit("capacity", "6"), "capacity"),
    "capacity bool": (_meta_edit("capacity", True), "capacity"),
    "capacity below count": (_meta_edit("capacity", 3), "c"),
    "capacity huge": (_meta_edit("capacity", 2**47), "capacity"),
    "key_dim mismatch": (_meta_edit("key_dim", 4), "c"),
    "payload_dim float": (_meta_edit("payload_dim", 2.0), "payload_dim"),
    "input_shape bad": (_meta_edit("input_shape", [1, -2, 2]), "input_shape"),
    "input_shape str": (_meta_edit("input_shape", "1,2,2"), "input_shape"),
    "input_shape dropped": (_meta_edit("input_shape", None), "x"),
    "dtype float64": (_meta_edit("dtype", "float64"), "dtype"),
    "dtype missing": (lambda a, m: m.pop("dtype"), "dtype"),
    "next_seq too small": (_meta_edit("next_seq", 3), "seq"),
    "next_seq negative": (_meta_edit("next_seq", -1), "next_seq"),
    "clock source": (_clock_edit("source", "sundial"), "clock"),
    "clock alpha": (_clock_edit("alpha", -1.0), "clock"),
    "clock time": (_clock_edit("time", "noon"), "clock"),
    "clock missing": (lambda a, m: m.pop("clock"), "clock"),
    "device int": (_meta_edit("device", 0), "device"),
    "c nan": (_array_edit("c", _nan_at), "c"),
    "z inf": (_array_edit("z", lambda a: _nan_at(a, np.inf)), "z"),
    "x nan": (_array_edit("x", _nan_at), "x"),
    "tau nan": (_array_edit("tau", _nan_at), "tau"),
    "r0 zero": (_array_edit("r0", lambda a: _nan_at(a, 0.0)), "r0"),
    "r0 negative": (_array_edit("r0", lambda a: _nan_at(a, -1.0)), "r0"),
    "r0 float32": (_array_edit("r0", lambda a: a.astype(np.float32)), "r0"),
    "y float": (_array_edit("y", lambda a: a.astype(np.float64)), "y"),
    "y short": (_array_edit("y", lambda a: a[:-1]), "y"),
    "seq duplicate": (_array_edit("seq", lambda a: np.concatenate([a[:1], a[:-1]])), "seq"),
    "seq negative": (_array_edit("seq", lambda a: _nan_at(a, -5)), "seq"),
    "c huge norm": (_array_edit("c", lambda a: _nan_at(a, 3e38)), "c"),
    "z 3-dim": (_array_edit("z", lambda a: a[:, :, None]), "z"),
    "c vector": (_array_edit("c", lambda a: a[:, 0]), "c"),
    "extra array": (lambda a, m: a.update(extra=np.zeros(2)), "extra"),
    "missing tau": (lambda a, m: a.pop("tau"), "tau"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_load_names_the_bad_field(tmp_path, case):
    _, path = saved_memory(tmp_path)
    arrays, meta, _ = contents(path)
    edit, field = BAD_FILES[case]
    edit(arrays, meta)
    bad = tmp_path / "bad.npz"
    _io.save_arrays(bad, arrays, format=FMT, version=VERSION, meta=meta)  # a valid checksum: only semantics are wrong
    with pytest.raises(_io.FormatError, match=rf"bad\.npz.*field '{field}'"):
        EpisodicMemory.load(bad)


def test_values_beyond_the_stored_dtype_are_refused(tmp_path):
    _, path = saved_memory(tmp_path, dtype=torch.float16)
    arrays, meta, _ = contents(path)
    arrays["z"] = _nan_at(arrays["z"], 1e6)  # finite in float32, inf in float16
    bad = tmp_path / "bad.npz"
    _io.save_arrays(bad, arrays, format=FMT, version=VERSION, meta=meta)
    with pytest.raises(_io.FormatError, match="field 'z'.*range of torch.float16"):
        EpisodicMemory.load(bad)


def test_meta_that_is_not_an_object_is_refused(tmp_path):
    _, path = saved_memory(tmp_path)
    arrays, _, _ = contents(path)
    bad = tmp_path / "bad.npz"
    _io.save_arrays(bad, arrays, format=FMT, version=VERSION, meta={"meta": 1})
    with pytest.raises(_io.FormatError, match="field 'capacity'"):
        EpisodicMemory.load(bad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_bytes_give_format_error_or_the_identical_memory(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("flip")
    mem, path = saved_memory(tmp)
    raw = bytearray(path.read_bytes())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    try:
        back = EpisodicMemory.load(path)
    except _io.FormatError:
        return
    assert_same_memory(mem, back)


# -- IDX files (MNIST) -------------------------------------------------------------------------------------------

def _idx(dims, body_len=None, magic=(0, 0, 8)):
    head = bytes(magic) + bytes([len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return head + bytes(math.prod(dims) if body_len is None else body_len)


@pytest.mark.parametrize(("raw", "field"), [
    (b"\x00\x00", "magic"), (_idx([2, 3], magic=(0, 0, 9)), "magic"), (_idx([4], body_len=3), "body"),
    (bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"), "dims"), (bytes([0, 0, 8, 0]), "dims"),
])
def test_idx_parser_names_the_bad_field(tmp_path, raw, field):
    p = tmp_path / "f-idx1-ubyte"
    p.write_bytes(raw)
    with pytest.raises(_io.FormatError, match=f"field '{field}'"):
        read_idx(p)


def test_mnist_loader_reads_gzip_and_checks_labels_against_images(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx([3, 28, 28])))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx([3]))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx([2, 28, 28]))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx([2]))
    x_train, y_train, x_test, y_test = load_mnist_tasks(tmp_path)
    assert x_train.shape == (3, 1, 28, 28) and y_train.dtype == torch.int64 and x_test.shape[0] == len(y_test) == 2
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx([5]))
    with pytest.raises(_io.FormatError, match="one label per image"):
        load_mnist_tasks(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(_io.FormatError, match="cannot be read"):
        load_mnist_tasks(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_mnist_tasks(tmp_path / "train-labels-idx1-ubyte")
    with pytest.raises(TypeError, match="path"):
        load_mnist_tasks(3)


def test_saved_metadata_is_json_with_the_device_type(tmp_path):
    _, path = saved_memory(tmp_path)
    _, meta, version = contents(path)
    assert version == 2 and meta["device"] == "cpu" and json.dumps(meta)
