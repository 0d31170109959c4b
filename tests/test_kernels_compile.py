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
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mnemonix.kernels import hopfield as kh
from mnemonix.kernels import hopfield_bwd as kb

target = GPUTarget("cuda", 90, 32)  # H100 / H200


def compile_one(fn, names, types, consts, num_warps=4):
    sig = dict(zip(names, types))
    sig.update({name: "constexpr" for name in consts})
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target,
                          options={"num_warps": num_warps})


partial_args = ["Q", "K", "V", "BIAS", "ASSOC", "M_OUT", "L_OUT", "ACC_OUT", "ARG_OUT", "B", "N", "D", "DV", "G2",
                "n_per_split", "beta"]
group_strides = ["stride_q1", "stride_q2", "stride_qb", "stride_k1", "stride_k2", "stride_kn", "stride_v1",
                 "stride_v2", "stride_vn", "stride_c1", "stride_c2", "stride_a1", "stride_a2", "stride_ab"]
for fn, dt, keys_are_values, has_assoc, extra in [
    (kh._hopfield_partial_small_d, "bf16", True, False, {"BLOCK_D": 128, "BLOCK_DV": 128}),
    (kh._hopfield_partial_small_d, "fp32", False, True, {"BLOCK_D": 64, "BLOCK_DV": 32}),
    (kh._hopfield_partial_large_d, "fp16", False, True, {"BLOCK_D": 64, "BLOCK_DV": 32}),
]:
    types = ["*" + dt] * 3 + ["*fp32"] * 5 + ["*i32"] + ["i32"] * 6 + ["fp32"] + ["i32"] * 14
    consts = {"HAS_BIAS": True, "HAS_ASSOC": has_assoc, "VALUES_ARE_KEYS": keys_are_values,
              "DOT_FP32": dt == "fp32", "BLOCK_B": 16, "BLOCK_N": 64, "PRECISION": "tf32" if dt == "fp32" else "ieee",
              **extra}
    compile_one(fn, partial_args + group_strides, types, consts)
# allow_tf32: the PRECISION constexpr reaches the PTX (TF32 tensor-core MMAs only when asked for)
for precision in ("ieee", "tf32"):
    types = ["*fp32"] * 8 + ["*i32"] + ["i32"] * 6 + ["fp32"] + ["i32"] * 14
    consts = {"HAS_BIAS": False, "HAS_ASSOC": False, "VALUES_ARE_KEYS": True, "DOT_FP32": True, "BLOCK_B": 64,
              "BLOCK_N": 32, "BLOCK_D": 64, "BLOCK_DV": 64, "PRECISION": precision}
    ptx = compile_one(kh._hopfield_partial_small_d, partial_args + group_strides, types, consts).asm["ptx"]
    assert ("tf32" in ptx) == (precision == "tf32"), precision
compile_one(kh._hopfield_merge, ["M_PART", "L_PART", "ACC_PART", "ARG_PART", "OUT", "LSE", "ARG", "B", "DV", "splits"],
            ["*fp32"] * 3 + ["*i32", "*fp32", "*fp32", "*i64", "i32", "i32", "i32"],
            {"BLOCK_S": 128, "BLOCK_DV": 64})

# backward (FlashAttention-2): dK/dV per key tile, dQ per query tile, at the launcher's block sizes
dkdv_args = ["Q", "K", "V", "DO", "LSE", "DELTA", "BIAS", "ASSOC", "DK", "DV", "DBIAS", "B", "N", "D", "DV_DIM",
             "G2", "K2", "R1", "R2", "beta"]
dq_args = ["Q", "K", "V", "DO", "LSE", "DELTA", "BIAS", "ASSOC", "DQ", "B", "N", "D", "DV_DIM", "G2", "n_per_split",
           "beta"]
for dt, width, values_are_keys, flags in [
    ("bf16", 128, False, (True, True, True)), ("fp16", 64, True, (False, False, False)),
    ("fp32", 64, True, (True, False, True)), ("bf16", 256, False, (False, True, False)),
]:
    cfg = kb.backward_config(width, width, {"fp32": torch.float32, "fp16": torch.float16,
                                            "bf16": torch.bfloat16}[dt], "dkdv", interpret=False)
    block_b, block_n, warps = cfg.block_b, cfg.block_n, cfg.num_warps
    do_type = "*fp32" if dt == "fp32" else "*" + dt
    # fp32 variants with TF32 dots here (allow_tf32=True); the IEEE ones compile in test_kernels_spills.py
    consts = {"HAS_BIAS": flags[0], "HAS_ASSOC": flags[1], "VALUES_ARE_KEYS": values_are_keys,
              "DOT_FP32": dt == "fp32", "BLOCK_B": block_b, "BLOCK_N": block_n, "BLOCK_D": width, "BLOCK_DV": width,
              "PRECISION": "tf32" if dt == "fp32" else "ieee"}
    compile_one(kb._hopfield_bwd_dkdv, dkdv_args + group_strides,
                ["*" + dt] * 3 + [do_type] + ["*fp32"] * 7 + ["i32"] * 8 + ["fp32"] + ["i32"] * 14,
                {**consts, "NEED_DBIAS": flags[2]}, num_warps=warps)
    compile_one(kb._hopfield_bwd_dq, dq_args + group_strides,
                ["*" + dt] * 3 + [do_type] + ["*fp32"] * 5 + ["i32"] * 6 + ["fp32"] + ["i32"] * 14, consts,
                num_warps=warps)

# salience and lifespan: tests/test_kernels_spills.py compiles the launchers' variants and checks spills.
print("compiled")
'''


def test_every_kernel_compiles_for_sm90_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]
