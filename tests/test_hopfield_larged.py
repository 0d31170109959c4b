"""The large-d Hopfield forward (d or dv > 256): exact results at edge shapes, and its compiled IR.

The kernel keeps each program's float32 accumulator in a slice of the partial-output workspace
(loaded, rescaled, stored back per key tile and dv chunk). Correctness runs under the interpreter
(small shapes: d = 300 is the smallest natural large-d width); the layout check compiles the
launcher's sm_90 variants in a subprocess without ``TRITON_INTERPRET`` and reads the TTGIR: the
accumulator's load and store take one pointer tensor, so they share its layout and every element
is stored and reloaded by the same thread (no barrier is needed between them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from test_hopfield_triton import DEVICE, compare, kernels

from mnemonix import reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _data(rng, b, n, d, dv=None, dtype=torch.float32):
    q = torch.randn(b, d, generator=rng).to(dtype)
    k = torch.randn(n, d, generator=rng).to(dtype)
    v = None if dv is None else torch.randn(n, dv, generator=rng).to(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_d_edge_shapes_match_the_reference(dtype, rng):
    # N = 1; N not a multiple of the key tile (70 = 2 x 32 + 6); dv < d and dv > d (both large-d);
    # B = 1 and 33 (two query tiles, the second holding one row)
    for b, n, d, dv in [(1, 1, 300, None), (33, 70, 300, None), (33, 70, 300, 40), (1, 37, 40, 300)]:
        q, k, v = _data(rng, b, n, d, dv, dtype)
        compare(q, k, v, beta=0.5 / d ** 0.5)


def test_large_d_masks_bias_and_a_fully_masked_split(rng):
    q, k, v = _data(rng, 33, 300, 300, 70)
    bias = torch.randn(300, generator=rng)
    bias[torch.rand(300, generator=rng) < 0.3] = float("-inf")
    bias[-1] = 0.0
    compare(q, k, v, beta=0.05, logit_bias=bias, splits=3)
    # split 0 of 2 (the first 160 keys, 5 tiles) is fully masked: it merges with weight 0
    bias[:200] = float("-inf")
    _, arg = compare(q, k, None, beta=0.05, logit_bias=bias, splits=2)
    assert (arg >= 200).all()


def test_large_d_gpu_tiles_with_several_tiles_per_split(rng):
    """The H200's large-d tiles (128 keys, 64-column dv chunks) in the interpreter.

    Split 0 holds two key tiles (256 keys) and split 1 one partial tile (44): the accumulator
    slice is created by the first tile and reloaded by the second.
    """
    cfg = kernels().hopfield_config(16, 12288, 12288, torch.float16, interpret=False)
    assert not cfg.small_d and (cfg.block_n, cfg.block_dv) == (128, 64)
    q, k, v = _data(rng, 5, 300, 300, 130)
    compare(q, k, v, beta=0.05, splits=2, block_n=cfg.block_n)


def test_large_d_results_do_not_read_the_unwritten_workspace(rng, monkeypatch):
    """Float32 workspaces filled with NaN: every value the kernels read was written first.

    The partial kernel no longer zeroes its accumulator slice; its first key tile must not load it.
    """
    q, k, v = _data(rng, 17, 100, 300, 80)
    ref = reference.hopfield_retrieve(q, k, v, beta=0.1, return_lse=True)
    empty = torch.empty

    def poisoned(*size, **kwargs):
        t = empty(*size, **kwargs)
        return t.fill_(float("nan")) if t.dtype == torch.float32 else t

    monkeypatch.setattr(torch, "empty", poisoned)
    out, lse, _ = kernels().hopfield_retrieve(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), beta=0.1, logit_bias=None,
                                              want_argmax=False, splits=2)
    monkeypatch.undo()
    torch.testing.assert_close(out.cpu(), ref[0], atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(lse.cpu(), ref[1], atol=2e-4, rtol=2e-4)


def test_large_d_batch_invariant_rows_alone_and_in_a_batch(rng):
    q, k, _ = _data(rng, 33, 90, 300)
    kh = kernels()

    def call(x):
        return kh.hopfield_retrieve(x.to(DEVICE), k.to(DEVICE), None, beta=0.1, logit_bias=None, want_argmax=True,
                                    batch_invariant=True)

    batch = call(q)
    for row in (0, 17, 32):
        alone = call(q[row:row + 1])
        assert all(torch.equal(x[0], y[row]) for x, y in zip(alone, batch)), row


# -- the accumulator's layout in the compiled IR (sm_90) ----------------------------------------

TTGIR_SCRIPT = r'''
import json, sys
sys.path.insert(0, TESTS_DIR)
import hopfield_sm90_variants as hv
from sm90_build import compile_sm90
from mnemonix.kernels import hopfield as kh

out = []
for item in hv.variants():
    kind, dt, cfg, _ = item
    if kind != "partial" or cfg.small_d:
        continue
    types = ["*" + dt] * 3 + ["*fp32"] * 5 + ["*i32"] + ["i32"] * 6 + ["fp32"] + ["i32"] * 14
    for values_are_keys in (False, True):
        consts = {**hv._flags(cfg), "BLOCK_DV": cfg.block_dv, "VALUES_ARE_KEYS": values_are_keys}
        compiled, _ = compile_sm90(kh._hopfield_partial_large_d, dict(zip(hv.PARTIAL_ARGS, types)), consts,
                                   num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        out.append([f"{hv.label(item)} K=V:{values_are_keys}", cfg.block_b, cfg.block_dv, compiled.asm["ttgir"]])
print("RESULT " + json.dumps(out))
'''

_SSA = r"%[\w#]+"
_BLOCKED = re.compile(r"^(#\w+) = #ttg\.blocked<\{sizePerThread = \[([\d, ]+)\], threadsPerWarp = \[([\d, ]+)\], "
                      r"warpsPerCTA = \[([\d, ]+)\]", re.M)


def accumulator_ops(ttgir: str, block_b: int, block_dv: int) -> tuple[list[str], list[str]]:
    """The layouts of the accumulator slice's stores and of the loads through the same pointer tensor.

    The store is the 2-D float32 ``tt.store`` of shape [BLOCK_B, BLOCK_DV]; a load counts when it
    reads the very pointer value (SSA name) the store writes through.
    """
    ptr_type = rf"tensor<{block_b}x{block_dv}x!tt\.ptr<f32>, (#\w+)>"
    stores = re.findall(rf"tt\.store ({_SSA}), {_SSA}(?:, {_SSA})? : {ptr_type}", ttgir)
    pointers = {ptr for ptr, _ in stores}
    loads = [layout for ptr, layout in re.findall(rf"= tt\.load ({_SSA})\b[^:\n]*: {ptr_type}", ttgir)
             if ptr in pointers]
    return [layout for _, layout in stores], loads


def replicated(ttgir: str, layout: str, shape: tuple[int, int]) -> bool:
    """Whether the blocked ``layout`` gives some element of ``shape`` to more than one thread."""
    for name, *fields in _BLOCKED.findall(ttgir):
        if name == layout:
            per, lanes, warps = ([int(x) for x in f.split(",")] for f in fields)
            return any(p * t * w > s for p, t, w, s in zip(per, lanes, warps, shape))
    raise AssertionError(f"{layout} is not a blocked layout in the TTGIR")


def test_the_layout_check_sees_a_mismatch():
    """The parser is not vacuous: a store and a load in different layouts, or a replicated one."""
    ttgir = """#blocked = #ttg.blocked<{sizePerThread = [1, 1], threadsPerWarp = [1, 32], warpsPerCTA = [4, 2]}>
#blocked1 = #ttg.blocked<{sizePerThread = [1, 4], threadsPerWarp = [2, 16], warpsPerCTA = [8, 1]}>
        %a = tt.load %17, %m, %c : tensor<16x64x!tt.ptr<f32>, #blocked1> loc(#loc1)
        tt.store %17, %20, %19 : tensor<16x64x!tt.ptr<f32>, #blocked> loc(#loc2)"""
    stores, loads = accumulator_ops(ttgir, 16, 64)
    assert stores == ["#blocked"] and loads == ["#blocked1"]
    assert replicated(ttgir, "#blocked1", (8, 64)) and not replicated(ttgir, "#blocked", (16, 64))


def test_large_d_accumulator_load_and_store_share_one_layout_on_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    script = TTGIR_SCRIPT.replace("TESTS_DIR", repr(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    variants = json.loads(line[len("RESULT "):])
    assert len(variants) >= 6  # fp32 x 2 query tiles, fp16, bf16; values apart and values = keys
    for name, block_b, block_dv, ttgir in variants:
        stores, loads = accumulator_ops(ttgir, block_b, block_dv)
        # one store (no zeroing pass) and one plain load through its pointer (not an async copy to
        # shared memory, which other threads would read)
        assert len(stores) == 1 and len(loads) == 1, (name, stores, loads)
        assert loads == stores, (name, stores, loads)
        assert not replicated(ttgir, stores[0], (block_b, block_dv)), name
