"""Byte model of the large-d Hopfield forward (d or dv > 256): keys/values vs accumulator traffic.

    python bench/larged_bytes.py            # table for d = dv = 12,288, N = 1e4 on an H200 (132 SMs)

The large-d kernel keeps each program's [BLOCK_B, dv] float32 accumulator in its slice of the
partial-output workspace: per key tile it loads, rescales and stores the slice (``8 r dv`` bytes,
r = the real rows of the program's query tile, min(B, BLOCK_B): masked rows move no bytes) next to
the ``BLOCK_N (d + dv) e`` bytes of keys and values it reads. Per launch that is

    acc    = 8 B dv sum_splits cdiv(n_split, BLOCK_N)     (independent of BLOCK_B and the split count)
             + 4 B dv SPLITS    old: the zeroing pass;  new: minus the first tile's load (skipped)
    kv     = cdiv(B, BLOCK_B) N (d + dv) e                 (each row block reads every key; L2 may share)
    merge  = 4 B dv SPLITS                                 (the merge reads the whole workspace once)
    floor  = N d e (+ N dv e when values are not the keys) (the keys once, from HBM)

Nothing here is measured: it is the prediction a GPU run (bench/compare_hopfield.py) must check.
"""

from __future__ import annotations

import argparse

import torch
import triton

from mnemonix.kernels import hopfield as kh

H200_SMS = 132
# main before issue 16: (dtype class, bucket) -> (BLOCK_B, BLOCK_N); one 128-column chunk of d and dv
OLD = {("fp32", 16): (16, 32), ("fp32", 32): (32, 32), ("16-bit", 16): (16, 32), ("16-bit", 32): (16, 32)}


def launch(b: int, n: int, d: int, dv: int, dtype: torch.dtype, old: bool) -> dict:
    """Tiles and split count the launcher picks on an H200 (old: main's large-d table)."""
    cfg = kh.hopfield_config(b, d, dv, dtype, interpret=False)
    block_b, block_n, block_dv = cfg.block_b, cfg.block_n, cfg.block_dv
    if old:
        block_b, block_n = OLD[("fp32" if dtype == torch.float32 else "16-bit", 16 if b <= 16 else 32)]
        block_dv = 128
    splits = kh.planned_splits(triton.cdiv(b, block_b), n, 4 * block_n if old else kh.fewest_per_split(cfg), H200_SMS)
    n_per_split = triton.cdiv(triton.cdiv(n, splits), block_n) * block_n
    return dict(block_b=block_b, block_n=block_n, block_dv=block_dv, n_per_split=n_per_split,
                splits=triton.cdiv(n, n_per_split))


def model(b: int, n: int, d: int, dv: int, dtype: torch.dtype, old: bool) -> dict:
    """Bytes per key tile and per launch (see the module docstring)."""
    e = torch.finfo(dtype).bits // 8
    t = launch(b, n, d, dv, dtype, old)
    splits, per = t["splits"], t["n_per_split"]
    tiles = sum(triton.cdiv(min(per, n - s * per), t["block_n"]) for s in range(splits))
    slices = 4 * b * dv * splits  # the workspace, bytes
    acc = 8 * b * dv * tiles + (slices if old else -slices)
    r = min(b, t["block_b"])
    return dict(t, e=e, tile_kv=t["block_n"] * (d + dv) * e, tile_acc=8 * r * dv, acc=acc,
                kv=triton.cdiv(b, t["block_b"]) * n * (d + dv) * e, merge=slices, workspace=slices,
                floor=n * d * e)


def table(n: int, d: int, dv: int) -> str:
    rows = ["| dtype | B | version | BLOCK_B x BLOCK_N, dv chunk | splits | acc / kv per tile | "
            "acc round trips (GB) | kv issued (GB) | workspace = merge read (MB) | total (GB) |", "|---" * 10 + "|"]
    for dtype in (torch.float32, torch.float16):
        for b in (1, 16, 64, 1024):
            for old in (True, False):
                m = model(b, n, d, dv, dtype, old)
                rows.append(f"| {str(dtype)[6:]} | {b} | {'old' if old else 'new'} | {m['block_b']}x{m['block_n']},"
                            f" {m['block_dv']} | {m['splits']} | {m['tile_acc'] / m['tile_kv']:.2f} | "
                            f"{m['acc'] / 1e9:.3f} | {m['kv'] / 1e9:.2f} | {m['workspace'] / 1e6:.0f} | "
                            f"{(m['acc'] + m['kv'] + m['merge']) / 1e9:.2f} |")
    floor = ", ".join(f"{name} {n * d * e / 1e9:.2f} GB" for name, e in (("float32", 4), ("float16", 2)))
    return "\n".join(rows) + f"\n\nfloor (the keys once, values = keys): {floor}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=12_288)
    parser.add_argument("--dv", type=int, default=None)
    args = parser.parse_args()
    print(table(args.n, args.d, args.dv or args.d))
