"""Hopfield layers that train: a drop-in for ``hflayers`` 1.0.2 on the fused retrieval op.

``Hopfield``, ``HopfieldPooling`` and ``HopfieldLayer`` take hflayers' constructor arguments,
defaults, forward conventions and parameter names (``load_state_dict`` moves weights between
the two libraries), and run the association through :func:`mnemonix.ops.hopfield_retrieve`:
the [batch, heads, queries, stored] association matrix is never materialised, forward or
backward, so memory stays flat in the number of stored patterns. ``HopfieldEncoderLayer`` and
``HopfieldDecoderLayer`` are transformer blocks that also fit ``torch.nn.TransformerEncoder`` /
``TransformerDecoder``. See ``docs/nn.md`` (differences from hflayers included).
"""

from __future__ import annotations

from mnemonix.nn.core import HopfieldCore
from mnemonix.nn.layers import Hopfield, HopfieldLayer, HopfieldPooling
from mnemonix.nn.transformer import HopfieldDecoderLayer, HopfieldEncoderLayer

__all__ = ["Hopfield", "HopfieldPooling", "HopfieldLayer", "HopfieldEncoderLayer", "HopfieldDecoderLayer",
           "HopfieldCore"]
