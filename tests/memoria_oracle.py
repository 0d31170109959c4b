"""A plain, dense, pure-torch Memoria written from memoria-pytorch 1.1.0's documented behaviour.

The test oracle of mnemonix.memoria: every engram field is a padded tensor, co-fire counts
are a dense int32 [B, M, M], every step is written the obvious way (no graph, no GEMM, no
fused op). Slow on purpose (O(M^2) memory, [B, W, M, H] distances); use small sizes.

Behaviour (README and docstrings of memoria-pytorch):

- layout: rows padded at the front with NULL engrams (data 0, counts -1, lifespan -1,
  age -1, id -1); index lists front-padded with -1;
- remind: short-term engrams with the highest mean over the working memory of
  ``-||w - s||^2`` (top ``num_reminded_stm``); for every short-term slot (non-reminded ones
  hold -1, which indexes the last engram) the long-term engram with the highest co-fire
  count, ties broken by ``argmax(rand(fp16) * is_max)``; a greedy walk from those (local
  indices into the long-term selection) of ``ltm_search_depth`` steps, each to the unvisited
  long-term engram of highest count (-1 when none; -1 reads and marks the last); the found
  local indices, read as positions, ranked by summed ``-||w - e||^2``, top ``num_final_ltms``;
  working memory and reminded engrams fire together; the reminded list is ``super_unique``d;
- adjust: ``lifespan[idx] += delta`` (one write per index), lifespan - 1, age + 1,
  WORKING -> SHORTTERM, the oldest SHORTTERM beyond capacity -> LONGTERM, keep lifespan > 0.
"""

from __future__ import annotations

import torch

NULL, WORKING, SHORTTERM, LONGTERM = 0, 1, 2, 3


def front_indices(mask: torch.Tensor) -> torch.Tensor:
    """Positions where mask [B, M] holds, ascending, shorter rows -1 at the front."""
    rows = [torch.nonzero(r).flatten().tolist() for r in mask]
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([[-1] * (width - len(r)) + r for r in rows], dtype=torch.long).view(len(rows), width)


def distinct(t: torch.Tensor) -> torch.Tensor:
    """memoria-pytorch's super_unique along dim 1: presence mask over [min, max], read back by topk."""
    if t.numel() == 0:
        return t
    low = t.min()
    presence = torch.zeros((t.shape[0], int(t.max() - low) + 1), dtype=torch.int32)
    presence.scatter_(1, (t - low).long(), 1)
    k = min(t.shape[1], int(presence.sum(1).max()))
    valid, order = presence.topk(k, dim=1)
    return (order + low).masked_fill(valid == 0, -1)


class DenseEngrams:
    def __init__(self, data, counts, types, lifespan, age, ids):
        self.data, self.counts, self.types, self.lifespan, self.age, self.ids = data, counts, types, lifespan, age, ids

    @staticmethod
    def fresh(data, types_code, lifespan, first_id, track_age, track_id):
        b, m, _ = data.shape
        return DenseEngrams(
            data.float().clone(), torch.zeros(b, m, m, dtype=torch.int32),
            torch.full((b, m), types_code, dtype=torch.uint8),
            torch.full((b, m), float(lifespan)), torch.zeros(b, m, dtype=torch.int32) if track_age else None,
            torch.arange(first_id, first_id + m, dtype=torch.int32).repeat(b, 1) if track_id else None)

    def __len__(self):
        return self.lifespan.numel()

    def __add__(self, other):
        if len(self) == 0:
            return other
        if len(other) == 0:
            return self
        b, m1, m2 = self.data.shape[0], self.data.shape[1], other.data.shape[1]
        counts = torch.zeros(b, m1 + m2, m1 + m2, dtype=torch.int32)
        counts[:, :m1, :m1], counts[:, m1:, m1:] = self.counts, other.counts
        cat = (lambda x, y: None if x is None else torch.cat([x, y], 1))
        return DenseEngrams(torch.cat([self.data, other.data], 1), counts, torch.cat([self.types, other.types], 1),
                            torch.cat([self.lifespan, other.lifespan], 1), cat(self.age, other.age),
                            cat(self.ids, other.ids))

    def select(self, idx: torch.Tensor) -> DenseEngrams:
        """Engrams at positions idx [B, K]; -1 gives a NULL engram."""
        null = idx < 0
        safe = idx.clamp(min=0)
        rows = torch.arange(idx.shape[0]).unsqueeze(1)
        data = self.data[rows, safe].masked_fill(null.unsqueeze(2), 0.0)
        counts = self.counts[rows.unsqueeze(2), safe.unsqueeze(2), safe.unsqueeze(1)]
        counts = counts.masked_fill(null.unsqueeze(2) | null.unsqueeze(1), -1)
        pick = (lambda x, fill: None if x is None else x[rows, safe].masked_fill(null, fill))
        return DenseEngrams(data, counts, pick(self.types, NULL), pick(self.lifespan, -1.0), pick(self.age, -1),
                            pick(self.ids, -1))

    def fire(self, idx: torch.Tensor) -> None:
        mask = torch.zeros(self.types.shape[0], self.types.shape[1] + 1, dtype=torch.bool)
        mask[torch.arange(idx.shape[0]).unsqueeze(1), torch.where(idx < 0, self.types.shape[1], idx)] = True
        mask = mask[:, :-1].int()
        self.counts += mask.unsqueeze(2) * mask.unsqueeze(1)


def neg_sq_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.unsqueeze(2) - b.unsqueeze(1)).pow(2).sum(dim=3).neg()


class DenseMemoria:
    def __init__(self, num_reminded_stm, stm_capacity, ltm_search_depth, initial_lifespan, num_final_ltms,
                 track_age=False, track_id=False, generator=None):
        self.k_stm, self.capacity, self.depth = num_reminded_stm, stm_capacity, ltm_search_depth
        self.initial, self.k_ltm, self.generator = initial_lifespan, num_final_ltms, generator
        self.track_age, self.track_id = track_age, track_id
        self.engrams = DenseEngrams.fresh(torch.zeros(0, 0, 0), WORKING, 0, 0, track_age, track_id)
        self.next_id = 0

    def add_working_memory(self, data: torch.Tensor) -> None:
        new = DenseEngrams.fresh(data, WORKING, self.initial, self.next_id, self.track_age, self.track_id)
        self.engrams = self.engrams + new
        if self.track_id:
            self.next_id += data.shape[1]

    def _kind(self, code: int) -> tuple[DenseEngrams, torch.Tensor]:
        idx = front_indices(self.engrams.types == code)
        return self.engrams.select(idx), idx

    def remind(self) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.engrams
        wm, wm_idx = self._kind(WORKING)
        stm, stm_idx = self._kind(SHORTTERM)
        ltm, _ = self._kind(LONGTERM)
        stm_score = neg_sq_l2(wm.data, stm.data).mean(dim=1)
        top = stm_score.topk(min(self.k_stm, stm_score.shape[1]), dim=1).indices
        chosen = torch.zeros_like(stm_idx, dtype=torch.bool).scatter_(1, top, True)
        reminded_stm = stm_idx.masked_fill(~chosen, -1)
        initial = self._initial_ltm(reminded_stm)
        found = self._walk(initial, ltm)
        final = found
        if found.shape[1]:
            ltm_score = neg_sq_l2(wm.data, e.select(found).data).sum(dim=1)
            final = found.gather(1, ltm_score.topk(min(self.k_ltm, ltm_score.shape[1]), dim=1).indices)
        reminded = torch.cat([reminded_stm, final], dim=1)
        e.fire(torch.cat([wm_idx, reminded], dim=1))
        reminded = distinct(reminded)
        return e.select(reminded).data, reminded

    def _initial_ltm(self, stm_slots: torch.Tensor) -> torch.Tensor:
        e = self.engrams
        rows = torch.arange(stm_slots.shape[0]).unsqueeze(1)
        counts = e.counts[rows, torch.where(stm_slots < 0, stm_slots + e.counts.shape[1], stm_slots)]
        counts = counts.masked_fill(~(e.types == LONGTERM).unsqueeze(1), -1)
        is_max = counts == counts.max(dim=2, keepdim=True).values
        noise = torch.rand(is_max.shape, dtype=torch.float16, generator=self.generator)
        initial = (noise * is_max).argmax(dim=2)
        initial = initial.masked_fill(e.types.gather(1, initial) != LONGTERM, -1)
        return distinct(initial)

    def _walk(self, initial: torch.Tensor, ltm: DenseEngrams) -> torch.Tensor:
        batch, num_init = initial.shape
        e = self.engrams
        hit = torch.zeros(batch, e.types.shape[1] + 1, dtype=torch.bool)
        hit[torch.arange(batch).unsqueeze(1), torch.where(initial < 0, e.types.shape[1], initial)] = True
        ltm_idx = front_indices(e.types == LONGTERM)
        local = front_indices(hit[:, :-1].gather(1, ltm_idx.clamp(min=0)) & (ltm_idx >= 0))
        if initial.numel() == 0 or len(ltm) == 0:
            return torch.zeros(batch, (self.depth + 1) * num_init, dtype=torch.long)
        rows = torch.arange(batch).unsqueeze(1)
        blocked = ltm.types != LONGTERM
        found = torch.full((batch, self.depth + 1, local.shape[1]), -1, dtype=torch.long)
        found[:, 0] = local
        blocked[rows, local] = True
        for d in range(self.depth):
            reach = ltm.counts.masked_fill(blocked.unsqueeze(1), -1)[rows, found[:, d]]
            step = reach.argmax(dim=2)
            step = step.masked_fill(blocked[rows, step], -1)
            found[:, d + 1] = step
            blocked[rows, step] = True
        return distinct(found.view(batch, -1))

    def adjust_lifespan_and_memories(self, indices: torch.Tensor, delta: torch.Tensor) -> None:
        e = self.engrams
        b, m = e.types.shape
        added = torch.zeros(b, m + 1)
        added[torch.arange(b).unsqueeze(1), torch.where(indices < 0, m, indices)] += delta.float()
        e.lifespan = e.lifespan + added[:, :m] - 1.0
        if e.age is not None:
            e.age = e.age + 1
        e.types = torch.where(e.types == WORKING, torch.full_like(e.types, SHORTTERM), e.types)
        stm_idx = front_indices(e.types == SHORTTERM)
        exceeded = stm_idx.shape[1] - self.capacity
        if exceeded > 0:
            cols = stm_idx[:, :exceeded]
            valid = cols >= 0
            e.types[torch.arange(b).unsqueeze(1).expand_as(cols)[valid], cols[valid]] = LONGTERM
        self.engrams = e.select(front_indices(e.lifespan > 0))
