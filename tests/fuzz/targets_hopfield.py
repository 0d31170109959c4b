"""Probe targets: the Hopfield models (``mnemonix.hopfield``)."""

from __future__ import annotations

import functools
import os

import torch

from mnemonix.hopfield import ClassicalHopfield, DenseHopfield, HopfieldRetrieval, ModernHopfield

from .harness import (
    Target,
    bad_choice,
    bad_device,
    bad_flag,
    bad_int,
    bad_path,
    bad_real,
    bad_tensor,
    scratch_dir,
)

_G = torch.Generator().manual_seed(7)
P = torch.randn(6, 5, generator=_G)  # stored patterns [N, d]
Q = torch.randn(3, 5, generator=_G)  # queries [B, d]
B = torch.randint(0, 2, (4, 16), generator=_G).float() * 2 - 1  # +-1 patterns [P, n]
CUES = torch.randint(0, 2, (3, 16), generator=_G).float() * 2 - 1
REAL = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int16, torch.int32,
        torch.int64)
BACKENDS = ("triton", "cpp", "amx", "sdpa", "gemm", "torch", "reference")
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
UNUSED = os.path.join(scratch_dir(), "unused.npz")  # a save target of the good call
BATCH = ("rank+1", "rank-1", "empty:0")  # [..., B, d] accepts any leading shape, B = 0 included


def _bipolar_bad(good: torch.Tensor, **kw):
    """Bad +-1 tensors: the generic ones plus a 0 or 2 among the bits."""
    from hypothesis import strategies as st

    def with_value(pos: int, value: float) -> tuple[str, torch.Tensor]:
        out = good.clone()
        out.view(-1)[pos % out.numel()] = value
        return f"value {value}@{pos}", out

    return st.one_of(bad_tensor(good, dtypes=REAL, **kw),
                     st.builds(with_value, st.integers(0, 1 << 16), st.sampled_from([0.0, 2.0, -3.0, 0.5])))


def modern() -> ModernHopfield:
    return ModernHopfield(P, beta=4.0, max_iter=2)


def classical() -> ClassicalHopfield:
    return ClassicalHopfield(B, max_iter=5)


def dense() -> DenseHopfield:
    return DenseHopfield(B, interaction="polynomial", degree=3, max_iter=3)


@functools.cache
def saved(cls_name: str) -> str:
    """A file written by ``save`` of a fresh network of class ``cls_name``."""
    path = os.path.join(scratch_dir(), f"{cls_name}.npz")
    {"ModernHopfield": modern, "ClassicalHopfield": classical, "DenseHopfield": dense}[cls_name]().save(path)
    return path


TARGETS = [
    Target("ModernHopfield", lambda _, **kw: ModernHopfield(**kw),
           dict(patterns=P, beta=4.0, max_iter=2, eps=1e-4, backend=None),
           dict(patterns=bad_tensor(P, skip=("type:None",)), beta=bad_real(high=FLOAT32_MAX), max_iter=bad_int(),
                eps=bad_real(), backend=bad_choice(BACKENDS, none_ok=True))),
    Target("ModernHopfield.store", lambda net, **kw: net.store(**kw), dict(patterns=P),
           dict(patterns=bad_tensor(P)), make=modern),
    Target("ModernHopfield.add", lambda net, **kw: net.add(**kw), dict(patterns=P[:2]),
           dict(patterns=bad_tensor(P[:2], dtypes=(torch.float32,), sized=(1,))), make=modern),
    Target("ModernHopfield.retrieve", lambda net, **kw: net.retrieve(**kw),
           dict(queries=Q, max_iter=None, batch_size=None, with_energy=True),
           dict(queries=bad_tensor(Q, dtypes=(torch.float32,), sized=(1,), skip=BATCH),
                max_iter=bad_int(none_ok=True), batch_size=bad_int(none_ok=True), with_energy=bad_flag()),
           make=modern),
    Target("ModernHopfield.energy", lambda net, **kw: net.energy(**kw), dict(states=Q),
           dict(states=bad_tensor(Q, sized=(1,), skip=BATCH)), make=modern),
    Target("ModernHopfield.save", lambda net, **kw: net.save(**kw), dict(path=UNUSED),
           dict(path=bad_path()), make=modern),
    Target("ClassicalHopfield", lambda _, **kw: ClassicalHopfield(**kw), dict(patterns=B, max_iter=5),
           dict(patterns=_bipolar_bad(B, skip=("type:None",)), max_iter=bad_int())),
    Target("ClassicalHopfield.store", lambda net, **kw: net.store(**kw), dict(patterns=B),
           dict(patterns=_bipolar_bad(B)), make=classical),
    Target("ClassicalHopfield.add", lambda net, **kw: net.add(**kw), dict(patterns=B[:1]),
           dict(patterns=_bipolar_bad(B[:1], sized=(1,))), make=classical),
    Target("ClassicalHopfield.retrieve", lambda net, **kw: net.retrieve(**kw), dict(cues=CUES, max_iter=None),
           dict(cues=_bipolar_bad(CUES, sized=(1,), skip=("rank+1", "rank-1")), max_iter=bad_int(none_ok=True)),
           make=classical),
    Target("ClassicalHopfield.energy", lambda net, **kw: net.energy(**kw), dict(states=CUES),
           dict(states=_bipolar_bad(CUES, sized=(1,), skip=("rank+1", "rank-1"))), make=classical),
    Target("ClassicalHopfield.save", lambda net, **kw: net.save(**kw), dict(path=UNUSED),
           dict(path=bad_path()), make=classical),
    Target("DenseHopfield", lambda _, **kw: DenseHopfield(**kw),
           dict(patterns=B, interaction="polynomial", degree=3, update="sequential", max_iter=3),
           dict(patterns=_bipolar_bad(B, skip=("type:None",)), interaction=bad_choice(("polynomial", "exponential")),
                degree=bad_int(), update=bad_choice(("sequential", "synchronous")), max_iter=bad_int())),
    Target("DenseHopfield.store", lambda net, **kw: net.store(**kw), dict(patterns=B),
           dict(patterns=_bipolar_bad(B)), make=dense),
    Target("DenseHopfield.add", lambda net, **kw: net.add(**kw), dict(patterns=B[:1]),
           dict(patterns=_bipolar_bad(B[:1], sized=(1,))), make=dense),
    Target("DenseHopfield.retrieve", lambda net, **kw: net.retrieve(**kw), dict(cues=CUES, max_iter=None),
           dict(cues=_bipolar_bad(CUES, sized=(1,), skip=("rank+1", "rank-1")), max_iter=bad_int(none_ok=True)),
           make=dense),
    Target("DenseHopfield.energy", lambda net, **kw: net.energy(**kw), dict(states=CUES),
           dict(states=_bipolar_bad(CUES, sized=(1,), skip=("rank+1", "rank-1"))), make=dense),
    Target("DenseHopfield.flip_energy_changes", lambda net, **kw: net.flip_energy_changes(**kw), dict(states=CUES),
           dict(states=_bipolar_bad(CUES, sized=(1,), skip=("rank+1",))), make=dense),
    Target("DenseHopfield.save", lambda net, **kw: net.save(**kw), dict(path=UNUSED),
           dict(path=bad_path()), make=dense),
    Target("HopfieldRetrieval", lambda _, **kw: HopfieldRetrieval(**kw),
           dict(beta=1.0, update_steps=0, eps=1e-4, learn_beta=False, backend=None),
           dict(beta=bad_real(high=FLOAT32_MAX), update_steps=bad_int(0), eps=bad_real(), learn_beta=bad_flag(),
                backend=bad_choice(BACKENDS, none_ok=True))),
    Target("HopfieldRetrieval.forward", lambda layer, **kw: layer(**kw),
           dict(queries=Q, keys=P, values=None, mask=None, bias=None),
           dict(queries=bad_tensor(Q, sized=(1,), skip=("rank+1", "empty:0")), keys=bad_tensor(P, sized=(1,)),
                values=bad_tensor(P, sized=(0,), skip=("type:None", "size:1", "empty:1"))),
           make=lambda: HopfieldRetrieval(beta=2.0)),
    # a learnt beta reaches the op as a tensor
    Target("HopfieldRetrieval(learn_beta=True).forward", lambda layer, **kw: layer(**kw),
           dict(queries=Q, keys=P, values=None, mask=None, bias=None),
           dict(queries=bad_tensor(Q, sized=(1,), skip=("rank+1", "empty:0")), keys=bad_tensor(P, sized=(1,)),
                values=bad_tensor(P, sized=(0,), skip=("type:None", "size:1", "empty:1"))),
           make=lambda: HopfieldRetrieval(beta=2.0, learn_beta=True)),
] + [
    Target(f"{cls.__name__}.load", lambda _, cls=cls, **kw: cls.load(**kw),
           dict(path=saved(cls.__name__), device=None), dict(path=bad_path(to_read=True), device=bad_device()),
           make=lambda: None)
    for cls in (ModernHopfield, ClassicalHopfield, DenseHopfield)
]
