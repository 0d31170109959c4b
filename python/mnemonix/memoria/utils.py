"""Index helpers on Memoria's padded [B, M] layouts, and memoria-pytorch's ``super_unique``.

Layout: per batch row, engram positions 0..M-1; rows with fewer engrams of a kind are
padded with -1 at the *front* of index lists (memoria-pytorch's convention).
"""

from __future__ import annotations

import torch

__all__ = [
    "super_unique", "indices_with_mask", "indices_with_masks", "gather_rows", "indices_compact",
    "sorted_unique_front_padded", "to_device",
]


def super_unique(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Distinct values of ``t`` along ``dim`` (integers), as memoria-pytorch 1.1.0 returns them.

    The values of each slice along ``dim`` are marked in a presence mask over
    ``[min(t), max(t)]``; the result lists, per slice, the marked values in the order
    ``torch.topk`` returns the set bits of that mask, shorter slices filled with -1. The
    size along ``dim`` is the largest number of distinct values of a slice (at most the
    input's size). An empty ``t`` is returned as it is.

    Parameters
    ----------
    t : Tensor of integers, any shape
    dim : int

    Returns
    -------
    Tensor int64 of ``t``'s shape except along ``dim``.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"t must hold integers, got {t.dtype}")
    if t.numel() == 0:
        return t
    low = t.min()
    shifted = t - low
    shape = list(t.shape)
    shape[dim] = int(shifted.max()) + 1
    presence = torch.zeros(shape, dtype=torch.bool, device=t.device)
    presence.scatter_(dim, shifted.long(), True)
    width = min(t.shape[dim], int(presence.sum(dim).max()))
    valid, order = presence.int().topk(width, dim=dim)
    return (order + low).masked_fill(valid == 0, -1)  # int64, as the original's topk indices


def indices_with_mask(mask: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """Positions where ``mask`` [B, M] is True, ascending, [B, K] with K = the largest count of a row.

    Shorter rows are padded with -1 at the front (memoria-pytorch's ``get_indices_with_mask``).
    ``width``: K when the caller knows it (saves the host sync that reads it).
    """
    batch, length = mask.shape
    counts = mask.sum(dim=1)
    if width is None:
        width = int(counts.max()) if batch and length else 0
    out = torch.full((batch, width), -1, dtype=torch.long, device=mask.device)
    if width == 0:
        return out
    rank = mask.long().cumsum(dim=1) - 1  # rank of each True position in its row
    positions = torch.arange(length, device=mask.device).expand(batch, length)
    # False positions go to distinct spare columns: no index is written twice (deterministic on CUDA)
    dest = torch.where(mask, rank + (width - counts).unsqueeze(1), positions + width)
    wide = torch.full((batch, width + length), -1, dtype=torch.long, device=mask.device)
    wide.scatter_(1, dest, positions)
    return wide[:, :width]


def indices_with_masks(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`indices_with_mask` of several [B, M] masks with one host sync for all their widths."""
    if not masks or masks[0].numel() == 0:
        return [indices_with_mask(mask) for mask in masks]
    widths = torch.stack([mask.sum(dim=1).max() for mask in masks]).tolist()
    return [indices_with_mask(mask, width) for mask, width in zip(masks, widths)]


def gather_rows(values: torch.Tensor, index: torch.Tensor, fill: float | int) -> torch.Tensor:
    """``values[b, index[b, k]]`` for [B, M, ...] values; a negative index gives ``fill``."""
    missing = index < 0
    safe = index.clamp(min=0)
    if values.shape[1] == 0:
        return torch.full((*index.shape, *values.shape[2:]), fill, dtype=values.dtype, device=values.device)
    if values.ndim == 2:
        return values.gather(1, safe).masked_fill(missing, fill)
    expanded = safe.view(*safe.shape, *([1] * (values.ndim - 2))).expand(*safe.shape, *values.shape[2:])
    out = values.gather(1, expanded)
    return out.masked_fill(missing.view(*missing.shape, *([1] * (values.ndim - 2))), fill)


def indices_compact(values: torch.Tensor) -> torch.Tensor:
    """Move the non-negative entries of each row to the end (order kept), -1 in front; drop all -1 columns."""
    return gather_rows(values, indices_with_mask(values >= 0), -1)


def sorted_unique_front_padded(values: torch.Tensor) -> torch.Tensor:
    """Distinct non-negative entries of each row [B, N], ascending, padded with -1 at the front.

    Equals memoria-pytorch's ``get_local_indices_from_global_indices`` of a ``super_unique``
    list (a presence mask read back in order), without a per-row Python loop.
    """
    batch = values.shape[0]
    if values.numel() == 0:
        return torch.full((batch, 0), -1, dtype=torch.long, device=values.device)
    size = max(int(values.max()) + 1, 0)  # one host sync
    presence = torch.zeros((batch, size + 1), dtype=torch.bool, device=values.device)
    presence.scatter_(1, torch.where(values < 0, size, values).long(), True)
    return indices_with_mask(presence[:, :size])


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a host-to-device copy is issued without making the host wait.

    (``non_blocking`` from host memory: the data is staged at once, the host does not wait for
    the device; a device-to-host copy stays blocking, since the host reads it next.)
    """
    return tensor.to(device, non_blocking=tensor.device.type == "cpu" and device.type != "cpu")
