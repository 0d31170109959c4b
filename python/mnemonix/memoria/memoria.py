"""``Memoria``: memoria-pytorch's ``memoria.memoria.Memoria`` on a sparse co-fire graph and fused ops.

One step (add -> remind -> adjust) on data [B, L, H] with M engrams costs, besides the
arithmetic: the nearest-key searches of :func:`mnemonix.ops.nearest_keys` (two GEMMs, no
[B, W, M, H] temporary), the long-term search in C++ on the graph, one fused
:func:`mnemonix.ops.lifespan_step` and one compaction.

Host syncs and host <-> device copies per step on CUDA (any B; ``tests/test_fake_device_models.py``
holds these budgets; on the CPU they cost nothing). The co-fire graph is C++ on the host, and
so are the engrams' keys in it (:meth:`Engrams.host_keys`): each copy below is one the graph
needs, and moves O(B M) integers or less.

- ``add_working_memory``: 1 sync (the data's finite check); 1 copy without a sync (the new
  engrams' graph keys, made on the host, to the device).
- ``remind``: 3 syncs, 6 copies, plus the two :func:`mnemonix.ops.nearest_keys` calls (one
  sync each): the engram types to the host (the index lists and the long-term search are
  made there) and the working / short-term lists back; the short-term picks to the host
  (the walk starts from them) and the long-term candidates back; the long-term picks to the
  host (they fire together in the graph) and the reminded positions back. None per engram,
  per item or per batch row. Tie-break noise from a CPU generator is used where it is drawn,
  on the host (no copy); noise on CUDA (no generator on CUDA engrams, or a CUDA generator)
  costs 1 more sync (the picks come back) and a few copies without a sync (the tie sets,
  and per batch row the slots whose tie set differs from the row's most common one).
- ``adjust_lifespan_and_memories``: 1 sync, 1 copy: the value checks, the verdicts and the
  keep-mask [B, M] come back together; the graph drops the dead engrams and the host copy of
  the keys is compacted on the host.

Before issue 16 a step cost 29-30 syncs at B = 2 (3 + 24 + 2-3) and 16-17 copies, the tie-break
noise [S, M] included.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

from mnemonix import _checks, ops
from mnemonix._types import ENGRAM_LONGTERM, ENGRAM_SHORTTERM, ENGRAM_WORKING
from mnemonix.memoria import _longterm, _persist
from mnemonix.memoria._engram_checks import engram_data, index_matrix, real_tensor
from mnemonix.memoria._steps import ADJUST_STEPS, REMIND_STEPS, UpstreamSteps
from mnemonix.memoria.engram import Engrams
from mnemonix.memoria.history_manager import HistoryManager
from mnemonix.memoria.utils import (
    gather_rows,
    indices_compact,
    indices_with_mask,
    sorted_unique_front_padded,
    super_unique,
)

__all__ = ["Memoria"]

DISTANCES = ("certified", "exact", "gemm")
TIE_BREAKS = ("original", "random")
NOISE_CHUNK = 1 << 22  # draws per chunk of the original tie-break noise (8 MB of fp16)
FIXES = ("fix_empty_ltm", "fix_negative_index", "fix_ltm_local_index", "fix_padding")
CONFIG_FIELDS = ("num_reminded_stm", "stm_capacity", "ltm_search_depth", "initial_lifespan", "num_final_ltms",
                 "track_age", "track_id", "keep_history", "tie_break", "distances", *FIXES)
"""The constructor arguments a saved memory holds (``_persist.check_config`` checks them as ``__init__`` does)."""
MAX_LIFESPAN = 3.4e38  # initial_lifespan must fit float32


class Memoria(UpstreamSteps):
    """Memoria engram memory, drop-in for memoria-pytorch 1.1.0's ``Memoria``.

    Parameters
    ----------
    num_reminded_stm : int >= 0
        Short-term engrams reminded per step (nearest to the working memory).
    stm_capacity : int >= 0
        Short-term engrams kept per row; the oldest beyond it become long-term.
    ltm_search_depth : int >= 0
        Steps of the greedy co-fire walk from each initial long-term engram.
    initial_lifespan : int or float > 0, finite
        Lifespan of new working-memory engrams.
    num_final_ltms : int >= 0
        Long-term engrams reminded per step (nearest to the working memory among those found).
    track_age, track_id, keep_history : bool
        As in memoria-pytorch (``keep_history`` turns on both trackers, with a warning).
    device : str or torch.device, optional
        Where the engrams live (default: the device of the first data).
    generator : torch.Generator, optional, keyword-only
        Every random tie-break draws from it (default: torch's global generator of the
        engrams' device, as the original). A CPU generator serves CUDA engrams (draws move).
    tie_break : {"original", "random"}
        ``"original"`` (default): the original's random stream, bit for bit (an fp16 uniform
        per (slot, engram): O(S M) per step). ``"random"``: one seed per step, one draw per tie.
    distances : {"certified", "exact", "gemm"}
        The backend of :func:`mnemonix.ops.nearest_keys` ranking engrams by distance.
    fix_empty_ltm, fix_negative_index, fix_ltm_local_index, fix_padding, fix_quirks : bool
        Turn off one quirk of the original each, or all (``docs/memoria.md``).

    Attributes
    ----------
    engrams : Engrams
    next_engram_id, timestep : int
    history : list[HistoryManager] or None (one per batch row with ``keep_history``)
    """

    def __init__(
        self, num_reminded_stm: int, stm_capacity: int, ltm_search_depth: int, initial_lifespan: int | float,
        num_final_ltms: int, track_age: bool = False, track_id: bool = False, keep_history: bool = False,
        device: str | torch.device | None = None, *, generator: torch.Generator | None = None,
        tie_break: Literal["original", "random"] = "original",
        distances: Literal["certified", "exact", "gemm"] = "certified", fix_empty_ltm: bool = False,
        fix_negative_index: bool = False, fix_ltm_local_index: bool = False, fix_padding: bool = False,
        fix_quirks: bool = False,
    ) -> None:
        self.num_reminded_stm = _checks.nonneg_int("num_reminded_stm", num_reminded_stm)
        self.stm_capacity = _checks.nonneg_int("stm_capacity", stm_capacity)
        self.ltm_search_depth = _checks.nonneg_int("ltm_search_depth", ltm_search_depth)
        self.num_final_ltms = _checks.nonneg_int("num_final_ltms", num_final_ltms)
        self.initial_lifespan = _initial_lifespan(initial_lifespan)
        _choice("distances", distances, DISTANCES)
        _choice("tie_break", tie_break, TIE_BREAKS)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        flags = {"track_age": track_age, "track_id": track_id, "keep_history": keep_history, "fix_quirks": fix_quirks,
                 "fix_empty_ltm": fix_empty_ltm, "fix_negative_index": fix_negative_index,
                 "fix_ltm_local_index": fix_ltm_local_index, "fix_padding": fix_padding}
        for name, flag in flags.items():
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if keep_history:
            for name in ("track_id", "track_age"):
                if not flags[name]:
                    flags[name] = True
                    warnings.warn(f"`keep_history` is True, so `{name}` is automatically set to True", stacklevel=2)
        self.track_age, self.track_id, self.keep_history = flags["track_age"], flags["track_id"], keep_history
        self.device = _device(device)
        self.ext_device: torch.device | None = None
        self.generator = generator
        self.tie_break = tie_break
        self.distances = distances
        for name in FIXES:
            setattr(self, name, flags[name] or fix_quirks)
        self.engrams: Engrams
        self.next_engram_id = 0
        self.timestep = 0
        self.history: list[HistoryManager] | None = None
        self.reset_memory()

    def reset_memory(self) -> None:
        """Forget every engram and count."""
        self.engrams = Engrams.empty(track_age=self.track_age, track_engram_id=self.track_id)
        self.next_engram_id = 0
        self.timestep = 0
        self.history = None

    # ---------------------------------------------------------------------- add
    @torch.no_grad()
    def add_working_memory(self, data: torch.Tensor) -> None:
        """Append ``data`` [B, L, H] as working-memory engrams (lifespan ``initial_lifespan``).

        B and H must match the stored engrams (any, when the memory is empty). Data is
        copied (stored as float32 on ``device``); NaN/Inf are refused.
        """
        real_tensor("data", data, ndim=3)
        e = self.engrams
        if len(e) and (data.shape[0] != e.batch_size or data.shape[2] != e.hidden_dim):
            raise ValueError(f"data must have shape [{e.batch_size}, L, {e.hidden_dim}] (batch and hidden size of "
                             f"the stored engrams), got {tuple(data.shape)}")
        values = data.detach().float()
        engram_data("data", values)
        device = self.device or data.device
        values = values.to(device)
        batch, length, hidden = values.shape
        if len(e) == 0:  # like the original, an empty memory takes any batch and hidden size
            e = Engrams(batch, hidden, track_age=self.track_age, track_engram_id=self.track_id, device=device)
        e.append_working(values, self.initial_lifespan, self.next_engram_id if self.track_id else None)
        self.engrams, self.device, self.ext_device = e, device, data.device
        if self.track_id:
            self.next_engram_id += length
        self.timestep += 1

    # ------------------------------------------------------------------- remind
    def _noise_device(self) -> torch.device:
        """Where the tie-break noise is drawn: the generator's device (None: the engrams' device, as the original)."""
        return self.generator.device if self.generator is not None else self.engrams.device

    def _tie_noise_chunks(self, batch: int, slots: int, length: int) -> Iterator[tuple[int, int, int, torch.Tensor]]:
        """The original's tie-break noise ``torch.rand([batch, slots, length], dtype=float16)``, in chunks.

        Yields ``(b, s0, s1, noise[b, s0:s1])`` on :meth:`_noise_device`, drawn from the generator
        (or the global one of the engrams' device when None), never moved: the tie-break runs
        where the noise is. A CPU generator's stream is sequential, so chunks of at most
        ``NOISE_CHUNK`` draws give the same numbers as one call; a CUDA generator draws the
        whole tensor at once (its offsets depend on the call's size).
        """
        source = self._noise_device()
        if source.type != "cpu":
            noise = torch.rand((batch, slots, length), dtype=torch.float16, device=source, generator=self.generator)
            for b in range(batch):
                yield b, 0, slots, noise[b]
            return
        rows = max(1, NOISE_CHUNK // max(1, length))
        for b in range(batch):
            for s0 in range(0, slots, rows):
                s1 = min(slots, s0 + rows)
                yield b, s0, s1, torch.rand((s1 - s0, length), dtype=torch.float16, generator=self.generator)

    def _draw_seed(self) -> int:
        device = self.generator.device if self.generator is not None else "cpu"
        return int(torch.randint(0, 2**62, (1,), generator=self.generator, device=device))

    @torch.no_grad()
    def remind(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Remind short- and long-term engrams with the working memory; they fire together.

        Returns
        -------
        memories : Tensor [B, R, H] float32 on the device of the last added data
        indices : Tensor [B, R] int64 on the engrams' device -- positions, -1 pads (distinct per row)
        """
        if self._overrides(REMIND_STEPS):
            self._warn_fixes_ignored()
            return self._remind_stepwise()
        e = self.engrams
        dev = e.device
        # The long-term search runs on the C++ graph, on the host: the index lists are made there
        # (copy 1: the types), the two nearest-key searches on the device read back their picks.
        types = e.engrams_types.cpu()
        ltm_mask = types == ENGRAM_LONGTERM
        wm_idx, stm_idx, ltm_idx = (indices_with_mask(mask) for mask in
                                    (types == ENGRAM_WORKING, types == ENGRAM_SHORTTERM, ltm_mask))
        both = torch.cat([wm_idx, stm_idx], dim=1).to(dev, non_blocking=True)
        wm_data = gather_rows(e.data, both[:, :wm_idx.shape[1]], 0.0)
        reminded_stm = self._nearest_shortterm(wm_data, stm_idx, both[:, wm_idx.shape[1]:])
        found = self._search_longterm(reminded_stm, ltm_idx, ltm_mask)
        final_ltm = self._nearest_longterm(wm_data, found, ltm_idx)
        reminded = torch.cat([reminded_stm, final_ltm], dim=1)
        e.fire_together_wire_together(torch.cat([wm_idx, reminded], dim=1), validate=False)  # positions by construction
        reminded = super_unique(reminded, dim=1).to(dev, non_blocking=True)
        memories = gather_rows(e.data, reminded, 0.0)
        return memories.to(self.ext_device or dev).contiguous(), reminded

    def _nearest_shortterm(self, wm_data: torch.Tensor, stm_idx: torch.Tensor, stm_on_device: torch.Tensor
                           ) -> torch.Tensor:
        """Short-term positions [B, S] (host) with -1 except the reminded ones (nearest by mean distance).

        ``stm_idx`` [B, S] on the host, ``stm_on_device`` the same on the engrams' device.
        """
        num_stm = stm_idx.shape[1]
        if num_stm == 0:
            return stm_idx
        stm_data = gather_rows(self.engrams.data, stm_on_device, 0.0)
        top = ops.nearest_keys(wm_data, stm_data, min(self.num_reminded_stm, num_stm), reduce="mean",
                               invalid=(stm_on_device < 0) if self.fix_padding else None, backend=self.distances)
        top = top.cpu()  # copy 2: the graph search starts from the reminded engrams
        chosen = torch.zeros((stm_idx.shape[0], num_stm + 1), dtype=torch.bool)
        chosen = chosen.scatter_(1, torch.where(top < 0, num_stm, top), True)[:, :num_stm]
        reminded = stm_idx.masked_fill(~chosen, -1)
        return indices_compact(reminded) if self.fix_padding else reminded

    def _search_longterm(self, reminded_stm: torch.Tensor, ltm_idx: torch.Tensor,
                         ltm_mask: torch.Tensor) -> torch.Tensor:
        """Long-term candidates [B, N]: local indices (or positions with ``fix_ltm_local_index``). On the host."""
        e = self.engrams
        batch, length = ltm_mask.shape
        if reminded_stm.shape[1] == 0 or batch == 0:
            return torch.zeros((batch, 0), dtype=torch.long)
        queries = reminded_stm if self.fix_negative_index else torch.where(reminded_stm < 0, length - 1,
                                                                             reminded_stm)
        initial = self._initial_ltm_positions(queries, ltm_mask, ltm_idx)
        if ltm_idx.shape[1] == 0:  # no long-term engram: the original's search returns zeros (engram 0)
            return torch.zeros((batch, 0 if self.fix_empty_ltm else 1), dtype=torch.long)
        local = _longterm.local_from_positions(initial, ltm_mask)
        if self.fix_negative_index:
            local = local.masked_fill(reminded_stm < 0, -1)
        starts = sorted_unique_front_padded(local)
        depth = _longterm.useful_depth(self.ltm_search_depth, ltm_idx.shape[1])
        walked = e.walk_longterm(starts, ltm_idx, depth, alias_negative=not self.fix_negative_index)
        found = super_unique(walked, dim=1)
        return indices_compact(found) if self.fix_padding or self.fix_negative_index else found

    def _nearest_longterm(self, wm_data: torch.Tensor, found: torch.Tensor, ltm_idx: torch.Tensor) -> torch.Tensor:
        """The ``num_final_ltms`` candidates nearest to the working memory (summed distance), positions [B, F].

        ``found`` and ``ltm_idx`` on the host, and so is the result.
        """
        if found.shape[1] == 0:
            return found
        found_pos = gather_rows(ltm_idx, found, -1) if self.fix_ltm_local_index else found
        on_device = found_pos.to(self.engrams.device, non_blocking=True)
        found_data = gather_rows(self.engrams.data, on_device, 0.0)
        top = ops.nearest_keys(wm_data, found_data, min(self.num_final_ltms, found.shape[1]), reduce="sum",
                               invalid=(on_device < 0) if self.fix_padding else None, backend=self.distances)
        return gather_rows(found_pos, top.cpu(), -1)  # copy 3: the picks fire together in the graph

    def _warn_fixes_ignored(self) -> None:
        if any(getattr(self, name) for name in FIXES):
            warnings.warn("a subclass overrides a step of remind/adjust: the step-by-step path runs with the "
                          "original's quirks; the fix_* options apply to the fused path only", stacklevel=3)

    # ------------------------------------------------------------------- adjust
    @torch.no_grad()
    def adjust_lifespan_and_memories(self, indices: torch.Tensor, lifespan_delta: torch.Tensor) -> None:
        """Add ``lifespan_delta`` [B, R] at ``indices`` [B, R] (negative ignored, duplicates add up), then
        age every engram: lifespan - 1, age + 1, WORKING -> SHORTTERM, the oldest SHORTTERM beyond
        ``stm_capacity`` -> LONGTERM, engrams whose lifespan reaches 0 dropped with their counts.

        Raises (and leaves the memory unchanged) on wrong types or shapes, out-of-range
        indices, NaN/Inf deltas, lifespans that would overflow, ages past the int32 maximum.
        """
        e = self.engrams
        stepwise = self._overrides(ADJUST_STEPS)
        # the fused op checks the index range and finite deltas itself: no second host sync here
        idx = index_matrix("indices", indices, e.batch_size, e.memory_length, check_range=stepwise)
        real_tensor("lifespan_delta", lifespan_delta)
        if lifespan_delta.shape != idx.shape:
            raise ValueError(f"lifespan_delta must have the shape of indices {tuple(idx.shape)}, "
                             f"got {tuple(lifespan_delta.shape)}")
        if stepwise:
            _checks.finite("lifespan_delta", lifespan_delta.detach().float())
            self._adjust_stepwise(idx, lifespan_delta)
        else:
            e.advance(idx, lifespan_delta, self.stm_capacity, validate=False)
        if self.keep_history:
            if self.history is None:
                self.history = [HistoryManager() for _ in range(e.batch_size)]
            for history, summary in zip(self.history, self.engrams.status_summary()):
                history.add_summary(summary)

    # -------------------------------------------------------------- persistence
    def _config(self) -> dict:
        """The constructor arguments (without device and generator) that rebuild this memory."""
        return {key: getattr(self, key) for key in CONFIG_FIELDS}

    def save(self, path: str | Path) -> None:
        """Save the engrams, their counts and the counters atomically (npz with version and checksum).

        The history (``keep_history``) is not saved (see :meth:`HistoryManager.save`).
        """
        _persist.save_memoria(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None,
             generator: torch.Generator | None = None) -> Memoria:
        """Load a memory saved by :meth:`save`.

        ``device=None``: the device it was saved from when available (CUDA), else the CPU.
        Raises ``mnemonix._io.FormatError`` naming the field on a newer, corrupted or
        inconsistent file.
        """
        return _persist.load_memoria(cls, path, device, generator)


def _initial_lifespan(value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"initial_lifespan must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0 or value > MAX_LIFESPAN:
        raise ValueError(f"initial_lifespan must be a finite number > 0 (an engram with lifespan <= 0 is dropped "
                         f"at its first step), got {value!r}")
    return value


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _device(device: object) -> torch.device | None:
    if device is None or device == "":
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str, a torch.device or None, got {type(device).__name__}")
    try:
        out = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device must name a torch device, got {device!r} ({exc})") from exc
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device is {device!r} but CUDA is not available")
    if out.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    return out
