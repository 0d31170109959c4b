"""A plain-torch re-implementation of hflayers 1.0.2's ``Hopfield`` math (the test oracle).

Written from hflayers' documented semantics (``Hopfield`` / ``HopfieldCore`` docstrings and the
paper, Ramsauer et al. 2020, eq. 10), independent of :mod:`mnemonix.nn`: everything is
materialised, sequence by sequence, in the most direct form. It reads the parameters from a
state dict with hflayers' names, so the same weights drive both. Semantics followed:

- inputs: one tensor (stored = state = projection) or a (stored, state, projection) tuple;
  ``batch_first`` inputs are [B, seq, features];
- layer norms on the three inputs (``norm_*`` entries), then the input projection: one stacked
  ``in_proj_weight`` (rows for the non-static of state, stored, projection, in that order) when
  every width equals ``input_size``, else ``q/k/v_proj_weight``; ``in_proj_bias`` stacked alike.
  With the stacked weight, equal (normalised) inputs are projected from the state pattern (all
  three equal) or from the stored pattern (stored equal to projection), as in
  ``nn.MultiheadAttention`` — the same values, the gradient goes to the input used;
- static patterns are used by every head as they are; a connected projection goes through the
  stored pattern's projection first (then split over the heads when static);
- optional layer norm in the association space, optional zero pattern appended;
- ``xi = softmax(beta q k^T + masks)`` per head; padding mask [B, S] and association mask
  [L, S] / [B * heads, L, S]: bool/uint8 True = masked, float added;
- update iterations ``q <- xi k`` per head while ``step < update_steps_max`` (None or < 0:
  unbounded) and the Frobenius norm of the change of ``xi`` over (L, S), maximised over the
  batch, is above ``update_steps_eps``;
- ``out = xi v`` -> heads concatenated -> ``out_proj`` -> activation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULTS = dict(
    input_size=None, hidden_size=None, output_size=None, pattern_size=None, num_heads=1, scaling=None,
    update_steps_max=0, update_steps_eps=1e-4, normalize_stored_pattern=True, normalize_stored_pattern_eps=1e-5,
    normalize_state_pattern=True, normalize_state_pattern_eps=1e-5, normalize_pattern_projection=True,
    normalize_pattern_projection_eps=1e-5, normalize_hopfield_space=False, normalize_hopfield_space_affine=False,
    normalize_hopfield_space_eps=1e-5, stored_pattern_as_static=False, state_pattern_as_static=False,
    pattern_projection_as_static=False, pattern_projection_as_connected=False, stored_pattern_size=None,
    pattern_projection_size=None, batch_first=True, association_activation=None, disable_out_projection=False,
    add_zero_association=False,
)


def _norm(x, params, prefix, enabled, eps):
    if not enabled:
        return x
    return F.layer_norm(x, (x.shape[-1],), params.get(prefix + ".weight"), params.get(prefix + ".bias"), eps)


def _mask_logits(padding, association, b, h, length, s):
    """One additive mask [B, h, L, S] from hflayers' mask conventions."""
    total = torch.zeros(b, h, length, s)
    if padding is not None:
        pad = padding.float() if padding.is_floating_point() else \
            torch.zeros(b, s).masked_fill(padding.bool(), -math.inf)
        total = total + pad[:, None, None, :]
    if association is not None:
        a = association
        a = a.float() if a.is_floating_point() else torch.zeros(a.shape).masked_fill(a.bool(), -math.inf)
        total = total + (a if a.ndim == 2 else a.reshape(b, h, length, s))
    return total


def hopfield(params, cfg, data, padding=None, association=None):
    """hflayers' ``Hopfield.forward`` in eval mode (no dropout), from a state dict ``params``."""
    c = {**DEFAULTS, **cfg}
    p = {k.removeprefix("association_core."): v for k, v in params.items()}
    stored, state, proj = (data, data, data) if isinstance(data, torch.Tensor) else data
    if not c["batch_first"]:
        stored, state, proj = (t.transpose(0, 1) for t in (stored, state, proj))
    stored = _norm(stored, params, "norm_stored_pattern", c["normalize_stored_pattern"],
                   c["normalize_stored_pattern_eps"])
    state = _norm(state, params, "norm_state_pattern", c["normalize_state_pattern"], c["normalize_state_pattern_eps"])
    proj = _norm(proj, params, "norm_pattern_projection", c["normalize_pattern_projection"],
                 c["normalize_pattern_projection_eps"])
    h = c["num_heads"]
    qs, ks, vs = c["state_pattern_as_static"], c["stored_pattern_as_static"], c["pattern_projection_as_static"]
    e = c["input_size"]
    static_exec = qs and ks and vs and not c["pattern_projection_as_connected"] and \
        not c["normalize_hopfield_space"] and c["disable_out_projection"]
    hd = state.shape[-1] if static_exec else (c["hidden_size"] or e // h)
    pd = c["pattern_size"] or hd
    kdim, vdim = c["stored_pattern_size"] or e, c["pattern_projection_size"] or e
    stacked = "in_proj_weight" in p or (kdim == e and vdim == e and c["pattern_size"] is None
                                        and not c["pattern_projection_as_connected"] and not static_exec)
    w, bias = _projections(p, stacked, [(qs, h * hd), (ks, h * hd), (vs, h * pd)])
    if stacked and not (ks or vs) and stored.shape == proj.shape and torch.equal(stored, proj):
        if not qs and state.shape == stored.shape and torch.equal(state, stored):
            stored = proj = state
        else:
            proj = stored

    def heads(x, width):  # [B, seq, h * width] -> [B, h, seq, width]
        return x.reshape(x.shape[0], x.shape[1], h, width).permute(0, 2, 1, 3)

    def each_head(x):  # a static pattern, the same for every head
        return x[:, None].repeat(1, h, 1, 1)

    q = each_head(state) if qs else heads(state @ w[0].T + (0 if bias[0] is None else bias[0]), hd)
    k = each_head(stored) if ks else heads(stored @ w[1].T + (0 if bias[1] is None else bias[1]), hd)
    v_in = proj
    if c["pattern_projection_as_connected"] and not ks:
        v_in = proj @ w[1].T + (0 if bias[1] is None else bias[1])
    if not vs:
        v = heads(v_in @ w[2].T + (0 if bias[2] is None else bias[2]), pd)
    elif c["pattern_projection_as_connected"]:
        v = heads(v_in, v_in.shape[-1] // h)
    else:
        v = each_head(v_in)
    if c["normalize_hopfield_space"] or c["normalize_hopfield_space_affine"]:
        q = F.layer_norm(q, (hd,), p.get("p_norm_weight"), p.get("p_norm_bias"), c["normalize_hopfield_space_eps"])
        k = F.layer_norm(k, (hd,), p.get("p_norm_weight"), p.get("p_norm_bias"), c["normalize_hopfield_space_eps"])
    b, length, s = q.shape[0], q.shape[2], k.shape[2]
    masks = _mask_logits(padding, association, b, h, length, s)
    if c["add_zero_association"]:
        k = torch.cat([k, torch.zeros(b, h, 1, k.shape[-1])], dim=2)
        v = torch.cat([v, torch.zeros(b, h, 1, v.shape[-1])], dim=2)
        masks = torch.cat([masks, torch.zeros(b, h, length, 1)], dim=3)
    scaling = c["scaling"]
    if scaling is None:
        scaling = 1.0 if static_exec else 1.0 / math.sqrt(hd)
    beta = scaling.reshape(1, h, 1, 1) if isinstance(scaling, torch.Tensor) else scaling
    xi = torch.softmax(beta * q @ k.transpose(-1, -2) + masks, dim=-1)
    xi = _iterate(xi, q, k, beta, masks, c["update_steps_max"], c["update_steps_eps"], h)
    out = (xi @ v).permute(0, 2, 1, 3).reshape(b, length, -1)
    if not c["disable_out_projection"]:
        out = out @ p["out_proj.weight"].T + (p["out_proj.bias"] if "out_proj.bias" in p else 0)
    if not c["batch_first"]:
        out = out.transpose(0, 1)
    if c["association_activation"] is not None:
        out = getattr(torch, c["association_activation"])(out)
    return out


def _projections(p, stacked, sizes):
    """Weights and biases of the non-static projections (state, stored, projection), None if static."""
    w, bias, row, brow = [None] * 3, [None] * 3, 0, 0
    for i, (static, size) in enumerate(sizes):
        if not static:
            w[i] = p["in_proj_weight"][row:row + size] if stacked else p[("q", "k", "v")[i] + "_proj_weight"]
            row += size
        if "in_proj_bias" in p and i < 2 and not static:
            bias[i] = p["in_proj_bias"][brow:brow + size]
            brow += size
    if "in_proj_bias" in p:
        bias[2] = p["in_proj_bias"][brow:]
    return w, bias


def _iterate(xi, q, k, beta, masks, steps_max, steps_eps, h):
    limit = torch.full((h,), 10_000) if steps_max is None else torch.as_tensor(steps_max).expand(h)
    limit = torch.where(limit < 0, 10_000, limit)
    eps = torch.as_tensor(steps_eps, dtype=torch.float32).expand(h)
    active = limit > 0
    step = 0
    while bool(active.any()):
        q = torch.where(active[None, :, None, None], xi @ k, q)
        new = torch.softmax(beta * q @ k.transpose(-1, -2) + masks, dim=-1)
        step += 1
        change = (new - xi).flatten(2).norm(dim=-1).amax(dim=0)
        active = active & (step < limit) & (change > eps)
        xi = new
    return xi
