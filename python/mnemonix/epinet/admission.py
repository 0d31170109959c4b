"""Batched admission into a fixed-capacity salience memory, as if one item at a time.

The rule (the notebook's ``EpisodicMemory.add``, applied to each item in
order): while there is room a newcomer is appended; once full, a newcomer
replaces the memory of lowest current salience iff its initial salience is
strictly larger (ties among the lowest: the most recently stored is evicted).
:func:`plan_admission` computes, with vectorised tensor operations, where
each item of a batch ends up; it writes nothing.

Host syncs (GPU readiness): the functions here run on the memory's device
and synchronise with the host at most twice per batch, never per item:
one ``nonzero`` (how many newcomers enter a full memory) and one scalar
comparison in :func:`least_worthy` (is the boundary of the ``m`` least worthy
tied). Every loop runs a number of iterations known on the host.
"""

from __future__ import annotations

import torch

__all__ = ["plan_admission", "admit_into_full", "ascending_worth", "least_worthy", "count_earlier_at_least"]


def ascending_worth(value: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """Permutation putting items in ascending worth: lower value first; equal values: newer (higher seq) first."""
    by_seq = torch.sort(seq, descending=True, stable=True).indices
    by_val = torch.sort(value[by_seq], stable=True).indices
    return by_seq[by_val]


def least_worthy(value: torch.Tensor, seq: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of the m least worthy items, in ascending worth (exact at ties).

    ``topk`` when the boundary is not tied (one host sync to know), a full sort otherwise.
    """
    n = value.shape[0]
    if m < n:
        vals = torch.topk(value, m + 1, largest=False)
        if bool(vals.values[m] != vals.values[m - 1]):  # host sync 1 of at most 2 per batch
            picked = vals.indices[:m]
            return picked[ascending_worth(value[picked], seq[picked])]
    return ascending_worth(value, seq)[:m]


def count_earlier_at_least(values: torch.Tensor) -> torch.Tensor:
    """``out[i] = #{j < i : values[j] >= values[i]}`` in O(R log^2 R), vectorised, no host sync.

    Merge-sort counting: at the level with blocks of ``2h``, every element of
    a right half counts the elements of its left half that are >= it (sorted
    left halves, batched ``searchsorted``). Each earlier j meets i in exactly
    one level. Values must be finite (padding is -inf).
    """
    R = values.shape[0]
    if R < 2:
        return torch.zeros(R, dtype=torch.int64, device=values.device)
    size = 1 << (R - 1).bit_length()
    # Counts of the padding positions (>= R) land in the tail and are cut off: no boolean mask, no sync.
    out = torch.zeros(size, dtype=torch.int64, device=values.device)
    padded = torch.full((size,), float("-inf"), dtype=values.dtype, device=values.device)
    padded[:R] = values
    half = 1
    while half < size:
        blocks = padded.view(-1, 2, half)
        left_sorted = torch.sort(blocks[:, 0, :], dim=1).values  # [nb, half]
        right = blocks[:, 1, :].contiguous()  # [nb, half]
        below = torch.searchsorted(left_sorted, right, right=False)  # left elements < right value
        at_least = (half - below).reshape(-1)  # one entry per right-half position
        pos = (torch.arange(size // (2 * half), device=values.device)[:, None] * 2 * half + half
               + torch.arange(half, device=values.device)[None, :]).reshape(-1)
        out[pos] += at_least  # positions are distinct within a level
        half *= 2
    return out[:R]


def admit_into_full(
    pool_val: torch.Tensor,
    pool_seq: torch.Tensor,
    pool_slot: torch.Tensor | None,
    log_r0: torch.Tensor,
    next_seq: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Admit R newcomers into a full pool, as if one at a time; vectorised.

    ``pool_val`` [cap] log-saliences now, ``pool_seq`` [cap] store order,
    ``pool_slot`` [cap] slot of each pool entry (None: the position); ``log_r0`` [R] newcomers
    (newer than every pool entry, in arrival order). Returns ``(slots [R]``
    (-1: rejected, or admitted then evicted by a later newcomer),
    ``evicted [T]`` pool positions evicted, -1 where a newcomer was evicted,
    ``T`` the number of newcomers admitted).

    Worth order: (log-salience, descending; store order, ascending). One at a
    time, a newcomer enters iff fewer than ``cap`` older entries are worth at
    least as much (the pool is always the ``cap`` worthiest seen so far), and
    each entry evicts the least worthy entry present; so the evicted entries,
    in time order, are the least worthy of all, in ascending worth. Newcomer
    ``a_t`` (t-th admitted) takes the slot of the t-th evicted entry: a pool
    entry, or an earlier newcomer whose slot it inherits (pointer jumping).
    """
    dev = pool_val.device
    R = log_r0.shape[0]
    cap = pool_val.shape[0]
    # A batch of R can only evict the R least worthy pool entries.
    m = min(R, cap)
    worst = least_worthy(pool_val, pool_seq, m)  # pool positions, ascending worth
    worst_val = pool_val[worst]
    # Newcomer i enters iff #(pool below r_i) > #(earlier newcomers with r_j >= r_i);
    # the left count matters only up to R, so the m least worthy suffice.
    pool_below = torch.searchsorted(torch.sort(worst_val).values, log_r0, right=False)
    admitted = pool_below > count_earlier_at_least(log_r0)
    slots = torch.full((R,), -1, dtype=torch.int64, device=dev)
    adm_pos = admitted.nonzero().squeeze(1)  # host sync 2 of at most 2: the number admitted
    T = adm_pos.shape[0]
    if T == 0:
        return slots, torch.empty(0, dtype=torch.int64, device=dev), 0
    # Eviction candidates: the m least worthy pool entries, then the admitted newcomers (newer).
    cand_val = torch.cat([worst_val, log_r0[adm_pos]])
    cand_seq = torch.cat([pool_seq[worst], next_seq + adm_pos])
    evicted = ascending_worth(cand_val, cand_seq)[:T]  # in eviction (time) order
    from_pool = evicted < m
    evicted_pos = worst[evicted.clamp(max=m - 1)]
    evicted_slot = evicted_pos if pool_slot is None else pool_slot[evicted_pos]
    slot_of = torch.where(from_pool, evicted_slot, torch.full_like(evicted, -1))
    parent = torch.where(from_pool, torch.arange(T, device=dev), evicted - m)
    # Pointer jumping resolves every chain within log2(T) + 1 rounds: a fixed count, no sync to stop early.
    for _ in range(T.bit_length() + 1):
        slot_of = torch.where(slot_of < 0, slot_of[parent], slot_of)
        parent = parent[parent]
    # Newcomers evicted by later newcomers do not survive; index T is a scratch entry for pool evictions.
    gone = torch.where(from_pool, T, evicted - m)
    survives = torch.ones(T + 1, dtype=torch.bool, device=dev)
    survives[gone] = False
    slots[adm_pos] = torch.where(survives[:T], slot_of, -1)
    return slots, torch.where(from_pool, evicted_pos, -1), T


def plan_admission(
    pool_log_salience: torch.Tensor | None,
    pool_seq: torch.Tensor,
    count: int,
    capacity: int,
    log_r0: torch.Tensor,
    next_seq: int,
) -> torch.Tensor:
    """Where each item of a batch goes, as if added one at a time; changes nothing.

    Parameters
    ----------
    pool_log_salience : Tensor [count] float64, or None when ``count + n <= capacity``
        Current log-salience of the stored memories (only needed when the batch overflows).
    pool_seq : Tensor [count] int64
        Store order of the stored memories.
    count, capacity : int
        Filled slots ``[0, count)`` of ``capacity``.
    log_r0 : Tensor [n] float64
        Log initial salience of the newcomers, in arrival order.
    next_seq : int
        Store order of the first newcomer.

    Returns
    -------
    slots : Tensor [n] int64
        Slot of each item after the batch, -1 when rejected or evicted by a later item.
    """
    n = log_r0.shape[0]
    dev = log_r0.device
    slots = torch.full((n,), -1, dtype=torch.int64, device=dev)
    free = min(capacity - count, n)
    if free > 0:  # 1. Free slots are filled in arrival order.
        slots[:free] = torch.arange(count, count + free, device=dev)
    if n <= free:
        return slots
    if pool_log_salience is None:
        raise ValueError(f"pool_log_salience is needed: {n} items overflow {capacity - count} free slots")
    # 2. Full: the stored memories plus the batch's first `free` items form the pool.
    pool_val, pool_slot = pool_log_salience, None  # pool position == slot
    if free > 0:
        pool_val = torch.cat([pool_val, log_r0[:free]])
        pool_seq = torch.cat([pool_seq, torch.arange(next_seq, next_seq + free, device=dev)])
        pool_slot = torch.cat([torch.arange(count, device=dev), slots[:free]])
    new_slots, evicted_pool, _ = admit_into_full(pool_val, pool_seq, pool_slot, log_r0[free:],
                                                        next_seq + free)
    slots[free:] = new_slots
    # Items of this batch placed in free slots and evicted again by later items lose their slot;
    # evictions of older memories (and the -1 entries) go to the scratch entry n.
    batch_pos = torch.where(evicted_pool >= count, evicted_pool - count, n)
    with_scratch = torch.cat([slots, slots.new_full((1,), -1)])
    with_scratch[batch_pos] = -1
    return with_scratch[:n]
