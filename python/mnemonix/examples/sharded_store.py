"""A MemoryStore split over processes: build, search, retrieve, remove, save and reload.

CPUs (gloo)::

    torchrun --standalone --nproc_per_node=2 -m mnemonix.examples.sharded_store

GPUs (NCCL, one rank per GPU)::

    torchrun --standalone --nproc_per_node=8 -m mnemonix.examples.sharded_store --backend nccl

Every rank adds its own rows (they never move); every rank calls every method with the
same queries and gets the same answer, equal to one MemoryStore holding every row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from mnemonix import MemoryStore
from mnemonix.distributed import ShardedMemoryStore


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per rank")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None,
                        help="default: nccl when CUDA is available, else gloo")
    parser.add_argument("--path", default=os.path.join(tempfile.gettempdir(), "mnemonix-sharded-example"),
                        help="where to save (every rank must see it: a shared filesystem)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    started_here = not dist.is_initialized()  # else: run in the caller's group (the tests do)
    if started_here:
        backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # ranks share the machine's cores
    say = print if rank == 0 else (lambda *a, **k: None)

    store = ShardedMemoryStore(args.dim, dtype=torch.float16)  # rows on this rank's GPU under NCCL
    local = torch.randn(args.rows, args.dim, generator=torch.Generator().manual_seed(rank)).to(store.device)
    ids = store.add(local)  # auto ids, unique across ranks (rank order)
    print(f"rank {rank} of {world}: holds ids {int(ids[0])}..{int(ids[-1])} ({len(store.local)} rows)", flush=True)
    dist.barrier()
    say(f"the store holds {len(store)} memories over {world} ranks")

    queries = torch.randn(4, args.dim, generator=torch.Generator().manual_seed(1234)).to(store.device)
    scores, top = store.search(queries, 5)  # every rank passes the same queries and gets the answer
    stats = store.last_call
    say(f"top-5 ids of 4 queries:\n{top.cpu()}")
    say(f"search: {stats.seconds * 1e3:.1f} ms on rank 0, of which {stats.comm_seconds * 1e3:.1f} ms in "
        f"{stats.collectives} collectives; {stats.bytes_received} bytes received")
    out = store.retrieve(queries, beta=0.1)  # exact log-sum-exp merge of every rank's partition
    say(f"Hopfield retrieval: out {tuple(out.shape)}, first row starts {out[0, :3].cpu().tolist()}")

    removed = store.remove(top[:, 0])  # collective: whichever rank holds an id removes it
    _, after = store.search(queries, 5)
    assert not bool(torch.isin(after, top[:, 0]).any())
    say(f"removed the {removed} best hits; {len(store)} memories left")

    path = Path(args.path)
    if rank == 0 and path.exists():
        shutil.rmtree(path)  # a fresh directory for the example
    dist.barrier()
    store.save(path)  # one shard per rank and one manifest
    reloaded = ShardedMemoryStore.load(path)
    assert torch.equal(reloaded.search(queries, 5)[1], after)
    say(f"saved to {path} and reloaded on {world} ranks: same results")
    if rank == 0:
        whole = MemoryStore.load(path, mmap=True)  # one process reads the whole sharded store
        assert torch.equal(whole.search(queries.cpu(), 5)[1], after.cpu())
        say(f"MemoryStore.load in one process: {len(whole)} memories, same results")
    dist.barrier()
    if started_here:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
