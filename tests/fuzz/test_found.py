"""The faults the fuzz suite found beyond issue 10's list, one reproducer each (all failed before the fix).

Each row: a call and the error it must give now (type and words of the message).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnemonix import _io, ops
from mnemonix.consolidation import (
    ConsolidationConfig,
    ExtendedModel,
    ImageDataset,
    LinearProbe,
    TinyVAE,
    build_hopfield,
    load_mnist,
)
from mnemonix.epinet import (
    EpiNet,
    EpisodicMemory,
    MoEDecoder,
    RecallEngine,
    TrainConfig,
    load_digits_tasks,
    load_mnist_tasks,
    train_split,
)
from mnemonix.hopfield import ClassicalHopfield, DenseHopfield, HopfieldRetrieval, ModernHopfield
from mnemonix.memoria import Memoria
from mnemonix.plastic import PlasticMemory, tokenize

from .files import decode, write
from .harness import first_difference, global_rngs

P = torch.randn(4, 3)
B = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, 1.0, -1.0]])
R0, TAU = torch.rand(4, dtype=torch.float64) + 0.1, torch.arange(4, dtype=torch.float64)
LIFE = torch.full((1, 4), 2.0)
TYPES = torch.tensor([[1, 2, 3, 0]], dtype=torch.uint8)
REMINDED, DELTA = torch.tensor([[0, -1]]), torch.ones(1, 2)


def _step(lifespan=LIFE, types=TYPES, **kw):
    return ops.lifespan_step(lifespan, types, None, REMINDED, DELTA, 2, **kw)


def _life_with(value: float) -> torch.Tensor:
    out = LIFE.clone()
    out[0, 1] = value
    return out


def _saved(tmp_path, net) -> str:
    path = str(tmp_path / "net.npz")
    net.save(path)
    return path


def _plastic() -> PlasticMemory:
    mem = PlasticMemory()
    mem.learn(">ab_")
    return mem


CASES = [
    # meta tensors reached .item() deep inside
    ("meta patterns", lambda tmp: ModernHopfield(P.to("meta")), ValueError, "patterns is on the meta device"),
    ("meta states", lambda tmp: ClassicalHopfield(B).energy(B.to("meta")), ValueError, "states is on the meta"),
    ("meta log_salience", lambda tmp: ops.salience_topk(P, P, None, k=1, log_salience=torch.zeros(4, device="meta")),
     ValueError, "log_salience is on the meta device"),
    # a list or number as mask / bias: AttributeError 'int' object has no attribute 'device'
    ("int mask", lambda tmp: ops.hopfield_retrieve(P, P, beta=1.0, mask=3), TypeError, "mask must be a torch.Tensor"),
    ("list bias", lambda tmp: ops.hopfield_retrieve(P, P, beta=1.0, bias=[0.0] * 4), TypeError, "bias must be"),
    # -10**400: OverflowError from float()
    ("huge negative beta", lambda tmp: ModernHopfield(P, beta=-(10**400)), ValueError, "beta must be"),
    ("huge negative kl_weight", lambda tmp: TinyVAE(4).loss(torch.rand(1, 1, 8, 8), kl_weight=-(10**400)),
     ValueError, "kl_weight"),
    # beta beyond float32: the C++ kernel said "beta must be finite and > 0"
    ("beta 1e308", lambda tmp: ModernHopfield(P, beta=1e308), ValueError, "beta must be <="),
    # a pattern whose squared norm overflows float32: every energy then failed "logits overflow"
    ("norm 1e30", lambda tmp: ModernHopfield(torch.tensor([[1e30, 0.0]])), ValueError, "squared norm overflows"),
    # backends were not checked until (unless) a retrieval ran
    ("backend", lambda tmp: ModernHopfield(P, backend="TORCH"), ValueError, "backend must be one of"),
    ("recall backend", lambda tmp: RecallEngine(2, backend="cuda"), ValueError, "backend must be one of"),
    ("extended backend", lambda tmp: ExtendedModel(TinyVAE(4), threshold=0.1, backend="x"), ValueError, "backend"),
    ("config backend", lambda tmp: ConsolidationConfig(backend="fast"), ValueError, "backend must be one of"),
    ("recall_backend", lambda tmp: EpiNet(recall_backend="x"), ValueError, "recall_backend must be one of"),
    # flags took any truthy value
    ("with_energy", lambda tmp: ModernHopfield(P).retrieve(P, with_energy="no"), TypeError, "with_energy"),
    ("progress", lambda tmp: PlasticMemory().learn_many([">a_"], progress=None), TypeError, "progress"),
    ("details", lambda tmp: RecallEngine(2).recall(P, EpisodicMemory(2, 3), details=1), TypeError, "details"),
    ("train_split progress", lambda tmp: train_split(progress="yes"), TypeError, "progress"),
    # paths: unnamed TypeError, "embedded null byte", '' reported as a directory
    ("path None", lambda tmp: ModernHopfield(P).save(None), TypeError, "path must be a str or os.PathLike"),
    ("path NUL", lambda tmp: DenseHopfield(B).save(str(tmp / "a\0b")), ValueError, "path must not contain a NUL"),
    ("path ''", lambda tmp: _plastic().save(""), ValueError, "path must be a non-empty path"),
    ("csv path", lambda tmp: _plastic().to_csv(3, str(tmp / "e.csv")), TypeError, "nodes_path"),
    ("load path list", lambda tmp: ModernHopfield.load(["x"]), TypeError, "path must be"),
    # load(device=...): RuntimeError / AssertionError / accepted meta, after reading the file
    ("load device ''", lambda tmp: ModernHopfield.load(_saved(tmp, ModernHopfield(P)), device=""), ValueError,
     "device is not a device"),
    ("load device tpu", lambda tmp: ClassicalHopfield.load(_saved(tmp, ClassicalHopfield(B)), device="tpu"),
     ValueError, "device"),
    ("load device meta", lambda tmp: ClassicalHopfield.load(_saved(tmp, ClassicalHopfield(B)), device="meta"),
     ValueError, "device must hold data"),
    ("load device True", lambda tmp: DenseHopfield.load(_saved(tmp, DenseHopfield(B)), device=True), TypeError,
     "device must be"),
    # sizes beyond int64 or memory: allocator RuntimeError / "Overflow when unpacking long long"
    ("huge latent_dim", lambda tmp: MoEDecoder(10**30, 2, 2), ValueError, "latent_dim=10"),
    ("huge capacity", lambda tmp: EpisodicMemory(2**50, 3), ValueError, "capacity=1125899906842624"),
    ("huge memory_capacity", lambda tmp: EpiNet(memory_capacity=2**50), ValueError, "memory_capacity="),
    # MoEDecoder.forward had no checks (RuntimeError / IndexError, int z accepted)
    ("decoder z rank", lambda tmp: MoEDecoder(3, 2, 2)(torch.zeros(3), torch.zeros(1, 3)), ValueError, "z must have"),
    ("decoder z dtype", lambda tmp: MoEDecoder(3, 2, 2)(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3)),
     TypeError, "z must have dtype"),
    ("decoder rows", lambda tmp: MoEDecoder(3, 2, 2)(torch.zeros(2, 3), torch.zeros(1, 3)), ValueError, "r must"),
    # plastic: the pybind signature dump; unnamed 'NoneType' object is not iterable; tokenize(None)
    ("potentiate 2**63", lambda tmp: _plastic().potentiate(">ab_", 2**63), ValueError, "amount must be an integer in"),
    ("learn_many None", lambda tmp: PlasticMemory().learn_many(None), TypeError, "samples must be an iterable"),
    ("tokenize start", lambda tmp: tokenize("a", start=None), TypeError, "start must be a str"),
    # consolidation
    ("sample int mean", lambda tmp: TinyVAE.sample(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2)),
     TypeError, "mean must be floating point"),
    ("subset meta", lambda tmp: ImageDataset(torch.rand(3, 1, 2, 2), torch.zeros(3, 1, dtype=torch.long), ("a",),
                                             "a").subset(torch.zeros(1, dtype=torch.long, device="meta")),
     ValueError, "index is on the meta device"),
    ("probe no features", lambda tmp: LinearProbe.fit(torch.zeros(3, 0), torch.zeros(3, dtype=torch.long)),
     ValueError, "one column"),
    ("hopfield images", lambda tmp: build_hopfield(torch.zeros(2, 0, 2, 2)), ValueError, "images must hold"),
    ("config alpha -10**400", lambda tmp: train_split(TrainConfig(alpha=-(10**400))), ValueError, "config.alpha"),
    ("test_fraction empty split", lambda tmp: load_digits_tasks(test_fraction=1 - 1e-6), ValueError, "test_fraction"),
    # data files: '' searched the current folder; a file's wrong content was a plain ValueError
    ("mnist path ''", lambda tmp: load_mnist_tasks(""), ValueError, "path must be a non-empty path"),
    # the KNOWN_FAULTS of targets_ops.py: lifespan_step took any engram code and NaN / -inf lifespans
    ("types code 7", lambda tmp: _step(types=torch.full_like(TYPES, 7)), ValueError,
     "types must hold engram codes 0..3"),
    ("lifespan NaN", lambda tmp: _step(_life_with(float("nan"))), ValueError, "lifespan must not hold NaN"),
    ("lifespan -inf", lambda tmp: _step(_life_with(float("-inf"))), ValueError, "lifespan must not hold NaN or -inf"),
    # log_salience had no checks: NaN / inf / negative / bool / str accepted, None a bare float() error, OverflowError
    ("log_salience alpha nan", lambda tmp: ops.log_salience(R0, TAU, float("nan"), 1.0), ValueError,
     "alpha must be a finite number >= 0"),
    ("log_salience alpha -1", lambda tmp: ops.log_salience(R0, TAU, -1, 1.0), ValueError, "alpha must be"),
    ("log_salience alpha True", lambda tmp: ops.log_salience(R0, TAU, True, 1.0), TypeError, "alpha must be a float"),
    ("log_salience alpha '3'", lambda tmp: ops.log_salience(R0, TAU, "3", 1.0), TypeError, "alpha must be a float"),
    ("log_salience alpha None", lambda tmp: ops.log_salience(R0, TAU, None, 1.0), TypeError, "alpha must be a float"),
    ("log_salience alpha -10**400", lambda tmp: ops.log_salience(R0, TAU, -(10**400), 1.0), ValueError,
     "alpha must be a finite number"),
    ("log_salience now inf", lambda tmp: ops.log_salience(R0, TAU, 0.5, float("inf")), ValueError,
     "now must be a finite number"),
    ("log_salience now '3'", lambda tmp: ops.log_salience(R0, TAU, 0.5, "3"), TypeError, "now must be a float"),
    ("log_salience r0 list", lambda tmp: ops.log_salience(R0.tolist(), TAU, 0.5, 1.0), TypeError,
     "r0 must be a torch.Tensor"),
    ("log_salience r0 <= 0", lambda tmp: ops.log_salience(-R0, TAU, 0.5, 1.0), ValueError, "r0 must be > 0"),
    ("log_salience tau NaN", lambda tmp: ops.log_salience(R0, TAU * float("nan"), 0.5, 1.0), ValueError,
     "tau must be finite"),
    ("log_salience sizes", lambda tmp: ops.log_salience(R0, TAU[:2], 0.5, 1.0), ValueError, "r0 and tau must have"),
    # salience_topk took alpha=True / '3' as a ValueError and now=10**400 as an OverflowError
    ("salience alpha True", lambda tmp: ops.salience_topk(P, P, None, k=1, r0=R0, tau=TAU, alpha=True, now=1.0),
     TypeError, "alpha must be a float"),
    ("salience now 10**400", lambda tmp: ops.salience_topk(P, P, None, k=1, r0=R0, tau=TAU, alpha=0.5, now=10**400),
     ValueError, "now must be a finite number"),
    # HopfieldRetrieval: any truthy learn_beta, a backend checked only at forward
    ("learn_beta 'yes'", lambda tmp: HopfieldRetrieval(learn_beta="yes"), TypeError,
     "learn_beta must be True or False"),
    ("learn_beta 1", lambda tmp: HopfieldRetrieval(learn_beta=1), TypeError, "learn_beta must be True or False"),
    ("layer backend", lambda tmp: HopfieldRetrieval(backend="nope"), ValueError,
     "backend must be one of .'triton', 'cpp', 'amx', 'sdpa', 'gemm', 'torch', 'reference'.,"),
    ("layer beta 1e308", lambda tmp: HopfieldRetrieval(beta=1e308), ValueError, "beta must be <="),
    ("layer list queries", lambda tmp: HopfieldRetrieval(learn_beta=True)(queries=[[1.0, 2.0, 3.0]], keys=P),
     TypeError, "queries must be a torch.Tensor"),
    ("mnist npz shape", lambda tmp: load_mnist(_npz(tmp, x_train=np.zeros((2, 5, 5)), y_train=np.zeros(2, int))),
     _io.FormatError, "field 'images'"),
]


def _npz(tmp_path, **arrays) -> str:
    path = str(tmp_path / "data.npz")
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("call,error,words", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_found_fault_is_fixed(call, error, words, tmp_path) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(")):
        call(tmp_path)


def test_failed_epinet_constructor_consumes_no_randomness() -> None:
    rng = global_rngs()
    with pytest.raises(ValueError, match="top_k"):
        EpiNet(latent_dim=4, hidden_dim=4, memory_capacity=2, top_k=0)
    assert first_difference(rng, global_rngs()) is None  # before: the encoder and decoder were initialised


def test_epinet_forward_names_x_for_a_nan_input() -> None:
    net = EpiNet(latent_dim=4, num_classes=2, image_size=8, hidden_dim=4, memory_capacity=2)
    net.memorize(torch.rand(1, 1, 8, 8), torch.randn(1, 4), torch.tensor([1]), 1.0)
    with pytest.raises(ValueError, match="x gives a non-finite latent"):  # before: "queries must be finite"
        net(torch.full((1, 1, 8, 8), float("nan")))


def _resealed(tmp_path, obj, **changes) -> str:
    """``obj`` saved, one array or metadata field changed, written back sealed (a valid checksum)."""
    path = tmp_path / "m.npz"
    obj.save(path)
    arrays, header = decode(path)
    for key, value in changes.items():
        (arrays if isinstance(value, np.ndarray) else header["meta"])[key] = value
    write(path, arrays, header)
    return str(path)


@pytest.mark.parametrize("change,words", [
    (dict(count=np.array([1.5, 1.0, 1.0])), "count"),  # float counts were cast silently
    (dict(edge_dst=np.array([1, 2], dtype=np.complex64)), "edge_dst"),  # cast with a ComplexWarning
    (dict(samples=-1), "samples"), (dict(samples=True), "samples"),
])
def test_plastic_load_checks_dtypes_ranks_and_metadata(tmp_path, change, words) -> None:
    mem = PlasticMemory()
    mem.learn_many([">ab_", ">ac_"])
    key, value = next(iter(change.items()))
    if isinstance(value, np.ndarray):  # as long as the saved array
        change = {key: np.resize(value, len(mem._engine.export_arrays()[key])).astype(value.dtype)}
    with pytest.raises(_io.FormatError, match=words):
        PlasticMemory.load(_resealed(tmp_path, mem, **change))


def test_episodic_load_refuses_a_non_string_dtype(tmp_path) -> None:
    mem = EpisodicMemory(3, 2)
    with pytest.raises(_io.FormatError, match="dtype"):  # before: TypeError: unhashable type: 'list'
        EpisodicMemory.load(_resealed(tmp_path, mem, dtype=["float32"]))


def test_modern_load_refuses_beta_and_norms_beyond_float32(tmp_path) -> None:
    net = ModernHopfield(P)
    with pytest.raises(_io.FormatError, match="beta"):
        ModernHopfield.load(_resealed(tmp_path, net, beta=1e308))
    with pytest.raises(_io.FormatError, match="patterns"):
        ModernHopfield.load(_resealed(tmp_path, net, patterns=np.array([[1e30, 0.0, 0.0]], dtype=np.float32)))


@pytest.mark.parametrize("backend", [None, "triton", "cpp", "sdpa", "gemm", "torch", "reference"])
@pytest.mark.parametrize("beta", [1e308, torch.tensor(1e308, dtype=torch.float64)], ids=["float", "tensor"])
def test_beta_beyond_float32_is_one_error_on_every_backend(backend, beta) -> None:
    """Before: "beta must be finite and > 0 (as a float32)" (cpp), "the logits overflow" (sdpa, torch) or
    "mask / association_mask must leave every query at least one stored pattern" (reference)."""
    with pytest.raises(ValueError, match=r"beta must be (finite, > 0 and )?<= 3.403e\+38 \(float32's range"):
        ops.hopfield_retrieve(P, P, beta=beta, backend=backend)


def _memoria(**kwargs) -> Memoria:
    mem = Memoria(**{"num_reminded_stm": 2, "stm_capacity": 2, "ltm_search_depth": 2, "initial_lifespan": 3,
                     "num_final_ltms": 2, **kwargs})
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        _memoria_step(mem, g)
    return mem


def _memoria_step(mem: Memoria, g: torch.Generator | None = None) -> None:
    mem.add_working_memory(torch.rand(mem.engrams.batch_size or 1, 2, 4, generator=g))
    _, indices = mem.remind()
    mem.adjust_lifespan_and_memories(indices, torch.ones_like(indices, dtype=torch.float))


def _with_value(array: np.ndarray, value) -> np.ndarray:
    out = array.copy()
    out.flat[0] = value
    return out


@pytest.mark.parametrize("change,words", [
    # a memory that loaded, then failed at its next step (ValueError: ages would pass the int32 maximum)
    (lambda a, m: dict(age=_with_value(a["age"], 2**31 - 1)), "field 'age'"),
    # the next co-fire gave OverflowError: Python integer 2147483648 out of bounds for int32 (the overlay)
    (lambda a, m: dict(overlay_count=_with_value(a["overlay_count"], 2**31 - 1)), "field 'overlay_count'"),
    # squared distances overflowed float32: remind failed with "NaN or Inf scores" (exact distances)
    (lambda a, m: dict(data=_with_value(a["data"], 1e30)), "field 'data'.*norm"),
    # the constructor turned the trackers on with a warning: the memory loaded unlike the one saved
    (lambda a, m: dict(config={**m["config"], "keep_history": True}), "keep_history"),
    # a version-1 file's 'ids' was read unchecked: a wrong shape reached torch (RuntimeError / IndexError)
    (lambda a, m: dict(ids=np.zeros(3, np.int32)), None),
    # a fire entry listed twice was loaded (the last one won): the state differed from the file
    (lambda a, m: dict(fire_row=np.r_[a["fire_row"], a["fire_row"][:1]], fire_id=np.r_[a["fire_id"], a["fire_id"][:1]],
                       fire_count=np.r_[a["fire_count"], a["fire_count"][:1]]), "fire_id.*twice"),
    # an argument Memoria does not take: was a FormatError only through a wrapper quoting the constructor's TypeError
    (lambda a, m: dict(config={**m["config"], "fix_quirks": True}), "does not take"),
])
def test_memoria_load_refuses_inconsistent_fields(tmp_path, change, words) -> None:
    mem = _memoria(distances="exact")
    if "overlay" in (words or ""):  # an asymmetric count: the overlay of format version 2
        counts = mem.engrams.induce_counts
        counts[0, 0, 1] += 3
        mem.engrams.induce_counts = counts
    path = tmp_path / "m.npz"
    mem.save(path)
    arrays, header = decode(path)
    for key, value in change(arrays, header["meta"]).items():
        (header["meta"] if key == "config" else arrays)[key] = value
    write(path, arrays, header)
    if words is None:  # ignored (not part of version 1): the memory loads as saved and works
        _memoria_step(Memoria.load(path))
        return
    with pytest.raises(_io.FormatError, match=words):
        Memoria.load(path)


def test_memoria_refuses_data_whose_distances_overflow() -> None:
    mem = _memoria(distances="exact")
    with pytest.raises(ValueError, match="data has a row whose norm exceeds"):  # before: accepted, remind failed
        mem.add_working_memory(torch.full((1, 1, 4), 1e30))
    assert len(mem.engrams) == 6


@pytest.mark.parametrize("depth", [2**31, 2**63])
def test_memoria_with_a_huge_search_depth_steps(tmp_path, depth) -> None:
    """Before: the walk allocated [B, (depth + 1) W] (RuntimeError / TypeError 'Overflow when unpacking long')."""
    mem = _memoria(ltm_search_depth=depth, track_id=True, generator=torch.Generator().manual_seed(1))
    ref = _memoria(ltm_search_depth=64, track_id=True,  # more steps than the walk can take on these few engrams
                   generator=torch.Generator().manual_seed(1))
    data = (torch.Generator().manual_seed(2), torch.Generator().manual_seed(2))
    for _ in range(3):
        _memoria_step(mem, data[0]), _memoria_step(ref, data[1])
    assert first_difference(mem.engrams.status_summary(), ref.engrams.status_summary()) is None
    mem.save(tmp_path / "m.npz")
    _memoria_step(Memoria.load(tmp_path / "m.npz"))
