"""On a real GPU: the sync-free op calls capture and replay in a CUDA graph; batch invariance holds.

The CPU side of the same promises (no host sync, no device mix) is checked by
tests/test_fake_device_ops.py on every CI run; these tests need CUDA and skip without it.
"""

from __future__ import annotations

import pytest
import torch

from mnemonix import ops

pytestmark = pytest.mark.gpu


def _capture(fn):
    """Warm up ``fn`` (compiles the kernels) on a side stream, then capture it; returns (graph, outputs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def _lifespan_state(gen, batch=4, length=5000, reminded=48):
    lifespan = torch.randint(-2, 5, (batch, length), generator=gen).float()
    types = torch.randint(0, 4, (batch, length), generator=gen).to(torch.uint8)
    age = torch.randint(0, 20, (batch, length), generator=gen).int()
    indices = torch.randint(-1, length, (batch, reminded), generator=gen)
    delta = torch.randint(-1, 6, (batch, reminded), generator=gen).float()
    return [t.cuda() for t in (lifespan, types, age, indices, delta)]


@pytest.mark.parametrize("check_inputs", [None, False])
def test_lifespan_step_captures_and_replays(rng, check_inputs):
    state = _lifespan_state(rng)
    graph, out = _capture(lambda: ops.lifespan_step(*state, 512, check_inputs=check_inputs))
    for _ in range(3):  # new data in the captured input buffers, replay, compare with an eager call
        for buf, new in zip(state, _lifespan_state(rng)):
            buf.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        want = ops.lifespan_step(*state, 512)
        for got, exp in zip(out, want):
            assert torch.equal(got, exp)


def test_salience_topk_captures_and_replays_without_checks_and_redo(rng):
    N, d, B, k = 20_000, 128, 8, 5
    keys = torch.randn(N, d, device="cuda", dtype=torch.float16)
    payloads = torch.randn(N, 16, device="cuda")
    log_s = torch.randn(N, device="cuda", dtype=torch.float64)
    queries = torch.randn(B, d, device="cuda")
    kw = dict(k=k, log_salience=log_s, check_inputs=False, exact=False)
    graph, out = _capture(lambda: ops.salience_topk(queries, keys, payloads, **kw))
    for _ in range(3):
        queries.copy_(torch.randn(B, d, device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        want = ops.salience_topk(queries, keys, payloads, **kw)
        assert torch.equal(out[1], want[1])
        torch.testing.assert_close(out[0], want[0])
    with pytest.raises(ValueError, match="exact=False to capture"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            ops.salience_topk(queries, keys, payloads, k=k, log_salience=log_s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_salience_batch_invariant_on_gpu(rng, dtype):
    keys = torch.randn(30_000, 96, device="cuda").to(dtype)
    payloads = torch.randn(30_000, 8, device="cuda")
    log_s = torch.randn(30_000, device="cuda", dtype=torch.float64)
    queries = torch.randn(70, 96, device="cuda")
    kw = dict(k=7, log_salience=log_s, batch_invariant=True)
    batch = ops.salience_topk(queries, keys, payloads, **kw)
    for row in (0, 33, 69):
        alone = ops.salience_topk(queries[row:row + 1], keys, payloads, **kw)
        for x, y in zip(alone, batch):
            assert torch.equal(x[0], y[row])


def test_kernels_launch_on_the_tensors_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    gen = torch.Generator().manual_seed(0)
    state = [t.to("cuda:1") for t in _lifespan_state(gen, 2, 300, 5)]
    with torch.cuda.device(0):
        got = ops.lifespan_step(*state, 8)
    want = ops.lifespan_step(*[t.cpu() for t in state], 8)
    assert got.lifespan.device == torch.device("cuda", 1)
    assert torch.equal(got.lifespan.cpu(), want.lifespan)
