"""The stored-patterns holder shared by the Hopfield models (:mod:`mnemonix.hopfield`,
:mod:`mnemonix.binary_hopfield`)."""

from __future__ import annotations

import torch


class _PatternStore:
    """Holds the stored patterns of a network; ``patterns`` raises until something is stored."""

    _patterns: torch.Tensor | None = None

    @property
    def patterns(self) -> torch.Tensor:
        """Stored patterns [N, d]; raises if nothing is stored."""
        if self._patterns is None:
            raise ValueError("no patterns stored: call store(patterns) first")
        return self._patterns

    def __len__(self) -> int:
        return 0 if self._patterns is None else int(self._patterns.shape[0])
