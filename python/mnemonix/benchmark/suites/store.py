"""The ``store`` area: :class:`mnemonix.MemoryStore` against faiss ``IndexIDMap2(IndexFlatIP)``
and plain torch (what ``bench/compare_store.py`` runs).

Ops (d = 128 and k = 10 unless a size says otherwise):

- ``store.search``: ``MemoryStore.search`` (``auto``: the op's speed policy; ``torch``: the op
  forced to its chunked GEMM scan); peers ``faiss`` (``index.search``, float32 rows only) and
  ``torch`` (``(Q @ K^T).topk``). Floor: one read of the stored key bytes, or 2BNd flops.
- ``store.remove``: R random ids (``MemoryStore.remove``, the removed rows re-added between
  calls outside the timing) against ``faiss.remove_ids`` and rebuilding the torch tensor
  without them. No floor (O(removed) bookkeeping).
- ``store.add``: N rows into an empty store in batches of 65,536 against ``add_with_ids``.
  Floor: one read of the input and one write of the stored bytes.
- ``store.save``: to a fresh folder, against ``faiss.write_index``; extra fields ``MB`` and,
  on ``auto``, ``incremental_share`` (bytes an incremental save writes after +1 % rows, as a
  share of the store's). ``store.load``: ``MemoryStore.load(mmap=True)`` (``auto``), the same
  plus the first search (``load+search``: the lazy checksum and page faults), against
  ``faiss.read_index``; extra ``rss_growth_MB`` of one load. No floor for either.
- ``search_topk`` (size ``sweep``): ``ops.search_topk`` with ``cpp`` and ``torch`` forced at
  N = 65,536 over B: where the speed policy's ``CPP_MAX_BATCH`` comes from.

Peers whose package is missing, or which cannot hold the dtype, are noted with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnemonix.benchmark.suites import Built, Case

D, K, ADD_BATCH = 128, 10, 1 << 16
REFERENCE_MAX = 1 << 28  # elements of the largest store read back whole for the float64 reference
F32, F16 = torch.float32, torch.float16


def _shapes(n: int, dtype: torch.dtype, *, d: int = D, peers: bool = True, removes: int = 1000,
            batches: tuple[int, ...] = (1, 64), ops: tuple[str, ...] = ("search", "remove", "add", "save", "load")
            ) -> list[tuple[str, dict[str, int], torch.dtype, bool]]:
    out: list[tuple[str, dict[str, int], torch.dtype, bool]] = []
    for op in ops:
        if op == "search":
            out += [(op, {"N": n, "d": d, "B": b, "k": K}, dtype, peers) for b in batches]
        elif op == "remove":
            out.append((op, {"N": n, "d": d, "R": min(removes, n // 2)}, dtype, peers))
        else:
            out.append((op, {"N": n, "d": d}, dtype, peers))
    return out


SIZES: dict[str, list[tuple[str, dict[str, int], torch.dtype, bool]]] = {  # (op, shape, dtype, with peers)
    "tiny": _shapes(2_000, F32, d=16, removes=50, batches=(1, 4)) + _shapes(2_000, F16, d=16, batches=(4,),
                                                                             ops=("search",)),
    "quick": _shapes(100_000, F32),
    "default": _shapes(1_000_000, F32) + _shapes(1_000_000, F16) + _shapes(10_000_000, F16, peers=False),
    "search": _shapes(1_000_000, F32, ops=("search",)) + _shapes(1_000_000, F16, ops=("search",)),
    "sweep": [("search_topk", {"N": 1 << 16, "d": D, "B": b, "k": K}, dt, False)
              for dt in (F32, F16) for b in (1, 4, 16, 64, 256, 1024, 4096, 16384)],
}


def area_cases(size: str, device: torch.device) -> list[Case]:
    """The cases of ``size`` (a key of :data:`SIZES`); the store runs on the CPU."""
    builders = {"search": _search, "remove": _remove, "add": _add, "save": _save, "load": _load,
                "search_topk": _sweep}
    return [Case(op if op == "search_topk" else f"store.{op}", shape, dtype, builders[op](shape, dtype, peers))
            for op, shape, dtype, peers in SIZES[size]]


def _faiss():
    """The faiss module, or None with the reason."""
    try:
        import faiss
    except ImportError:
        return None, "faiss is not installed (pip install faiss-cpu)"
    return faiss, ""


def _rows(n: int, d: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n, ADD_BATCH):
        yield torch.randn(min(ADD_BATCH, n - start), d, generator=gen)


def _store(n: int, d: int, dtype: torch.dtype, seed: int = 0):
    from mnemonix import MemoryStore

    store = MemoryStore(d, dtype=dtype)
    for rows in _rows(n, d, seed):
        store.add(rows)
    return store


def _faiss_index(keys: torch.Tensor, dtype: torch.dtype, peers: bool, notes: dict[str, str]):
    """A faiss flat inner-product index over ``keys`` [N, d], or None with the reason in ``notes``."""
    if not peers:
        notes["peer:faiss"] = "not compared at this size (the store alone)"
        return None
    faiss, why = _faiss()
    if faiss is None:
        notes["peer:faiss"] = why
        return None
    if dtype != F32:
        notes["peer:faiss"] = f"IndexFlatIP holds float32 rows only, not {str(dtype).removeprefix('torch.')}"
        return None
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(keys.shape[1]))
    index.add_with_ids(keys.float().numpy(), np.arange(keys.shape[0], dtype=np.int64))
    return index


@contextlib.contextmanager
def forced_scan(name: str) -> Iterator[None]:
    """Force ``ops.search_topk``'s scan to ``name`` (the store calls the op without a backend)."""
    from mnemonix.ops import search as search_op

    spec = search_op.SPEC
    search_op.SPEC = dataclasses.replace(spec, policy=lambda inputs, backends: [name])
    try:
        yield
    finally:
        search_op.SPEC = spec


def _search(shape: dict[str, int], dtype: torch.dtype, peers: bool) -> Callable[..., Built]:
    n, d, b, k = shape["N"], shape["d"], shape["B"], shape["k"]

    def build(device: torch.device, store=None) -> Built:
        """``store``: search this one (built elsewhere) instead of building N random rows."""
        store = store if store is not None else _store(n, d, dtype)
        q = torch.randn(b, d, generator=torch.Generator().manual_seed(b))
        notes: dict[str, str] = {}

        def torch_scan():
            with forced_scan("torch"):
                return store.search(q, k)

        candidates: dict[str, Callable[[], Any]] = {"auto": lambda: store.search(q, k), "torch": torch_scan}
        # the rows in float for the peers and the float64 reference, unless a large store is measured alone
        keys = store.get(store.ids())[0] if peers or n * d <= REFERENCE_MAX else None
        if peers:
            candidates["peer:torch"] = lambda: (q.to(keys.dtype) @ keys.T).float().topk(k)
        else:
            notes["peer:torch"] = "not compared at this size (the store alone)"
        index = _faiss_index(keys, dtype, peers, notes)
        if index is not None:
            qn = q.numpy()
            candidates["peer:faiss"] = lambda: index.search(qn, k)
        return Built(candidates, _search_check(store, keys, q, k, torch_scan),
                     bytes_read=store.nbytes - 24 * store.num_rows,  # key (and scale) bytes a search reads
                     flops=2.0 * b * n * d, chosen=_chosen_scan(q, store.get(store.ids()[:1])[0], k), notes=notes)

    return build


def _search_check(store, keys: torch.Tensor | None, q: torch.Tensor, k: int, torch_scan: Callable[[], Any]
                  ) -> Callable[[Callable[[], Any]], bool]:
    """Scores within float32 rounding of the float64 top-k of ``keys`` [N, d] and the returned
    rows' own scores; without ``keys`` (a large store alone), the same scores as the torch scan."""
    if keys is None:
        want = torch_scan()[0]
    else:
        want = (q.double() @ keys.double().T).topk(k).values.float()

    def check(fn) -> bool:
        scores, ids = fn()
        tol = 1e-4 * max(1.0, float(want.abs().max()))
        if not torch.allclose(scores, want, atol=tol, rtol=1e-4):
            return False
        rows = store.get(ids.reshape(-1))[0].reshape(*ids.shape, -1).double()
        own = (rows @ q.double()[:, :, None])[..., 0].float()  # the returned rows' own scores [B, k]
        return bool(torch.allclose(own, want, atol=tol, rtol=1e-4))

    return check


def _chosen_scan(q: torch.Tensor, keys: torch.Tensor, k: int) -> str:
    """The scan ``ops.search_topk``'s speed policy picks for queries ``q`` [B, d] over ``keys`` [N, d]."""
    from mnemonix import _dispatch
    from mnemonix.backends.search_exact import CANDIDATE_EXTRA
    from mnemonix.ops import search as search_op

    n = keys.shape[0]
    inputs = search_op.SearchInputs(q.float(), keys, None, None, None, "ip", k, min(min(k, n) + CANDIDATE_EXTRA, n))
    return _dispatch.dispatch(search_op.SPEC, inputs).name


def _remove(shape: dict[str, int], dtype: torch.dtype, peers: bool) -> Callable[[torch.device], Built]:
    n, d, r = shape["N"], shape["d"], shape["R"]

    def build(device: torch.device) -> Built:
        store = _store(n, d, dtype)
        ids = torch.randperm(n, generator=torch.Generator().manual_seed(r))[:r]
        removed = store.get(ids)[0].float()
        keys = store.get(store.ids())[0]
        notes: dict[str, str] = {}

        def restore() -> None:
            if not bool(store.contains(ids).all()):
                store.add(removed, ids=ids)

        def torch_remove():
            keep = torch.ones(keys.shape[0], dtype=torch.bool)
            keep[ids] = False
            return keys[keep]

        candidates: dict[str, Callable[[], Any]] = {"auto": lambda: store.remove(ids)}
        setup: dict[str, Callable[[], Any]] = {"auto": restore}
        if peers:
            candidates["peer:torch"] = torch_remove
        else:
            notes["peer:torch"] = "not compared at this size (the store alone)"
        index = _faiss_index(keys, dtype, peers, notes)
        if index is not None:
            sel = ids.numpy().astype(np.int64)
            rows = removed.numpy()
            candidates["peer:faiss"] = lambda: index.remove_ids(sel)
            setup["peer:faiss"] = lambda: index.ntotal < n and index.add_with_ids(rows, sel)

        def check(fn) -> bool:
            return fn() == r and not bool(store.contains(ids).any()) and len(store) == n - r

        return Built(candidates, check, bytes_read=0.0, flops=0.0, chosen="torch", notes=notes, setup=setup)

    return build


def _add(shape: dict[str, int], dtype: torch.dtype, peers: bool) -> Callable[[torch.device], Built]:
    n, d = shape["N"], shape["d"]

    def build(device: torch.device) -> Built:
        from mnemonix import MemoryStore

        batches = [rows.to(dtype) if dtype.is_floating_point else rows for rows in _rows(n, d, 1)]

        def ours():
            store = MemoryStore(d, dtype=dtype)
            for rows in batches:
                store.add(rows)
            return store

        notes: dict[str, str] = {}
        candidates: dict[str, Callable[[], Any]] = {"auto": ours}
        faiss, why = _faiss()
        if not peers:
            notes["peer:faiss"] = "not compared at this size (the store alone)"
        elif faiss is None:
            notes["peer:faiss"] = why
        elif dtype != F32:
            notes["peer:faiss"] = f"IndexFlatIP holds float32 rows only, not {str(dtype).removeprefix('torch.')}"
        else:
            flat = torch.cat(batches).numpy()
            all_ids = np.arange(n, dtype=np.int64)

            def theirs():
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
                index.add_with_ids(flat, all_ids)
                return index

            candidates["peer:faiss"] = theirs

        def check(fn) -> bool:
            store = fn()
            first = store.get(torch.arange(min(n, 100)))[0].float()
            return store.num_rows == n and bool(torch.allclose(first, batches[0][:100].float(), atol=1e-2))

        elem = torch.empty((), dtype=dtype).element_size()
        return Built(candidates, check, bytes_read=n * d * (elem + elem), flops=0.0, chosen="torch", notes=notes)

    return build


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def _rss() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


class _Workdir:
    """A temporary folder removed when the case's inputs are dropped (after the case is measured)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="mnemonix-bench-store-"))

    def __del__(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _incremental_share(n: int, d: int, dtype: torch.dtype, path: Path) -> float:
    """Bytes a save writes after adding N // 100 rows to a saved store of N - N // 100 rows, as a
    share of the saved store's bytes."""
    grown = max(1, n // 100)
    store = _store(n - grown, d, dtype)
    store.save(path)
    before = _dir_bytes(path)
    names = {p.name for p in path.iterdir()}
    store.add(torch.randn(grown, d, generator=torch.Generator().manual_seed(3)))
    store.save(path)
    written = sum(p.stat().st_size for p in path.iterdir() if p.name not in names or p.name == "MANIFEST.json")
    return written / before


def _save(shape: dict[str, int], dtype: torch.dtype, peers: bool) -> Callable[[torch.device], Built]:
    n, d = shape["N"], shape["d"]

    def build(device: torch.device) -> Built:
        from mnemonix import MemoryStore

        work = _Workdir()  # removed once the candidates (which hold it) are dropped
        share = _incremental_share(n, d, dtype, work.path / "incremental")
        shutil.rmtree(work.path / "incremental")
        store = _store(n, d, dtype)
        notes: dict[str, str] = {}
        index = _faiss_index(store.get(store.ids())[0], dtype, peers, notes)
        candidates: dict[str, Callable[[], Any]] = {"auto": lambda: store.save(work.path / "store")}
        setup: dict[str, Callable[[], Any]] = {"auto": lambda: shutil.rmtree(work.path / "store", ignore_errors=True)}
        store.save(work.path / "store")
        extra = {"auto": {"MB": _dir_bytes(work.path / "store") / 1e6, "incremental_share": share}}
        if index is not None:
            import faiss

            file = work.path / "faiss.index"
            candidates["peer:faiss"] = lambda: faiss.write_index(index, str(file))
            setup["peer:faiss"] = lambda: file.unlink(missing_ok=True)
            faiss.write_index(index, str(file))
            extra["peer:faiss"] = {"MB": file.stat().st_size / 1e6}
        probe = store.get(torch.arange(min(n, 50)))[0]

        def check(fn) -> bool:
            fn()
            back = MemoryStore.load(work.path / "store")
            return back.num_rows == n and bool(torch.equal(back.get(torch.arange(min(n, 50)))[0], probe))

        return Built(candidates, check, bytes_read=0.0, flops=0.0, chosen="torch", notes=notes, setup=setup,
                     extra=extra)

    return build


def _load(shape: dict[str, int], dtype: torch.dtype, peers: bool) -> Callable[[torch.device], Built]:
    n, d = shape["N"], shape["d"]

    def build(device: torch.device) -> Built:
        from mnemonix import MemoryStore

        work = _Workdir()  # removed once the candidates (which hold it) are dropped
        store = _store(n, d, dtype)
        path = work.path / "store"
        store.save(path)
        notes: dict[str, str] = {}
        index = _faiss_index(store.get(store.ids())[0], dtype, peers, notes)
        probe = store.get(store.ids()[:50])[0]
        del store
        gc.collect()
        q = torch.randn(1, d, generator=torch.Generator().manual_seed(5))

        def load_and_search():
            loaded = MemoryStore.load(path, mmap=True)
            loaded.search(q, K)  # the first search: lazy checksum and page faults
            return loaded

        candidates: dict[str, Callable[[], Any]] = {
            "auto": lambda: MemoryStore.load(work.path / "store", mmap=True), "load+search": load_and_search}
        extra = {"auto": {"rss_growth_MB": _growth(lambda: MemoryStore.load(path, mmap=True))}}
        if index is not None:
            import faiss

            file = str(work.path / "faiss.index")
            faiss.write_index(index, file)
            del index
            candidates["peer:faiss"] = lambda: faiss.read_index(file)
            extra["peer:faiss"] = {"rss_growth_MB": _growth(lambda: faiss.read_index(file))}

        def check(fn) -> bool:
            loaded = fn()
            return loaded.num_rows == n and bool(torch.equal(loaded.get(torch.arange(50))[0], probe))

        return Built(candidates, check, bytes_read=0.0, flops=0.0, chosen="torch", notes=notes, extra=extra)

    return build


def _growth(fn: Callable[[], Any]) -> float | None:
    """Resident-memory growth (MB) while the result of ``fn`` is held (None without psutil)."""
    gc.collect()
    before = _rss()
    held = fn()
    after = _rss()
    del held
    return None if before is None or after is None else (after - before) / 1e6


def _sweep(shape: dict[str, int], dtype: torch.dtype, peers: bool) -> Callable[[torch.device], Built]:
    n, d, b, k = shape["N"], shape["d"], shape["B"], shape["k"]

    def build(device: torch.device) -> Built:
        from mnemonix import ops

        gen = torch.Generator().manual_seed(n + b)
        keys = torch.randn(n, d, generator=gen).to(dtype)
        q = torch.randn(b, d, generator=gen)
        norm = 1.01 * float(torch.linalg.vector_norm(keys.float(), dim=1).max())
        candidates: dict[str, Callable[[], Any]] = {"auto": lambda: ops.search_topk(q, keys, k, max_norm=norm)}
        notes: dict[str, str] = {}
        for name in ("cpp", "torch"):
            try:
                ops.search_topk(q[:1], keys[:8], 1, max_norm=norm, backend=name)
            except (ValueError, RuntimeError, ImportError) as exc:
                notes[name] = f"cannot run here: {str(exc).splitlines()[0][:160]}"
                continue
            candidates[name] = lambda name=name: ops.search_topk(q, keys, k, max_norm=norm, backend=name)
        want = (q.double() @ keys.double().T).topk(k).values.float()

        def check(fn) -> bool:
            scores = fn()[0]
            return bool(torch.allclose(scores, want, atol=1e-4 * max(1.0, float(want.abs().max())), rtol=1e-4))

        return Built(candidates, check, bytes_read=n * d * keys.element_size(), flops=2.0 * b * n * d,
                     chosen=_chosen_scan(q, keys, k), notes=notes)

    return build
