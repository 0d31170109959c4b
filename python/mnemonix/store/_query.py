"""Search and retrieval of a :class:`~mnemonix.store.MemoryStore` over its blocks (lock held by the caller).

Each block is searched by one op call with the block's slice of the row mask (live and
allowed rows) applied inside the scan; the per-block exact results are merged by
(score, id), so ties go to the lower id wherever the rows are stored. Retrieval runs
:func:`mnemonix.ops.hopfield_retrieve` per part (a float32 block directly; narrower
storage dequantised part by part) and merges the parts' ``(out, lse)`` exactly.
"""

from __future__ import annotations

import torch

from mnemonix import _types, ops
from mnemonix.backends.salience_exact import exact_cosine, exact_rank_key
from mnemonix.backends.search_exact import CANDIDATE_EXTRA, dequantize, rank_select
from mnemonix.store._blocks import Block

PART_ROWS = 1 << 16
"""Rows dequantised at a time for retrieval and salience search over non-float32 storage."""


def gather(blocks: list[Block], name: str, rows: torch.Tensor) -> torch.Tensor:
    """Column ``name`` at global ``rows`` [n] (every row held by some block)."""
    template = blocks[-1].columns[name]
    out = torch.empty((rows.shape[0], *template.shape[1:]), dtype=template.dtype, device=rows.device)
    for b in blocks:
        sel = (rows >= b.start) & (rows < b.stop)
        if b.n and bool(sel.any()):
            out[sel] = b.col(name)[rows[sel] - b.start]
    return out


def gather_keys(blocks: list[Block], rows: torch.Tensor) -> torch.Tensor:
    """Stored keys at ``rows``: storage dtype, or dequantised float32 for int8."""
    keys = gather(blocks, "keys", rows)
    if keys.dtype != torch.int8:
        return keys
    return dequantize(keys, gather(blocks, "scales", rows))


def _block_mask(block: Block, mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask[block.start: block.stop]


def _pads(B: int, k: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.full((B, k), float("-inf"), dtype=dtype, device=device),
            torch.full((B, k), -1, dtype=torch.int64, device=device))


def search(blocks, mask, q, k: int, metric: str, max_norm: float, *,
           exact64: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k (scores [B, k] float32, ids [B, k] int64) by the store's metric.

    ``exact64``: scores stay the float64 exact scores the ranking used (a sharded store
    merges them across ranks: float32 scores could tie where the float64 ones do not).
    """
    out_dtype = torch.float64 if exact64 else torch.float32
    scores, ids = [], []
    for b in blocks:
        m = _block_mask(b, mask)
        if b.n == 0 or (m is not None and not bool(m.any())):
            continue
        block_ids = b.col("ids")
        s, r = ops.search_topk(q, b.col("keys"), k, scales=b.col("scales"), metric=metric, mask=m,
                               tie_ids=block_ids, max_norm=max_norm, exact_scores=True)
        scores.append(s)
        ids.append(torch.where(r >= 0, block_ids[r.clamp(min=0)], -1))
    if not scores:
        return _pads(q.shape[0], k, q.device, out_dtype)
    if len(scores) == 1:
        return scores[0].to(out_dtype), ids[0]
    all_ids = torch.cat(ids, dim=1)
    s, i = rank_select(torch.cat(scores, dim=1), all_ids, all_ids, k)
    return s.to(out_dtype), i


def _parts(block: Block, float32_whole: bool):
    """(start, stop) ranges of a block: whole when its keys are float32 and that is allowed."""
    if float32_whole and block.columns["keys"].dtype == torch.float32:
        yield 0, block.n
        return
    for a in range(0, block.n, PART_ROWS):
        yield a, min(a + PART_ROWS, block.n)


def _float_keys(block: Block, a: int, z: int) -> torch.Tensor:
    scales = block.col("scales")
    return dequantize(block.col("keys")[a:z], None if scales is None else scales[a:z])


def latest_tau(blocks, mask) -> float | None:
    """Latest store time of the allowed rows, or None when no row is allowed."""
    latest = None
    for b in blocks:
        m = _block_mask(b, mask)
        if b.n and (m is None or bool(m.any())):
            tau = b.col("tau") if m is None else b.col("tau")[m]
            latest = float(tau.max()) if latest is None else max(latest, float(tau.max()))
    return latest


def max_log_salience(blocks, mask, alpha: float, latest: float) -> float:
    """Largest log-salience of the allowed rows, ages measured from ``latest`` (-inf: none allowed)."""
    shift = float("-inf")
    for b in blocks:
        m = _block_mask(b, mask)
        if b.n and (m is None or bool(m.any())):
            log_s = _types.log_salience(b.col("r0"), b.col("tau"), alpha, latest)
            shift = max(shift, float(log_s.max() if m is None else log_s[m].max()))
    return shift


def _salience_part(q, keys, r0, tau, valid, ids, k, alpha, now, latest, shift):
    """Exact candidates of one part: (rank keys, ids, cos, relative log-salience) [B, <= k + extra]."""
    n_valid = keys.shape[0] if valid is None else int(valid.sum())
    take = min(k, n_valid)
    kk = min(take + CANDIDATE_EXTRA, n_valid)
    rel = _types.log_salience(r0, tau, alpha, latest) - shift
    while True:
        _, idx, _, _ = ops.salience_topk(q, keys, None, k=kk, r0=r0, tau=tau, alpha=alpha, now=now, valid=valid)
        cos = exact_cosine(q, keys[idx])
        key = exact_rank_key(cos, rel[idx])
        if kk == n_valid:
            break
        # salience_topk breaks ties by row; a tie group at the take-th place must be whole to
        # break it by id instead: widen until the last candidate ranks strictly below it.
        kth = rank_select(key, idx, ids[idx], take)[0][:, take - 1]
        if not bool((key[:, kk - 1] >= kth).any()):
            break
        kk = min(2 * kk, n_valid)
    return key, ids[idx], cos, rel[idx]


def salience_candidates(blocks, mask, q, k: int, alpha: float, now: float, latest: float,
                        shift: float) -> tuple[torch.Tensor, ...]:
    """Exact candidates of every allowed part: (rank keys, ids, cos, relative log-salience) [B, M].

    ``latest`` and ``shift`` (from :func:`latest_tau`, :func:`max_log_salience`) are the
    whole store's; the candidates hold every allowed row among the top ``k`` of each part.
    """
    keys_, ids_, cos_, rel_ = [], [], [], []
    for b in blocks:
        m = _block_mask(b, mask)
        for a, z in _parts(b, float32_whole=True) if b.n else ():
            valid = None if m is None else m[a:z]
            if valid is not None and not bool(valid.any()):
                continue
            part = _salience_part(q, _float_keys(b, a, z), b.col("r0")[a:z], b.col("tau")[a:z], valid,
                                  b.col("ids")[a:z], k, alpha, now, latest, shift)
            for acc, x in zip((keys_, ids_, cos_, rel_), part):
                acc.append(x)
    if not keys_:
        B = q.shape[0]
        empty = torch.empty(B, 0, dtype=torch.float64, device=q.device)
        return empty, torch.empty(B, 0, dtype=torch.int64, device=q.device), empty, empty
    return tuple(torch.cat(x, dim=1) for x in (keys_, ids_, cos_, rel_))


def select_salience(key, ids, cos, rel, k: int) -> tuple[torch.Tensor, ...]:
    """The ``k`` best candidates [B, k] by rank key, ties to the lower id; padding: key -inf, id -1, cos 0."""
    B, M = key.shape
    position = torch.arange(M, device=key.device).expand_as(key).contiguous()
    valid_key = torch.where(ids >= 0, key, torch.full_like(key, float("-inf")))
    _, pick = rank_select(valid_key, torch.where(ids >= 0, position, -1), ids, min(k, M))
    safe = pick.clamp(min=0)
    out = [torch.full((B, k), fill, dtype=t.dtype, device=key.device)
           for t, fill in ((key, float("-inf")), (ids, -1), (cos, 0.0), (rel, 0.0))]
    for o, t in zip(out, (key, ids, cos, rel)):
        o[:, : pick.shape[1]] = torch.where(pick >= 0, torch.gather(t, 1, safe), o[:, : pick.shape[1]])
    return tuple(out)


def salience_scores(ids: torch.Tensor, cos: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """``cos * s / max s`` [B, k] float32 of selected candidates; ``-inf`` where the id is -1."""
    scores = (cos * torch.exp(rel)).float()
    return torch.where(ids >= 0, scores, torch.full_like(scores, float("-inf")))


def salience_search(blocks, mask, q, k: int, alpha: float, now: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k by ``cos(q, c) * r0 * exp(-alpha (now - tau))``; scores relative to the most salient allowed memory."""
    latest = latest_tau(blocks, mask)
    if latest is None:
        return _pads(q.shape[0], k, q.device)
    shift = max_log_salience(blocks, mask, alpha, latest)
    cand = salience_candidates(blocks, mask, q, k, alpha, now, latest, shift)
    _, ids, cos, rel = select_salience(*cand, k)
    return salience_scores(ids, cos, rel), ids


def _retrieve_once(blocks, mask, q: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One retrieval pass over every allowed row: (out [B, dv] float32, lse [B] float32)."""
    outs, lses = [], []
    for b in blocks:
        m = _block_mask(b, mask)
        for a, z in _parts(b, float32_whole=True) if b.n else ():
            part_mask = None if m is None else m[a:z]
            if part_mask is not None and not bool(part_mask.any()):
                continue
            keys = _float_keys(b, a, z)
            values = b.col("values")
            values = None if values is None else values[a:z].float()
            out, lse = ops.hopfield_retrieve(q, keys, values, beta=beta, mask=part_mask, return_lse=True)
            outs.append(out.float())
            lses.append(lse.float())
    if len(outs) == 1:
        return outs[0], lses[0]
    lse = torch.stack(lses)  # [P, B]
    total = torch.logsumexp(lse, dim=0)
    weights = torch.exp(lse - total)  # exact merge of softmax partitions
    out = (weights[:, :, None] * torch.stack(outs)).sum(dim=0)
    return out, total


def retrieve_partial(blocks, mask, q: torch.Tensor, beta: float, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_retrieve_once` that allows no allowed row: (zeros [B, width], lse -inf) then."""
    if any(b.n and (mask is None or bool(_block_mask(b, mask).any())) for b in blocks):
        return _retrieve_once(blocks, mask, q, beta)
    B = q.shape[0]
    return (torch.zeros(B, width, dtype=torch.float32, device=q.device),
            torch.full((B,), float("-inf"), dtype=torch.float32, device=q.device))


def iterate(once, q: torch.Tensor, update_steps: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``once(q) -> (out, lse)``, then ``update_steps`` iterations ``q <- out``; a query stops once it moves < eps."""
    out, lse = once(q)
    state = q
    active = torch.arange(q.shape[0], device=q.device)
    for _ in range(update_steps):
        moved = (out[active] - state[active]).abs().amax(-1) >= eps
        active = active[moved]
        if active.numel() == 0:
            break
        state = state.index_copy(0, active, out[active])
        o, l_ = once(state[active])
        out = out.index_copy(0, active, o)
        lse = lse.index_copy(0, active, l_)
    return out, lse


def retrieve(blocks, mask, q, beta: float, update_steps: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Retrieval with ``update_steps`` iterations ``q <- out``, each query stopping once it moves < eps."""
    return iterate(lambda state: _retrieve_once(blocks, mask, state, beta), q, update_steps, eps)
