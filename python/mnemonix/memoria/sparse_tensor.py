"""``SparseTensor``: memoria-pytorch's small COO tensor with a default value (``memoria.sparse_tensor``).

Entries are ``indices`` [nnz, ndim] with ``values`` [nnz]; every other element holds
``default_value``. Indexing follows the original (which its users rely on, including the
order of the stored entries):

- ``t[i, j]`` with ints only returns the matching values (a 1-element tensor), or a 0-d
  tensor of the default when the element is not stored;
- ints drop their dimension, slices keep a (re-based) range, tensors or lists of ints index
  as a group: their broadcast shape replaces the dimension of the first of them (the others
  disappear), in the row-major order of that shape;
- ``t[key] = value`` deletes the stored entries under ``key`` and appends one entry per
  addressed element (row-major over the keys; nothing when ``value`` is an int equal to the
  default), so entries keep their insertion order.

mnemonix's Memoria does not use it (its co-fire counts live in a C++ graph); it is here so
that code importing it from memoria-pytorch runs unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import product

import torch

__all__ = ["SparseTensor"]

Key = int | slice | torch.Tensor | list | None


class SparseTensor:
    """COO tensor with a default value.

    Parameters
    ----------
    indices : Tensor [nnz, ndim] of ints
    values : Tensor [nnz]
    default_value : int or float
    shape : tuple of ints, optional (default: largest index + 1 per dimension)
    device : torch.device, optional (default: the values' device; indices move there)
    """

    def __init__(self, indices: torch.Tensor, values: torch.Tensor, default_value: int | float = 0,
                 shape: Iterable[int] | None = None, device: torch.device | None = None) -> None:
        if not isinstance(indices, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise TypeError(f"indices and values must be torch.Tensors, got {type(indices).__name__} and "
                            f"{type(values).__name__}")
        if indices.ndim != 2 or values.ndim != 1 or indices.shape[0] != values.shape[0]:
            raise ValueError(f"indices must be [nnz, ndim] and values [nnz], got {tuple(indices.shape)} and "
                             f"{tuple(values.shape)}")
        if shape is None:
            shape = (indices.max(dim=0).values + 1).tolist()
        self.shape = tuple(int(s) for s in shape)
        self.device = device if device is not None else values.device
        self.indices = indices.to(self.device)
        self.values = values
        self.default_value = default_value

    def dim(self) -> int:
        return len(self.shape)

    # ------------------------------------------------------------------ reading
    def __getitem__(self, raw_keys: Key | tuple) -> SparseTensor | torch.Tensor:
        keys = self._keys(raw_keys)
        indices, values, shape = self.indices, self.values, self.shape
        for dim in reversed(range(len(keys))):  # ints, last dimension first
            if isinstance(keys[dim], int):
                hit = indices[:, dim] == keys[dim]
                indices = torch.cat([indices[hit, :dim], indices[hit, dim + 1:]], dim=1)
                values = values[hit]
                keys, shape = keys[:dim] + keys[dim + 1:], shape[:dim] + shape[dim + 1:]
        for dim, key in enumerate(keys):  # slices: keep the range, re-based
            if isinstance(key, slice):
                span = torch.arange(key.start, key.stop, key.step, device=indices.device)
                hit = (indices[:, dim:dim + 1] == span.unsqueeze(0)).any(dim=1)
                indices, values = indices[hit].clone(), values[hit]
                indices[:, dim] = (indices[:, dim] - key.start) // key.step
                keys[dim] = None
                shape = shape[:dim] + (len(span),) + shape[dim + 1:]
        if shape == ():
            if values.numel():
                return values
            return torch.tensor(self.default_value, device=self.device, dtype=self.values.dtype)
        if all(key is None for key in keys):
            return SparseTensor(indices, values, self.default_value, shape)
        return self._gather_tensor_keys(indices, values, shape, keys)

    def _gather_tensor_keys(self, indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...],
                            keys: list) -> SparseTensor:
        rank = max(key.dim() for key in keys if key is not None)
        keys = [None if key is None else key.view(*([1] * (rank - key.dim())), *key.shape) for key in keys]
        grouped = [(dim, key) for dim, key in enumerate(keys) if key is not None]
        key_shape = tuple(max(key.shape[i] for _, key in grouped) for i in range(rank))
        first = grouped[0][0]
        live = {dim for dim, _ in grouped}
        rest = [i for i in range(first + 1, indices.shape[1]) if i not in live]
        new_indices, new_values = [], []
        for position in product(*(range(s) for s in key_shape)):
            hit = torch.ones(indices.shape[0], dtype=torch.bool, device=indices.device)
            for dim, key in grouped:
                at = tuple(p if size != 1 else 0 for p, size in zip(position, key.shape))
                hit &= indices[:, dim] == key[at]
            chosen = indices[hit]
            where = torch.tensor([position], dtype=chosen.dtype, device=chosen.device).expand(chosen.shape[0], -1)
            new_indices.append(torch.cat([chosen[:, :first], where, chosen[:, rest]], dim=1))
            new_values.append(values[hit])
        new_shape: list[int] = []
        for dim, key in enumerate(keys):
            if dim == first:
                new_shape.extend(key_shape)
            elif key is None:
                new_shape.append(shape[dim])
        return SparseTensor(torch.cat(new_indices), torch.cat(new_values), self.default_value, new_shape)

    # ------------------------------------------------------------------ writing
    def __setitem__(self, raw_keys: Key | tuple, value: int | float | torch.Tensor | SparseTensor) -> None:
        keys = self._keys(raw_keys)
        hit = torch.ones(self.indices.shape[0], dtype=torch.bool, device=self.device)
        key_shape: list[int] = []
        for dim, key in enumerate(keys):
            if isinstance(key, torch.Tensor):
                padded = [1] * max(0, key.dim() - len(key_shape)) + key_shape
                key_shape = [max(a, b) for a, b in zip([1] * (len(padded) - key.dim()) + list(key.shape), padded)]
                continue
            if key is None:
                keys[dim] = range(self.shape[dim])
                continue
            keys[dim] = [key] if isinstance(key, int) else range(key.start, key.stop, key.step)
            wanted = torch.tensor(list(keys[dim]), dtype=self.indices.dtype, device=self.device)
            hit &= (self.indices[:, dim:dim + 1] == wanted.unsqueeze(0)).any(dim=1)
        tensor_dims = [dim for dim, key in enumerate(keys) if isinstance(key, torch.Tensor)]
        for dim in tensor_dims:
            keys[dim] = keys[dim].expand(*key_shape).flatten().tolist()
        if tensor_dims:
            points = torch.tensor(list(zip(*(keys[d] for d in tensor_dims))), dtype=self.indices.dtype,
                                  device=self.device).view(-1, len(tensor_dims))
            hit &= (self.indices[:, tensor_dims].unsqueeze(2) == points.T.unsqueeze(0)).all(dim=1).any(dim=1)
        self.indices, self.values = self.indices[~hit], self.values[~hit]
        if isinstance(value, int) and value == self.default_value:
            return
        added = self._addressed(keys, tensor_dims)
        self.indices = torch.cat([self.indices, added.to(self.indices.dtype)])
        self.values = torch.cat([self.values, self._new_values(value, keys, tensor_dims, key_shape, len(added))])

    def _addressed(self, keys: list, tensor_dims: list[int]) -> torch.Tensor:
        """Every addressed element [n, ndim], row-major over the keys (tensor keys as one group)."""
        axes = [keys[d] for d in range(len(keys)) if d not in tensor_dims]
        if tensor_dims:
            axes.insert(tensor_dims[0], list(zip(*(keys[d] for d in tensor_dims))))
        rows = []
        for combo in product(*axes):
            combo = list(combo)
            if tensor_dims:
                for dim, index in zip(tensor_dims, combo.pop(tensor_dims[0])):
                    combo.insert(dim, index)
            rows.append(combo)
        return torch.tensor(rows, dtype=torch.int64, device=self.device).view(-1, len(keys))

    def _new_values(self, value, keys: list, tensor_dims: list[int], key_shape: list[int], count: int) -> torch.Tensor:
        if isinstance(value, SparseTensor):
            value = value.to_dense()
        if not isinstance(value, torch.Tensor):
            return torch.full((count,), value, dtype=self.values.dtype, device=self.device)
        if value.numel() == 1:
            return torch.full((count,), value.item(), dtype=self.values.dtype, device=self.device)
        start = tensor_dims[0] if tensor_dims else len(keys)
        shape = [len(keys[d]) for d in range(start)] + (key_shape if tensor_dims else []) + [
            len(keys[d]) for d in range(start + 1, len(keys)) if d not in tensor_dims]
        return value.to(self.device).expand(*shape).flatten().to(self.values.dtype)

    # --------------------------------------------------------------- arithmetic
    def __add__(self, other: int | SparseTensor) -> SparseTensor:
        """``+ int``: dense result re-sparsified; ``+ SparseTensor``: entry-wise sum (same shape and default)."""
        if isinstance(other, int):
            return SparseTensor.from_tensor(self.to_dense() + other)
        if not isinstance(other, SparseTensor):
            raise ValueError("other must be int or SparseTensor")
        if self.default_value != other.default_value:
            raise ValueError("default_value must be the same")
        if self.shape != other.shape:
            raise ValueError("shape must be the same")
        out = self.clone()
        same = (self.indices.unsqueeze(-1) == other.indices.T).all(dim=1)  # [nnz_self, nnz_other]
        mine, theirs = same.any(dim=1).nonzero().squeeze(-1), same.any(dim=0).nonzero().squeeze(-1)
        out.values[mine] += other.values[theirs]
        only_theirs = (~same.any(dim=0)).nonzero().squeeze(-1)
        out.indices = torch.cat([out.indices, other.indices[only_theirs]])
        out.values = torch.cat([out.values, other.values[only_theirs]])
        return out

    def __eq__(self, other: object) -> bool:
        """Same shape, default, stored indices and values (in the same order); tensors are sparsified first."""
        if isinstance(other, torch.Tensor):
            other = SparseTensor.from_tensor(other, self.default_value)
        if not isinstance(other, SparseTensor):
            return False
        return (self.shape == other.shape and self.default_value == other.default_value
                and torch.equal(self.indices, other.indices) and torch.equal(self.values, other.values))

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------- shapes
    def unsqueeze(self, dim: int = -1) -> SparseTensor:
        dim = dim + self.dim() if dim < 0 else dim
        zeros = torch.zeros((self.indices.shape[0], 1), dtype=self.indices.dtype, device=self.device)
        indices = torch.cat([self.indices[:, :dim], zeros, self.indices[:, dim:]], dim=1)
        return SparseTensor(indices, self.values, self.default_value, self.shape[:dim] + (1,) + self.shape[dim:])

    def diagonal(self, dim1: int = 0, dim2: int = 1) -> SparseTensor:
        """Entries with equal indices along ``dim1`` and ``dim2``; the lower of the two dims is dropped."""
        dim1, dim2 = sorted(d + self.dim() if d < 0 else d for d in (dim1, dim2))
        on = self.indices[:, dim1] == self.indices[:, dim2]
        keep = [d for d in range(self.dim()) if d != dim1]
        return SparseTensor(self.indices[on][:, keep], self.values[on], self.default_value,
                            self.shape[:dim1] + self.shape[dim1 + 1:])

    # -------------------------------------------------------------- conversions
    @classmethod
    def empty(cls, size: Iterable[int], default_value: int | float = 0, dtype: torch.dtype | None = torch.int32,
              device: torch.device | None = None) -> SparseTensor:
        size = tuple(size)
        return cls(torch.empty((0, len(size)), dtype=torch.long, device=device),
                   torch.empty((0,), dtype=dtype, device=device), default_value, size)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, default_value: int | float = 0) -> SparseTensor:
        where = torch.nonzero(tensor != default_value, as_tuple=True)
        return cls(torch.stack(where, dim=1), tensor[where], default_value, tensor.shape)

    def to_dense(self) -> torch.Tensor:
        out = torch.full(self.shape, self.default_value, dtype=self.values.dtype, device=self.device)
        out[self.indices.unbind(dim=1)] = self.values.to(self.device)
        return out

    def to(self, device: torch.device | str) -> SparseTensor:
        return SparseTensor(self.indices.to(device), self.values.to(device), self.default_value, self.shape)

    def tolist(self) -> list:
        return self.to_dense().tolist()

    def clone(self) -> SparseTensor:
        return SparseTensor(self.indices.clone(), self.values.clone(), self.default_value, self.shape)

    def type(self, dtype: torch.dtype) -> SparseTensor:
        return SparseTensor(self.indices, self.values.type(dtype), self.default_value, self.shape)

    def _keys(self, raw_keys: Key | tuple) -> list:
        """One key per dimension: int, slice(start, stop, step) with defaults filled, tensor, or None (all)."""
        raw = raw_keys if isinstance(raw_keys, tuple) else (raw_keys,)
        if len(raw) > self.dim():
            raise IndexError(f"too many indices for a {self.dim()}-dimensional SparseTensor: {len(raw)}")
        keys: list = []
        for dim, key in enumerate(raw + (None,) * (self.dim() - len(raw))):
            if key is None or (isinstance(key, int) and not isinstance(key, bool)):
                keys.append(key)
            elif isinstance(key, slice):
                full = key.start is None and key.stop is None and key.step is None
                keys.append(None if full else slice(key.start or 0, min(key.stop or self.shape[dim], self.shape[dim]),
                                                    key.step or 1))
            elif isinstance(key, torch.Tensor):
                keys.append(key.to(self.device))
            elif isinstance(key, list):
                keys.append(torch.tensor(key, dtype=torch.int32, device=self.device))
            else:
                raise ValueError(f"Unsupported index type {type(key).__name__}")
        return keys

    def __repr__(self) -> str:
        return (f"SparseTensor(shape={self.shape}, default_value={self.default_value}, indices={self.indices}, "
                f"values={self.values})")
