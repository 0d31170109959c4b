"""The salience and lifespan Triton kernels compile for an H100 (sm_90) without a GPU.

The interpreter (used by the CPU tests) does not type-check like the compiler, so a kernel can
pass every interpreted test and still fail to compile. Triton ships ptxas: compile the real
kernels to sm_90 in a subprocess where TRITON_INTERPRET is unset.
"""

from __future__ import annotations

import os
import subprocess
import sys

COMPILE_SCRIPT = '''
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mnemonix.kernels import lifespan as kl
from mnemonix.kernels import salience as ks

target = GPUTarget("cuda", 90, 32)


def compile_one(fn, names, types, consts, num_warps=4):
    sig = dict(zip(names, types))
    sig.update({name: "constexpr" for name in consts})
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target,
                   options={"num_warps": num_warps})


salience_args = ["Q", "K", "LogS", "Shift", "Valid", "OutVal", "OutIdx", "NonFinite", "B", "N", "D",
                 "n_per_split", "stride_qb", "stride_kn", "stride_os", "stride_ob"]
for key_type, dot_fp32, has_valid, topk, block_b in [("fp32", True, False, 5, 16), ("bf16", False, True, 64, 64),
                                                      ("fp16", False, True, 1, 32)]:
    types = ["*fp32", "*" + key_type, "*fp64", "*fp64", "*i8", "*fp32", "*i32", "*i32"] + ["i32"] * 8
    consts = {"HAS_VALID": has_valid, "TOPK": topk, "K_PAD": max(2, triton.next_power_of_2(topk)),
              "BLOCK_B": block_b, "BLOCK_N": 64 if block_b == 64 else 128, "BLOCK_D": 128,
              "DOT_FP32": dot_fp32, "NEGLIGIBLE_LOG": ks.NEGLIGIBLE_LOG}
    compile_one(ks._salience_topk_kernel, salience_args, types, consts, num_warps=8)

lifespan_args = ["Lifespan", "Types", "Age", "Idx", "Delta", "OutLifespan", "OutTypes", "OutAge", "OutKeep",
                 "OutRank", "OutNumKept", "length", "num_reminded", "stm_capacity"]
for has_age, block_m in [(True, 1024), (False, 16)]:
    types = ["*fp32", "*u8", "*i32", "*i64", "*fp32", "*fp32", "*u8", "*i32", "*i8", "*i64", "*i64",
             "i32", "i32", "i32"]  # ages are int32 (Engrams), indices int64
    compile_one(kl._lifespan_step_kernel, lifespan_args, types,
                {"HAS_AGE": has_age, "BLOCK_M": block_m, "BLOCK_R": 64})
print("compiled")
'''


def test_salience_and_lifespan_kernels_compile_for_sm90_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]
