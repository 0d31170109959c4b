"""The Hopfield kernel variants the launchers pick on an H200, compiled for sm_90 (spill report).

Used in a subprocess where ``TRITON_INTERPRET`` is unset (tests/test_kernels_spills.py), next to
tests/sm90_build.py. The shapes: fp32 / fp16 / bf16, d in {16, 32, 64, 128, 256, 12288} (dv = d),
B in {1, 64, 1024} (and batch_invariant=True), a store of N = 1e6 patterns on 132 SMs. Each
variant is compiled at its heaviest flags (a bias and an association mask, values apart from the
keys: one more tile than K = V); the backward kernels run where ``use_kernels`` says so (16-bit
d <= 256, float32 d <= 64; wider heads take the streaming torch backward).
"""

from __future__ import annotations

import torch
import triton
from sm90_build import compile_sm90, registers

from mnemonix.kernels import hopfield as kh
from mnemonix.kernels import hopfield_bwd as kb

DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
WIDTHS = (16, 32, 64, 128, 256, 12288)  # 32: the table rows between the asked-for widths
BATCHES = (1, 64, 1024)
N_STORE = 10**6
H200_SMS = 132

GROUP_STRIDES = ["stride_q1", "stride_q2", "stride_qb", "stride_k1", "stride_k2", "stride_kn", "stride_v1",
                 "stride_v2", "stride_vn", "stride_c1", "stride_c2", "stride_a1", "stride_a2", "stride_ab"]
PARTIAL_ARGS = ["Q", "K", "V", "BIAS", "ASSOC", "M_OUT", "L_OUT", "ACC_OUT", "ARG_OUT", "B", "N", "D", "DV", "G2",
                "n_per_split", "beta"] + GROUP_STRIDES
MERGE_ARGS = ["M_PART", "L_PART", "ACC_PART", "ARG_PART", "OUT", "LSE", "ARG", "B", "DV", "splits"]
DKDV_ARGS = ["Q", "K", "V", "DO", "LSE", "DELTA", "BIAS", "ASSOC", "DK", "DV", "DBIAS", "B", "N", "D", "DV_DIM",
             "G2", "K2", "R1", "R2", "beta"] + GROUP_STRIDES
DQ_ARGS = ["Q", "K", "V", "DO", "LSE", "DELTA", "BIAS", "ASSOC", "DQ", "B", "N", "D", "DV_DIM", "G2", "n_per_split",
           "beta"] + GROUP_STRIDES


def _splits(b: int, cfg) -> int:
    """The forward's split count on an H200 (the launcher's formula, 132 SMs)."""
    splits = kh.planned_splits(triton.cdiv(b, cfg.block_b), N_STORE, kh.fewest_per_split(cfg), H200_SMS)
    n_per_split = triton.cdiv(triton.cdiv(N_STORE, splits), cfg.block_n) * cfg.block_n
    return triton.cdiv(N_STORE, n_per_split)


def variants() -> list[tuple]:
    """Distinct ``(kind, dtype name, config, extra)`` the launchers pick for the shapes above."""
    seen: dict[tuple, None] = {}
    for dtype, name in DTYPES.items():
        for width in WIDTHS:
            for b in BATCHES:
                for invariant in (False, True):
                    cfg = kh.hopfield_config(b, width, width, dtype, interpret=False, batch_invariant=invariant)
                    seen[("partial", name, cfg, None)] = None
                    splits = (triton.cdiv(N_STORE, kh.BATCH_INVARIANT_SPLIT) if invariant else _splits(b, cfg))
                    seen[("merge", "fp32", kh.merge_tiles(min(splits, kh.MAX_SPLITS), width), None)] = None
            if kb.use_kernels(width, width, dtype, interpret=False):
                for kernel in ("dkdv", "dq"):
                    seen[(kernel, name, kb.backward_config(width, width, dtype, kernel, interpret=False), None)] = None
    return list(seen)


def _flags(cfg) -> dict:
    return {"HAS_BIAS": True, "HAS_ASSOC": True, "VALUES_ARE_KEYS": False, "DOT_FP32": cfg.dot_fp32,
            "BLOCK_B": cfg.block_b, "BLOCK_N": cfg.block_n, "BLOCK_D": cfg.block_d, "PRECISION": "ieee"}


def label(item) -> str:
    """A variant's name in the report."""
    kind, dt, cfg, _ = item
    if kind == "merge":
        return f"hopfield merge S{cfg[0]} DV{cfg[1]} w4"
    tiles = f"B{cfg.block_b} N{cfg.block_n} D{cfg.block_d} w{cfg.num_warps} s{cfg.num_stages}"
    if kind == "partial" and not cfg.small_d:
        return f"hopfield fwd large-d {dt} {tiles} DV{cfg.block_dv}"
    if kind == "partial":
        return f"hopfield fwd small-d {dt} {tiles}"
    return f"hopfield bwd {kind} {dt} {tiles}"


def build(item) -> tuple[str, int, int, int]:
    """Compile one variant: ``(name, registers, spill store bytes, spill load bytes)``."""
    kind, dt, cfg, _ = item
    if kind == "merge":
        block_s, block_dv = cfg
        types = ["*fp32"] * 3 + ["*i32", "*fp32", "*fp32", "*i64", "i32", "i32", "i32"]
        built = compile_sm90(kh._hopfield_merge, dict(zip(MERGE_ARGS, types)),
                             {"BLOCK_S": block_s, "BLOCK_DV": block_dv}, num_warps=4, num_stages=3)
        return (label(item), *_report(built))
    if kind == "partial":
        fn = kh._hopfield_partial_small_d if cfg.small_d else kh._hopfield_partial_large_d
        consts = {**_flags(cfg), "BLOCK_DV": cfg.block_dv}
        types = ["*" + dt] * 3 + ["*fp32"] * 5 + ["*i32"] + ["i32"] * 6 + ["fp32"] + ["i32"] * 14
        built = compile_sm90(fn, dict(zip(PARTIAL_ARGS, types)), consts, num_warps=cfg.num_warps,
                             num_stages=cfg.num_stages)
        return (label(item), *_report(built))
    consts = {**_flags(cfg), "BLOCK_DV": cfg.block_dv}
    do_type = "*fp32" if cfg.dot_fp32 else "*" + dt
    if kind == "dkdv":
        types = ["*" + dt] * 3 + [do_type] + ["*fp32"] * 7 + ["i32"] * 8 + ["fp32"] + ["i32"] * 14
        built = compile_sm90(kb._hopfield_bwd_dkdv, dict(zip(DKDV_ARGS, types)), {**consts, "NEED_DBIAS": True},
                             num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        types = ["*" + dt] * 3 + [do_type] + ["*fp32"] * 5 + ["i32"] * 6 + ["fp32"] + ["i32"] * 14
        built = compile_sm90(kb._hopfield_bwd_dq, dict(zip(DQ_ARGS, types)), consts, num_warps=cfg.num_warps,
                             num_stages=cfg.num_stages)
    return (label(item), *_report(built))


def _report(built) -> tuple[int, int, int]:
    r = registers(*built)
    return r.regs, r.spill_stores, r.spill_loads
