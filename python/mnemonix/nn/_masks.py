"""hflayers' (and PyTorch attention's) mask conventions -> the op's.

Layers take ``stored_pattern_padding_mask [B, S]`` and ``association_mask [L, S]`` or
``[B * heads, L, S]`` where a bool or uint8 True means *ignore* / *not allowed* and a float
mask is added to the logits. The op takes ``mask`` True = *takes part* and an association
mask that is bool (True = takes part) or additive float. uint8 masks are accepted (hflayers
1.0.2 crashes on them with ``NameError: warnings``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mnemonix.nn._association import Masks


def _as_mask(name: str, t, shapes: list[tuple[int, ...]]) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dtype not in (torch.bool, torch.uint8) and not t.is_floating_point():
        raise TypeError(f"{name} must be bool, uint8 (True / non-zero = masked) or float (added), got {t.dtype}")
    if tuple(t.shape) not in shapes:
        want = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    return t


def build_masks(padding, association, *, batch: int, heads: int, queries: int, patterns: int, zero_pattern: bool,
                device: torch.device) -> Masks:
    """:class:`Masks` for ``batch`` samples, ``heads`` heads, ``queries`` state and ``patterns``
    stored patterns; ``zero_pattern`` appends a column for the zero pattern (always kept)."""
    keep = additive = None
    if padding is not None:
        padding = _as_mask("stored_pattern_padding_mask", padding, [(batch, patterns)]).to(device)
        if padding.is_floating_point():
            additive = padding.float()[:, None, None, :]
        else:
            keep = ~padding.bool()[:, None, :]
    allowed = None
    if association is not None:
        association = _as_mask("association_mask", association,
                               [(queries, patterns), (batch * heads, queries, patterns)]).to(device)
        if association.ndim == 3:
            association = association.reshape(batch, heads, queries, patterns)
        if association.is_floating_point():
            additive = association.float() if additive is None else additive + association.float()
        else:
            allowed = ~association.bool()
    if allowed is not None and additive is not None:  # one mask for the op: the float one
        additive = additive.masked_fill(~allowed, float("-inf"))
        allowed = None
    assoc = additive if additive is not None else allowed
    if zero_pattern:
        if keep is not None:
            keep = torch.nn.functional.pad(keep, (0, 1), value=True)
        if assoc is not None:
            assoc = torch.nn.functional.pad(assoc, (0, 1), value=True if assoc.dtype == torch.bool else 0.0)
    return Masks(keep=keep, assoc=assoc)
