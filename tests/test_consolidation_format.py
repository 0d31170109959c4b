"""The VAE file format (version 2): checksummed safetensors layout, sizes checked before
allocating, semantic checks, version-1 files refused unless opted in; file fuzzing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc

import numpy as np
import pytest
import torch

from mnemonix import _io
from mnemonix.consolidation import LargeVAE, SmallVAE, TinyVAE, load_vae, save_vae, tensor_file
from mnemonix.consolidation.vae import VAE


def _tiny(seed: int = 0) -> TinyVAE:
    torch.manual_seed(seed)
    vae = TinyVAE(latent_dim=6, dropout=0.15)
    with torch.no_grad():  # non-default batch-norm statistics, so that they are checked too
        for m in vae.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(7)
    return vae.eval()


def _same_state(a: VAE, b: VAE) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return (type(a) is type(b) and a.latent_dim == b.latent_dim and a.dropout == b.dropout and sa.keys() == sb.keys()
            and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[TinyVAE, bytes]:
    vae = _tiny()
    path = tmp_path_factory.mktemp("vae") / "vae.safetensors"
    save_vae(vae, path)
    return vae, path.read_bytes()


def _sections(blob: bytes) -> list[int]:
    """Every section boundary of a file: the length, the header, each tensor's data."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    starts = sorted(8 + n + spec["data_offsets"][0] for k, spec in header.items() if k != "__metadata__")
    return sorted({0, 8, 8 + n, *starts, len(blob)})


def _craft(header: dict, data: bytes) -> bytes:
    """A file with a *valid* checksum around an arbitrary header, following the documented rule."""
    header = {**header, "__metadata__": {**header["__metadata__"], "sha256": "0" * 64}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    blob = bytearray(len(text).to_bytes(8, "little") + text + data)
    pos = blob.index(b'"sha256":"' + b"0" * 64) + len('"sha256":"')
    blob[pos : pos + 64] = hashlib.sha256(blob).hexdigest().encode()
    return bytes(blob)


def _split(blob: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _load_bytes(tmp_path, blob: bytes, name: str = "f.safetensors", **kwargs) -> VAE:
    path = tmp_path / name
    path.write_bytes(blob)
    return load_vae(path, device="cpu", **kwargs)


# -- round trip and layout ---------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: _tiny(1), lambda: SmallVAE(latent_dim=3, dropout=0.0),
                                  lambda: LargeVAE(latent_dim=5)])
def test_round_trip_is_bit_identical(tmp_path, make):
    vae = make().eval()
    save_vae(vae, tmp_path / "v")
    loaded = load_vae(tmp_path / "v", device="cpu")
    assert _same_state(vae, loaded) and not loaded.training
    x = torch.rand(2, *vae.image_shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vae.reconstruct(x), loaded.reconstruct(x))


def test_layout_is_the_documented_safetensors_layout(saved):
    vae, blob = saved
    header, data = _split(blob)
    assert int.from_bytes(blob[:8], "little") % 8 == 0
    meta = header.pop("__metadata__")
    assert meta["format"] == "mnemonix.consolidation.VAE" and meta["version"] == "2"
    assert (meta["kind"], meta["latent_dim"], float(meta["dropout"])) == ("tiny", "6", 0.15)
    end = 0
    for name, ref in vae.state_dict().items():  # in state-dict order, contiguous, little-endian
        spec = header[name]
        begin, stop = spec["data_offsets"]
        assert begin == end and spec["shape"] == list(ref.shape)
        dtype = {"F32": "<f4", "I64": "<i8"}[spec["dtype"]]
        np.testing.assert_array_equal(np.frombuffer(data[begin:stop], dtype=dtype).reshape(ref.shape), ref.numpy())
        end = stop
    assert end == len(data)
    digest = meta["sha256"]  # SHA-256 of the file with its own 64 digits zeroed
    assert hashlib.sha256(blob.replace(digest.encode(), b"0" * 64)).hexdigest() == digest


# -- every byte and every section is checked ----------------------------------------------------
def _fuzz_one(tmp_path, vae: VAE, blob: bytes) -> str:
    """'error' (FormatError) or 'same' (identical state); anything else fails the test."""
    try:
        loaded = _load_bytes(tmp_path, blob)
    except _io.FormatError as exc:
        assert "f.safetensors" in str(exc)  # names the file
        return "error"
    assert _same_state(vae, loaded), "a damaged file loaded as a different VAE"
    return "same"


def test_truncation_at_every_section_boundary(tmp_path, saved):
    vae, blob = saved
    cuts = sorted({c + d for c in _sections(blob) for d in (-1, 0, 1) if 0 <= c + d < len(blob)})
    assert len(cuts) > 3 * 20  # length, header and the ~25 tensors of a TinyVAE
    results = [_fuzz_one(tmp_path, vae, blob[:cut]) for cut in cuts]
    assert results == ["error"] * len(cuts)
    assert _fuzz_one(tmp_path, vae, blob + b"\0") == "error"  # trailing bytes are refused too


def _flips(blob: bytes, n: int, seed: int, head_only: bool) -> list[bytes]:
    rng = np.random.default_rng(seed)
    end = _sections(blob)[2] if head_only else len(blob)
    out = []
    for pos, mask in zip(rng.integers(0, end, n), rng.integers(1, 256, n)):
        b = bytearray(blob)
        b[pos] ^= mask
        out.append(bytes(b))
    return out


def test_random_byte_flips_never_load_a_different_vae(tmp_path, saved):
    vae, blob = saved
    damaged = _flips(blob, 100, seed=10, head_only=True) + _flips(blob, 100, seed=11, head_only=False)
    results = [_fuzz_one(tmp_path, vae, b) for b in damaged]
    assert results.count("error") == len(damaged)  # the checksum covers the metadata: no silent load


@pytest.mark.slow
def test_every_header_byte_and_many_data_bytes_flipped(tmp_path, saved):
    vae, blob = saved
    head = _sections(blob)[2]
    damaged = [bytes(blob[:i]) + bytes([blob[i] ^ 0x01]) + blob[i + 1 :] for i in range(head)]
    damaged += _flips(blob, 2000, seed=12, head_only=False)
    assert all(_fuzz_one(tmp_path, vae, b) == "error" for b in damaged)


# -- declared sizes are checked before anything is allocated -----------------------------------
def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("edit,field", [
    (lambda h: h["to_mean.weight"].update(shape=[10**12, 128]), "to_mean.weight.data_offsets"),
    (lambda h: h["to_mean.weight"].update(shape=[6, 128], data_offsets=[0, 562 * 10**12]), "data_offsets"),
    (lambda h: h["__metadata__"].update(latent_dim="140737488355328"), "latent_dim"),
    (lambda h: h["__metadata__"].update(latent_dim="60000"), "latent_dim"),
    (lambda h: h["decoder.0.weight"].update(shape=[128, 6, 1]), "decoder.0.weight.shape"),
    (lambda h: h["decoder.0.weight"].update(shape=[128, 60]), "decoder.0.weight.data_offsets"),
    (lambda h: h["decoder.0.weight"].update(shape=[2**40] * 8), "decoder.0.weight"),
])
def test_crafted_header_asking_for_terabytes_is_refused_without_allocating(tmp_path, saved, edit, field):
    _, blob = saved
    header, data = _split(blob)
    edit(header)
    crafted = _craft(header, data)
    def load():
        with pytest.raises(_io.FormatError, match=field):
            _load_bytes(tmp_path, crafted)
    assert _peak_bytes(load) < 8 * len(blob)  # the file is read; nothing of the declared size


def test_header_length_beyond_the_file_is_refused(tmp_path, saved):
    _, blob = saved
    for n in (2**63, len(blob), tensor_file.MAX_HEADER_BYTES + 8):
        with pytest.raises(_io.FormatError, match="header length"):
            _load_bytes(tmp_path, n.to_bytes(8, "little") + blob[8:])


# -- semantic checks behind a valid checksum ----------------------------------------------------
def _with_tensor(blob: bytes, name: str, value: torch.Tensor) -> bytes:
    header, data = _split(blob)
    tensors = {}
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        b, e = spec["data_offsets"]
        dtype = {"F32": "<f4", "I64": "<i8"}[spec["dtype"]]
        tensors[key] = torch.from_numpy(np.frombuffer(data[b:e], dtype=dtype).reshape(spec["shape"]).copy())
    if value is None:
        del tensors[name]
    else:
        tensors[name] = value
    meta = {k: v for k, v in header["__metadata__"].items() if k != "sha256"}
    return tensor_file.encode(tensors, meta)


def _with_meta(blob: bytes, **changes: str | None) -> bytes:
    header, data = _split(blob)
    meta = header["__metadata__"]
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    return _craft(header, data)


@pytest.mark.parametrize("name,value,match", [
    ("to_mean.bias", torch.tensor([0.0, float("nan"), 0, 0, 0, 0]), "'to_mean.bias' holds NaN"),
    ("decoder.0.weight", torch.full((128, 6), float("inf")), "'decoder.0.weight' holds NaN or Inf"),
    ("encoder_body.2.running_var", -torch.ones(32), "running_var' holds negative"),
    ("encoder_body.2.num_batches_tracked", torch.tensor(-1), "num_batches_tracked' holds negative"),
    ("decoder.0.weight", torch.zeros(128, 7), r"decoder.0.weight.shape' must be \[128, 6\]"),
    ("to_mean.weight", torch.zeros(6, 128, dtype=torch.float64), "to_mean.weight.dtype' must be torch.float32"),
    ("to_mean.weight", torch.zeros(7, 128), "'latent_dim' is 6 but tensor 'to_mean.weight'"),
    ("extra", torch.zeros(3), "field 'tensors' does not fit a tiny VAE"),
    ("to_logvar.bias", None, "field 'tensors' does not fit a tiny VAE"),
])
def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path, saved, name, value, match):
    with pytest.raises(_io.FormatError, match=match):
        _load_bytes(tmp_path, _with_tensor(saved[1], name, value))


@pytest.mark.parametrize("changes,match", [
    ({"format": "mnemonix.other"}, "not a mnemonix VAE file"),
    ({"version": "3"}, "newer than this mnemonix reads"),
    ({"version": "1"}, "field 'version' is 1, expected 2"),
    ({"version": "two"}, "field 'version' must be a decimal int"),
    ({"kind": "huge"}, "field 'kind' must be one of"),
    ({"kind": "small"}, "'latent_dim' is 6 but|does not fit a small VAE"),
    ({"latent_dim": "0"}, "field 'latent_dim'"),
    ({"latent_dim": "-3"}, "field 'latent_dim'"),
    ({"dropout": "1.5"}, "field 'dropout'"),
    ({"dropout": "nan"}, "field 'dropout'"),
    ({"kind": None}, "field 'kind' is missing"),
    ({"colour": "blue"}, r"\['colour'\] are not part of VAE format 2"),
])
def test_metadata_is_validated(tmp_path, saved, changes, match):
    with pytest.raises(_io.FormatError, match=match):
        _load_bytes(tmp_path, _with_meta(saved[1], **changes))


def test_edited_metadata_without_a_new_checksum_is_refused(tmp_path, saved):
    vae, blob = saved
    for old, new in ((b'"dropout":"0.15"', b'"dropout":"0.25"'), (b'"latent_dim":"6"', b'"latent_dim":"7"')):
        assert old in blob
        with pytest.raises(_io.FormatError, match="checksum does not match"):
            _load_bytes(tmp_path, blob.replace(old, new))


def test_not_a_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_vae(tmp_path / "missing")
    with pytest.raises(_io.FormatError, match="not a regular file"):
        load_vae(tmp_path)
    for blob in (b"", b"\x00" * 7, b"\x08" + b"\x00" * 7 + b"not json", b"\x08" + b"\x00" * 7 + b"[1,2,3] "):
        with pytest.raises(_io.FormatError):
            _load_bytes(tmp_path, blob)


# -- the save side ---------------------------------------------------------------------------------
def test_save_refuses_bad_arguments_and_leaves_the_old_file(tmp_path, saved):
    path = tmp_path / "keep.safetensors"
    path.write_bytes(saved[1])
    broken = _tiny(2)
    with torch.no_grad():
        broken.to_mean.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'to_mean.weight'"):
        save_vae(broken, path)
    with pytest.raises(TypeError, match="vae must be"):
        save_vae(torch.nn.Linear(2, 2), path)
    with pytest.raises(TypeError, match="path must be"):
        save_vae(_tiny(), 3)
    with pytest.raises(ValueError, match="path .* is a directory"):
        save_vae(_tiny(), tmp_path)
    assert path.read_bytes() == saved[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]  # no temp file left


def test_load_checks_its_arguments(tmp_path, saved):
    path = tmp_path / "v.safetensors"
    path.write_bytes(saved[1])
    with pytest.raises(TypeError, match="device"):
        load_vae(path, device=3)
    with pytest.raises(ValueError, match="device"):
        load_vae(path, device="meta")
    with pytest.raises(ValueError, match="device"):
        load_vae(path, device="gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device is 'cuda' but CUDA is not available"):
            load_vae(path, device="cuda")
    with pytest.raises(TypeError, match="allow_legacy"):
        load_vae(path, allow_legacy="yes")
    with pytest.raises(TypeError, match="path"):
        load_vae(None)
    assert load_vae(path).device.type == ("cuda" if torch.cuda.is_available() else "cpu")  # None: CUDA if any


# -- version-1 files (torch.save) ------------------------------------------------------------------
def _v1_bytes(vae: VAE, **overrides) -> bytes:
    """A file as mnemonix 0.1's save_vae wrote it."""
    payload = {"format": "mnemonix.consolidation.VAE", "version": 1, "kind": vae.kind, "latent_dim": vae.latent_dim,
               "state_dict": {k: v.detach().cpu() for k, v in vae.state_dict().items()}, **overrides}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def test_version_1_files_are_refused_with_the_way_out(tmp_path):
    vae = TinyVAE().eval()
    with pytest.raises(_io.FormatError, match=r"version-1 .*allow_legacy=True.*save_vae\(vae, path\)"):
        _load_bytes(tmp_path, _v1_bytes(vae), "old.pt")


def test_version_1_files_load_behind_the_opt_in_and_re_save_as_version_2(tmp_path):
    vae = TinyVAE().eval()
    with pytest.warns(UserWarning, match="unverified version-1"):
        old = _load_bytes(tmp_path, _v1_bytes(vae), "old.pt", allow_legacy=True)
    assert _same_state(vae, old)
    save_vae(old, tmp_path / "new.safetensors")
    assert _same_state(vae, load_vae(tmp_path / "new.safetensors", device="cpu"))


@pytest.mark.parametrize("overrides,match", [
    ({"latent_dim": 140737488355328}, "latent_dim"),  # would ask for ~562 TB: refused before building
    ({"latent_dim": 11}, "'latent_dim' is 11 but tensor 'to_mean.weight'"),
    ({"kind": "large"}, "'latent_dim' is 10 but|does not fit a large VAE"),
    ({"state_dict": {"w": 1}}, "state_dict"),
    ({"version": 7}, "field 'version'"),
])
def test_version_1_files_get_the_semantic_checks(tmp_path, overrides, match):
    with pytest.warns(UserWarning), pytest.raises(_io.FormatError, match=match):
        _load_bytes(tmp_path, _v1_bytes(TinyVAE(), **overrides), "old.pt", allow_legacy=True)


def test_damaged_version_1_files_are_format_errors(tmp_path):
    blob = _v1_bytes(TinyVAE())
    for cut in (10, len(blob) // 2, len(blob) - 30):
        with pytest.warns(UserWarning), pytest.raises(_io.FormatError):
            _load_bytes(tmp_path, blob[:cut], "old.pt", allow_legacy=True)


def test_saved_file_mode_and_name_are_kept(tmp_path, saved):
    path = tmp_path / "vae.safetensors"
    save_vae(saved[0], path)
    assert path.read_bytes() == saved[1]  # deterministic bytes for the same VAE
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert os.path.getsize(path) == len(saved[1])
