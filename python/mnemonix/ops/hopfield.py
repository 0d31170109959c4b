"""``hopfield_retrieve``: modern Hopfield retrieval ``softmax(beta Q K^T + bias) V``, fused.

Declared like every op (:mod:`mnemonix._dispatch`): checks -> a typed inputs record ->
``dispatch(SPEC, inputs, forced)`` -> one backend of :mod:`mnemonix.backends.hopfield`, run
through the custom op of :mod:`mnemonix.backends.hopfield_autograd` (autograd with a fused,
memory-bounded backward; ``torch.compile`` traces it).

Canonical layout. The queries' leading dimensions ``[..., B, d]`` become two *group*
dimensions ``(G1, G2)`` (the last leading dimension, say heads, and the product of the others,
say samples); keys, values, masks and biases keep a group dimension only where they vary, so
a store shared by every query, or by every head of a sample, is never copied. When nothing
but the queries varies, the groups fold into rows (one large batch).

Fast path. The commonest call -- ``q [B, d]``, ``keys [N, d]`` (``values [N, dv]``), a float
beta, CPU float32, no gradient wanted -- goes straight to the kernel the policy picks
(:mod:`mnemonix.ops._hopfield_fast`: ~10 us of Python instead of ~70 us), with the same
results and, through the general path, the same errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mnemonix import _checks, _dispatch, calibration
from mnemonix.backends import hopfield as hb
from mnemonix.backends import hopfield_amx
from mnemonix.backends.hopfield_autograd import retrieve as _retrieve
from mnemonix.ops import _hopfield_args as args
from mnemonix.ops import _hopfield_fast as _fast

__all__ = ["hopfield_retrieve", "HopfieldInputs", "SPEC", "choose_backend"]


@dataclass(frozen=True)
class HopfieldInputs:
    """Checked inputs of one retrieval pass in the canonical layout (see the module docstring).

    ``queries [G1, G2, B, d]`` (or [B, d]), ``keys [K1, K2, N, d]`` (or [N, d]), ``values`` like
    keys or None, ``logit_bias [C1, C2, N]`` (or [N]; masks folded in as ``-inf``),
    ``association_bias [A1, A2, B, N]`` or None. ``lse_needs_grad`` / ``bias_needs_grad`` say
    whether the log-sum-exp is returned into a graph and whether the bias wants a gradient;
    when unknown they default to True (the cautious answer for capability checks).
    """

    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor | None
    logit_bias: torch.Tensor | None
    beta: float
    want_argmax: bool
    needs_grad: bool
    association_bias: torch.Tensor | None = None
    lse_needs_grad: bool = True
    bias_needs_grad: bool = True
    batch_invariant: bool = False
    allow_tf32: bool = False

    @property
    def device(self) -> torch.device:
        return self.queries.device

    @property
    def dtype(self) -> torch.dtype:
        return self.queries.dtype


# Speed policy thresholds (shipped defaults; :mod:`mnemonix.calibration` may replace them with
# the crossovers `mnemonix bench calibrate` measured on this machine). Measured by the backend
# grid of bench/NOTES.md on the 2-core development machine: see calibration.DEFAULTS.
_CPU_LIMITS = calibration.DEFAULTS["cpu"]["hopfield_retrieve"]
CPP_MAX_BATCH = _CPU_LIMITS["cpp_max_batch"]
CPP_MAX_BATCH_LARGE_STORE = _CPU_LIMITS["cpp_max_batch_large_store"]
CPP_LARGE_STORE_BYTES = _CPU_LIMITS["cpp_large_store_bytes"]


def cpp_max_batch(keys: torch.Tensor) -> int:
    """Largest B sent to the C++ kernel automatically for this key matrix (of one group).

    On a store the caches hold (under ``cpp_large_store_bytes``): with fewer than
    ``cpp_few_rows`` rows (where the kernel splits the queries over the threads, and the rows
    into parts fixed by the shape)
    and d >= ``cpp_few_rows_min_dim``, ``cpp_max_batch_few_rows`` while B x d <=
    ``cpp_small_store_max_dims``; otherwise ``cpp_max_batch_narrow`` for narrow keys
    (d <= ``narrow_dim``: the GEMM paths gain little from a short d) and ``cpp_max_batch`` under
    the same B x d cap for wider ones. The cap always allows ``cpp_small_store_min_batch``
    (there the flash kernel's GEMMs read the keys from cache too, and win once B x d grows).
    Once the keys stream from memory: ``cpp_max_batch_narrow`` for narrow keys, else
    ``cpp_max_batch_large_store`` (one read serves the whole batch) while B x d <=
    ``cpp_large_store_max_dims``, and always B = 1."""
    n, d = keys.shape[-2:]  # the kernel is CPU-only
    return _cpp_max_batch(n, d, keys.element_size(), calibration.thresholds("hopfield_retrieve", "cpu"))


def _widest(d: int, dv: int | None) -> int:
    """The wider of the keys' and the values' rows (dv None: the keys'), which bounds the lanes."""
    return d if dv is None else max(d, dv)


def _cpp_lanes(b: int, d: int, dv: int | None, most: int, dims: int) -> bool:
    """The C++ kernel's query-lane scan (16 lanes wide with AVX-512, 8 with AVX2) runs this call (from
    kLaneMinBatch queries, d and dv up to kLaneMaxDims; dv None: the keys'), B <= ``most``
    (``cpp_lane_max_batch[_<dtype>]``: where it is about as fast as the flash kernel or faster,
    and its call costs less) and d, dv <= ``dims`` (``cpp_lane_max_dims``: as far as that was
    measured on the CPU)."""
    core = hb._core_retrieval() if b <= most else None
    return core is not None and b >= core.lane_min_batch and _widest(d, dv) <= min(dims, core.lane_max_dims)


def _cpp_lanes_large_store(b: int, n: int, d: int, itemsize: int, dv: int | None, limits: dict[str, int],
                           lane_batch: int, work: int = 0) -> bool:
    """The query-lane scan on a store that streams from memory, of at least ``cpp_few_rows`` rows,
    for keys and values up to ``cpp_lane_max_dims_large_store`` wide while
    ``cpp_lane_min_batch_large_store`` <= B <= ``cpp_max_batch_large_store`` too (and ``lane_batch``, the
    dtype's ``cpp_lane_max_batch[_<dtype>]``; from the kernel's first lane batch on keys of
    ``cpp_lane_first_batch_min_bytes_large_store`` bytes or more, where 0 means never; past
    ``cpp_max_batch_large_store`` while B x max(d, dv) <= ``work``: float32's
    ``cpp_lane_max_work_large_store``, 0 for 16-bit rows, which the scan converts once per lane
    group and which tied or lost there, d = 1,024, B = 128: 1.07x):
    one read of the wide keys serves the lanes' queries, where the flash kernel reads them twice.
    (On fewer rows the kernel splits the queries over the threads, 16 of them into two half-empty
    16-lane vectors.)"""
    most = min(lane_batch, max(limits["cpp_max_batch_large_store"], work // _widest(d, dv)))
    first_batch_bytes = limits["cpp_lane_first_batch_min_bytes_large_store"]
    from_first = 0 < first_batch_bytes <= n * d * itemsize
    return (n >= limits["cpp_few_rows"] and (from_first or b >= limits["cpp_lane_min_batch_large_store"])
            and not _cache_sized(n, d, itemsize, limits)
            and _cpp_lanes(b, d, dv, most, limits["cpp_lane_max_dims_large_store"]))


def _cpp_lanes_few_rows(b: int, n: int, d: int, dv: int | None, limits: dict[str, int]) -> bool:
    """The query-lane scan on a store of fewer than ``cpp_few_rows`` rows, for keys and values up to
    ``cpp_lane_max_dims_few_rows`` wide (0: no such rule), at B = ``lane_one_group_batch`` (16: one
    lane group whose rows the threads share) or from twice that to ``cpp_lane_max_batch`` while
    B x max(d, dv) <= ``cpp_lane_max_work_large_store`` (where one is set; N = 1e3, d = 2,048,
    B = 128: the GEMM path 4.57 ms, the lanes 5.23): the
    batches between take two lane groups, one per thread, at the cost of twice the one group's
    queries (N = 1e3, d = 512, B = 24: 1.14x the flash kernel's time, where B = 16 took 0.92 and
    B = 40 0.79)."""
    dims = limits["cpp_lane_max_dims_few_rows"]
    core = hb._core_retrieval() if dims and n < limits["cpp_few_rows"] else None
    if core is None:
        return False
    most, work = limits["cpp_lane_max_batch"], limits["cpp_lane_max_work_large_store"]
    if work:
        most = min(most, work // _widest(d, dv))
    group = core.lane_one_group_batch
    return (b == group or b >= 2 * group) and _cpp_lanes(b, d, dv, most, dims)


def _cache_sized(n: int, d: int, itemsize: int, limits: dict[str, int]) -> bool:
    """Keys of one group the caches hold (under ``cpp_large_store_bytes``), as opposed to a store
    that streams from memory."""
    return n * d * itemsize < limits["cpp_large_store_bytes"]


def _cpp_max_batch(n: int, d: int, itemsize: int, limits: dict[str, int]) -> int:
    cached = _cache_sized(n, d, itemsize, limits)
    if cached and n < limits["cpp_few_rows"] and d >= limits["cpp_few_rows_min_dim"]:
        most = limits["cpp_max_batch_few_rows"]
    elif d <= limits["narrow_dim"]:
        return limits["cpp_max_batch_narrow"]
    elif cached:
        most = limits["cpp_max_batch"]
    else:
        return min(limits["cpp_max_batch_large_store"], max(1, limits["cpp_large_store_max_dims"] // d))
    return min(most, max(limits["cpp_small_store_min_batch"], limits["cpp_small_store_max_dims"] // d))


def cpu_forward_order(b: int, keys: torch.Tensor, values: torch.Tensor | None = None) -> tuple[str, ...]:
    """CPU backends without a gradient, fastest first, for B queries per group over ``keys``
    (and ``values``; None: the keys) of one group: the C++ kernel while the batch is small for
    the store (memory-bound) or, across its query lanes, from
    kLaneMinBatch to ``cpp_lane_max_batch`` queries with d and dv up to ``cpp_lane_max_dims`` (on a
    store that streams, of ``cpp_few_rows`` rows or more, up to ``cpp_lane_max_dims_large_store``
    while B <= ``cpp_max_batch_large_store``, or B x d <= ``cpp_lane_max_work_large_store``:
    :func:`_cpp_lanes_large_store`; on fewer rows up to ``cpp_lane_max_dims_few_rows``:
    :func:`_cpp_lanes_few_rows`), then
    the blocked GEMM path for narrow keys at moderate batches over modest score blocks, for wide
    keys on a cache-sized store past the batches the flash kernel splits (``gemm_wide_min_dim``,
    ``gemm_wide_min_batch``) over modest score blocks, or for very wide d (``gemm_min_dim``, from
    ``gemm_min_batch``), then torch's flash kernel. Later names are the fallbacks when one cannot run."""
    n, d = keys.shape[-2:]
    if keys.dtype in _HALF_CODES:
        return cpu_half_order_at(b, n, d, _HALF_CODES[keys.dtype], None if values is None else values.shape[-1])
    return cpu_forward_order_at(b, n, d, keys.element_size(), None if values is None else values.shape[-1])


def cpu_forward_order_at(b: int, n: int, d: int, itemsize: int, dv: int | None = None) -> tuple[str, ...]:
    """:func:`cpu_forward_order` for keys of N rows of d elements of ``itemsize`` bytes and values
    of ``dv`` columns (None: the keys; what the fast path knows without reading the tensors
    again). Memoised per shape under the current thresholds
    (:func:`mnemonix.calibration.policy_memo`): this runs on every call."""
    memo = calibration.policy_memo("hopfield_retrieve", "cpu")
    shape = (b, n, d, itemsize, dv)
    order = memo.get(shape)
    if order is not None:
        return order
    limits = calibration.thresholds("hopfield_retrieve", "cpu")
    return _remember(memo, shape, _cpu_forward_order(b, n, d, itemsize, limits, dv))


def _remember(memo: dict, shape: tuple[int, ...], order: tuple[str, ...]) -> tuple[str, ...]:
    """``order`` kept in a policy memo under ``shape`` (emptied first once it holds MEMO_MAX)."""
    if len(memo) >= calibration.MEMO_MAX:
        memo.clear()
    memo[shape] = order
    return order


def _cpu_forward_order(b: int, n: int, d: int, itemsize: int, limits: dict[str, int],
                       dv: int | None = None) -> tuple[str, ...]:
    lane_batch = limits["cpp_lane_max_batch"]
    lanes = (_cpp_lanes(b, d, dv, lane_batch, limits["cpp_lane_max_dims"])
             or _cpp_lanes_large_store(b, n, d, itemsize, dv, limits, lane_batch,
                                       limits["cpp_lane_max_work_large_store"])
             or _cpp_lanes_few_rows(b, n, d, dv, limits))
    if lanes or b <= _cpp_max_batch(n, d, itemsize, limits):
        return ("cpp", "gemm", "sdpa", "torch")
    moderate = b * n <= limits["gemm_max_scores"]
    narrow_moderate = d <= limits["narrow_dim"] and b <= limits["gemm_max_batch"] and moderate
    wide_moderate = (d >= limits["gemm_wide_min_dim"] and b >= limits["gemm_wide_min_batch"] and moderate
                     and _cache_sized(n, d, itemsize, limits))
    very_wide = d >= limits["gemm_min_dim"] and b >= limits["gemm_min_batch"]
    if narrow_moderate or wide_moderate or very_wide:
        return ("gemm", "sdpa", "torch")
    return ("sdpa", "gemm", "torch")


# float16 / bfloat16 as the C++ kernel's element codes (retrieve_checked_at's element_type)
_HALF_CODES = {torch.float16: 1, torch.bfloat16: 2}


def cpu_half_order_at(b: int, n: int, d: int, code: int, dv: int | None = None) -> tuple[str, ...]:
    """CPU backends without a gradient for 16-bit operands (``code`` 1: float16, 2: bfloat16),
    fastest first. The C++ kernel (16-bit rows read in place, computed in float32) for narrow keys
    (d <= ``narrow_dim``) while B <= ``cpp_max_batch_narrow_<dtype>``, and for wider ones on keys
    of at least ``cpp_min_bytes_<dtype>`` (where the single read of the rows pays; any size for
    d <= ``cpp_row_scan_max_dim_<dtype>``) while
    B x d <= ``cpp_max_dims_<dtype>`` (no further than the lanes' batch below, where one is set)
    or B <= ``cpp_min_batch_<dtype>``, and across its query
    lanes up to ``cpp_lane_max_batch_<dtype>`` (``cpp_lane_max_batch_large_<dtype>`` on keys of
    ``cpp_min_bytes_<dtype>`` or more; values of ``dv`` columns; None: the
    keys; on a store that streams, wider keys as for float32: ``cpp_lane_max_dims_large_store``);
    else torch's flash
    kernel (16-bit GEMMs, a float32 softmax: on CPUs with AMX its bfloat16 GEMMs run at several
    times the float32 rate), then the streaming torch path. No GEMM path: torch's CPU matmul has
    no float32 output for 16-bit inputs, and logits rounded to 16 bits would lose the accuracy
    the other paths keep. bfloat16 on a CPU with AMX tiles: the AMX kernel (float32 logits and
    sums on the tiles) first at the batches ``amx_*_bfloat16`` give (:func:`_amx_first`).
    Memoised like :func:`cpu_forward_order_at`."""
    memo = calibration.policy_memo("hopfield_retrieve/half", "cpu")
    shape = (b, n, d, code, dv)
    order = memo.get(shape)
    if order is not None:
        return order
    return _remember(memo, shape, _cpu_half_order(b, n, d, "float16" if code == 1 else "bfloat16",
                                                  calibration.thresholds("hopfield_retrieve", "cpu"), dv))


def _cpu_half_order(b: int, n: int, d: int, dtype: str, limits: dict[str, int],
                    dv: int | None = None) -> tuple[str, ...]:
    if dtype == "bfloat16" and _amx_first(b, n, d, limits):
        return ("amx", "sdpa", "cpp", "torch")
    large = n * d * 2 >= limits[f"cpp_min_bytes_{dtype}"]  # keys where the single read of the rows pays
    lane_batch = limits[f"cpp_lane_max_batch_{dtype}"]
    most_lanes = max(lane_batch, limits[f"cpp_lane_max_batch_large_{dtype}"]) if large else lane_batch
    if d <= limits["narrow_dim"]:
        cpp_first = b <= limits[f"cpp_max_batch_narrow_{dtype}"]
    else:
        most = max(limits[f"cpp_min_batch_{dtype}"], limits[f"cpp_max_dims_{dtype}"] // d)
        if most_lanes:  # past the first lane batch the kernel runs the lanes: no further than they were fitted
            most = min(most, max(most_lanes, limits[f"cpp_min_batch_{dtype}"]))
        cpp_first = b <= most and (large or d <= limits[f"cpp_row_scan_max_dim_{dtype}"])
    cpp_first = (cpp_first or _cpp_lanes(b, d, dv, most_lanes, limits["cpp_lane_max_dims"])
                 or _cpp_lanes_large_store(b, n, d, 2, dv, limits, lane_batch))
    if cpp_first and _flash_split_first(b, n, d, dtype, limits, dv):
        cpp_first = False
    return ("cpp", "sdpa", "torch") if cpp_first else ("sdpa", "cpp", "torch")


# The bfloat16 calls that torch's flash kernel over key parts takes from the C++ kernel: one block
# of queries (the split's case), at least this many of them, and B x d at least this much work.
SPLIT_FIRST_MIN_BATCH, SPLIT_FIRST_MAX_BATCH, SPLIT_FIRST_MIN_DIMS = 4, 32, 512


def _flash_split_first(b: int, n: int, d: int, dtype: str, limits: dict[str, int], dv: int | None = None) -> bool:
    """Whether a bfloat16 call the C++ kernel would take goes to the flash kernel over key parts
    (``flash_split_bfloat16``): from ``cpp_split_min_rows_bfloat16`` rows on keys under
    ``cpp_split_max_bytes_bfloat16``, a batch of 4..32 queries with B x d >= 512 (on AMX its
    GEMMs outrun the C++ row scan there; fewer rows pay the split's merge, larger stores stream),
    values of the keys' width (dv None or d: the flash kernel's)."""
    return (dtype == "bfloat16" and bool(limits["flash_split_bfloat16"]) and dv in (None, d)
            and SPLIT_FIRST_MIN_BATCH <= b <= SPLIT_FIRST_MAX_BATCH and b * d >= SPLIT_FIRST_MIN_DIMS
            and n >= limits["cpp_split_min_rows_bfloat16"] and n * d * 2 < limits["cpp_split_max_bytes_bfloat16"])


def _amx_first(b: int, n: int, d: int, limits: dict[str, int]) -> bool:
    """Whether a bfloat16 call goes to the AMX kernel: B in amx_min_batch..amx_max_batch
    (amx_wide_min_batch..amx_wide_max_batch for keys amx_wide_dim wide or wider; from
    amx_min_batch_large on keys of amx_large_min_bytes or more, from amx_min_batch_small on keys
    under amx_small_max_bytes, up to amx_stream_max_batch on keys of amx_stream_min_bytes or
    more), where this CPU has the tiles (the policy never names a backend that cannot run here:
    the fast path takes its first choice as is)."""
    wide = d >= limits["amx_wide_dim_bfloat16"]
    low = limits["amx_wide_min_batch_bfloat16" if wide else "amx_min_batch_bfloat16"]
    high = limits["amx_wide_max_batch_bfloat16" if wide else "amx_max_batch_bfloat16"]
    size = n * d * 2
    if low and limits["amx_min_batch_large_bfloat16"] and size >= limits["amx_large_min_bytes_bfloat16"]:
        low = min(low, limits["amx_min_batch_large_bfloat16"])
    if low and limits["amx_min_batch_small_bfloat16"] and size < limits["amx_small_max_bytes_bfloat16"]:
        low = min(low, limits["amx_min_batch_small_bfloat16"])
    if size >= limits["amx_stream_min_bytes_bfloat16"]:
        high = max(high, limits["amx_stream_max_batch_bfloat16"])
    return 0 < low <= b <= high and hopfield_amx.available()


def speed_policy(inputs: HopfieldInputs, backends) -> list[str]:
    """Fastest first: Triton on CUDA; on CPU :func:`cpu_forward_order` without a gradient; with
    one, torch's flash kernel (its fused backward) or the streaming path (K = V: it accumulates
    dK and dV in one buffer where the flash backward returns both, twice the gradient memory)."""
    if inputs.device.type == "cuda":
        return ["triton", "torch", "reference"]
    if not inputs.needs_grad:
        return [*cpu_forward_order(inputs.queries.shape[-2], inputs.keys, inputs.values), "reference"]
    if inputs.values is None:
        return ["torch", "sdpa", "reference"]
    return ["sdpa", "torch", "reference"]


SPEC = _dispatch.OpSpec("hopfield_retrieve", hb.BACKENDS, speed_policy)


def hopfield_retrieve(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None = None,
    *,
    beta: float | torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    association_mask: torch.Tensor | None = None,
    update_steps: int = 0,
    eps: float = 1e-4,
    return_lse: bool = False,
    return_argmax: bool = False,
    backend: str | None = None,
    batch_invariant: bool = False,
    allow_tf32: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Modern Hopfield retrieval: ``out = softmax(beta * Q K^T + bias) V`` in one fused pass.

    Parameters
    ----------
    queries : Tensor [B, d] or [..., B, d]
        State patterns (float32 / float16 / bfloat16; float64 on the ``torch``, ``sdpa`` and
        ``reference`` backends, for gradcheck). Leading dimensions are groups (samples, heads).
    keys : Tensor [N, d] or [..., N, d]
        Stored patterns, N >= 1, the queries' dtype and device: one set shared by every query,
        or one per group (leading dimensions broadcastable to the queries', e.g. [batch, 1, N, d]
        shared by the heads of a sample).
    values : Tensor [N, dv] or [..., N, dv] or None
        Values retrieved (leading dimensions as the keys'); None means auto-association (the
        keys are the values), in which case each tile of keys is read once for both products.
    beta : float or Tensor
        Inverse temperature, in (0, 3.4e38] (float32's range: it scales float32 logits): a float,
        or a tensor broadcastable to the queries' leading dimensions (a learnable scalar, one
        per head, ...); gradients reach a tensor beta.
    mask : Tensor [N] or [..., N] bool or None
        True where a stored pattern takes part (padding mask); every query must keep one.
    bias : Tensor [N] or [..., N] or None
        Additive logit bias per stored pattern (finite; differentiable).
    association_mask : Tensor broadcastable to [..., B, N] or None
        Per query and pattern: bool (True = takes part) or an additive float bias (``-inf``
        allowed). A constant: it gets no gradient.
    update_steps : int
        Extra iterations ``q <- out`` (needs ``values=None``); each query stops on its own
        once ``max|out - q| < eps``. Differentiable (unrolled).
    eps : float
        Convergence threshold of the iterations.
    return_lse, return_argmax : bool
        Also return the log-sum-exp of the logits [..., B] (float32; float64 for float64
        inputs; the Hopfield energy's main term, differentiable) and the index of the most
        similar pattern [..., B] (int64), both of the last pass.
    backend : {None, "triton", "cpp", "amx", "sdpa", "gemm", "torch", "reference"}
        None lets the speed policy choose among the backends that can run the inputs:
        Triton on CUDA; on CPU without gradients the fused C++ kernel at small B (float32,
        float16, bfloat16), the blocked GEMM path at moderate B over modest score blocks or for
        very wide d (float32 / float64), torch's flash CPU kernel at larger B (no argmax;
        16-bit operands have their own thresholds: :func:`cpu_half_order_at`; bfloat16 on a CPU
        with AMX tiles the ``amx`` kernel at moderate B); with gradients the flash
        kernel's fused backward or the streaming torch path (chunked recomputing backward, any
        device).
    batch_invariant, allow_tf32 : bool
        Each query's results bitwise the same alone or in any batch (``triton``, ``torch``; the
        others refuse); float32 products on TF32 tensor cores (Triton on CUDA; ~1e-3 relative).

    Returns
    -------
    out : Tensor [..., B, dv] in the queries' dtype, then ``lse`` and ``argmax`` if asked.
    Under ``torch.compile`` the value checks (finite inputs, a kept pattern per query) are
    skipped: they would need the data on the host. See docs/hopfield.md.
    """
    if _fast.defaults_only(mask, bias, association_mask, update_steps, eps, batch_invariant, allow_tf32):
        fast = _fast.cpu_fast_retrieve(queries, keys, values, beta, backend, cpu_forward_order_at, return_lse,
                                         return_argmax, cpu_half_order_at)
        if fast is not None:
            return _returned(fast, return_lse, return_argmax)
    p = args.prepare(queries, keys, values, beta=beta, mask=mask, bias=bias, association_mask=association_mask,
                     update_steps=update_steps, eps=eps, batch_invariant=batch_invariant, allow_tf32=allow_tf32)
    out, lse, arg = _run(p, _choose(p, return_lse, return_argmax, backend).name, return_argmax, keys, values)
    return _returned((p.restore(out).to(queries.dtype), p.restore(lse), None if arg is None else p.restore(arg)),
                     return_lse, return_argmax)


def _choose(p: args.Prepared, return_lse: bool, return_argmax: bool, backend: str | None) -> _dispatch.Backend:
    """The backend for the canonical operands: ``backend`` if it can run them, else the policy's."""
    grad = torch.is_grad_enabled()
    needs_grad = grad and any(t is not None and t.requires_grad
                              for t in (p.queries, p.keys, p.values, p.key_bias, p.beta_tensor))
    bias_grad = grad and p.key_bias is not None and p.key_bias.requires_grad
    inputs = HopfieldInputs(p.queries, p.keys, p.values, p.key_bias, p.beta, return_argmax, needs_grad,
                            p.assoc, lse_needs_grad=needs_grad and return_lse, bias_needs_grad=bias_grad,
                            batch_invariant=p.batch_invariant, allow_tf32=p.allow_tf32)
    return _dispatch.dispatch(SPEC, inputs, backend)


def _returned(results, return_lse: bool, return_argmax: bool):
    """``out``, then ``lse`` and ``argmax`` when asked: a tensor alone, else a tuple."""
    out, lse, arg = results
    if not return_lse and not return_argmax:
        return out
    return (out,) + ((lse,) if return_lse else ()) + ((arg,) if return_argmax else ())


def _run(p: args.Prepared, backend: str, want_argmax: bool, keys, values):
    """The first pass and the iterations on the canonical operands (checks the results eagerly)."""

    def one_pass(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        scaled = state if p.beta_tensor is None else state * p.beta_tensor.to(state.dtype)
        return _retrieve(scaled, p.keys, p.values, p.key_bias, p.assoc, beta=p.beta, backend=backend,
                         want_argmax=want_argmax, batch_invariant=p.batch_invariant, allow_tf32=p.allow_tf32)

    out, lse, arg = one_pass(p.queries)
    if p.checks is not None:  # the inputs' pending value checks and the result's: one host read
        _check_result(p.checks, out, lse, keys, values)
    if p.update_steps:
        rows_independent = p.queries.shape[:2] == (1, 1) and p.assoc is None
        out, lse, arg = _iterate(one_pass, p.queries, out, lse, arg, p.update_steps, p.eps, rows_independent)
        if p.checks is not None:
            _check_result(p.checks, out, lse, keys, values)
    return out, lse, arg


def choose_backend(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None, *,
                   want_argmax: bool = False) -> str:
    """Name of the backend that :func:`hopfield_retrieve` picks for these inputs (no grad)."""
    q = queries.reshape(-1, queries.shape[-1])
    return _dispatch.dispatch(SPEC, HopfieldInputs(q, keys, values, None, 1.0, want_argmax, False)).name


def _check_result(checks: _checks.DataChecks, out: torch.Tensor, lse: torch.Tensor, keys: torch.Tensor,
                  values: torch.Tensor | None) -> None:
    """Raise the first failed input check (``checks``), else naming the argument when a NaN/Inf
    in keys or values reached the result, or a query had no stored pattern left by the masks.

    A valid call reads one flag pair on the host (on CUDA: the call's one sync); the exact
    checks below run only when the result is not finite.
    """
    if checks.deferred:
        sums = torch.stack([lse.detach().sum().float(), out.detach().sum().float()])
        (bad,) = checks.flush(~torch.isfinite(sums).all())
    else:  # on the CPU: two sums read as Python floats (no stack, no flag tensors)
        checks.flush()
        bad = not math.isfinite(float(lse.detach().sum()) + float(out.detach().sum()))
    if not bad:
        return  # any NaN/Inf element makes its sum NaN/Inf
    if bool(torch.isfinite(lse).all()) and bool(torch.isfinite(out).all()):
        return  # only the sum overflowed
    _checks.finite("keys", keys)
    if values is not None:
        _checks.finite("values", values)
    # the masks passed their checks (flush above): a query left without a finite logit had every
    # logit overflow to -inf, which is what the message says (it used to blame the masks, given or not)
    where = " to -inf: a query has no finite logit" if bool((lse == float("-inf")).any()) else ""
    raise ValueError(f"hopfield_retrieve: the logits overflow float32{where} (inputs are finite): "
                     "lower beta or rescale queries and keys")


def _iterate(one_pass, q, out, lse, arg, update_steps, eps, rows_independent):
    """Iterate ``q <- out`` on the queries that still move; converged ones are frozen.

    Differentiable (unrolled). Eagerly the loop stops once every query has converged, and when
    the queries are independent rows (one shared store) only the moving rows are recomputed;
    under ``torch.compile`` it runs all ``update_steps`` (converged queries keep their result).
    """
    if rows_independent and not torch.compiler.is_compiling():
        return _iterate_rows(one_pass, q, out, lse, arg, update_steps, eps)
    state = q.to(out.dtype)
    active = torch.ones(out.shape[:-1], dtype=torch.bool, device=out.device)
    compiling = torch.compiler.is_compiling()
    for _ in range(update_steps):
        active = active & ((out - state).abs().amax(-1) >= eps)
        if not compiling and not bool(active.any()):
            break
        state = torch.where(active[..., None], out, state)
        o, l_, a = one_pass(state.to(q.dtype))
        out = torch.where(active[..., None], o, out)
        lse = torch.where(active, l_, lse)
        if arg is not None:
            arg = torch.where(active, a, arg)
    return out, lse, arg


def _iterate_rows(one_pass, q, out, lse, arg, update_steps, eps):
    """:func:`_iterate` on [1, 1, R, d] rows, recomputing only the rows that still move."""
    shape_out, shape_lse = out.shape, lse.shape
    state, out, lse = q.reshape(-1, q.shape[-1]).to(out.dtype), out.reshape(-1, out.shape[-1]), lse.reshape(-1)
    arg = None if arg is None else arg.reshape(-1)
    active = torch.arange(state.shape[0], device=state.device)
    for _ in range(update_steps):
        active = active[(out[active] - state[active]).abs().amax(-1) >= eps]
        if active.numel() == 0:
            break
        state = state.index_copy(0, active, out[active])
        o, l_, a = one_pass(state[active].to(q.dtype)[None, None])
        out = out.index_copy(0, active, o.reshape(-1, o.shape[-1]))
        lse = lse.index_copy(0, active, l_.reshape(-1))
        if arg is not None:
            arg = arg.index_copy(0, active, a.reshape(-1))
    return out.reshape(shape_out), lse.reshape(shape_lse), (None if arg is None else arg.reshape(shape_lse))
