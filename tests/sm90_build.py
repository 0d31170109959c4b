"""Compile a Triton kernel for sm_90 (H100/H200) without a GPU and read its register use.

Used in a subprocess where ``TRITON_INTERPRET`` is unset (tests/test_kernels_spills.py).
``triton.compile`` needs no driver for a given target; it runs ptxas, whose ``-v`` report
(registers, spill stores/loads) Triton does not keep without a GPU (``CompiledKernel.n_regs``
and ``n_spills`` are filled when the binary is *loaded* on a device). Triton >= 3.7 prints that
report with ``TRITON_DUMP_PTXAS_LOG=1``; otherwise (an older Triton, or a kernel served from
Triton's cache) the kernel's PTX goes through the same ptxas again, with ``-v``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
# What Triton 3.9 passes to ptxas besides -v (triton/backends/nvidia/compiler.py ``make_cubin``): the
# register allocator's level changes spills of kernels near 255 registers, so a kernel served from
# Triton's cache must be re-assembled the same way to report what the GPU will run.
TRITON_PTXAS_FLAGS = ["-lineinfo", "--regAllocOptLevel=2"]


@dataclass(frozen=True)
class Registers:
    regs: int
    spill_stores: int
    spill_loads: int


def ptxas_path() -> str:
    """The ptxas Triton uses for sm_90 (its location moved between Triton 3.x releases)."""
    from triton.backends.nvidia import compiler as nv

    get = getattr(nv, "get_ptxas", None)
    if get is not None:
        try:
            return get(90).path  # Triton >= 3.7: one ptxas per architecture family
        except TypeError:
            return get().path
    from triton import knobs

    return knobs.nvidia.ptxas.path


def compile_sm90(fn, signature: dict[str, str], constexprs: dict, *, num_warps: int, num_stages: int):
    """``triton.compile`` for sm_90a; returns ``(CompiledKernel, ptxas log or "")`` (raises on a compile error)."""
    sig = dict(signature)
    sig.update({name: "constexpr" for name in constexprs})
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # where TRITON_DUMP_PTXAS_LOG=1 prints ptxas's report
        compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs), target=TARGET,
                                  options={"num_warps": num_warps, "num_stages": num_stages})
    return compiled, log.getvalue()


def registers(compiled, log: str = "") -> Registers:
    """Registers and spill bytes of a compiled kernel: from ``log`` if it holds ptxas's report, else ptxas -v."""
    parsed = _parse(log)
    return parsed if parsed is not None else _parse(_ptxas_report(compiled), strict=True)


def _parse(report: str, strict: bool = False) -> Registers | None:
    regs = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    if regs is None or spills is None:
        if strict:
            raise RuntimeError(f"unexpected ptxas report: {report[-2000:]}")
        return None
    return Registers(int(regs.group(1)), int(spills.group(1)), int(spills.group(2)))


def _ptxas_report(compiled) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(compiled.asm["ptx"])
        for flags in (TRITON_PTXAS_FLAGS, []):  # Triton's own flags first (an older ptxas may refuse them)
            proc = subprocess.run([ptxas_path(), "-v", *flags, "--gpu-name=sm_90a", src, "-o",
                                   os.path.join(tmp, "kernel.o")], capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                break
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed: {proc.stderr[-2000:]}")
    return proc.stderr
