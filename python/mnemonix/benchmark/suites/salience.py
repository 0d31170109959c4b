"""``salience_topk`` against plain torch and faiss flat on salience-scaled keys.

faiss has no salience, but ``cos(q, c) * s_rel = q_hat . (c_hat * s_rel)``: an inner-product
index over normalised keys scaled by their relative salience ranks exactly by the salience
rule (the relative salience does not depend on ``now``), so ``IndexFlatIP`` over those rows,
then the gather of the k payloads, is the fair peer (CPU, float32).

The ``salience`` area (``bench/compare_salience.py``, :data:`SIZES`) adds ``cached_norms`` (the
op given the key norms, as EpisodicMemory calls it) and the ``notebook`` peer: seeds/002's
RecallEngine as written (float32 salience ``r0 exp(-alpha (now - tau))``, ``F.cosine_similarity``
on broadcast [B, 1, d] x [1, N, d], materialising B x N x d floats), skipped above
:data:`NOTEBOOK_MAX_BYTES`; and the op ``episodic.add``: a batch of items into an
:class:`~mnemonix.epinet.EpisodicMemory` holding ``stored`` (its buffers restored between
calls, outside the timing) against the notebook's per-item ``torch.cat`` insertion of the same
batch (``peer:notebook``, up to :data:`NOTEBOOK_ADD_MAX` items), floor one pass over the
salience arrays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mnemonix import ops
from mnemonix.benchmark.suites import Built, Case
from mnemonix.ops import salience as salience_op

SHAPES = {  # (N, d, B, k)
    "smoke": [(100_000, 128, 64, 5)],
    "quick": [(100_000, 128, 1, 5), (100_000, 128, 64, 5), (1_000_000, 128, 64, 5)],
    "full": [(n, d, b, k) for n in (10_000, 100_000, 1_000_000, 10_000_000) for d in (32, 128)
             for b in (1, 64, 1024) for k in (5, 64) if b * n <= 1024 * 1_000_000],
    "gpu": [(n, 128, b, k) for n in (1_000_000, 10_000_000) for b in (1, 64) for k in (5, 64)],
}


NOTEBOOK_MAX_BYTES = 4 << 30
ALPHA, NOW = 0.1, 10.0
SIZES = {  # the salience area: (N, d, B, k) of bench/compare_salience.py (CPU; CUDA: the gpu suite's)
    "tiny": [(2_000, 16, 4, 5)],
    "quick": [(10_000, 128, 64, 5), (50_000, 128, 64, 5)],
    "default": [(n, 128, 64, 5) for n in (100_000, 1_000_000, 10_000_000)],
}


NOTEBOOK_ADD_MAX = 50
ADDS = {"tiny": [(2_000, 20)], "quick": [(20_000, 20), (20_000, 1_000)], "default": [(100_000, 20), (100_000, 1_000)]}


def area_cases(size: str, device: torch.device) -> list[Case]:
    """The salience area at ``size`` (CUDA: the gpu suite's shapes in bfloat16 unless tiny; ``episodic.add``
    on the CPU only)."""
    if device.type == "cuda" and size != "tiny":
        shapes, dtype = (SHAPES["gpu"][:2] if size == "quick" else SHAPES["gpu"]), torch.bfloat16
    else:
        shapes, dtype = SIZES[size], torch.float32
    out = [Case("salience_topk", {"N": n, "d": d, "B": b, "k": k}, dtype, builder(n, d, b, k, dtype, area=True))
           for (n, d, b, k) in shapes]
    if device.type == "cpu":
        out += [Case("episodic.add", {"stored": n, "batch": b, "d": 128 if size != "tiny" else 16}, torch.float32,
                     _add_builder(n, b, 128 if size != "tiny" else 16)) for n, b in ADDS[size]]
    return out


def notebook_add(buffers, z, c, r0, y, tau_now, capacity, alpha):
    """seeds/002 EpisodicMemory.add for one item (torch.cat / argmin over the whole buffer)."""
    zb, cb, rb, tb, yb = buffers
    if zb.shape[0] < capacity:
        return (torch.cat([zb, z[None]]), torch.cat([cb, c[None]]), torch.cat([rb, r0[None]]),
                torch.cat([tb, tau_now[None]]), torch.cat([yb, y[None]]))
    s = rb * torch.exp(-alpha * (tau_now - tb))
    if r0 <= s.min():
        return buffers
    i = int(torch.argmin(s))
    zb[i], cb[i], rb[i], tb[i], yb[i] = z, c, r0, tau_now, y
    return buffers


def _add_builder(stored: int, batch: int, d: int):
    def build(device: torch.device) -> Built:
        from mnemonix.epinet import EpisodicMemory, SalienceClock

        g = torch.Generator().manual_seed(1)
        alpha = 1e-3
        z, r0, y = torch.randn(stored, d, generator=g), torch.rand(stored, generator=g) + 0.1, \
            torch.randint(10, (stored,), generator=g)
        new_z, new_r0 = torch.randn(batch, d, generator=g), torch.rand(batch, generator=g) * 2 + 0.1
        new_y = torch.randint(10, (batch,), generator=g)
        mem = EpisodicMemory(stored, d, clock=SalienceClock(alpha, source="timestamps"))
        mem.add(z, z, r0, y, now=0.0)
        names = ("_c", "_z", "_r0", "_tau", "_y", "_seq", "_c_norm")
        snapshot = {n: getattr(mem, n).clone() for n in names}
        count, nxt = mem._count, mem._next_seq

        def restore() -> None:
            for n, v in snapshot.items():
                getattr(mem, n).copy_(v)
            mem._count, mem._next_seq = count, nxt

        candidates = {"auto": lambda: (mem.add(new_z, new_z, new_r0, new_y, now=1.0), mem)[1]}
        notes = {}
        if batch <= NOTEBOOK_ADD_MAX:
            base = (z, z.clone(), r0, torch.zeros(stored), y)

            def notebook():
                buffers = base
                for i in range(batch):
                    buffers = notebook_add(buffers, new_z[i], new_z[i], new_r0[i], new_y[i], torch.tensor(1.0),
                                           stored + batch, alpha)
                return buffers

            candidates["peer:notebook"] = notebook
        else:
            notes["peer:notebook"] = f"skipped: {batch} per-item concatenations of the whole buffer take minutes"

        def check(fn) -> bool:
            held = fn()  # a full buffer: the new items replace the least salient ones they beat
            return held._count == stored and bool(torch.isin(new_r0.to(held._r0.dtype), held._r0).any())

        return Built(candidates, check, bytes_read=stored * (8 + 8), flops=0.0, chosen="torch", notes=notes,
                     setup={"auto": restore})

    return build


def notebook_recall(query, keys, payloads, r0, tau, alpha, now, k):
    """seeds/002 RecallEngine.recall, as written (float32 salience, broadcast cosine)."""
    salience = r0 * torch.exp(-alpha * (torch.tensor(now, dtype=torch.float32, device=r0.device) - tau))
    cos_sim = F.cosine_similarity(query.unsqueeze(1), keys.unsqueeze(0), dim=-1)
    _, top = torch.topk(cos_sim * salience.unsqueeze(0), k, dim=1)
    s_top = salience[top]
    weights = s_top / (s_top.sum(dim=1, keepdim=True) + 1e-8)
    return (weights.unsqueeze(-1) * payloads[top]).sum(dim=1), top


def _area_candidates(candidates: dict, notes: dict, queries, keys, payloads, r0, tau, log_s, k: int) -> None:
    b, n, d = queries.shape[0], keys.shape[0], keys.shape[1]
    norms = torch.linalg.vector_norm(keys.float(), dim=1)
    candidates["cached_norms"] = lambda: ops.salience_topk(queries, keys, payloads, k=k, log_salience=log_s,
                                                           key_norms=norms)[1]
    if b * n * d * 4 * 2 > NOTEBOOK_MAX_BYTES:
        notes["peer:notebook"] = f"skipped: the broadcast cosine needs {b * n * d * 8 / 2**30:.1f} GiB"
        return
    # float32 inputs as in the notebook (converted outside the timing; tau relative to 0 so that
    # float32 holds it: generous to the notebook, which uses unix seconds)
    r32, t32, q32, k32, z32 = r0.float(), tau.float(), queries.float(), keys.float(), payloads.float()
    candidates["peer:notebook"] = lambda: notebook_recall(q32, k32, z32, r32, t32, ALPHA, NOW, k)[1]


def cases(suite: str, device: torch.device) -> list[Case]:
    dtypes = [torch.bfloat16, torch.float32] if suite == "gpu" else [torch.float32]
    return [Case("salience_topk", {"N": n, "d": d, "B": b, "k": k}, dt, builder(n, d, b, k, dt))
            for (n, d, b, k) in SHAPES[suite] for dt in dtypes]


def _plain(queries, keys, payloads, log_s, k):
    scale = torch.exp(log_s - log_s.max()).float()
    scores = (F.normalize(queries.float(), dim=1) @ F.normalize(keys.float(), dim=1).T) * scale
    top = torch.topk(scores, k, dim=1).indices
    w = torch.softmax(log_s[top], dim=1).float()
    return (w.unsqueeze(-1) * payloads[top].float()).sum(1), top


def _faiss_peer(queries, keys, payloads, log_s, k):
    try:
        import faiss
    except ImportError:
        return None
    scaled = F.normalize(keys.float(), dim=1) * torch.exp(log_s - log_s.max()).float()[:, None]
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(scaled.numpy())
    qn = F.normalize(queries.float(), dim=1).numpy()

    def run():
        _, top = index.search(qn, k)
        top = torch.from_numpy(top)
        w = torch.softmax(log_s[top], dim=1).float()
        return (w.unsqueeze(-1) * payloads[top].float()).sum(1), top

    return run


def problem(n: int, d: int, b: int, k: int, dtype: torch.dtype, device: torch.device):
    """The seeded inputs of the case at (N, d, B, k): ``(queries, keys, payloads, r0, tau, log_s)``
    (payloads = keys)."""
    gen = torch.Generator(device=device).manual_seed(n + d + b + k)
    keys = torch.randn(n, d, generator=gen, device=device).to(dtype)
    queries = torch.randn(b, d, generator=gen, device=device).to(dtype)
    r0 = torch.rand(n, generator=gen, dtype=torch.float64, device=device) + 0.5
    tau = torch.rand(n, generator=gen, dtype=torch.float64, device=device) * 10.0
    return queries, keys, keys, r0, tau, ops.log_salience(r0, tau, ALPHA, NOW)


def peers(queries, keys, payloads, log_s, k: int) -> tuple[dict, dict]:
    """``({"peer:plain": fn, "peer:faiss": fn}, notes)``: the peers that can run here (each returns ids)."""
    n, b = keys.shape[0], queries.shape[0]
    candidates, notes = {}, {}
    if b * n * 4 <= 2 << 30:
        candidates["peer:plain"] = lambda: _plain(queries, keys, payloads, log_s, k)[1]
    else:
        notes["peer:plain"] = "skipped: [B, N] scores over 2 GiB"
    cpu32 = keys.device.type == "cpu" and keys.dtype == torch.float32
    peer = _faiss_peer(queries, keys, payloads, log_s, k) if cpu32 else None
    if peer is not None:
        candidates["peer:faiss"] = lambda: peer()[1]
    elif cpu32:
        notes["peer:faiss"] = "faiss is not installed (pip install faiss-cpu)"
    return candidates, notes


def builder(n: int, d: int, b: int, k: int, dtype: torch.dtype, *, area: bool = False):
    """The salience_topk case at (N, d, B, k): ``auto`` and the :func:`peers` (and, with ``area``,
    the notebook and cached-norm candidates); ids checked against the exact torch backend."""
    def build(device: torch.device) -> Built:
        queries, keys, payloads, r0, tau, log_s = problem(n, d, b, k, dtype, device)
        candidates = {
            "auto": lambda: ops.salience_topk(queries, keys, payloads, k=k, log_salience=log_s)[1],
        }
        found, notes = peers(queries, keys, payloads, log_s, k)
        candidates.update(found)
        if area:
            _area_candidates(candidates, notes, queries, keys, payloads, r0, tau, log_s, k)
        exact = ops.salience_topk(queries, keys, payloads, k=k, log_salience=log_s, backend="torch")[1]

        def check(fn) -> bool:
            return bool((fn()[:, 0].to(exact.device) == exact[:, 0]).float().mean() >= 0.99)

        return Built(candidates, check, bytes_read=n * d * keys.element_size(), flops=2.0 * b * n * d,
                     chosen="triton" if device.type == "cuda" else salience_op.cpu_order(b, n, d)[0],
                     notes=notes)

    return build
