"""The salience, lifespan and Hopfield kernel variants the launchers pick compile for sm_90 without spills.

A spill moves registers to local memory (L1/L2 traffic inside the inner loop). The launchers
choose tiles from a table (``kernels/salience.py`` ``SM90_TILES``, ``kernels/lifespan.py``
``lifespan_config``); this test compiles every variant the tables can produce for an H200 --
each key dtype, each BLOCK_B, the smallest and the largest running list -- and reads ptxas's
report (tests/sm90_build.py). It needs no GPU: Triton ships ptxas. The Hopfield forward (small-d,
large-d, merge) and backward (dK/dV, dQ) variants for fp32 / fp16 / bf16, d in {16, 64, 128, 256,
12288} and B in {1, 64, 1024} are listed by tests/hopfield_sm90_variants.py (tables
``kernels/hopfield.py`` ``SM90_TILES`` and ``kernels/hopfield_bwd.py`` ``SM90_BWD_TILES``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r'''
import json, sys
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, TESTS_DIR)
import torch
from sm90_build import compile_sm90, registers
from mnemonix.kernels import lifespan as kl
from mnemonix.kernels import salience as ks

SALIENCE_ARGS = ["Q", "K", "LogS", "Shift", "Valid", "OutVal", "OutIdx", "NonFinite", "B", "N", "D",
                 "n_per_split", "topk", "stride_qb", "stride_kn", "stride_os", "stride_ob"]
LIFESPAN_ARGS = ["Lifespan", "Types", "Age", "Idx", "Delta", "OutLifespan", "OutTypes", "OutAge", "OutKeep",
                 "OutRank", "OutNumKept", "length", "num_reminded", "stm_capacity"]
NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def salience_variants():
    seen = {}
    for dtype in NAMES:
        for B in (1, 32, 64):
            for n_cand in (13, ks.MAX_K_PAD):  # k = 5 and the largest list
                cfg = ks.salience_config(B, 128, n_cand, dtype, interpret=False)
                seen[(NAMES[dtype], cfg)] = None
    return list(seen)


def build_salience(item):
    key_type, cfg = item
    types = ["*fp32", "*" + key_type, "*fp64", "*fp64", "*i8", "*fp32", "*i32", "*i32"] + ["i32"] * 9
    consts = {"HAS_VALID": True, "K_PAD": cfg.k_pad, "BLOCK_B": cfg.block_b, "BLOCK_N": cfg.block_n,
              "BLOCK_D": cfg.block_d, "DOT_FP32": cfg.dot_fp32, "NEGLIGIBLE_LOG": -80.0}
    r = registers(*compile_sm90(ks._salience_topk_kernel, dict(zip(SALIENCE_ARGS, types)), consts,
                                num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    name = (f"salience {key_type} B{cfg.block_b} N{cfg.block_n} D{cfg.block_d} K{cfg.k_pad} "
            f"w{cfg.num_warps} s{cfg.num_stages}")
    return name, r.regs, r.spill_stores, r.spill_loads


def build_lifespan(length):
    block_m, num_warps = kl.lifespan_config(length)
    types = ["*fp32", "*u8", "*i32", "*i64", "*fp32", "*fp32", "*u8", "*i32", "*i8", "*i64", "*i64",
             "i32", "i32", "i32"]  # ages are int32 (Engrams), indices int64
    consts = {"HAS_AGE": True, "BLOCK_M": block_m, "WORKING": 1, "SHORTTERM": 2, "LONGTERM": 3}
    r = registers(*compile_sm90(kl._lifespan_step_kernel, dict(zip(LIFESPAN_ARGS, types)), consts,
                                num_warps=num_warps, num_stages=1))
    return f"lifespan M{block_m} w{num_warps}", r.regs, r.spill_stores, r.spill_loads


if __name__ == "__main__":
    with ProcessPoolExecutor(max_workers=int(sys.argv[1])) as pool:
        rows = list(pool.map(build_salience, salience_variants())) + list(pool.map(build_lifespan, (1, 10**6)))
    print("RESULT " + json.dumps(rows))
'''


HOPFIELD_SCRIPT = r'''
import json, sys
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, TESTS_DIR)
import hopfield_sm90_variants as hv

if __name__ == "__main__":
    with ProcessPoolExecutor(max_workers=int(sys.argv[1])) as pool:
        rows = list(pool.map(hv.build, hv.variants()))
    print("RESULT " + json.dumps(rows))
'''


def compile_report(script: str = SCRIPT) -> list[tuple[str, int, int, int]]:
    """``(variant, registers, spill store bytes, spill load bytes)`` of every chosen variant."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["TRITON_DUMP_PTXAS_LOG"] = "1"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = script.replace("TESTS_DIR", repr(tests_dir))
    workers = str(max(1, min(4, os.cpu_count() or 1)))
    proc = subprocess.run([sys.executable, "-c", script, workers], capture_output=True, text=True, env=env,
                          timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return [tuple(row) for row in json.loads(line[len("RESULT "):])]


def test_chosen_variants_compile_for_sm90_without_spills():
    report = compile_report()
    assert len(report) >= 10  # 3 dtypes x 3 BLOCK_B x 2 list sizes (deduplicated) + 2 lifespan tiles
    table = "\n".join(f"{name:48s} regs={regs:3d} spill st/ld={st}/{ld}" for name, regs, st, ld in report)
    print(table)
    spilled = [row for row in report if row[2] or row[3]]
    assert not spilled, "variants that spill on sm_90:\n" + table
    assert all(regs <= 255 for _, regs, _, _ in report)


def test_hopfield_variants_compile_for_sm90_without_spills():
    report = compile_report(HOPFIELD_SCRIPT)
    assert len(report) >= 40  # forward small-d / large-d / merge and backward dK/dV, dQ, deduplicated
    table = "\n".join(f"{name:52s} regs={regs:3d} spill st/ld={st}/{ld}" for name, regs, st, ld in report)
    print(table)
    spilled = [row for row in report if row[2] or row[3]]
    assert not spilled, "variants that spill on sm_90:\n" + table
    assert all(regs <= 255 for _, regs, _, _ in report)
