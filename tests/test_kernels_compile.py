"""Every Triton kernel compiles for an H100 (sm_90) without a GPU.

The interpreter (used by the CPU tests) does not type-check like the compiler, so a kernel can
pass every interpreted test and still fail to compile. Triton ships ptxas: compile the real
kernels to sm_90 in one subprocess where TRITON_INTERPRET is unset.
"""

from __future__ import annotations

import os
import subprocess
import sys

COMPILE_SCRIPT = '''
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mnemonix.kernels import hopfield as kh

target = GPUTarget("cuda", 90, 32)  # H100 / H200


def compile_one(fn, names, types, consts, num_warps=4):
    sig = dict(zip(names, types))
    sig.update({name: "constexpr" for name in consts})
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target,
                   options={"num_warps": num_warps})


partial_args = ["Q", "K", "V", "BIAS", "M_OUT", "L_OUT", "ACC_OUT", "ARG_OUT", "B", "N", "D", "DV",
                "n_per_split", "beta", "stride_qb", "stride_kn", "stride_vn"]
for fn, dt, keys_are_values, extra in [
    (kh._hopfield_partial_small_d, "bf16", True, {"BLOCK_D": 128, "BLOCK_DV": 128}),
    (kh._hopfield_partial_small_d, "fp32", False, {"BLOCK_D": 64, "BLOCK_DV": 32}),
    (kh._hopfield_partial_large_d, "fp16", False, {"BLOCK_D": 128}),
]:
    types = ["*" + dt] * 3 + ["*fp32"] * 4 + ["*i32"] + ["i32"] * 5 + ["fp32"] + ["i32"] * 3
    consts = {"HAS_BIAS": True, "VALUES_ARE_KEYS": keys_are_values, "DOT_FP32": dt == "fp32",
              "BLOCK_B": 16, "BLOCK_N": 64, **extra}
    compile_one(fn, partial_args, types, consts)
compile_one(kh._hopfield_merge, ["M_PART", "L_PART", "ACC_PART", "ARG_PART", "OUT", "LSE", "ARG", "B", "DV", "splits"],
            ["*fp32"] * 3 + ["*i32", "*fp32", "*fp32", "*i64", "i32", "i32", "i32"],
            {"BLOCK_S": 128, "BLOCK_DV": 64})

# salience and lifespan: tests/test_kernels_spills.py compiles the launchers' variants and checks spills.
print("compiled")
'''


def test_every_kernel_compiles_for_sm90_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]
