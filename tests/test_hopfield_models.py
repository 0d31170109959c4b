"""Hopfield models: classical, dense (against a brute-force per-bit loop), modern, the layer,
persistence and the demo section."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnemonix import _io, reference
from mnemonix.hopfield import ClassicalHopfield, DenseHopfield, HopfieldRetrieval, ModernHopfield


def bipolar(rng, *shape):
    return torch.randint(0, 2, shape, generator=rng).float() * 2 - 1


def flip_bits(x, count, rng):
    out = x.clone()
    for row in out:
        idx = torch.randperm(x.shape[-1], generator=rng)[:count]
        row[idx] = -row[idx]
    return out


# -- classical --------------------------------------------------------------------------------

def test_classical_weights_and_recall(rng):
    n, p = 100, 5
    x = bipolar(rng, p, n)
    net = ClassicalHopfield(x)
    w = net.weights
    torch.testing.assert_close(w, w.T)
    assert (w.diagonal() == 0).all()
    expected = sum(torch.outer(xi, xi) for xi in x) / n
    expected.fill_diagonal_(0)
    torch.testing.assert_close(w, expected)
    cues = flip_bits(x, 8, rng)
    res = net.retrieve(cues)
    assert (res.states == x).all(), "5 random patterns in 100 neurons (0.05 n) must be recalled"
    assert res.converged.all()
    assert (res.energy <= net.energy(cues)).all()
    # add() accumulates the same Hebbian sum
    net2 = ClassicalHopfield(x[:2]).add(x[2:])
    torch.testing.assert_close(net2.weights, w)
    assert net2.num_patterns == p


def test_classical_synchronous_update_matches_loop(rng):
    x = bipolar(rng, 6, 20)
    net = ClassicalHopfield(x, max_iter=1)
    cues = bipolar(rng, 7, 20)
    res = net.retrieve(cues)
    hebb = x.T @ x  # n * W, integer-valued: exact zeros of the field stay zero
    hebb.fill_diagonal_(0)
    for cue, state in zip(cues, res.states):
        field = hebb @ cue
        expected = torch.where(field > 0, 1.0, torch.where(field < 0, -1.0, cue))
        assert (state == expected).all()


def test_classical_errors_and_persistence(rng, tmp_path):
    with pytest.raises(ValueError, match="patterns"):
        ClassicalHopfield(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="patterns"):
        ClassicalHopfield(torch.ones(3))
    with pytest.raises(ValueError, match="max_iter"):
        ClassicalHopfield(max_iter=0)
    x = bipolar(rng, 3, 16)
    net = ClassicalHopfield(x, max_iter=7)
    with pytest.raises(ValueError, match="cues"):
        net.retrieve(torch.ones(2, 15))
    with pytest.raises(ValueError, match="patterns"):
        net.add(torch.ones(1, 15))
    before = net.weights.clone()
    with pytest.raises(ValueError):
        net.add(torch.zeros(1, 16))
    assert torch.equal(net.weights, before), "a failed add must leave the network unchanged"
    net.save(tmp_path / "c.npz")
    back = ClassicalHopfield.load(tmp_path / "c.npz")
    assert torch.equal(back.weights, net.weights) and back.max_iter == 7 and back.num_patterns == 3
    with pytest.raises(_io.FormatError):
        DenseHopfield.load(tmp_path / "c.npz")


# -- dense ------------------------------------------------------------------------------------

def brute_force_sweeps(net: DenseHopfield, cues: torch.Tensor, sweeps: int) -> torch.Tensor:
    """The research code's loop: for each bit, compute the energy with and without the flip."""
    xi = net.patterns.double()

    def energy_terms(s):
        o = xi @ s
        return torch.exp(o) if net.interaction == "exponential" else o**net.degree

    out = []
    for cue in cues.double():
        s = cue.clone()
        for _ in range(sweeps):
            changed = False
            for j in range(s.shape[0]):
                e_now = -energy_terms(s).sum()
                flipped = s.clone()
                flipped[j] = -flipped[j]
                e_flip = -energy_terms(flipped).sum()
                if e_flip - e_now < -DenseHopfield.TIE_TOLERANCE * energy_terms(s).abs().sum():
                    s, changed = flipped, True
            if not changed:
                break
        out.append(s.float())
    return torch.stack(out)


@pytest.mark.parametrize("interaction, degree", [("polynomial", 3), ("polynomial", 4), ("exponential", 1)])
def test_dense_sequential_matches_brute_force(interaction, degree, rng):
    n, p, b = 24, 9, 12
    x = bipolar(rng, p, n)
    net = DenseHopfield(x, interaction=interaction, degree=degree, max_iter=6)
    cues = bipolar(rng, b, n)
    res = net.retrieve(cues)
    expected = brute_force_sweeps(net, cues, 6)
    assert torch.equal(res.states, expected)
    assert (res.energy <= net.energy(cues) + 1e-9).all()


@pytest.mark.parametrize("interaction", ["polynomial", "exponential"])
def test_dense_flip_energy_changes_match_recomputation(interaction, rng):
    n, p = 20, 7
    x = bipolar(rng, p, n)
    net = DenseHopfield(x, interaction=interaction, degree=3)
    s = bipolar(rng, 5, n)
    deltas = net.flip_energy_changes(s)
    o = (s.double() @ x.double().T)
    if interaction == "exponential":
        scale = torch.exp(-o.amax(-1))
    else:
        scale = (o.abs().amax(-1) + 2.0) ** -3
    for j in range(n):
        flipped = s.clone()
        flipped[:, j] = -flipped[:, j]
        brute = (net.energy(flipped) - net.energy(s)) * scale
        torch.testing.assert_close(deltas[:, j], brute, rtol=1e-9, atol=1e-9)


def test_dense_polynomial_of_huge_degree_still_flips_bits(rng):
    """degree 200 on 400 neurons: o^200 overflows float64; the scaled dynamics still retrieve."""
    n, p = 400, 30
    x = bipolar(rng, p, n)
    net = DenseHopfield(x, interaction="polynomial", degree=200, max_iter=3)
    cues = x[:4].clone()
    flip = torch.rand(4, n, generator=rng) < 0.15
    cues[flip] = -cues[flip]
    with pytest.warns(RuntimeWarning, match="float64 range"):
        res = net.retrieve(cues)
    assert (res.steps > 0).all()  # bits did flip
    assert torch.equal(res.states, x[:4]) and res.converged.all()


def test_stored_patterns_are_copies(rng):
    x = torch.randn(20, 8, generator=rng)
    net = ModernHopfield(x.clone(), beta=4.0)
    keep = net.patterns.clone()
    y = x.clone()
    net.store(y)
    y.zero_()
    torch.testing.assert_close(net.patterns, x)
    b = bipolar(rng, 5, 16)
    dense = DenseHopfield(b)
    b.neg_()
    assert torch.equal(dense.patterns, -b)
    assert keep.shape == x.shape


def test_modern_retrieve_of_no_queries_and_argument_names(rng):
    net = ModernHopfield(torch.randn(30, 8, generator=rng), beta=2.0)
    res = net.retrieve(torch.empty(0, 8))
    assert res.states.shape == (0, 8) and res.nearest.shape == (0,) and res.energy.shape == (0,)
    with pytest.raises(ValueError, match="states must be finite"):
        net.energy(torch.full((2, 8), float("nan")))
    with pytest.raises(TypeError, match="queries must have the stored patterns' dtype"):
        net.retrieve(torch.randn(2, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="queries must have last dimension"):
        net.retrieve(torch.randn(2, 5))


def test_dense_recall_beyond_classical_capacity(rng):
    n, p = 64, 40  # 0.6 n patterns: far beyond the classical 0.14 n
    x = bipolar(rng, p, n)
    cues = flip_bits(x, 6, rng)
    dense = DenseHopfield(x, interaction="exponential").retrieve(cues)
    assert (dense.states == x).all(-1).float().mean() == 1.0
    sync = DenseHopfield(x, interaction="exponential", update="synchronous").retrieve(cues)
    assert (sync.states == x).all(-1).float().mean() >= 0.9
    classical = ClassicalHopfield(x).retrieve(cues)
    assert (classical.states == x).all(-1).float().mean() < 0.5


def test_dense_errors_and_persistence(rng, tmp_path):
    with pytest.raises(ValueError, match="interaction"):
        DenseHopfield(interaction="cubic")
    with pytest.raises(ValueError, match="update"):
        DenseHopfield(update="random")
    with pytest.raises(ValueError, match="degree"):
        DenseHopfield(degree=0)
    with pytest.raises(ValueError, match="patterns"):
        DenseHopfield(torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="no patterns"):
        DenseHopfield().retrieve(torch.ones(1, 3))
    x = bipolar(rng, 4, 12)
    net = DenseHopfield(x, interaction="polynomial", degree=5, update="synchronous", max_iter=3)
    net.save(tmp_path / "d.npz")
    back = DenseHopfield.load(tmp_path / "d.npz")
    assert torch.equal(back.patterns, x)
    assert (back.interaction, back.degree, back.update, back.max_iter) == ("polynomial", 5, "synchronous", 3)
    raw = bytearray((tmp_path / "d.npz").read_bytes())
    raw[-30] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(_io.FormatError):
        DenseHopfield.load(tmp_path / "bad.npz")


# -- modern -------------------------------------------------------------------------------------

def test_modern_retrieval_energy_and_persistence(rng, tmp_path):
    n, d = 50, 32
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=rng), dim=1) * 4
    net = ModernHopfield(x, beta=4.0, max_iter=3)
    q = x[:10] + 0.3 * torch.randn(10, d, generator=rng)
    res = net.retrieve(q, batch_size=4)
    assert (res.nearest == torch.arange(10)).all()
    ref = reference.hopfield_retrieve(q, x, beta=4.0, update_steps=2)
    torch.testing.assert_close(res.states, ref, atol=1e-4, rtol=1e-4)
    assert (res.energy <= net.energy(q) + 1e-5).all(), "the update must not raise the energy"
    net.save(tmp_path / "m.npz")
    back = ModernHopfield.load(tmp_path / "m.npz")
    torch.testing.assert_close(back.retrieve(q).states, res.states)


def test_hopfield_retrieval_layer(rng):
    layer = HopfieldRetrieval(beta=0.5)
    q = torch.randn(2, 3, 8, generator=rng, requires_grad=True)
    k = torch.randn(20, 8, generator=rng)
    v = torch.randn(20, 4, generator=rng)
    out = layer(q, k, v)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out, reference.hopfield_retrieve(q.detach(), k, v, beta=0.5), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()

    learned = HopfieldRetrieval(beta=2.0, learn_beta=True)
    assert math.isclose(learned.beta, 2.0, rel_tol=1e-6)
    out = learned(q.detach(), k, v, mask=torch.arange(20) < 10)
    torch.testing.assert_close(out, reference.hopfield_retrieve(q.detach(), k, v, beta=2.0,
                                                                mask=torch.arange(20) < 10), atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    assert learned.log_beta.grad is not None and learned.log_beta.grad != 0
    assert "learn_beta=True" in repr(learned)
    with pytest.raises(ValueError, match="learn_beta"):
        HopfieldRetrieval(learn_beta=True, update_steps=2)
    iterating = HopfieldRetrieval(beta=1.0, update_steps=3)
    torch.testing.assert_close(iterating(q.detach(), k),
                               reference.hopfield_retrieve(q.detach(), k, beta=1.0, update_steps=3),
                               atol=1e-4, rtol=1e-4)
    assert "log_beta" in dict(iterating.named_buffers())


# -- demo ---------------------------------------------------------------------------------------

def test_demo_section_quick(tmp_path, capsys):
    from mnemonix.commands.demo import DemoContext
    from mnemonix.commands.hopfield import demo_section

    ctx = DemoContext(out_dir=tmp_path, quick=True, seed=1)
    demo_section(ctx)
    text = capsys.readouterr().out
    for word in ("classical", "dense", "modern", "noise", "half", "recall acc"):
        assert word in text
    assert ctx.figures and ctx.figures[0].exists() and ctx.figures[0].stat().st_size > 1000
    rows = [line.split() for line in text.splitlines() if line.strip().startswith("noise") and "modern" in line]
    assert float(rows[0][-3]) >= 0.8, "modern Hopfield must recall most noisy digits"
    assert np.isfinite(float(rows[0][-1]))


def _rewrite(path, fmt, arrays, meta):
    """A file whose checksum is valid but whose content is not a valid network."""
    from mnemonix import _io

    _io.save_arrays(path, arrays, format=fmt, version=1, meta=meta)


@pytest.mark.parametrize("field, arrays, meta", [
    ("beta", {"patterns": np.ones((3, 4), np.float32)}, {"beta": -1.0, "max_iter": 1, "eps": 1e-4}),
    ("max_iter", {"patterns": np.ones((3, 4), np.float32)}, {"beta": 1.0, "max_iter": 1.5, "eps": 1e-4}),
    ("patterns", {"patterns": np.full((3, 4), np.nan, np.float32)}, {"beta": 1.0, "max_iter": 1, "eps": 1e-4}),
    ("patterns", {"patterns": np.ones((3,), np.float32)}, {"beta": 1.0, "max_iter": 1, "eps": 1e-4}),
    ("patterns", {}, {"beta": 1.0, "max_iter": 1, "eps": 1e-4}),
    ("dtype", {"patterns": np.ones((3, 4), np.float32)}, {"beta": 1.0, "max_iter": 1, "eps": 1e-4, "dtype": "os"}),
    ("eps", {"patterns": np.ones((3, 4), np.float32)}, {"beta": 1.0, "max_iter": 1}),
])
def test_modern_load_validates_every_field(tmp_path, field, arrays, meta):
    from mnemonix._io import FormatError

    path = tmp_path / "bad.npz"
    _rewrite(path, "mnemonix.ModernHopfield", arrays, meta)
    with pytest.raises(FormatError, match=field):
        ModernHopfield.load(path)


def test_binary_loads_validate_their_invariants(tmp_path):
    from mnemonix._io import FormatError

    path = tmp_path / "bad.npz"
    w = np.array([[0, 1], [2, 0]], np.float32)  # not symmetric
    _rewrite(path, "mnemonix.ClassicalHopfield", {"hebbian_sum": w}, {"max_iter": 3, "num_patterns": 2})
    with pytest.raises(FormatError, match="hebbian_sum"):
        ClassicalHopfield.load(path)
    _rewrite(path, "mnemonix.DenseHopfield", {"patterns": np.full((2, 3), 2, np.int8)},
             {"interaction": "polynomial", "degree": 3, "update": "sequential", "max_iter": 2})
    with pytest.raises(FormatError, match="patterns"):
        DenseHopfield.load(path)
    _rewrite(path, "mnemonix.DenseHopfield", {"patterns": np.ones((2, 3), np.int8)},
             {"interaction": "cubic", "degree": 3, "update": "sequential", "max_iter": 2})
    with pytest.raises(FormatError, match="interaction"):
        DenseHopfield.load(path)


def test_load_returns_to_the_saved_device_type(rng, tmp_path):
    net = ModernHopfield(torch.randn(5, 3, generator=rng))
    net.save(tmp_path / "m.npz")
    assert ModernHopfield.load(tmp_path / "m.npz").patterns.device.type == "cpu"
    assert ModernHopfield.load(tmp_path / "m.npz", device="cpu").patterns.device.type == "cpu"


def test_binary_networks_keep_their_old_import_path_pickles_and_files(rng, tmp_path):
    """The binary networks live in mnemonix.binary_hopfield; mnemonix.hopfield re-exports them, so
    imports, pickles written before the move (naming mnemonix.hopfield) and saved files still load."""
    import pickle

    from mnemonix import binary_hopfield, hopfield

    for name in ("BinaryRetrieval", "ClassicalHopfield", "DenseHopfield"):
        assert getattr(hopfield, name) is getattr(binary_hopfield, name)
        assert name in hopfield.__all__
    x = bipolar(rng, 3, 12)
    for net in (ClassicalHopfield(x), DenseHopfield(x, interaction="polynomial")):
        old = pickle.dumps(net, protocol=0).replace(b"mnemonix.binary_hopfield\n", b"mnemonix.hopfield\n")
        assert b"mnemonix.binary_hopfield" not in old
        back = pickle.loads(old)
        assert type(back) is type(net)
        torch.testing.assert_close(back.retrieve(x).states, net.retrieve(x).states, rtol=0, atol=0)
        path = tmp_path / f"{type(net).__name__}.npz"
        net.save(path)
        torch.testing.assert_close(type(net).load(path).retrieve(x).energy, net.retrieve(x).energy, rtol=0, atol=0)
