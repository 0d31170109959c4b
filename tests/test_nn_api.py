"""mnemonix.nn beyond the math: hflayers' parameter layout, state dicts, properties, transformer
containers, torch.compile, dropout, errors, and a GPU training run (marked ``gpu``)."""

from __future__ import annotations

import pytest
import torch

from mnemonix import nn as mnn

# hflayers 1.0.2's state-dict layout (names and shapes) for a few configurations
LAYOUTS = [
    (mnn.Hopfield, dict(input_size=8), {
        "association_core.in_proj_weight": (24, 8), "association_core.in_proj_bias": (24,),
        "association_core.out_proj.weight": (8, 8), "association_core.out_proj.bias": (8,),
        "norm_stored_pattern.weight": (8,), "norm_stored_pattern.bias": (8,), "norm_state_pattern.weight": (8,),
        "norm_state_pattern.bias": (8,), "norm_pattern_projection.weight": (8,),
        "norm_pattern_projection.bias": (8,)}),
    (mnn.Hopfield, dict(input_size=8, stored_pattern_size=6, normalize_hopfield_space=True,
                        normalize_hopfield_space_affine=True, hidden_size=4, num_heads=2), {
        "association_core.p_norm_weight": (4,), "association_core.p_norm_bias": (4,),
        "association_core.q_proj_weight": (8, 8), "association_core.k_proj_weight": (8, 6),
        "association_core.v_proj_weight": (8, 8), "association_core.in_proj_bias": (24,),
        "association_core.out_proj.weight": (8, 8), "association_core.out_proj.bias": (8,),
        "norm_stored_pattern.weight": (6,), "norm_stored_pattern.bias": (6,), "norm_state_pattern.weight": (8,),
        "norm_state_pattern.bias": (8,), "norm_pattern_projection.weight": (8,),
        "norm_pattern_projection.bias": (8,)}),
    (mnn.Hopfield, dict(input_size=8, pattern_projection_as_connected=True, num_heads=2, input_bias=False), {
        "association_core.q_proj_weight": (8, 8), "association_core.k_proj_weight": (8, 8),
        "association_core.v_proj_weight": (8, 8), "association_core.out_proj.weight": (8, 8),
        "norm_stored_pattern.weight": (8,), "norm_stored_pattern.bias": (8,), "norm_state_pattern.weight": (8,),
        "norm_state_pattern.bias": (8,), "norm_pattern_projection.weight": (8,),
        "norm_pattern_projection.bias": (8,)}),
    (mnn.HopfieldPooling, dict(input_size=8, quantity=3, num_heads=2, batch_first=False), {
        "pooling_weights": (3, 1, 8), "hopfield.association_core.in_proj_weight": (24, 8),
        "hopfield.association_core.in_proj_bias": (24,), "hopfield.association_core.out_proj.weight": (8, 8),
        "hopfield.association_core.out_proj.bias": (8,), "hopfield.norm_stored_pattern.weight": (8,),
        "hopfield.norm_stored_pattern.bias": (8,), "hopfield.norm_state_pattern.weight": (8,),
        "hopfield.norm_state_pattern.bias": (8,), "hopfield.norm_pattern_projection.weight": (8,),
        "hopfield.norm_pattern_projection.bias": (8,)}),
    (mnn.HopfieldLayer, dict(input_size=8, quantity=5, lookup_weights_as_separated=True, pattern_projection_size=6), {
        "lookup_weights": (1, 5, 8), "target_weights": (1, 5, 6), "hopfield.association_core.q_proj_weight": (8, 8),
        "hopfield.association_core.k_proj_weight": (8, 8), "hopfield.association_core.v_proj_weight": (8, 6),
        "hopfield.association_core.in_proj_bias": (24,), "hopfield.association_core.out_proj.weight": (8, 8),
        "hopfield.association_core.out_proj.bias": (8,), "hopfield.norm_stored_pattern.weight": (8,),
        "hopfield.norm_stored_pattern.bias": (8,), "hopfield.norm_state_pattern.weight": (8,),
        "hopfield.norm_state_pattern.bias": (8,), "hopfield.norm_pattern_projection.weight": (6,),
        "hopfield.norm_pattern_projection.bias": (6,)}),
]


@pytest.mark.parametrize("cls, cfg, layout", LAYOUTS)
def test_state_dict_layout_and_round_trip(cls, cfg, layout, rng):
    layer = cls(**cfg)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == layout
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=rng))
    other = cls(**cfg)
    other.load_state_dict(layer.state_dict(), strict=True)
    x = torch.randn(4, 6, 8, generator=rng)
    data = x if cfg.get("stored_pattern_size") is None else (torch.randn(4, 6, 6, generator=rng), x, x)
    torch.testing.assert_close(other.eval()(data), layer.eval()(data))


def test_learned_scaling_is_a_parameter_under_hflayers_name(rng):
    scaling = torch.nn.Parameter(torch.tensor([0.5, 0.8]))
    layer = mnn.Hopfield(input_size=8, num_heads=2, scaling=scaling)
    assert "_Hopfield__scaling" in layer.state_dict()
    layer(torch.randn(2, 5, 8, generator=rng)).square().sum().backward()
    assert scaling.grad is not None and bool((scaling.grad != 0).all())
    fixed = mnn.Hopfield(input_size=8, num_heads=2, scaling=torch.tensor([0.5, 0.8]))
    assert "_Hopfield__scaling" not in fixed.state_dict()  # a plain tensor: as hflayers, not saved
    assert fixed.scaling.shape == (2,)


def test_properties_including_the_ones_hflayers_breaks():
    layer = mnn.Hopfield(input_size=12, num_heads=3, normalize_hopfield_space=True)
    assert layer.normalize_hopfield_space and not layer.normalize_hopfield_space_affine
    assert (layer.input_size, layer.hidden_size, layer.pattern_size, layer.output_size) == (12, 4, 4, 12)
    assert layer.normalize_state_pattern and layer.normalize_state_pattern_affine and layer.batch_first
    assert layer.scaling == pytest.approx(0.5) and layer.update_steps_max == 0
    pool = mnn.HopfieldPooling(input_size=12, quantity=2, normalize_hopfield_space=True)
    assert pool.normalize_hopfield_space and pool.quantity == 2 and pool.hidden_size == 12
    lookup = mnn.HopfieldLayer(input_size=12, quantity=7)
    assert lookup.quantity == 7 and lookup.stored_pattern_dim == 12


def test_encoder_and_decoder_sit_in_torch_transformer_containers(rng):
    enc = mnn.HopfieldEncoderLayer(mnn.Hopfield(input_size=8, num_heads=2), dim_feedforward=16, dropout=0.0)
    stack = torch.nn.TransformerEncoder(enc, num_layers=2, enable_nested_tensor=False).eval()
    x = torch.randn(3, 6, 8, generator=rng)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[:, -2:] = True
    out = stack(x, src_key_padding_mask=pad)
    manual = stack.layers[1](stack.layers[0](x, src_key_padding_mask=pad), src_key_padding_mask=pad)
    torch.testing.assert_close(out, manual)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6)
    torch.testing.assert_close(stack(x, mask=causal, is_causal=True), stack(x, mask=causal))
    first = stack.layers[0]
    torch.testing.assert_close(first(x, is_causal=True), first(x, src_mask=causal.isinf()))
    dec = mnn.HopfieldDecoderLayer(mnn.Hopfield(input_size=8, num_heads=2), mnn.Hopfield(input_size=8),
                                   dim_feedforward=16, dropout=0.0)
    decoder = torch.nn.TransformerDecoder(dec, num_layers=2).eval()
    memory = torch.randn(3, 4, 8, generator=rng)
    assert decoder(x, memory, tgt_mask=causal, tgt_is_causal=True).shape == (3, 6, 8)
    assert enc.output_size == 8 and dec.output_size == 8 and dec.self_attn is dec.hopfield_association_self


def test_compile_fullgraph_model_with_every_layer(rng):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = mnn.HopfieldEncoderLayer(mnn.Hopfield(input_size=8, num_heads=2), dim_feedforward=16,
                                                dropout=0.0)
            self.lookup = mnn.HopfieldLayer(input_size=8, quantity=5, update_steps_max=2)
            self.pool = mnn.HopfieldPooling(input_size=8, num_heads=2, quantity=2)
            self.head = torch.nn.Linear(16, 1)

        def forward(self, x, pad):
            h = self.lookup(self.enc(x, src_key_padding_mask=pad))
            return self.head(self.pool(h, stored_pattern_padding_mask=pad)).square().sum()

    model = Model()
    x = torch.randn(3, 6, 8, generator=rng)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[0, -1] = True
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss = compiled(x, pad)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    eager = model(x, pad)
    eager.backward()
    torch.testing.assert_close(loss, eager, atol=1e-6, rtol=1e-5)
    for name, p in model.named_parameters():
        want = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(grads.get(name, torch.zeros_like(p)), want, atol=1e-6, rtol=1e-5, msg=name)


def test_dropout_acts_on_the_association_matrix_in_training_only(rng):
    layer = mnn.Hopfield(input_size=8, num_heads=2, dropout=0.5)
    x = torch.randn(2, 9, 8, generator=rng)
    evaluated = layer.eval()(x)
    torch.manual_seed(0)
    a = layer.train()(x)
    torch.manual_seed(0)
    b = layer(x)
    torch.manual_seed(1)
    c = layer(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, evaluated) and not torch.allclose(a, c)
    a.sum().backward()
    assert all(p.grad is not None for p in layer.association_core.parameters())


def test_concat_bias_pattern_warns_and_matches_hflayers_layout():
    with pytest.warns(UserWarning, match="bias_k"):
        layer = mnn.Hopfield(input_size=8, concat_bias_pattern=True)
    assert layer.association_core.bias_k.shape == (1, 1, 8)


@pytest.mark.parametrize("make, match, exc", [
    (lambda: mnn.Hopfield(input_size=10, num_heads=3), "divisible by num_heads", ValueError),
    (lambda: mnn.Hopfield(input_size=8, num_heads=0), "num_heads", ValueError),
    (lambda: mnn.Hopfield(input_size=8, dropout=1.0), "dropout", ValueError),
    (lambda: mnn.Hopfield(input_size=8, batch_first=1), "batch_first", TypeError),
    (lambda: mnn.Hopfield(input_size=8, association_activation="nope"), "association_activation", ValueError),
    (lambda: mnn.Hopfield(), "input_size", ValueError),
    (lambda: mnn.Hopfield(input_size=8, stored_pattern_size=6, pattern_projection_as_connected=True),
     "pattern_projection_as_connected", ValueError),
    (lambda: mnn.HopfieldPooling(input_size=8, quantity=0), "quantity", ValueError),
    (lambda: mnn.HopfieldEncoderLayer(torch.nn.Linear(8, 8)), "hopfield_association", TypeError),
])
def test_constructor_errors(make, match, exc):
    with pytest.raises(exc, match=match):
        make()


def test_forward_errors_name_the_argument(rng):
    layer = mnn.Hopfield(input_size=8, num_heads=2)
    x = torch.randn(2, 5, 8, generator=rng)
    cases = [
        (dict(input=torch.randn(2, 5, 7)), ValueError, "8"),                          # wrong feature width
        (dict(input=torch.randn(5, 8)), ValueError, "3 dimensions"),
        (dict(input=(x, x)), TypeError, "tuple"),
        (dict(input=(x, torch.randn(3, 5, 8), x)), ValueError, "batch size"),
        (dict(stored_pattern_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError,
         "stored_pattern_padding_mask"),
        (dict(stored_pattern_padding_mask=torch.zeros(2, 5, dtype=torch.int64)), TypeError,
         "stored_pattern_padding_mask"),
        (dict(association_mask=torch.zeros(5, 4, dtype=torch.bool)), ValueError, "association_mask"),
        (dict(association_mask=torch.zeros(3, 5, 5, dtype=torch.bool)), ValueError, "association_mask"),
        (dict(stored_pattern_padding_mask=torch.ones(2, 5, dtype=torch.bool)), ValueError, "mask"),
    ]
    for kwargs, exc, match in cases:
        args = {"input": x, **kwargs}
        with pytest.raises(exc, match=match):
            layer(args.pop("input"), **args)
    with pytest.raises(ValueError, match="one entry per head"):
        mnn.Hopfield(input_size=8, num_heads=2, update_steps_max=torch.tensor([1, 2, 3]))(x)


@pytest.mark.gpu
def test_gpu_training_pooling_learns():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = torch.nn.Sequential()
    pool = mnn.HopfieldPooling(input_size=32, num_heads=4, quantity=1).to(dev)
    head = torch.nn.Linear(32, 1).to(dev)
    bags = torch.randn(64, 200, 32, device=dev)
    labels = (torch.rand(64, device=dev) < 0.5).float()
    bags[labels.bool(), 0] += 3.0  # positive bags hold one shifted instance
    opt = torch.optim.Adam([*pool.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(pool(bags))[:, 0], labels)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(p.grad.device.type == "cuda" for p in pool.parameters())
    assert losses[-1] < 0.5 * losses[0]
    del model
