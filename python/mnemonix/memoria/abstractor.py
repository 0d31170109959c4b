"""``Abstractor``: memoria-pytorch's module that summarises a sequence into a few memory vectors.

Learned queries attend over the hidden states (one softmax attention without scaling),
followed by a feed-forward projection and an output projection. Same parameter names and
initialisation order as the original, so state dicts load in either library and the same
seed gives the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from mnemonix import _checks

__all__ = ["Abstractor"]


class Abstractor(nn.Module):
    """Summarise [B, N, H] hidden states into [B, num_memories, H] memories.

    ``out = output(feedforward(softmax(q K^T) V))`` with learned queries
    ``q = query_embeddings`` [1, num_memories, H], keys ``K = key_transform(x)`` and values
    ``V = value_transform(x)``.

    Parameters
    ----------
    num_memories : int >= 1
        Memories produced per sequence.
    hidden_dim : int >= 1
    feedforward_dim : int >= 1
    """

    def __init__(self, num_memories: int, hidden_dim: int, feedforward_dim: int) -> None:
        super().__init__()
        _checks.positive_int("num_memories", num_memories)
        _checks.positive_int("hidden_dim", hidden_dim)
        _checks.positive_int("feedforward_dim", feedforward_dim)
        queries = torch.empty(1, num_memories, hidden_dim)
        nn.init.normal_(queries, std=0.02)
        self.query_embeddings = nn.Parameter(queries)
        self.key_transform = nn.Linear(hidden_dim, hidden_dim)
        self.value_transform = nn.Linear(hidden_dim, hidden_dim)
        self.feedforward = nn.Linear(hidden_dim, feedforward_dim)
        self.output = nn.Linear(feedforward_dim, hidden_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, N, H] -> memories [B, num_memories, H]."""
        _checks.tensor("hidden_states", hidden_states, min_ndim=2, dtypes=None)
        hidden = self.query_embeddings.shape[2]
        if hidden_states.shape[-1] != hidden:
            raise ValueError(f"hidden_states must have {hidden} features in the last dimension, "
                             f"got shape {tuple(hidden_states.shape)}")
        keys = self.key_transform(hidden_states)
        values = self.value_transform(hidden_states)
        attention = (self.query_embeddings @ keys.transpose(-2, -1)).softmax(dim=-1)
        return self.output(self.feedforward(attention @ values))
