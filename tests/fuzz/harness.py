"""Shared harness of the fuzz suite: bad values per expected kind, state snapshots, one probe.

A *probe* calls a public entry with one argument replaced by a generated bad value and checks
the contract of the project (DESIGN.md, "Conventions"):

- only ``TypeError`` / ``ValueError`` escape (``FormatError`` is a ``ValueError``; a path may
  also give ``FileNotFoundError`` / ``IsADirectoryError``),
- the message names the argument the user passed,
- the state is bit-identical afterwards: every tensor (its bytes, dtype, shape, strides,
  device), array, number, string, generator and the global RNGs, walked recursively.

Bad values are ``(tag, value)`` pairs drawn by hypothesis; the tag says what is wrong
("dtype:complex64", "meta", "nan@3", ...) so that a probe that fails says which kind of value
broke it, and an argument that accepts a kind (a rank-3 batch of queries, a float64 tensor)
leaves that tag out with ``skip=``.

Adding a model: build it once in a cached factory, describe each entry as a :class:`Target`
(a call, its good arguments, a bad-value strategy per argument) and append it to a module's
``TARGETS``; ``test_arguments.py`` probes every (target, argument) pair.
"""

from __future__ import annotations

import atexit
import functools
import math
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

ALLOWED: tuple[type[BaseException], ...] = (TypeError, ValueError)  # FormatError is a ValueError
PATH_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, IsADirectoryError, NotADirectoryError)

RAW_MESSAGES = ("incompatible function arguments", "Exception raised from", "enforce fail")

#: Counts of this process (probes run, probes that behaved); reported by conftest.py.
STATS = {"argument probes": 0, "argument probes good": 0, "file mutations": 0, "file mutations good": 0}

Bad = tuple[str, Any]
NAN, INF = math.nan, math.inf


# -- bad values ----------------------------------------------------------------------------------
class _Opaque:
    """An object of a type no entry expects."""

    def __repr__(self) -> str:
        return "<opaque>"


NOT_TENSORS: list[Bad] = [
    ("type:None", None), ("type:str", "tensor"), ("type:int", 3), ("type:float", 1.5), ("type:bytes", b"\x00"),
    ("type:dict", {"a": 1}), ("type:object", _Opaque()), ("type:complex", 1j),
]
_WRONG_DTYPES = (torch.complex64, torch.bool, torch.int64, torch.int32, torch.int8, torch.uint8, torch.float64,
                 torch.float16, torch.bfloat16, torch.float32)


def _nonfinite(t: torch.Tensor, pos: int, value: float) -> torch.Tensor:
    out = t.clone()
    out.view(-1)[pos % out.numel()] = value
    return out


def _tensor_builders(good: torch.Tensor, dtypes: Iterable[torch.dtype], sized: Iterable[int]
                     ) -> dict[str, Callable[[int, float], object]]:
    """tag -> builder(pos, nonfinite value) of every bad variant of ``good``."""
    b: dict[str, Callable[[int, float], object]] = {tag: (lambda pos, v, x=value: x) for tag, value in NOT_TENSORS}
    b["type:list"] = lambda pos, v: good.tolist()
    b["type:numpy"] = lambda pos, v: good.numpy()
    b["rank+1"] = lambda pos, v: good.unsqueeze(0)
    if good.ndim >= 2:
        b["rank-1"] = lambda pos, v: good[0]
    if good.ndim != 0:
        b["rank0"] = lambda pos, v: good.reshape(-1)[0]
    for dt in _WRONG_DTYPES:
        if dt not in dtypes:
            b[f"dtype:{str(dt)[6:]}"] = lambda pos, v, dt=dt: good.to(dt)
    b["meta"] = lambda pos, v: good.to("meta")
    if good.is_floating_point() and good.numel():
        b["nonfinite"] = lambda pos, v: _nonfinite(good, pos, v)
    for axis in range(good.ndim):
        b[f"empty:{axis}"] = lambda pos, v, a=axis: good.narrow(a, 0, 0)
    for axis in sized:
        b[f"size:{axis}"] = lambda pos, v, a=axis: torch.cat([good, good.narrow(a, 0, 1)], dim=a)
    return b


def bad_tensor(good: torch.Tensor, *, dtypes: Iterable[torch.dtype] = (torch.float32, torch.float16, torch.bfloat16),
               sized: Iterable[int] = (), skip: Iterable[str] = ()) -> st.SearchStrategy[Bad]:
    """Bad stand-ins for the tensor ``good``: not a tensor (None, str, list, numpy, ...), one rank
    more or less, 0-dim, each dtype outside ``dtypes``, meta, a NaN/Inf element, an empty axis, one
    row too many on each axis of ``sized`` (axes whose size the entry fixes). ``skip``: tags (or tag
    prefixes ending in ':') the argument accepts."""
    skip = tuple(skip)
    builders = {tag: fn for tag, fn in _tensor_builders(good, tuple(dtypes), tuple(sized)).items()
                if not any(tag == s or (s.endswith(":") and tag.startswith(s)) for s in skip)}
    tags = sorted(builders)
    return st.builds(lambda tag, pos, v: (tag if tag != "nonfinite" else f"{v}@{pos}", builders[tag](pos, v)),
                     st.sampled_from(tags), st.integers(0, 1 << 16), st.sampled_from([NAN, INF, -INF]))


OTHER: list[Bad] = [("str", "3"), ("list", [3]), ("dict", {}), ("bytes", b"3"), ("object", _Opaque()),
                    ("complex", 1 + 0j), ("tensor", torch.tensor([1.0, 2.0]))]


def _tagged(tag: str, strategy: st.SearchStrategy) -> st.SearchStrategy[Bad]:
    return strategy.map(lambda v: (tag, v))


def bad_int(low: int | None = 1, high: int | None = None, *, none_ok: bool = False,
            bool_ok: bool = False) -> st.SearchStrategy[Bad]:
    """Non-ints (2.0, 2.5, NaN, "3", a tensor, ...), bools, None, ints outside [low, high]."""
    parts = [_tagged("float", st.floats()), st.sampled_from(OTHER)]
    if not bool_ok:
        parts.append(_tagged("bool", st.booleans()))
    if not none_ok:
        parts.append(st.just(("None", None)))
    if low is not None:
        parts.append(_tagged("below", st.integers(max_value=low - 1) | st.sampled_from([low - 1, -(2**63), -(2**70)])))
    if high is not None:
        parts.append(_tagged("above", st.integers(min_value=high + 1) | st.sampled_from([high + 1, 2**64, 10**30])))
    return st.one_of(parts)


def bad_real(low: float | None = 0.0, *, low_open: bool = True, high: float | None = None, inf_ok: bool = False,
             none_ok: bool = False) -> st.SearchStrategy[Bad]:
    """Non-numbers, bools, None, NaN, +-Inf (unless ``inf_ok``), numbers outside the range
    (``low_open``: ``low`` itself is bad, e.g. beta > 0)."""
    parts = [_tagged("bool", st.booleans()), st.sampled_from(OTHER), st.just(("nan", NAN))]
    if not inf_ok:
        parts.append(_tagged("inf", st.sampled_from([INF, -INF])))
    if not none_ok:
        parts.append(st.just(("None", None)))
    if low is not None:
        parts.append(_tagged("below", st.floats(max_value=low, exclude_max=not low_open, allow_nan=False,
                                                allow_infinity=False) | st.just(-(10**400))))
    if high is not None:
        parts.append(_tagged("above", st.floats(min_value=high, exclude_min=True, allow_nan=False,
                                                allow_infinity=False)))
    return st.one_of(parts)


def bad_flag() -> st.SearchStrategy[Bad]:
    """Anything but a bool (0 / 1 included: a flag is True or False)."""
    return st.one_of(st.sampled_from([("int", 0), ("int", 1), ("str", "yes"), ("None", None), ("float", 1.0),
                                      ("tensor", torch.tensor(True)), ("list", [True])]))


def bad_choice(options: Iterable[str], *, none_ok: bool = False) -> st.SearchStrategy[Bad]:
    """Strings outside ``options`` (case changes, empty, unicode) and non-strings."""
    opts = set(options)
    parts = [_tagged("str", st.text(max_size=8).filter(lambda s: s not in opts)),
             st.sampled_from([(f"case:{o}", o.upper()) for o in sorted(opts) if o.upper() not in opts] or [("int", 1)]),
             st.sampled_from([("int", 1), ("bytes", b"x"), ("list", sorted(opts)[:1]), ("object", _Opaque())])]
    if not none_ok:
        parts.append(st.just(("None", None)))
    return st.one_of(parts)


def bad_str(*, none_ok: bool = False) -> st.SearchStrategy[Bad]:
    """Non-strings."""
    values = [("int", 1), ("bytes", b"ab"), ("list", ["a"]), ("float", 1.5), ("object", _Opaque())]
    return st.sampled_from(values if none_ok else [*values, ("None", None)])


def bad_device(*, none_ok: bool = True) -> st.SearchStrategy[Bad]:
    """Devices that do not exist here or hold no data, and non-devices."""
    values = [("meta", "meta"), ("meta", torch.device("meta")), ("str", "gpu"), ("str", ""), ("str", "cpu:x"),
              ("str", "tpu"), ("float", 1.5), ("list", ["cpu"]), ("bool", True)]
    if not torch.cuda.is_available():
        values += [("cuda", "cuda"), ("cuda", "cuda:0")]
    return st.sampled_from(values if none_ok else [*values, ("None", None)])


def bad_generator() -> st.SearchStrategy[Bad]:
    """Non-generators: a seed, a string, a numpy generator."""
    return st.sampled_from([("str", "seed"), ("int", 0), ("float", 1.5), ("numpy", np.random.default_rng(0)),
                            ("object", _Opaque())])


def bad_path(*, to_read: bool = False) -> st.SearchStrategy[Bad]:
    """Non-paths (None, numbers, lists) and invalid strings (empty, NUL); ``to_read``: also a
    missing file and a folder (FileNotFoundError / IsADirectoryError naming the path)."""
    values = [("None", None), ("int", 3), ("float", 1.5), ("list", ["a"]), ("str", ""), ("nul", "a\0b"),
              ("object", _Opaque())]
    if to_read:
        values += [("missing", "/nonexistent-mnemonix/x.npz"), ("folder", scratch_dir())]
    return st.sampled_from(values)


@functools.cache
def scratch_dir() -> str:
    """One temporary folder per process for files the probes write (removed at exit)."""
    folder = tempfile.mkdtemp(prefix="mnemonix-fuzz-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


# -- state snapshots -----------------------------------------------------------------------------
def _tensor_state(t: torch.Tensor) -> tuple:
    head = ("tensor", t.dtype, tuple(t.shape), t.stride(), t.storage_offset(), str(t.device), t.requires_grad)
    if t.is_meta:
        return head
    flat = t.detach().cpu().contiguous().reshape(-1)
    return (*head, bytes(flat.view(torch.uint8).numpy()) if flat.numel() else b"")


def _float_state(v: float) -> tuple:
    return ("float", struct.pack("<d", v))  # NaN == NaN, -0.0 != 0.0: bit-identical


#: type -> snapshot function, for objects whose state is not in their ``__dict__`` (C++ engines).
SNAPSHOTTERS: dict[type, Callable[[Any], Any]] = {}


def _register_defaults() -> None:
    from mnemonix._core import hebbian as core_hebbian
    from mnemonix._core import plastic as core_plastic
    from mnemonix.epinet import SalienceClock

    # the plastic engine's state: every node (string, count, r_level), every edge, the sample count
    SNAPSHOTTERS[core_plastic.Engine] = lambda e: (e.export_arrays(), e.exact_counts, e.samples)
    # Memoria's co-fire graph: per batch row, every edge with its count and every node's fire count
    SNAPSHOTTERS[core_hebbian.HebbianGraph] = lambda g: [(g.edges(b), g.fires(b)) for b in range(g.batch)]
    # a clock's wall-time origin is state only for a "wall" clock (two loads of one file differ there)
    SNAPSHOTTERS[SalienceClock] = lambda c: (c.alpha, c.source, c._time, c._origin if c.source == "wall" else None)
    # PlasticMemory's predictor cache: frozen C++ copies of the graph, keyed by the graph's version; a
    # failed call must not replace one (identity), and a lock holds no state of its own
    SNAPSHOTTERS[core_plastic.Predictor] = lambda p: ("predictor", id(p))
    SNAPSHOTTERS[type(threading.Lock())] = lambda lock: "lock"


_register_defaults()


def snapshot(obj: Any, _seen: dict[int, tuple[Any, str]] | None = None, _path: str = "") -> Any:
    """A comparable, deep copy of every bit of ``obj``'s state (see the module docstring)."""
    seen = {} if _seen is None else _seen
    if isinstance(obj, (bool, int, str, bytes, type(None), torch.dtype, torch.device, type)):
        return (type(obj).__name__, obj)
    if isinstance(obj, float):
        return _float_state(obj)
    if isinstance(obj, torch.Tensor):
        return _tensor_state(obj)
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape, obj.tobytes())
    if isinstance(obj, torch.Generator):
        return ("generator", str(obj.device), bytes(obj.get_state().numpy()))
    if id(obj) in seen:
        return ("seen", seen[id(obj)][1])
    seen[id(obj)] = (obj, _path)  # the object is kept alive: its id cannot be reused during the walk
    for kind, fn in SNAPSHOTTERS.items():
        if isinstance(obj, kind):
            return (kind.__name__, snapshot(fn(obj), seen, f"{_path}<{kind.__name__}>"))
    if isinstance(obj, Mapping):
        return ("mapping", [(repr(k), snapshot(v, seen, f"{_path}[{k!r}]")) for k, v in obj.items()])
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [snapshot(v, seen, f"{_path}[{i}]") for i, v in enumerate(obj)])
    if isinstance(obj, (set, frozenset)):
        return (type(obj).__name__, sorted(repr(v) for v in obj))
    if callable(obj) and not hasattr(obj, "__dict__"):
        return ("callable", repr(obj))
    if not hasattr(obj, "__dict__") and not hasattr(type(obj), "__slots__"):
        # e.g. a C++ engine: its state is invisible to this walk, so a silent pass would prove nothing
        where = _path or "<root>"
        raise TypeError(f"no snapshot for {type(obj).__qualname__} at {where}: register one in SNAPSHOTTERS")
    fields = dict(getattr(obj, "__dict__", {}))
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            fields[slot] = getattr(obj, slot)
    return (type(obj).__name__, {k: snapshot(v, seen, f"{_path}.{k}") for k, v in sorted(fields.items())})


def global_rngs() -> tuple:
    """The global torch and numpy RNG states: a failed call must not consume randomness."""
    return (bytes(torch.random.get_rng_state().numpy()), repr(np.random.get_state()[1][:4].tolist()))


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two snapshots differ first (a readable path), or None when identical."""
    if type(a) is not type(b):
        return path or "<root>"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path} keys {sorted(a)} != {sorted(b)}"
        for k in a:
            where = first_difference(a[k], b[k], f"{path}.{k}")
            if where:
                return where
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path} (length {len(a)} != {len(b)})"
        for i, (x, y) in enumerate(zip(a, b)):
            where = first_difference(x, y, f"{path}[{i}]")
            if where:
                return where
        return None
    return None if a == b else (path or "<root>")


# -- the probe -----------------------------------------------------------------------------------
@dataclass
class Target:
    """A public entry to probe.

    ``call(obj, **kwargs)`` runs the entry on ``obj = make()`` (``make`` is cached by the caller
    when the object is expensive; None for a free function or constructor). ``good`` are valid
    keyword arguments; ``bad[name]`` draws bad values for argument ``name``. ``names`` maps an
    argument to the words its errors must contain (default: the argument's name).
    """

    name: str
    call: Callable[..., Any]
    good: dict[str, Any]
    bad: dict[str, st.SearchStrategy[Bad]]
    make: Callable[[], Any] = lambda: None
    names: dict[str, str] = field(default_factory=dict)
    allowed: tuple[type[BaseException], ...] = ALLOWED

    def __repr__(self) -> str:
        return self.name


def probe(target: Target, arg: str, bad: Bad) -> None:
    """Call ``target`` with ``arg`` replaced by ``bad``; assert the contract (module docstring)."""
    tag, value = bad
    STATS["argument probes"] += 1
    obj = target.make()
    kwargs = {**target.good, arg: value}
    before = (snapshot(obj), global_rngs())
    what = f"{target.name}({arg}=<{tag}> {_short(value)})"
    try:
        target.call(obj, **kwargs)
    except PATH_ERRORS as exc:  # only for a path the user gave: the message names that path
        assert isinstance(value, str) and value in str(exc), f"{what}: raised {type(exc).__name__}: {exc}"
    except target.allowed as exc:
        word, text = target.names.get(arg, arg), str(exc)
        assert word in text, f"{what}: the message does not name {word!r}: {type(exc).__name__}: {exc}"
        # a binding's signature dump or a C++ trace names the argument too, but explains nothing
        assert not any(raw in text for raw in RAW_MESSAGES), f"{what}: a raw library message: {exc}"
    except Exception as exc:  # the contract is broken: show what escaped
        raise AssertionError(f"{what}: raised {type(exc).__name__}: {exc}") from exc
    else:
        raise AssertionError(f"{what}: accepted")
    where = first_difference(before, (snapshot(obj), global_rngs()))
    assert where is None, f"{what}: the failed call changed the state at {where}"
    STATS["argument probes good"] += 1


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {value.dtype} {value.device}"
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
