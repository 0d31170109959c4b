"""``mnemonix memoria``: the Memoria README tutorial or a synthetic loop, with a status summary."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mnemonix import _plotting as plotting
from mnemonix._table import print_table
from mnemonix.commands._args import (
    add_device_argument,
    check_output_file,
    finite_float,
    nonneg_int,
    positive_int,
    resolve_device,
    seed_int,
)

if TYPE_CHECKING:
    from mnemonix.commands.demo import DemoContext


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("memoria", help="Memoria engram memory: tutorial or synthetic loop + status summary")
    p.add_argument("mode", nargs="?", choices=["tutorial", "loop"], default="loop")
    p.add_argument("--steps", type=positive_int, default=100, help="loop steps")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--width", type=positive_int, default=64, help="working-memory engrams added per step")
    p.add_argument("--hidden", type=positive_int, default=256)
    p.add_argument("--num-reminded-stm", type=nonneg_int, default=32)
    p.add_argument("--stm-capacity", type=nonneg_int, default=512)
    p.add_argument("--ltm-search-depth", type=nonneg_int, default=5)
    p.add_argument("--initial-lifespan", type=finite_float(), default=50.0)
    p.add_argument("--num-final-ltms", type=nonneg_int, default=16)
    p.add_argument("--fix-quirks", action="store_true", help="turn off every quirk of the original")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--save", type=Path, default=None, help="save the final memory to this .npz")
    add_device_argument(p)  # the loop; the tutorial reproduces the README's CPU values
    p.set_defaults(func=run)


def run_tutorial() -> None:
    """The README tutorial of memoria-pytorch, printing the values it prints."""
    import torch

    from mnemonix.memoria import EngramType, Memoria

    torch.manual_seed(42)
    memoria = Memoria(num_reminded_stm=4, stm_capacity=16, ltm_search_depth=5, initial_lifespan=3,
                      num_final_ltms=4, tie_break="original")
    memoria.add_working_memory(torch.rand(2, 8, 64))
    print(">>> len(memoria.engrams)\n", len(memoria.engrams))
    print(">>> memoria.engrams.lifespan\n", memoria.engrams.lifespan)
    memories, indices = memoria.remind()
    print(">>> reminded_indices\n", indices)
    memoria.adjust_lifespan_and_memories(indices, torch.zeros_like(indices))
    print(">>> memoria.engrams.engrams_types\n", memoria.engrams.engrams_types)
    memoria.add_working_memory(torch.rand(2, 8, 64))
    memories, indices = memoria.remind()
    print(">>> reminded_indices\n", indices)
    memoria.adjust_lifespan_and_memories(indices, torch.full_like(indices, 5))
    print(">>> memoria.engrams.lifespan\n", memoria.engrams.lifespan)
    for _ in range(10):
        memoria.add_working_memory(torch.rand(2, 8, 64))
        memories, indices = memoria.remind()
        memoria.adjust_lifespan_and_memories(indices, torch.randint_like(indices, 0, 6).float())
    print(">>> len(memoria.engrams)\n", len(memoria.engrams))
    print(">>> memoria.engrams.engrams_types\n", memoria.engrams.engrams_types)
    print(">>> memoria.engrams.lifespan\n", memoria.engrams.lifespan)
    print(EngramType.LONGTERM, EngramType.NULL)


def run_loop(args: argparse.Namespace, *, quiet: bool = False) -> list[dict]:
    """The benchmark loop (add -> remind -> adjust, delta 1 per reminded engram); one record per step."""
    import torch
    from tqdm import tqdm

    from mnemonix.memoria import EngramType, Memoria

    device = torch.device(getattr(args, "device", "cpu"))
    # Generators on the data's device: a CPU generator cannot draw CUDA tensors.
    memoria = Memoria(args.num_reminded_stm, args.stm_capacity, args.ltm_search_depth, args.initial_lifespan,
                      args.num_final_ltms, track_id=True, fix_quirks=args.fix_quirks, device=device,
                      generator=torch.Generator(device=device).manual_seed(args.seed))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    records = []
    for step in tqdm(range(args.steps), desc="memoria loop", disable=quiet or args.steps < 50):
        data = torch.rand(args.batch, args.width, args.hidden, generator=gen, device=device)
        t0 = time.perf_counter()
        memoria.add_working_memory(data)
        _, indices = memoria.remind()
        memoria.adjust_lifespan_and_memories(indices, torch.ones_like(indices, dtype=torch.float32))
        if device.type == "cuda":  # time the work, not the launch
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        types = memoria.engrams.engrams_types
        records.append({
            "step": step + 1, "engrams": int((types != EngramType.NULL.value).sum()),
            "stm": int((types == EngramType.SHORTTERM.value).sum()),
            "ltm": int((types == EngramType.LONGTERM.value).sum()),
            "edges": memoria.engrams.num_edges(), "reminded": int((indices >= 0).sum()), "ms": 1000 * elapsed,
        })
    if args.save is not None:
        memoria.save(args.save)
    return records


def run(args: argparse.Namespace) -> int:
    check_output_file("--save", args.save)
    if args.mode == "tutorial":
        run_tutorial()
        return 0
    args.device = str(resolve_device(args.device))
    records = run_loop(args)
    shown = records if len(records) <= 12 else records[:: max(1, len(records) // 10)] + [records[-1]]
    print_table(["step", "engrams", "STM", "LTM", "edges", "reminded", "ms/step"],
                [[r["step"], r["engrams"], r["stm"], r["ltm"], r["edges"], r["reminded"], r["ms"]] for r in shown])
    if args.save is not None:
        print(f"saved {args.save}")
    return 0


def demo_section(ctx: DemoContext) -> None:
    """Memoria loop: engram counts by memory level and step time as the store fills."""
    args = argparse.Namespace(
        steps=12 if ctx.quick else 150, batch=1, width=64, hidden=256 if not ctx.quick else 64,
        num_reminded_stm=32, stm_capacity=512, ltm_search_depth=5, initial_lifespan=50, num_final_ltms=16,
        fix_quirks=False, seed=ctx.seed, save=None, device=ctx.device)
    records = run_loop(args, quiet=ctx.quick)
    shown = records[:: max(1, len(records) // 6)] + [records[-1]]
    ctx.table(["step", "engrams", "STM", "LTM", "edges", "ms/step"],
              [[r["step"], r["engrams"], r["stm"], r["ltm"], r["edges"], r["ms"]] for r in shown])
    if not plotting.available():  # figures are optional in the demo
        return
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["engrams"] for r in records], label="all engrams")
    ax.plot(steps, [r["stm"] for r in records], label="short-term")
    ax.plot(steps, [r["ltm"] for r in records], label="long-term")
    ax.set_xlabel("step")
    ax.set_ylabel("engrams")
    ax.set_title("Memoria: engrams by memory level")
    ax.legend()
    fig.tight_layout()
    path = ctx.out_dir / "memoria_engrams.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    ctx.figures.append(path)
