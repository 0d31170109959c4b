"""The collectives of a :class:`~mnemonix.distributed.ShardedMemoryStore`, and how a failure reaches every rank.

Every collective method of the store runs the same steps on every rank:

1. check its arguments locally (nothing is sent yet);
2. :meth:`Comm.agree`: one ``all_gather`` of a fixed header of :data:`HEADER_WORDS` int64
   per rank (failed?, error class, method, call number, hash of the queries, hash of the
   other arguments, four words of the method's own). When a rank failed, every rank
   raises (:meth:`Comm._raise_agreed`); when the ranks are in different calls or passed
   different arguments, every rank raises the same error;
3. :meth:`Comm.exchange`: ``all_gather`` of payloads of agreed shapes packed into one byte
   buffer behind a status word. A rank whose local work fails sends zeros of the agreed
   size, so the collective completes and step 2's failure path runs.

The failing rank re-raises its own exception; the others raise one of the same class
(TypeError, ValueError, FormatError, ...; RuntimeError for others) whose message names
the rank and its message, so every rank takes the same branch. Collectives run under the
process group's timeout (``init_process_group(timeout=...)``): a rank that died or never
makes the call makes the others raise :class:`CollectiveError` within it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from mnemonix._io import FormatError

HEADER_WORDS = 10
MSG_BYTES = 1024
"""Bytes of an error message that reach the other ranks (longer ones are cut)."""
_STATUS_BYTES = 16
_ERRORS: tuple[type[Exception], ...] = (RuntimeError, FormatError, TypeError, ValueError, FileNotFoundError,
                                        PermissionError, OSError, MemoryError, KeyError, IndexError)
"""Error classes re-raised on every rank, most specific first (index 0: the fallback)."""
METHODS = ("init", "add", "upsert", "remove", "search", "retrieve", "get", "contains", "ids", "save", "load")


class CollectiveError(RuntimeError):
    """A collective of the sharded store failed: a peer died, raised outside the store, or timed out."""


@dataclass
class CallStats:
    """Where the time of the last collective call went, on this rank.

    ``comm_seconds`` is the time inside collectives, including waiting for the slowest
    rank; ``bytes_received`` counts what the other ranks' payloads put on this rank,
    ``(P - 1) * payload`` per ``all_gather``.
    """

    method: str = ""
    seconds: float = 0.0
    comm_seconds: float = 0.0
    collectives: int = 0
    bytes_received: int = 0

    @property
    def local_seconds(self) -> float:
        return self.seconds - self.comm_seconds


def hash64(*parts: object) -> int:
    """A 64-bit hash (signed) of numbers, strings and tensors (their dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "little", signed=True)


def _error_code(exc: BaseException | None) -> int:
    for i, cls in enumerate(_ERRORS[1:], 1):
        if isinstance(exc, cls):
            return i
    return 0


def pack(parts: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The bytes of every tensor, one after the other: uint8 [sum of nbytes] on ``device``."""
    flat = [t.detach().to(device).reshape(-1).contiguous().view(torch.uint8) for t in parts if t.numel()]
    return torch.cat(flat) if flat else torch.empty(0, dtype=torch.uint8, device=device)


def nbytes(specs: Sequence[tuple[tuple[int, ...], torch.dtype]]) -> int:
    return sum(int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
               for shape, dtype in specs)


def unpack(buf: torch.Tensor, specs: Sequence[tuple[tuple[int, ...], torch.dtype]]) -> list[torch.Tensor]:
    """Inverse of :func:`pack` for tensors of ``specs`` ((shape, dtype) each)."""
    out, at = [], 0
    for shape, dtype in specs:
        size = nbytes([(shape, dtype)])
        out.append(buf[at: at + size].clone().view(dtype).reshape(shape))  # clone: aligned storage
        at += size
    return out


class Comm:
    """A process group as the sharded store uses it (``group=None``: the default group)."""

    def __init__(self, group=None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ShardedMemoryStore needs torch.distributed: call "
                               "torch.distributed.init_process_group(...) first (torchrun sets its environment)")
        self.group = group
        self.rank = dist.get_rank(group)
        if self.rank < 0:
            raise ValueError("group must be a process group this process belongs to")
        self.world = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        nccl = self.backend == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self.calls = 0
        self.stats = CallStats()

    def start(self, method: str) -> None:
        """Begin a collective call: reset :attr:`stats`."""
        self.stats = CallStats(method=method, seconds=-time.perf_counter())

    def finish(self) -> None:
        self.stats.seconds += time.perf_counter()

    def timeout_text(self) -> str:
        try:  # no public getter: the backend's options hold it
            group = self.group if self.group is not None else dist.group.WORLD
            seconds = group._get_backend(self.device).options._timeout.total_seconds()
            return f" ({seconds:g} s)"
        except Exception:  # noqa: BLE001 - only a message detail
            return ""

    def all_gather(self, what: str, t: torch.Tensor) -> torch.Tensor:
        """``t`` of every rank stacked: [P, *t.shape] on :attr:`device` (same shape on every rank)."""
        t = t.to(self.device).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)]
        start = time.perf_counter()
        try:
            dist.all_gather(out, t, group=self.group)
        except Exception as exc:  # noqa: BLE001 - any backend failure: the group is gone
            raise CollectiveError(
                f"{what}: all_gather failed on rank {self.rank} of {self.world}: a peer rank raised outside the "
                f"store, died, or did not make the same call within the process group's timeout"
                f"{self.timeout_text()} ({type(exc).__name__}: {exc})") from exc
        finally:
            self.stats.comm_seconds += time.perf_counter() - start
        self.stats.collectives += 1
        self.stats.bytes_received += (self.world - 1) * t.numel() * t.element_size()
        return torch.stack(out)

    def agree(self, what: str, error: Exception | None, *, method: str, queries: int = 0, args: int = 0,
              args_names: str = "arguments", words: Sequence[int] = ()) -> torch.Tensor:
        """Step 2 (see the module docstring); returns the ranks' ``words`` [P, 4] int64 (CPU)."""
        own = [*words, 0, 0, 0, 0][:4] if error is None else [0, 0, 0, 0]
        header = [int(error is not None), _error_code(error), METHODS.index(method), self.calls, queries, args, *own]
        self.calls += 1
        table = self.all_gather(what, torch.tensor(header, dtype=torch.int64)).cpu()
        self._raise_agreed(what, error, table[:, 0], table[:, 1])
        for column, name in ((2, "method"), (3, "call number")):
            if bool((table[:, column] != table[0, column]).any()):
                got = ", ".join(f"rank {r}: {self._describe(column, int(v))}" for r, v in enumerate(table[:, column]))
                raise RuntimeError(f"{what}: the ranks are in different calls of the store ({name}s differ: {got}); "
                                   "every rank must make the same collective calls in the same order")
        for column, names in ((5, args_names), (4, "queries")):
            differ = [r for r in range(self.world) if int(table[r, column]) != int(table[0, column])]
            if differ:
                hint = (" (pass local_queries=True to answer each rank's own queries)" if column == 4 else "")
                raise ValueError(f"{what}: {names} must be the same on every rank; ranks {differ} differ from "
                                 f"rank 0{hint}")
        return table[:, 6:]

    @staticmethod
    def _describe(column: int, value: int) -> str:
        if column == 2:
            return METHODS[value] if 0 <= value < len(METHODS) else str(value)
        return str(value)

    def exchange(self, what: str, compute: Callable[[], Sequence[torch.Tensor]],
                 specs: Sequence[tuple[tuple[int, ...], torch.dtype]]) -> list[list[torch.Tensor]]:
        """Step 3: every rank's ``compute()`` tensors of ``specs`` ((shape, dtype) each), per rank."""
        error, size = None, nbytes(specs)
        try:
            parts = list(compute())
            got = [(tuple(t.shape), t.dtype) for t in parts]
            if got != [(tuple(s), d) for s, d in specs]:
                raise RuntimeError(f"internal error: {what} computed {got}, expected {list(specs)}")
            payload = pack(parts, self.device)
        except Exception as exc:  # noqa: BLE001 - reaches every rank below
            error, payload = exc, torch.zeros(size, dtype=torch.uint8, device=self.device)
        status = torch.tensor([int(error is not None), _error_code(error)], dtype=torch.int64)
        buf = torch.cat([pack([status], self.device), payload])
        table = self.all_gather(what, buf)
        statuses = table[:, :_STATUS_BYTES].cpu().reshape(-1).clone().view(torch.int64).reshape(self.world, 2)
        self._raise_agreed(what, error, statuses[:, 0], statuses[:, 1])
        return [unpack(table[r, _STATUS_BYTES:], specs) for r in range(self.world)]

    def gather_rows(self, what: str, t: torch.Tensor, counts: Sequence[int]) -> list[torch.Tensor]:
        """Every rank's ``t`` [counts[r], *rest] (lengths agreed beforehand), padded to the longest."""
        longest = max(counts)
        if longest == 0:  # nothing to send anywhere (the counts are agreed): no collective
            return [t[:0].to(self.device) for _ in range(self.world)]
        padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=self.device)
        padded[: t.shape[0]] = t
        table = self.all_gather(what, padded)
        return [table[r, : counts[r]] for r in range(self.world)]

    def _raise_agreed(self, what: str, error: Exception | None, failed: torch.Tensor, codes: torch.Tensor) -> None:
        """When any rank failed: every rank raises (the first failing rank's class; see the module docstring)."""
        if not bool(failed.any()):
            return
        text = "" if error is None else f"{type(error).__name__}: {error}"
        raw = text.encode("utf-8")[:MSG_BYTES]
        buf = torch.zeros(MSG_BYTES + 8, dtype=torch.uint8)
        buf[:8] = torch.tensor([len(raw)], dtype=torch.int64).view(torch.uint8)
        buf[8: 8 + len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else buf[8:8]
        table = self.all_gather(what, buf).cpu()
        ranks = [r for r in range(self.world) if bool(failed[r])]
        messages = []
        for r in ranks:
            n = int(table[r, :8].clone().view(torch.int64))
            messages.append(bytes(table[r, 8: 8 + n].tolist()).decode("utf-8", errors="replace"))
        first = ranks[0]
        if self.rank == first and error is not None:
            raise error
        also = "".join(f"; also on rank {r}: {m}" for r, m in zip(ranks[1:], messages[1:]))
        exc = _ERRORS[int(codes[first])](f"{what} failed on rank {first} of {self.world}: {messages[0]}{also}")
        raise exc from error
