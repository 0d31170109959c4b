"""Transformer blocks on Hopfield association (hflayers' ``HopfieldEncoderLayer`` / ``HopfieldDecoderLayer``).

Post-norm blocks as hflayers 1.0.2 (same parameter names): association -> dropout -> residual
-> LayerNorm -> feed-forward -> dropout -> residual -> LayerNorm. Unlike hflayers' they can sit
in ``torch.nn.TransformerEncoder`` / ``TransformerDecoder``: they expose ``self_attn`` (the
self-association layer, whose ``batch_first`` those containers read) and accept the
``is_causal`` / ``tgt_is_causal`` / ``memory_is_causal`` hints (a causal mask is built when no
mask is given).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mnemonix.nn.layers import Hopfield

__all__ = ["HopfieldEncoderLayer", "HopfieldDecoderLayer"]


def _activation(name: str):
    fn = getattr(torch, name, None) if isinstance(name, str) else None
    if not callable(fn):
        raise ValueError(f"activation must name a torch function (e.g. 'relu'), got {name!r}")
    return fn


def _causal(mask: Tensor | None, is_causal: bool | None, x: Tensor, batch_first: bool) -> Tensor | None:
    """``mask``, or an upper-triangular bool mask (True = not allowed) when only ``is_causal`` is set."""
    if mask is not None or not is_causal:
        return mask
    length = x.shape[1 if batch_first else 0]
    return torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)


def _check_layer(name: str, layer) -> Hopfield:
    if not isinstance(layer, Hopfield):
        raise TypeError(f"{name} must be a mnemonix.nn.Hopfield, got {type(layer).__name__}")
    if layer.state_pattern_dim is None:
        raise ValueError(f"{name} needs an input_size (a projected state pattern) to build the feed-forward part")
    return layer


class HopfieldEncoderLayer(nn.Module):
    """Encoder block: self-association of ``src`` then a feed-forward network (both residual, post-norm).

    Parameters
    ----------
    hopfield_association : Hopfield
        The self-association layer (deep-copied), its ``input_size`` is the model width.
    dim_feedforward : int
        Width of the feed-forward hidden layer.
    dropout : float
        Dropout after the association and in the feed-forward network.
    activation : str
        Name of a torch function (``"relu"``, ``"gelu"``, ...).
    """

    def __init__(self, hopfield_association: Hopfield, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "relu") -> None:
        super().__init__()
        self.hopfield_association = copy.deepcopy(_check_layer("hopfield_association", hopfield_association))
        width = self.hopfield_association.state_pattern_dim
        self.linear_residual = nn.Linear(width, dim_feedforward)
        self.dropout_residual = nn.Dropout(dropout)
        self.linear_output = nn.Linear(dim_feedforward, width)
        self.norm_residual = nn.LayerNorm(width)
        self.norm_output = nn.LayerNorm(width)
        self.dropout_hopfield_association = nn.Dropout(dropout)
        self.dropout_output = nn.Dropout(dropout)
        self.activation_residual = _activation(activation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.hopfield_association, self.linear_residual, self.linear_output, self.norm_residual,
                       self.norm_output):
            module.reset_parameters()

    @property
    def self_attn(self) -> Hopfield:
        """The self-association layer (the name ``nn.TransformerEncoder`` looks for)."""
        return self.hopfield_association

    def forward(self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        """Encode ``src [B, L, E]`` (sequence first when ``batch_first=False``)."""
        src_mask = _causal(src_mask, is_causal, src, self.batch_first)
        associated = self.hopfield_association(src, stored_pattern_padding_mask=src_key_padding_mask,
                                               association_mask=src_mask)
        src = self.norm_residual(src + self.dropout_hopfield_association(associated))
        inner = self.activation_residual(self.linear_residual(src))
        src = src + self.dropout_output(self.linear_output(self.dropout_residual(inner)))
        return self.norm_output(src)

    def get_association_matrix(self, input) -> Tensor:
        return self.hopfield_association.get_association_matrix(input)

    @property
    def batch_first(self) -> bool:
        return self.hopfield_association.batch_first

    @property
    def input_size(self) -> int:
        return self.hopfield_association.input_size

    @property
    def output_size(self) -> int:
        return self.linear_output.out_features


class HopfieldDecoderLayer(nn.Module):
    """Decoder block: self-association of ``tgt``, cross-association with ``memory``, feed-forward.

    Parameters as :class:`HopfieldEncoderLayer`, with two association layers
    (``hopfield_association_self``, ``hopfield_association_cross``; deep-copied).
    """

    def __init__(self, hopfield_association_self: Hopfield, hopfield_association_cross: Hopfield,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        self.hopfield_association_self = copy.deepcopy(
            _check_layer("hopfield_association_self", hopfield_association_self))
        self.hopfield_association_cross = copy.deepcopy(
            _check_layer("hopfield_association_cross", hopfield_association_cross))
        width = self.hopfield_association_self.state_pattern_dim
        self.linear_residual = nn.Linear(width, dim_feedforward)
        self.dropout_residual = nn.Dropout(dropout)
        self.linear_output = nn.Linear(dim_feedforward, width)
        self.norm_residual_self = nn.LayerNorm(width)
        self.norm_residual_cross = nn.LayerNorm(width)
        self.norm_output = nn.LayerNorm(width)
        self.dropout_hopfield_association_self = nn.Dropout(dropout)
        self.dropout_hopfield_association_cross = nn.Dropout(dropout)
        self.dropout_output = nn.Dropout(dropout)
        self.activation_residual = _activation(activation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.hopfield_association_self, self.hopfield_association_cross, self.linear_residual,
                       self.linear_output, self.norm_residual_self, self.norm_residual_cross, self.norm_output):
            module.reset_parameters()

    @property
    def self_attn(self) -> Hopfield:
        """The self-association layer (the name ``nn.TransformerDecoder`` looks for)."""
        return self.hopfield_association_self

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False) -> Tensor:
        """Decode ``tgt [B, L, E]`` against ``memory [B, S, E]`` (sequence first when ``batch_first=False``)."""
        tgt_mask = _causal(tgt_mask, tgt_is_causal, tgt, self.batch_first)
        if memory_is_causal and memory_mask is None:
            pos = 1 if self.batch_first else 0
            memory_mask = torch.ones(tgt.shape[pos], memory.shape[pos], dtype=torch.bool, device=tgt.device).triu(1)
        associated = self.hopfield_association_self(tgt, stored_pattern_padding_mask=tgt_key_padding_mask,
                                                    association_mask=tgt_mask)
        tgt = self.norm_residual_self(tgt + self.dropout_hopfield_association_self(associated))
        associated = self.hopfield_association_cross((memory, tgt, memory),
                                                     stored_pattern_padding_mask=memory_key_padding_mask,
                                                     association_mask=memory_mask)
        tgt = self.norm_residual_cross(tgt + self.dropout_hopfield_association_cross(associated))
        inner = self.activation_residual(self.linear_residual(tgt))
        tgt = tgt + self.dropout_output(self.linear_output(self.dropout_residual(inner)))
        return self.norm_output(tgt)

    def get_association_matrix_self(self, input) -> Tensor:
        return self.hopfield_association_self.get_association_matrix(input)

    def get_association_matrix_cross(self, input) -> Tensor:
        return self.hopfield_association_cross.get_association_matrix(input)

    @property
    def batch_first(self) -> bool:
        return self.hopfield_association_self.batch_first

    @property
    def input_size(self) -> int:
        return self.hopfield_association_self.input_size

    @property
    def output_size(self) -> int:
        return self.linear_output.out_features
