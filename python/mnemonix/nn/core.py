"""``HopfieldCore``: the projections and heads of a Hopfield layer, hflayers' parameter layout.

The parameters carry hflayers 1.0.2's names and shapes (``in_proj_weight`` or
``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight``, ``in_proj_bias``, ``out_proj``,
``bias_k`` / ``bias_v``, ``p_norm_weight`` / ``p_norm_bias``), so a state dict moves between
the two libraries unchanged. The math is written from hflayers' documented semantics:

- state, stored and projected patterns are projected into the association space per head
  (``q = x W_q^T + b_q`` ...), unless declared *static* (then used as they are, by every head);
- ``pattern_projection_as_connected``: the pattern projection first goes through the stored
  pattern's projection (then, unless static, through its own);
- optional layer normalisation in the association space (``normalize_hopfield_space``);
- optional zero pattern appended (``add_zero_association``);
- the association itself (:mod:`mnemonix.nn._association`), then the output projection.

Where hflayers differs from its own documentation we follow the documentation, except where
that would change what a trained checkpoint computes (see ``docs/nn.md``).
"""

from __future__ import annotations

import torch
from torch import nn

from mnemonix.nn import _association as assoc


class HopfieldCore(nn.Module):
    """Projections, heads and the fused association (the ``association_core`` of a layer).

    Arguments as hflayers' ``HopfieldCore`` (``embed_dim`` = state pattern width, ``kdim`` /
    ``vdim`` = stored pattern / pattern projection widths, ``head_dim`` = association space
    width per head, ``pattern_dim`` = projected pattern width per head, ``out_dim``).
    """

    def __init__(self, embed_dim=None, num_heads=1, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, head_dim=None, pattern_dim=None, out_dim=None, disable_out_projection=False,
                 key_as_static=False, query_as_static=False, value_as_static=False, value_as_connected=False,
                 normalize_pattern=False, normalize_pattern_affine=False, normalize_pattern_eps=1e-5) -> None:
        super().__init__()
        for name, flag in (("stored_pattern_as_static", key_as_static), ("state_pattern_as_static", query_as_static),
                           ("pattern_projection_as_static", value_as_static)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
            raise ValueError(f"num_heads must be an int >= 1, got {num_heads!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.key_as_static, self.query_as_static, self.value_as_static = key_as_static, query_as_static, value_as_static
        self.value_as_connected = bool(value_as_connected)
        self.normalize_pattern = bool(normalize_pattern or normalize_pattern_affine)
        self.normalize_pattern_affine = bool(normalize_pattern_affine)
        self.normalize_pattern_eps = float(normalize_pattern_eps)
        self.disable_out_projection = bool(disable_out_projection)
        self.num_heads, self.dropout, self.add_zero_attn = num_heads, float(dropout), bool(add_zero_attn)
        self.static_execution = all((key_as_static, query_as_static, value_as_static, not self.value_as_connected,
                                     not self.normalize_pattern, self.disable_out_projection))
        if self.static_execution:
            embed_dim = kdim = vdim = None
        elif embed_dim is None:
            raise ValueError("input_size is required unless every pattern is static and the output projection is "
                             "disabled (static-only execution)")
        self.embed_dim = embed_dim
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = (self.kdim == embed_dim and self.vdim == embed_dim and pattern_dim is None
                                    and not self.value_as_connected)
        if self.value_as_connected and self.kdim != self.vdim:
            raise ValueError(f"pattern_projection_as_connected needs stored_pattern_size == pattern_projection_size, "
                             f"got {self.kdim} and {self.vdim}")
        self.head_dim = self.pattern_dim = self.virtual_hopfield_dim = self.virtual_pattern_dim = None
        if not self.static_execution:
            if head_dim is None:
                if embed_dim % num_heads:
                    raise ValueError(f"input_size ({embed_dim}) must be divisible by num_heads ({num_heads}) "
                                     f"when hidden_size is not given")
                head_dim = embed_dim // num_heads
            if head_dim <= 0:
                raise ValueError(f"hidden_size must be > 0, got {head_dim}")
            self.head_dim = head_dim
            self.pattern_dim = head_dim if pattern_dim is None else pattern_dim
            if self.value_as_connected and self.pattern_dim != self.head_dim:
                raise ValueError(f"pattern_projection_as_connected needs pattern_size == hidden_size, got "
                                 f"{self.pattern_dim} and {self.head_dim}")
            self.virtual_hopfield_dim = num_heads * self.head_dim
            self.virtual_pattern_dim = num_heads * self.pattern_dim
        self.out_dim = embed_dim if out_dim is None else out_dim
        if not self.disable_out_projection and not (self.out_dim or 0) > 0:
            raise ValueError(f"output_size must be > 0 with an output projection, got {self.out_dim}")
        self._make_parameters(bias, add_bias_kv)
        self.reset_parameters()

    def _make_parameters(self, bias: bool, add_bias_kv: bool) -> None:
        """Parameters with hflayers' names and shapes (None where hflayers registers None)."""
        qs, ks, vs = self.query_as_static, self.key_as_static, self.value_as_static
        hd, pd, e = self.virtual_hopfield_dim, self.virtual_pattern_dim, self.embed_dim
        non_static = 3 - (qs + ks + vs)
        empty = torch.empty
        self.p_norm_weight = nn.Parameter(empty(self.head_dim)) if self.normalize_pattern_affine else None
        self.p_norm_bias = nn.Parameter(empty(self.head_dim)) if self.normalize_pattern_affine else None
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            self.register_parameter(name, None)
        if not self._qkv_same_embed_dim:
            if not qs:
                self.q_proj_weight = nn.Parameter(empty(hd, e))
            if not ks:
                self.k_proj_weight = nn.Parameter(empty(hd, self.kdim))
            if not vs:
                self.v_proj_weight = nn.Parameter(empty(pd, hd if (self.value_as_connected and not ks) else self.vdim))
        elif non_static > 0:
            self.in_proj_weight = nn.Parameter(empty((not qs) * hd + (not ks) * hd + (not vs) * pd, e))
        # hflayers sizes the bias for the value projection even when that one is static
        has_bias = bias and non_static > 0
        self.in_proj_bias = nn.Parameter(empty((not qs) * hd + (not ks) * hd + pd)) if has_bias else None
        self.out_proj = None if self.disable_out_projection else nn.Linear(pd, self.out_dim, bias=bias)
        self.bias_k = self.bias_v = None
        if add_bias_kv:
            if ks and vs:
                raise ValueError("concat_bias_pattern needs a non-static stored pattern or pattern projection")
            self.bias_k = None if ks else nn.Parameter(empty(1, 1, hd))
            self.bias_v = None if vs else nn.Parameter(empty(1, 1, hd))

    def reset_parameters(self) -> None:
        """hflayers' initialisation: N(0, 0.02) weights, zero biases, unit pattern norm."""
        if self.p_norm_weight is not None:
            nn.init.ones_(self.p_norm_weight)
            nn.init.zeros_(self.p_norm_bias)
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                nn.init.normal_(w, mean=0.0, std=0.02)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        if self.out_proj is not None:
            nn.init.normal_(self.out_proj.weight, mean=0.0, std=0.02)
            if self.out_proj.bias is not None:
                nn.init.zeros_(self.out_proj.bias)
        for b in (self.bias_k, self.bias_v):
            if b is not None:
                nn.init.normal_(b, mean=0.0, std=0.02)

    # -- projections ----------------------------------------------------------------------

    def _weights(self):
        """(W_q, W_k, W_v), (b_q, b_k, b_v) in hflayers' stacking order (None where static)."""
        qs, ks, vs = self.query_as_static, self.key_as_static, self.value_as_static
        hd = self.virtual_hopfield_dim
        if self._qkv_same_embed_dim and self.in_proj_weight is not None:
            rows, w, start = self.in_proj_weight, [], 0
            for static, size in ((qs, hd), (ks, hd), (vs, self.virtual_pattern_dim)):
                w.append(None if static else rows[start : start + size])
                start += 0 if static else size
        else:
            w = [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight]
        b = [None, None, None]
        if self.in_proj_bias is not None:
            start = 0
            for i, static in enumerate((qs, ks)):
                if not static:
                    b[i] = self.in_proj_bias[start : start + hd]
                    start += hd
            b[2] = self.in_proj_bias[start:]
        return w, b

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, heads * w] -> [batch, heads, seq, w] (a view)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def _shortcut(self, query, key, value):
        """hflayers' self-association shortcut.

        With one joint input projection, hflayers (like ``nn.MultiheadAttention``) projects the
        state pattern for all three when the three (normalised) inputs are equal elementwise, and
        the stored pattern for both keys and values when those two are equal. The values are the
        same either way; what differs is where the gradient goes (e.g. only to
        ``norm_state_pattern`` while the three layer norms hold equal parameters, as at
        initialisation). Eagerly the same branch is taken; under ``torch.compile`` ``torch.where``
        on the equality flags routes the gradient the same way (as zeros instead of None).
        """
        if not self._qkv_same_embed_dim or self.in_proj_weight is None or self.key_as_static \
                or self.value_as_static or key.shape != value.shape:
            return query, key, value
        kv_equal = (key == value).all()
        with_query = not self.query_as_static and query.shape == key.shape
        all_equal = kv_equal & (query == key).all() if with_query else None
        if torch.compiler.is_compiling():
            value = torch.where(kv_equal, key, value)
            if all_equal is None:
                return query, key, value
            return query, torch.where(all_equal, query, key), torch.where(all_equal, query, value)
        if all_equal is not None and bool(all_equal):
            return query, query, query
        return (query, key, key) if bool(kv_equal) else (query, key, value)

    def project(self, query, key, value):
        """Per-head patterns ``q [B, H, L, hd]``, ``k [B|1, H|1, S, hd]``, ``v [B|1, H|1, S, pd]``."""
        query, key, value = self._shortcut(query, key, value)
        (wq, wk, wv), (bq, bk, bv) = self._weights()
        heads = self.num_heads
        if self.query_as_static:  # every head starts from the state pattern itself (a view)
            q = query[:, None].expand(-1, heads, -1, -1)
        else:
            q = self._heads(nn.functional.linear(query, wq, bq))
        k = key[:, None] if self.key_as_static else self._heads(nn.functional.linear(key, wk, bk))
        v_in = value
        if self.value_as_connected and not self.key_as_static:
            v_in = nn.functional.linear(value, wk, bk)
        if not self.value_as_static:
            v = self._heads(nn.functional.linear(v_in, wv, bv))
        elif self.value_as_connected:
            v = self._heads(v_in)  # connected and static: split over the heads like the keys
        else:
            v = v_in[:, None]  # static: every head retrieves the pattern projection itself
        if self.normalize_pattern:
            shape = (q.shape[-1],)
            q = nn.functional.layer_norm(q, shape, self.p_norm_weight, self.p_norm_bias, self.normalize_pattern_eps)
            k = nn.functional.layer_norm(k, shape, self.p_norm_weight, self.p_norm_bias, self.normalize_pattern_eps)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(*k.shape[:-2], 1, k.shape[-1])], dim=-2)
            v = torch.cat([v, v.new_zeros(*v.shape[:-2], 1, v.shape[-1])], dim=-2)
        return q, k, v

    def forward(self, query, key, value, masks: assoc.Masks, *, scaling, update_steps_max, update_steps_eps):
        """Association of batch-first patterns -> ``[batch, L, out]`` (see :class:`mnemonix.nn.Hopfield`)."""
        q, k, v = self.project(query, key, value)
        out = assoc.associate(q, k, None if v is k else v, scaling, masks, steps_max=update_steps_max,
                              steps_eps=update_steps_eps, dropout=self.dropout, training=self.training)
        out = out.transpose(1, 2).flatten(2)
        return out if self.out_proj is None else self.out_proj(out)
