"""Meta tensors (shape and dtype, no data) at every tensor argument of every public entry.

Each must be a ValueError naming the argument and saying "meta device" -- never torch's
"Tensor.item() cannot be called on meta tensors" from deep inside -- and change nothing.
One deterministic sweep over the fuzz targets' tensor arguments.
"""

from __future__ import annotations

import pytest
import torch

from .harness import first_difference, global_rngs, snapshot
from .test_arguments import TARGETS

CASES = [pytest.param(t, arg, id=f"{t.name}-{arg}") for t in TARGETS for arg, value in t.good.items()
         if isinstance(value, torch.Tensor) and arg in t.bad]


def test_every_public_tensor_argument_is_swept() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("target,arg", CASES)
def test_meta_tensor_is_refused_by_name(target, arg) -> None:
    obj = target.make()
    before = (snapshot(obj), global_rngs())
    with pytest.raises(ValueError) as info:
        target.call(obj, **{**target.good, arg: target.good[arg].to("meta")})
    message = str(info.value)
    assert target.names.get(arg, arg) in message and "meta device" in message, message
    assert first_difference(before, (snapshot(obj), global_rngs())) is None
