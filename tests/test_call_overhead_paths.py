"""The per-call fast paths (bench/overhead.py) decide exactly as the slow ones did."""

from __future__ import annotations

import pytest
import torch

from mnemonix import _checks, ops, reference
from mnemonix.backends import hopfield_autograd as ha


@pytest.mark.parametrize("values, finite", [
    ([1.0, 2.0], True),
    ([1e308, 1e308], True),  # float64 whose sum overflows: the exact check decides
    ([1.0, float("nan")], False),
    ([float("inf"), float("-inf")], False),  # the sum is NaN
    ([-float("inf")], False),
])
def test_all_finite_small_fast_path_is_exact(values, finite):
    t = torch.tensor(values, dtype=torch.float64)
    assert _checks.all_finite(t) is finite
    assert _checks.all_finite(t.float()) is (finite and bool(t.abs().max() < 3e38))  # 1e308 -> inf in float32
    big = torch.zeros(_checks.SMALL_CHECK_NUMEL + 1)
    big[-1] = float("nan")
    assert not _checks.all_finite(big)
    assert _checks.all_finite(torch.full((100,), 65504.0, dtype=torch.float16))  # the fp16 sum would overflow


def test_data_checks_name_the_argument_on_the_cpu():
    checks = _checks.DataChecks(torch.device("cpu"))
    checks.finite("queries", torch.ones(3))
    with pytest.raises(ValueError, match="queries must be finite"):
        checks.finite("queries", torch.tensor([1.0, float("nan")]))


def test_same_device_reports_a_wrong_type_before_a_wrong_device():
    cpu, meta = torch.ones(1), torch.ones(1, device="meta")
    assert _checks.same_device({"a": cpu, "b": None, "c": cpu}) == torch.device("cpu")
    with pytest.raises(TypeError, match="c must be a torch.Tensor or None, got int"):
        _checks.same_device({"a": cpu, "b": meta, "c": 3})
    with pytest.raises(ValueError, match="b is on meta but a is on cpu"):
        _checks.same_device({"a": cpu, "b": meta, "c": None})


def test_custom_op_is_skipped_only_when_nothing_traces_or_differentiates():
    q, k = torch.randn(2, 8), torch.randn(10, 8)
    assert ha.plain_eager((q, k, None))
    needs = k.clone().requires_grad_()
    assert not ha.plain_eager((q, needs, None))
    with torch.no_grad():
        assert ha.plain_eager((q, needs, None))

    class Sub(torch.Tensor):
        pass

    assert not ha.plain_eager((q.as_subclass(Sub), k, None))
    for backend in ("cpp", "sdpa", "torch"):
        out = ops.hopfield_retrieve(q, k, beta=0.5, backend=backend)
        torch.testing.assert_close(out, reference.hopfield_retrieve(q, k, beta=0.5), atol=1e-5, rtol=1e-5)
    out = ops.hopfield_retrieve(q, needs, beta=0.5)  # through the custom op: gradients flow
    out.sum().backward()
    assert needs.grad is not None and needs.grad.shape == k.shape
