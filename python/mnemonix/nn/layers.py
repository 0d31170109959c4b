"""``Hopfield``, ``HopfieldPooling``, ``HopfieldLayer``: hflayers 1.0.2's layers on the fused op.

Drop-in for ``from hflayers import Hopfield, HopfieldPooling, HopfieldLayer``: the same
constructor arguments and defaults, forward conventions, ``get_association_matrix`` /
``get_projected_pattern_matrix`` and parameter names (``load_state_dict`` works both ways).
The association runs through :func:`mnemonix.ops.hopfield_retrieve`: the [batch, heads, L, S]
association matrix is never materialised (forward or backward) unless dropout acts on it.
Differences from hflayers are listed in ``docs/nn.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mnemonix.nn import _association as assoc
from mnemonix.nn._masks import build_masks
from mnemonix.nn.core import HopfieldCore

__all__ = ["Hopfield", "HopfieldPooling", "HopfieldLayer"]

Patterns = Tensor | tuple[Tensor, Tensor, Tensor]


def _layer_norm(enabled: bool, affine: bool, eps: float, size: int | None, what: str) -> nn.LayerNorm | None:
    if not enabled:
        return None
    if size is None:
        raise ValueError(f"normalize_{what}=True needs the {what.replace('_', ' ')} size (input_size or the "
                         f"matching *_size argument); pass it or set normalize_{what}=False")
    return nn.LayerNorm(size, eps=eps, elementwise_affine=affine)


def _activation(name: str | None) -> Callable[[Tensor], Tensor] | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"association_activation must be a str naming a torch function or None, "
                        f"got {type(name).__name__}")
    fn = getattr(torch, name, None)
    if not callable(fn):
        raise ValueError(f"association_activation must name a torch function (e.g. 'tanh'), got {name!r}")
    return fn


class Hopfield(nn.Module):
    """Modern Hopfield association (Ramsauer et al. 2020) as a layer, hflayers-compatible.

    ``out = W_o softmax(beta (x_s W_q)(y W_k)^T) (y_p W_v)`` per head, with optional layer
    norms of the inputs and in the association space, static (unprojected) patterns,
    update iterations and an activation. Arguments and defaults are hflayers 1.0.2's
    ``Hopfield`` (see its documentation and ``docs/nn.md``); ``scaling`` may be a float, a
    tensor with one entry per head, or an ``nn.Parameter`` (learned).

    Forward: ``input`` is one tensor (stored pattern = state pattern = pattern projection) or
    a tuple ``(stored_pattern [B, S, Ek], state_pattern [B, L, E], pattern_projection [B, S, Ev])``
    (sequence first when ``batch_first=False``); ``stored_pattern_padding_mask [B, S]`` (bool or
    uint8: True = ignore; float: added); ``association_mask [L, S]`` or ``[B * heads, L, S]``
    (bool or uint8: True = not allowed; float: added). Returns [B, L, output_size].
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None,
                 output_size: int | None = None, pattern_size: int | None = None, num_heads: int = 1,
                 scaling: float | Tensor | None = None, update_steps_max: int | Tensor | None = 0,
                 update_steps_eps: float | Tensor = 1e-4,
                 normalize_stored_pattern: bool = True, normalize_stored_pattern_affine: bool = True,
                 normalize_stored_pattern_eps: float = 1e-5, normalize_state_pattern: bool = True,
                 normalize_state_pattern_affine: bool = True, normalize_state_pattern_eps: float = 1e-5,
                 normalize_pattern_projection: bool = True, normalize_pattern_projection_affine: bool = True,
                 normalize_pattern_projection_eps: float = 1e-5, normalize_hopfield_space: bool = False,
                 normalize_hopfield_space_affine: bool = False, normalize_hopfield_space_eps: float = 1e-5,
                 stored_pattern_as_static: bool = False, state_pattern_as_static: bool = False,
                 pattern_projection_as_static: bool = False, pattern_projection_as_connected: bool = False,
                 stored_pattern_size: int | None = None, pattern_projection_size: int | None = None,
                 batch_first: bool = True, association_activation: str | None = None, dropout: float = 0.0,
                 input_bias: bool = True, concat_bias_pattern: bool = False, add_zero_association: bool = False,
                 disable_out_projection: bool = False) -> None:
        super().__init__()
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be a bool, got {type(batch_first).__name__}")
        self.association_core = HopfieldCore(
            embed_dim=input_size, num_heads=num_heads, dropout=dropout, bias=input_bias,
            add_bias_kv=concat_bias_pattern, add_zero_attn=add_zero_association, kdim=stored_pattern_size,
            vdim=pattern_projection_size, head_dim=hidden_size, pattern_dim=pattern_size, out_dim=output_size,
            disable_out_projection=disable_out_projection, key_as_static=stored_pattern_as_static,
            query_as_static=state_pattern_as_static, value_as_static=pattern_projection_as_static,
            value_as_connected=pattern_projection_as_connected, normalize_pattern=normalize_hopfield_space,
            normalize_pattern_affine=normalize_hopfield_space_affine,
            normalize_pattern_eps=normalize_hopfield_space_eps)
        if concat_bias_pattern:
            warnings.warn("concat_bias_pattern=True: as in hflayers 1.0.2 the bias patterns bias_k / bias_v are "
                          "created (and load from state dicts) but take no part in the association", stacklevel=2)
        self.association_activation = _activation(association_activation)
        core = self.association_core
        self.norm_stored_pattern = _layer_norm(normalize_stored_pattern, normalize_stored_pattern_affine,
                                               normalize_stored_pattern_eps, core.kdim, "stored_pattern")
        self.norm_state_pattern = _layer_norm(normalize_state_pattern, normalize_state_pattern_affine,
                                              normalize_state_pattern_eps, input_size, "state_pattern")
        self.norm_pattern_projection = _layer_norm(normalize_pattern_projection, normalize_pattern_projection_affine,
                                                   normalize_pattern_projection_eps, core.vdim, "pattern_projection")
        if scaling is None:
            scaling = 1.0 if core.static_execution else 1.0 / math.sqrt(core.head_dim)
        self.__batch_first = batch_first
        # tensors (not parameters) become non-persistent buffers: they follow .to() but stay out of
        # the state dict, like hflayers' plain attributes; an nn.Parameter scaling is registered
        # under hflayers' (name-mangled) attribute name, so its state dicts load too.
        self._keep("_Hopfield__scaling", scaling)
        self._keep("_Hopfield__update_steps_max", update_steps_max)
        self._keep("_Hopfield__update_steps_eps", update_steps_eps)
        self.reset_parameters()

    def _keep(self, name: str, value) -> None:
        if isinstance(value, nn.Parameter) or not isinstance(value, Tensor):
            setattr(self, name, value)
        else:
            self.register_buffer(name, value, persistent=False)

    def reset_parameters(self) -> None:
        """Re-initialise the association core and the layer norms."""
        for module in (self.association_core, self.norm_stored_pattern, self.norm_state_pattern,
                       self.norm_pattern_projection):
            if module is not None:
                module.reset_parameters()

    # -- forward ----------------------------------------------------------------------------

    def _prepare(self, data: Patterns, stored_pattern_padding_mask, association_mask):
        """Normalised batch-first (stored, state, projection) and the masks."""
        stored, state, projection = _split_patterns(data)
        if not self.batch_first:
            stored, state, projection = (t.transpose(0, 1) for t in (stored, state, projection))
        _check_batches(stored, state, projection)
        _check_widths(self.association_core, stored, state, projection)
        same = stored is projection
        stored = _unshared(stored)
        projection = stored if same else _unshared(projection)
        if self.norm_stored_pattern is not None:
            stored = self.norm_stored_pattern(stored)
        if self.norm_state_pattern is not None:
            state = self.norm_state_pattern(state)
        if self.norm_pattern_projection is not None:
            projection = self.norm_pattern_projection(projection)
        core = self.association_core
        masks = build_masks(stored_pattern_padding_mask, association_mask, batch=state.shape[0],
                            heads=core.num_heads, queries=state.shape[1], patterns=stored.shape[1],
                            zero_pattern=core.add_zero_attn, device=state.device)
        return stored, state, projection, masks

    def _config(self):
        return dict(scaling=self.scaling, update_steps_max=self.update_steps_max,
                    update_steps_eps=self.update_steps_eps)

    def forward(self, input: Patterns, stored_pattern_padding_mask: Tensor | None = None,
                association_mask: Tensor | None = None) -> Tensor:
        """Hopfield association of ``input`` (see the class docstring) -> [B, L, output_size]."""
        stored, state, projection, masks = self._prepare(input, stored_pattern_padding_mask, association_mask)
        out = self.association_core(state, stored, projection, masks, **self._config())
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out if self.association_activation is None else self.association_activation(out)

    @torch.no_grad()
    def get_association_matrix(self, input: Patterns, stored_pattern_padding_mask: Tensor | None = None,
                               association_mask: Tensor | None = None) -> Tensor:
        """The association matrix ``xi [B, heads, L, S]`` (after the update iterations; materialised)."""
        stored, state, projection, masks = self._prepare(input, stored_pattern_padding_mask, association_mask)
        core, cfg = self.association_core, self._config()
        q, k, _ = core.project(state, stored, projection)
        q = assoc.iterate(q, k, cfg["scaling"], masks, cfg["update_steps_max"], cfg["update_steps_eps"])
        return assoc.association_matrix(q, k, cfg["scaling"], masks)

    @torch.no_grad()
    def get_projected_pattern_matrix(self, input: Patterns, stored_pattern_padding_mask: Tensor | None = None,
                                     association_mask: Tensor | None = None) -> Tensor:
        """The projected patterns ``[B, heads, S, pattern_size]`` that the association weighs."""
        stored, state, projection, _ = self._prepare(input, stored_pattern_padding_mask, association_mask)
        _, _, v = self.association_core.project(state, stored, projection)
        return v.expand(state.shape[0], self.association_core.num_heads, *v.shape[2:])

    # -- hflayers' properties ----------------------------------------------------------------

    @property
    def batch_first(self) -> bool:
        return self.__batch_first

    @property
    def scaling(self) -> float | Tensor:
        return self._Hopfield__scaling

    @property
    def update_steps_max(self) -> int | Tensor | None:
        return self._Hopfield__update_steps_max

    @property
    def update_steps_eps(self) -> float | Tensor:
        return self._Hopfield__update_steps_eps

    @property
    def stored_pattern_dim(self) -> int | None:
        return self.association_core.kdim

    @property
    def state_pattern_dim(self) -> int | None:
        return self.association_core.embed_dim

    @property
    def pattern_projection_dim(self) -> int | None:
        return self.association_core.vdim

    @property
    def input_size(self) -> int | None:
        return self.state_pattern_dim

    @property
    def hidden_size(self) -> int | None:
        return self.association_core.head_dim

    @property
    def output_size(self) -> int | None:
        return self.association_core.out_dim

    @property
    def pattern_size(self) -> int | None:
        return self.association_core.pattern_dim

    @property
    def stored_pattern_as_static(self) -> bool:
        return self.association_core.key_as_static

    @property
    def state_pattern_as_static(self) -> bool:
        return self.association_core.query_as_static

    @property
    def pattern_projection_as_static(self) -> bool:
        return self.association_core.value_as_static

    @property
    def normalize_stored_pattern(self) -> bool:
        return self.norm_stored_pattern is not None

    @property
    def normalize_stored_pattern_affine(self) -> bool:
        return self.normalize_stored_pattern and self.norm_stored_pattern.elementwise_affine

    @property
    def normalize_state_pattern(self) -> bool:
        return self.norm_state_pattern is not None

    @property
    def normalize_state_pattern_affine(self) -> bool:
        return self.normalize_state_pattern and self.norm_state_pattern.elementwise_affine

    @property
    def normalize_pattern_projection(self) -> bool:
        return self.norm_pattern_projection is not None

    @property
    def normalize_pattern_projection_affine(self) -> bool:
        return self.normalize_pattern_projection and self.norm_pattern_projection.elementwise_affine

    @property
    def normalize_hopfield_space(self) -> bool:
        return self.association_core.normalize_pattern

    @property
    def normalize_hopfield_space_affine(self) -> bool:
        return self.association_core.normalize_pattern_affine


def _split_patterns(data: Patterns) -> tuple[Tensor, Tensor, Tensor]:
    if isinstance(data, Tensor):
        return data, data, data
    if isinstance(data, (tuple, list)) and len(data) == 3 and all(isinstance(t, Tensor) for t in data):
        return data[0], data[1], data[2]
    raise TypeError("input must be one tensor (stored pattern = state pattern = pattern projection) or a tuple "
                    f"(stored_pattern, state_pattern, pattern_projection) of tensors, got {type(data).__name__}")


def _check_batches(stored: Tensor, state: Tensor, projection: Tensor) -> None:
    for name, t in (("stored_pattern", stored), ("state_pattern", state), ("pattern_projection", projection)):
        if t.ndim != 3:
            raise ValueError(f"{name} must have 3 dimensions ([batch, sequence, features] with batch_first=True), "
                             f"got shape {tuple(t.shape)}")
    if not stored.shape[0] == state.shape[0] == projection.shape[0]:
        raise ValueError(f"stored_pattern, state_pattern and pattern_projection must share the batch size, got "
                         f"{stored.shape[0]}, {state.shape[0]} and {projection.shape[0]}")
    if stored.shape[1] != projection.shape[1]:
        raise ValueError(f"stored_pattern and pattern_projection must hold the same number of patterns, got "
                         f"{stored.shape[1]} and {projection.shape[1]}")


def _check_widths(core: HopfieldCore, stored: Tensor, state: Tensor, projection: Tensor) -> None:
    """Feature widths against the configuration (static patterns are used at the association width)."""
    if core.static_execution:
        want = {"state_pattern": stored.shape[-1]}
    else:
        want = {"state_pattern": core.head_dim if core.query_as_static else core.embed_dim,
                "stored_pattern": core.head_dim if core.key_as_static else core.kdim}
        if not core.value_as_static or (core.value_as_connected and not core.key_as_static):
            want["pattern_projection"] = core.vdim
        elif not core.value_as_connected and not core.disable_out_projection:
            want["pattern_projection"] = core.pattern_dim
    got = {"stored_pattern": stored, "state_pattern": state, "pattern_projection": projection}
    for name, width in want.items():
        if got[name].shape[-1] != width:
            raise ValueError(f"{name} must have {width} features (last dimension) for this layer's configuration, "
                             f"got shape {tuple(got[name].shape)}")


def _unshared(t: Tensor) -> Tensor:
    """One batch row of a tensor expanded over the batch (stride 0): projected once, broadcast by the op."""
    return t[:1] if t.shape[0] > 1 and t.stride(0) == 0 else t


class _Wrapper(nn.Module):
    """Shared part of the pooling and lookup wrappers: a ``Hopfield`` and its properties."""

    hopfield: Hopfield

    def reset_parameters(self) -> None:
        raise NotImplementedError

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in _FORWARDED:
                return getattr(self.hopfield, name)
            raise

    @property
    def quantity(self) -> int:
        return self._quantity


_FORWARDED = frozenset({
    "batch_first", "scaling", "stored_pattern_dim", "state_pattern_dim", "pattern_projection_dim", "input_size",
    "hidden_size", "output_size", "pattern_size", "update_steps_max", "update_steps_eps", "stored_pattern_as_static",
    "state_pattern_as_static", "pattern_projection_as_static", "normalize_stored_pattern",
    "normalize_stored_pattern_affine", "normalize_state_pattern", "normalize_state_pattern_affine",
    "normalize_pattern_projection", "normalize_pattern_projection_affine", "normalize_hopfield_space",
    "normalize_hopfield_space_affine"})


def _hopfield_kwargs(local: dict) -> dict:
    names = ("input_size", "hidden_size", "output_size", "pattern_size", "num_heads", "scaling", "update_steps_max",
             "update_steps_eps", "normalize_stored_pattern", "normalize_stored_pattern_affine",
             "normalize_state_pattern", "normalize_state_pattern_affine", "normalize_pattern_projection",
             "normalize_pattern_projection_affine", "normalize_hopfield_space", "normalize_hopfield_space_affine",
             "stored_pattern_as_static", "state_pattern_as_static", "pattern_projection_as_static",
             "pattern_projection_as_connected", "stored_pattern_size", "pattern_projection_size", "batch_first",
             "association_activation", "dropout", "input_bias", "concat_bias_pattern", "add_zero_association",
             "disable_out_projection")
    return {name: local[name] for name in names}


def _quantity(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"quantity must be an int >= 1, got {value!r}")
    return value


def _expand(weights: Tensor, batch: int, batch_first: bool) -> Tensor:
    return weights.expand(batch, -1, -1) if batch_first else weights.expand(-1, batch, -1)


class HopfieldPooling(_Wrapper):
    """Pooling by a learned state pattern (hflayers' ``HopfieldPooling``): attention-MIL and the like.

    ``quantity`` trainable state patterns (``pooling_weights [1, quantity, input_size]``, or
    ``[quantity, 1, ...]`` with ``batch_first=False``) query the input's stored patterns; the
    result is flattened to [B, quantity * output_size]. ``input`` is one tensor (stored pattern
    = pattern projection) or a tuple ``(stored_pattern, pattern_projection)``. Other arguments
    as :class:`Hopfield`.
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, output_size: int | None = None,
                 pattern_size: int | None = None, num_heads: int = 1, scaling: float | Tensor | None = None,
                 update_steps_max: int | Tensor | None = 0, update_steps_eps: float | Tensor = 1e-4,
                 normalize_stored_pattern: bool = True, normalize_stored_pattern_affine: bool = True,
                 normalize_state_pattern: bool = True, normalize_state_pattern_affine: bool = True,
                 normalize_pattern_projection: bool = True, normalize_pattern_projection_affine: bool = True,
                 normalize_hopfield_space: bool = False, normalize_hopfield_space_affine: bool = False,
                 stored_pattern_as_static: bool = False, state_pattern_as_static: bool = False,
                 pattern_projection_as_static: bool = False, pattern_projection_as_connected: bool = False,
                 stored_pattern_size: int | None = None, pattern_projection_size: int | None = None,
                 batch_first: bool = True, association_activation: str | None = None, dropout: float = 0.0,
                 input_bias: bool = True, concat_bias_pattern: bool = False, add_zero_association: bool = False,
                 disable_out_projection: bool = False, quantity: int = 1, trainable: bool = True) -> None:
        super().__init__()
        self.hopfield = Hopfield(**_hopfield_kwargs(locals()))
        self._quantity = _quantity(quantity)
        size = self.hopfield.hidden_size if state_pattern_as_static else self.hopfield.input_size
        shape = (1, quantity) if batch_first else (quantity, 1)
        self.pooling_weights = nn.Parameter(torch.empty(*shape, input_size if size is None else size),
                                            requires_grad=trainable)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the Hopfield layer and the pooling weights (N(0, 0.02))."""
        self.hopfield.reset_parameters()
        nn.init.normal_(self.pooling_weights, mean=0.0, std=0.02)

    def _prepare_input(self, input: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        if isinstance(input, Tensor):
            stored, projection = input, input
        elif isinstance(input, (tuple, list)) and len(input) == 2 and all(isinstance(t, Tensor) for t in input):
            stored, projection = input
        else:
            raise TypeError("input must be one tensor (stored pattern = pattern projection) or a tuple "
                            f"(stored_pattern, pattern_projection), got {type(input).__name__}")
        if stored.ndim != 3:
            raise ValueError(f"input must have 3 dimensions, got shape {tuple(stored.shape)}")
        batch = stored.shape[0 if self.batch_first else 1]
        return stored, _expand(self.pooling_weights, batch, self.batch_first), projection

    def forward(self, input: Tensor | tuple[Tensor, Tensor], stored_pattern_padding_mask: Tensor | None = None,
                association_mask: Tensor | None = None) -> Tensor:
        """Pool ``input [B, S, E]`` (batch first) -> [B, quantity * output_size]."""
        return self.hopfield(self._prepare_input(input), stored_pattern_padding_mask=stored_pattern_padding_mask,
                             association_mask=association_mask).flatten(start_dim=1)

    def get_association_matrix(self, input, stored_pattern_padding_mask=None, association_mask=None) -> Tensor:
        """Attention of the pooling patterns over the input's instances ``[B, heads, quantity, S]``."""
        return self.hopfield.get_association_matrix(self._prepare_input(input), stored_pattern_padding_mask,
                                                    association_mask)

    def get_projected_pattern_matrix(self, input, stored_pattern_padding_mask=None, association_mask=None) -> Tensor:
        return self.hopfield.get_projected_pattern_matrix(self._prepare_input(input), stored_pattern_padding_mask,
                                                          association_mask)


class HopfieldLayer(_Wrapper):
    """Lookup in learned stored patterns (hflayers' ``HopfieldLayer``).

    ``quantity`` trainable stored patterns (``lookup_weights``; with
    ``lookup_weights_as_separated`` separate ``target_weights`` serve as pattern projection)
    are retrieved by the input state patterns [B, L, input_size]. The learned patterns are
    projected once per call and shared by the whole batch (never copied per sample). Other
    arguments as :class:`Hopfield`.
    """

    def __init__(self, input_size: int, hidden_size: int | None = None, output_size: int | None = None,
                 pattern_size: int | None = None, num_heads: int = 1, scaling: float | Tensor | None = None,
                 update_steps_max: int | Tensor | None = 0, update_steps_eps: float | Tensor = 1e-4,
                 lookup_weights_as_separated: bool = False, lookup_targets_as_trainable: bool = True,
                 normalize_stored_pattern: bool = True, normalize_stored_pattern_affine: bool = True,
                 normalize_state_pattern: bool = True, normalize_state_pattern_affine: bool = True,
                 normalize_pattern_projection: bool = True, normalize_pattern_projection_affine: bool = True,
                 normalize_hopfield_space: bool = False, normalize_hopfield_space_affine: bool = False,
                 stored_pattern_as_static: bool = False, state_pattern_as_static: bool = False,
                 pattern_projection_as_static: bool = False, pattern_projection_as_connected: bool = False,
                 stored_pattern_size: int | None = None, pattern_projection_size: int | None = None,
                 batch_first: bool = True, association_activation: str | None = None, dropout: float = 0.0,
                 input_bias: bool = True, concat_bias_pattern: bool = False, add_zero_association: bool = False,
                 disable_out_projection: bool = False, quantity: int = 1, trainable: bool = True) -> None:
        super().__init__()
        self.hopfield = Hopfield(**_hopfield_kwargs(locals()))
        self._quantity = _quantity(quantity)
        size = self.hopfield.hidden_size if stored_pattern_as_static else self.hopfield.stored_pattern_dim
        size = input_size if size is None else size
        shape = (1, quantity) if batch_first else (quantity, 1)
        self.lookup_weights = nn.Parameter(torch.empty(*shape, size), requires_grad=trainable)
        if lookup_weights_as_separated:
            target = size if pattern_projection_size is None else pattern_projection_size
            self.target_weights = nn.Parameter(torch.empty(*shape, target), requires_grad=lookup_targets_as_trainable)
        else:
            self.register_parameter("target_weights", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the Hopfield layer and the lookup (and target) weights (N(0, 0.02))."""
        self.hopfield.reset_parameters()
        nn.init.normal_(self.lookup_weights, mean=0.0, std=0.02)
        if self.target_weights is not None:
            nn.init.normal_(self.target_weights, mean=0.0, std=0.02)

    def _prepare_input(self, input: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a tensor of state patterns, got {type(input).__name__}")
        if input.ndim != 3:
            raise ValueError(f"input must have 3 dimensions, got shape {tuple(input.shape)}")
        batch = input.shape[0 if self.batch_first else 1]
        stored = _expand(self.lookup_weights, batch, self.batch_first)
        targets = stored if self.target_weights is None else _expand(self.target_weights, batch, self.batch_first)
        return stored, input, targets

    def forward(self, input: Tensor, stored_pattern_padding_mask: Tensor | None = None,
                association_mask: Tensor | None = None) -> Tensor:
        """Look up ``input [B, L, input_size]`` (batch first) -> [B, L, output_size]."""
        return self.hopfield(self._prepare_input(input), stored_pattern_padding_mask=stored_pattern_padding_mask,
                             association_mask=association_mask)

    def get_association_matrix(self, input, stored_pattern_padding_mask=None, association_mask=None) -> Tensor:
        return self.hopfield.get_association_matrix(self._prepare_input(input), stored_pattern_padding_mask,
                                                    association_mask)

    def get_projected_pattern_matrix(self, input, stored_pattern_padding_mask=None, association_mask=None) -> Tensor:
        return self.hopfield.get_projected_pattern_matrix(self._prepare_input(input), stored_pattern_padding_mask,
                                                          association_mask)
