"""Dense views with write-back: ``engrams.induce_counts`` and ``engrams.fire_count``.

memoria-pytorch stores ``induce_counts`` as a dense tensor, so user code writes into it
(``engrams.induce_counts[:, i, j] = 7``, ``engrams.fire_count[0, 0] += 1``). mnemonix builds
the dense tensor from the sparse graph on access and remembers it with a snapshot: before
the engrams are next read or changed, the entries that differ from the snapshot are
written into the graph. The engrams keep a *strong* reference until that first sync (a
temporary such as ``engrams.induce_counts[...] = 7`` must survive until then), and a
*weak* one afterwards: a view the caller still holds keeps writing back (each sync
compares it with its snapshot, O(M^2) for ``induce_counts``); a dropped one costs nothing.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch


class WriteBack:
    """One handed-out tensor, its snapshot at hand-out, and the engram uids of its positions."""

    __slots__ = ("_strong", "_ref", "base", "uids")

    def __init__(self, tensor: torch.Tensor, uids: np.ndarray) -> None:
        self._strong: torch.Tensor | None = tensor
        self._ref = weakref.ref(tensor)
        self.base = tensor.clone()
        self.uids = uids

    @property
    def tensor(self) -> torch.Tensor | None:
        return self._strong if self._strong is not None else self._ref()

    def changes(self) -> torch.Tensor | None:
        """Bool mask of entries written since the last sync, or None when nothing changed / the view died."""
        tensor = self.tensor
        if tensor is None or tensor.shape != self.base.shape:
            return None
        changed = tensor != self.base
        return changed if bool(changed.any()) else None

    def settle(self) -> bool:
        """After a sync: the snapshot becomes the current content; keep only a weak reference.

        Returns False when the caller no longer holds the view (it can be forgotten).
        """
        tensor = self.tensor
        if tensor is not None:
            self.base.copy_(tensor)
        self._strong = None
        return self._ref() is not None

    def refresh(self, content: torch.Tensor) -> None:
        """The engrams changed under a live view: show the new counts in place (as the original's
        in-place updates of its dense tensor would)."""
        tensor = self.tensor
        if tensor is not None and tensor.shape == content.shape:
            tensor.copy_(content)
            self.base.copy_(content)
