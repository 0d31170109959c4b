"""memoria-pytorch's private steps of ``Memoria``, with its signatures, and the step-by-step path.

Code written for memoria-pytorch calls or overrides these methods (its tests call six of
them). :meth:`Memoria.remind` and :meth:`Memoria.adjust_lifespan_and_memories` run a fused
path by default; when a subclass overrides one of the steps, they run the original's
structure instead, calling every step in order, so that the override takes effect. Both
paths give identical results for the same inputs and generator (tested).

The step-by-step path has the original's costs (a [B, W, S] weight tensor, selections that
copy the co-fire counts of the engrams they keep) and its quirks: the ``fix_*`` options
apply to the fused path only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mnemonix._types import ENGRAM_LONGTERM, ENGRAM_SHORTTERM, ENGRAM_WORKING
from mnemonix.backends.nearest import neg_sq_l2
from mnemonix.memoria import _longterm
from mnemonix.memoria._engram_checks import index_matrix
from mnemonix.memoria.engram import Engrams
from mnemonix.memoria.utils import gather_rows, indices_with_mask, super_unique

if TYPE_CHECKING:
    from mnemonix.memoria.memoria import Memoria

REMIND_STEPS = ("_calculate_memory_weight", "_remind_shortterm_memory", "_find_initial_longterm_memory",
                "_search_longterm_memories_with_initials", "_select_final_ltms")
ADJUST_STEPS = ("_memorize_working_memory_as_shortterm_memory", "_memorize_shortterm_memory_as_longterm_memory")


def _engrams(name: str, value: object) -> Engrams:
    if not isinstance(value, Engrams):
        raise TypeError(f"{name} must be an Engrams, got {type(value).__name__}")
    return value


class UpstreamSteps:
    """The steps of memoria-pytorch's ``remind`` and ``adjust_lifespan_and_memories``."""

    @classmethod
    def _overrides(cls, names: tuple[str, ...]) -> bool:
        return any(getattr(cls, name) is not getattr(UpstreamSteps, name) for name in names)

    @torch.no_grad()
    def _calculate_memory_weight(self: Memoria, working_memory: Engrams, key_memory: Engrams) -> torch.Tensor:
        """``-||w - k||^2`` [B, W, K] between working-memory and key engrams (the original's float32 arithmetic)."""
        wm, keys = _engrams("working_memory", working_memory).data, _engrams("key_memory", key_memory).data
        return neg_sq_l2(wm, keys.to(wm.device))

    @torch.no_grad()
    def _remind_shortterm_memory(self: Memoria, weight: torch.Tensor,
                                 shortterm_memory_indices: torch.Tensor) -> torch.Tensor:
        """``shortterm_memory_indices`` [B, S] with -1 except the ``num_reminded_stm`` of highest mean weight."""
        stm_weight = weight.mean(dim=1)
        top = stm_weight.topk(min(self.num_reminded_stm, stm_weight.shape[1]), dim=1).indices
        chosen = torch.zeros_like(shortterm_memory_indices, dtype=torch.bool).scatter_(1, top, True)
        return shortterm_memory_indices.masked_fill(~chosen, -1)

    @torch.no_grad()
    def _find_initial_longterm_memory(self: Memoria, nearest_shortterm_memory_indices: torch.Tensor) -> torch.Tensor:
        """Per short-term position [B, S], the long-term engram it co-fired with most; distinct, [B, U].

        Negative positions read the last engram's counts (the original's indexing). Ties are
        broken with the generator (see ``tie_break``); -1 where no long-term engram exists.
        """
        e = self.engrams
        idx = index_matrix("nearest_shortterm_memory_indices", nearest_shortterm_memory_indices, e.batch_size,
                           e.memory_length).to(e.device)
        queries = torch.where(idx < 0, idx + e.memory_length, idx)
        ltm_mask = e.longterm_memory_mask
        return super_unique(self._initial_ltm_positions(queries, ltm_mask), dim=1)

    def _initial_ltm_positions(self: Memoria, queries: torch.Tensor, ltm_mask: torch.Tensor,
                               ltm_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Initial long-term positions [B, S] (-1: none) for query positions, as the configured tie-break draws.

        ``ltm_positions``: ``indices_with_mask(ltm_mask)`` when the caller has it. Runs on the
        arguments' device (the fused ``remind`` passes host tensors: no device copy).
        """
        e = self.engrams
        batch, num_slots = queries.shape
        if batch == 0 or num_slots == 0:
            return torch.full_like(queries, -1)
        ltm_positions = indices_with_mask(ltm_mask) if ltm_positions is None else ltm_positions
        if ltm_positions.shape[1] == 0:  # no long-term engram
            if self.tie_break == "original":  # the original draws its tie-break noise even then
                for _ in self._tie_noise_chunks(batch, num_slots, e.memory_length):
                    pass
            return torch.full_like(queries, -1)
        if self.tie_break == "original" or e.graph.has_overlay():
            return _longterm.initial_positions_original(e, queries, ltm_mask, self._tie_noise_chunks,
                                                        self._noise_device())
        local = e.initial_longterm(queries, ltm_positions, self._draw_seed()).to(queries.device)
        return gather_rows(ltm_positions, local, -1)

    @torch.no_grad()
    def _search_longterm_memories_with_initials(self: Memoria, initial_longterm_memory_indices: torch.Tensor,
                                                longterm_memory: Engrams) -> torch.Tensor:
        """The greedy co-fire walk from the initial long-term positions [B, U]: distinct local indices
        into ``longterm_memory`` [B, N] (``super_unique`` of [B, (depth + 1) U'])."""
        e = self.engrams
        initial = index_matrix("initial_longterm_memory_indices", initial_longterm_memory_indices, e.batch_size,
                               e.memory_length)
        batch, num_init = initial.shape
        local = e.get_local_indices_from_global_indices(e.longterm_memory_mask, initial)
        if initial.numel() == 0 or len(_engrams("longterm_memory", longterm_memory)) == 0:
            return torch.zeros((batch, (self.ltm_search_depth + 1) * num_init), dtype=torch.long, device=e.device)
        reachable = longterm_memory.longterm_memory_mask
        positions = torch.arange(longterm_memory.memory_length, device=reachable.device).expand_as(reachable)
        depth = _longterm.useful_depth(self.ltm_search_depth, longterm_memory.memory_length)
        walked = longterm_memory.walk_longterm(local, positions, depth, alias_negative=True,
                                               reachable=reachable)
        return super_unique(walked, dim=1).to(e.device)

    @torch.no_grad()
    def _select_final_ltms(self: Memoria, working_memory: Engrams,
                           found_longterm_memory_indices: torch.Tensor) -> torch.Tensor:
        """The ``num_final_ltms`` of ``found_longterm_memory_indices`` [B, N] (read as positions, as the
        original does) with the highest summed weight to the working memory."""
        found = found_longterm_memory_indices
        if found.shape[1] == 0:
            return found
        weight = self._calculate_memory_weight(working_memory, self.engrams.select(found)).sum(dim=1)
        top = weight.topk(min(self.num_final_ltms, weight.shape[1]), dim=1).indices
        return found.gather(1, top)

    @torch.no_grad()
    def _memorize_working_memory_as_shortterm_memory(self: Memoria) -> None:
        """Every WORKING engram becomes SHORTTERM."""
        types = self.engrams.engrams_types
        types[types == ENGRAM_WORKING] = ENGRAM_SHORTTERM

    @torch.no_grad()
    def _memorize_shortterm_memory_as_longterm_memory(self: Memoria) -> None:
        """The oldest SHORTTERM engrams beyond ``stm_capacity`` (per row) become LONGTERM."""
        stm_indices = indices_with_mask(self.engrams.shortterm_memory_mask)
        num_exceeded = stm_indices.shape[1] - self.stm_capacity
        if num_exceeded <= 0:
            return
        exceeded = self.engrams.get_mask_with_indices(stm_indices[:, :num_exceeded])
        self.engrams.engrams_types[exceeded] = ENGRAM_LONGTERM

    # ------------------------------------------------------------ the two paths
    def _remind_stepwise(self: Memoria) -> tuple[torch.Tensor, torch.Tensor]:
        """The original's ``remind``: every step in order (overrides take effect)."""
        wm_engrams, wm_indices = self.engrams.get_working_memory()
        stm_engrams, stm_indices = self.engrams.get_shortterm_memory()
        ltm_engrams, _ = self.engrams.get_longterm_memory()
        weight = self._calculate_memory_weight(wm_engrams, stm_engrams)
        reminded_stm = self._remind_shortterm_memory(weight, stm_indices)
        initial = self._find_initial_longterm_memory(reminded_stm)
        searched = self._search_longterm_memories_with_initials(initial, ltm_engrams)
        final = self._select_final_ltms(wm_engrams, searched)
        reminded = torch.cat([reminded_stm, final.to(reminded_stm.device)], dim=1)
        self.engrams.fire_together_wire_together(torch.cat([wm_indices, reminded], dim=1))
        reminded = super_unique(reminded, dim=1)
        memories = gather_rows(self.engrams.data, reminded, 0.0)
        return memories.to(self.ext_device or memories.device).contiguous(), reminded

    def _adjust_stepwise(self: Memoria, indices: torch.Tensor, lifespan_delta: torch.Tensor) -> None:
        """The original's ``adjust_lifespan_and_memories``: every step in order."""
        e = self.engrams
        e.extend_lifespan(indices, lifespan_delta.to(e.device))
        e.decrease_lifespan()
        e.increase_age()
        self._memorize_working_memory_as_shortterm_memory()
        self._memorize_shortterm_memory_as_longterm_memory()
        self.engrams.retain(self.engrams.lifespan > 0)
