"""Probe targets: the public ops (``mnemonix.ops``)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from mnemonix import ops

from .harness import INF, NAN, Target, bad_choice, bad_flag, bad_int, bad_real, bad_tensor

_G = torch.Generator().manual_seed(11)
N, D = 7, 5
Q = torch.randn(3, D, generator=_G)
K = torch.randn(N, D, generator=_G)
V = torch.randn(N, 4, generator=_G)
MASK = torch.arange(N) % 3 != 0
BIAS = torch.randn(N, generator=_G)
R0 = torch.rand(N, generator=_G, dtype=torch.float64) + 0.1
TAU = torch.arange(N, dtype=torch.float64)
LOG_S = torch.randn(N, generator=_G, dtype=torch.float64)
VALID = torch.arange(N) < 5
NORMS = K.norm(dim=1)
SALIENCE_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

LIFESPAN = torch.rand(2, 6, generator=_G) * 3
TYPES = torch.tensor([[1, 2, 2, 3, 0, 1], [2, 2, 1, 3, 3, 0]], dtype=torch.uint8)
AGE = torch.randint(0, 9, (2, 6), generator=_G, dtype=torch.int32)
REMINDED = torch.tensor([[0, 2, -1], [5, 1, 1]])
DELTA = torch.rand(2, 3, generator=_G)
STEP = ops.lifespan_step(LIFESPAN, TYPES, AGE, REMINDED, DELTA, 2)
VALUES = torch.randn(2, 6, 3, generator=_G)
HOPFIELD_BACKENDS = ("triton", "cpp", "amx", "sdpa", "gemm", "torch", "reference")
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
NQ = torch.randn(2, 3, 4, generator=_G)  # nearest_keys: queries [B, W, H], keys [B, K, H]
NK = torch.randn(2, 6, 4, generator=_G)
NEAREST_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _hopfield(**kw):
    return ops.hopfield_retrieve(**kw)


def _salience(**kw):
    return ops.salience_topk(**kw)


def _with_value(good: torch.Tensor, pos: int, value: float) -> tuple[str, torch.Tensor]:
    """``good`` with one element set to ``value`` (a bad value of a valid dtype)."""
    out = good.clone()
    out.view(-1)[pos % out.numel()] = value
    return f"{value}@{pos}", out


def _bad_mask(good: torch.Tensor) -> st.SearchStrategy:
    return st.one_of(bad_tensor(good, dtypes=(torch.bool,), sized=(0,), skip=("type:None",)),
                     st.just(("all False", torch.zeros_like(good))))


TARGETS = [
    Target("hopfield_retrieve", lambda _, **kw: _hopfield(**kw),
           dict(queries=Q, keys=K, values=None, beta=2.0, mask=None, bias=None, update_steps=0, eps=1e-4,
                return_lse=False, return_argmax=False, backend=None),
           dict(queries=bad_tensor(Q, sized=(1,), skip=("rank+1", "empty:0")),
                keys=bad_tensor(K, sized=(1,), skip=("nonfinite",)),
                values=bad_tensor(V, sized=(0,), skip=("type:None", "size:1", "empty:1", "nonfinite")),
                beta=bad_real(high=FLOAT32_MAX), mask=_bad_mask(MASK),
                bias=bad_tensor(BIAS, dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64),
                                sized=(0,), skip=("type:None",)),
                update_steps=bad_int(0), eps=bad_real(),
                backend=bad_choice(HOPFIELD_BACKENDS, none_ok=True))),
    # keys / values with NaN/Inf are found through the result (see ops/hopfield.py): probe them apart
    Target("hopfield_retrieve(values=V)", lambda _, **kw: _hopfield(**kw),
           dict(queries=Q, keys=K, values=V, beta=2.0), dict(values=bad_tensor(V, sized=(0,), skip=(
               "type:None", "size:1", "empty:1")), keys=bad_tensor(K, sized=(1,)))),
    Target("salience_topk(log_salience)", lambda _, **kw: _salience(**kw),
           dict(queries=Q, keys=K, payloads=V, k=3, log_salience=LOG_S, valid=None, key_norms=None, backend=None),
           dict(queries=bad_tensor(Q, sized=(1,), skip=("empty:0",)),
                keys=bad_tensor(K, sized=(1,)),
                # NaN/Inf payloads are refused only in the rows a recall selects (documented)
                payloads=bad_tensor(V, sized=(0,), skip=("type:None", "size:1", "empty:1", "nonfinite")),
                k=bad_int(1, N),
                log_salience=bad_tensor(LOG_S, dtypes=SALIENCE_DTYPES, sized=(0,), skip=("type:None",)),
                valid=bad_tensor(VALID, dtypes=(torch.bool,), sized=(0,), skip=("type:None",)),
                key_norms=bad_tensor(NORMS, dtypes=SALIENCE_DTYPES, sized=(0,), skip=("type:None",)),
                backend=bad_choice(("torch", "triton"), none_ok=True))),
    Target("salience_topk(r0, tau)", lambda _, **kw: _salience(**kw),
           dict(queries=Q, keys=K, payloads=None, k=2, r0=R0, tau=TAU, alpha=0.5, now=9.0),
           dict(r0=st.one_of(bad_tensor(R0, dtypes=SALIENCE_DTYPES, sized=(0,)),
                             st.just(("zero", torch.zeros_like(R0))), st.just(("negative", -R0))),
                tau=bad_tensor(TAU, dtypes=SALIENCE_DTYPES, sized=(0,)),
                alpha=bad_real(0.0, low_open=False), now=bad_real(None))),
    Target("log_salience", lambda _, **kw: ops.log_salience(**kw), dict(r0=R0, tau=TAU, alpha=0.5, now=9.0),
           dict(r0=st.one_of(bad_tensor(R0, dtypes=SALIENCE_DTYPES, sized=(0,)),
                             st.just(("zero", torch.zeros_like(R0))), st.just(("negative", -R0))),
                tau=bad_tensor(TAU, dtypes=SALIENCE_DTYPES, sized=(0,)),
                alpha=bad_real(0.0, low_open=False), now=bad_real(None))),
    Target("search_topk", lambda _, **kw: ops.search_topk(**kw),
           dict(queries=Q, keys=K, k=3, scales=None, metric="ip", mask=None, tie_ids=None, max_norm=None,
                exact_scores=False, backend=None),
           dict(queries=bad_tensor(Q, sized=(1,), skip=("empty:0",)),
                keys=bad_tensor(K, dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.int8), sized=(1,),
                                skip=("empty:0",)),
                k=bad_int(1), metric=bad_choice(("ip", "cos")),
                mask=bad_tensor(MASK, dtypes=(torch.bool,), sized=(0,), skip=("type:None",)),
                tie_ids=bad_tensor(torch.arange(N), dtypes=(torch.int64,), sized=(0,), skip=("type:None",)),
                max_norm=bad_real(0.0, low_open=False, none_ok=True), exact_scores=bad_flag(),
                backend=bad_choice(("triton", "cpp", "torch"), none_ok=True))),
    Target("nearest_keys", lambda _, **kw: ops.nearest_keys(**kw),
           dict(queries=NQ, keys=NK, k=2, reduce="mean", invalid=None, backend=None),
           dict(queries=bad_tensor(NQ, dtypes=NEAREST_DTYPES, sized=(0, 2), skip=("empty:1",)),
                keys=bad_tensor(NK, dtypes=NEAREST_DTYPES, sized=(0, 2)),
                k=bad_int(0, NK.shape[1]), reduce=bad_choice(("mean", "sum")),
                invalid=bad_tensor(NK[..., 0] > 0, dtypes=(torch.bool,), sized=(0, 1), skip=("type:None",)),
                backend=bad_choice(("certified", "exact", "gemm"), none_ok=True))),
    Target("lifespan_step", lambda _, **kw: ops.lifespan_step(**kw),
           dict(lifespan=LIFESPAN, types=TYPES, age=AGE, reminded_indices=REMINDED, delta=DELTA, stm_capacity=2,
                backend=None),
           # +inf is a valid lifespan (an engram that never expires): NaN and -inf only
           dict(lifespan=st.one_of(bad_tensor(LIFESPAN, dtypes=(torch.float32,), sized=(0, 1), skip=("nonfinite",)),
                                   st.builds(_with_value, st.just(LIFESPAN), st.integers(0, 1 << 16),
                                             st.sampled_from([NAN, -INF]))),
                types=st.one_of(bad_tensor(TYPES, dtypes=(torch.uint8,), sized=(0, 1)),
                                st.builds(_with_value, st.just(TYPES), st.integers(0, 1 << 16),
                                          st.sampled_from([4, 7, 255]))),
                age=bad_tensor(AGE, dtypes=(torch.int32,), sized=(0, 1), skip=("type:None",)),
                reminded_indices=st.one_of(
                    bad_tensor(REMINDED, dtypes=(torch.int64, torch.int32), sized=(0, 1), skip=("size:1", "empty:1")),
                    st.just(("index >= M", REMINDED + 6))),
                delta=bad_tensor(DELTA, dtypes=tuple(d for d in (torch.float32, torch.float64, torch.float16,
                                                                 torch.bfloat16, torch.int64, torch.int32,
                                                                 torch.int8, torch.uint8)),
                                 sized=(0, 1)),
                stm_capacity=bad_int(0), backend=bad_choice(("triton", "torch"), none_ok=True))),
    Target("compact_engrams", lambda _, **kw: ops.compact_engrams(**kw),
           dict(values=VALUES, step=STEP, pad_value=0, pad_front=True, out=None),
           dict(values=bad_tensor(VALUES, dtypes=tuple(getattr(torch, n) for n in (
               "float32", "float64", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool", "complex64")),
               sized=(0, 1), skip=("rank+1", "empty:2", "nonfinite")))),  # any per-engram values, NaN included
]

# Faults found and not yet fixed, left out of TARGETS above so that the suite passes; each is
# (call, what happens, what should). Empty: every one found so far is fixed and probed above.
KNOWN_FAULTS: list[tuple[str, str, str]] = []
