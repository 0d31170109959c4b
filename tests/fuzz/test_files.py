"""File fuzzing of every model format saved through ``mnemonix._io`` (see ``files.py``).

The container itself (arbitrary arrays) is fuzzed by ``tests/test_io_fuzz.py``, the VAE format
by ``tests/test_consolidation_format.py``; here each model's own loader meets its own files
damaged: every section boundary truncated, 150 random byte flips (``-m slow``: 2000), and every
field of the decoded file changed and resealed. Memory stays bounded: the largest Python
allocation of one load and the process's peak RSS growth are checked.
"""

from __future__ import annotations

import resource
import tracemalloc
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (see `bounded`)

from mnemonix.epinet import EpisodicMemory, SalienceClock
from mnemonix.hopfield import ClassicalHopfield, DenseHopfield, ModernHopfield
from mnemonix.memoria import Memoria
from mnemonix.plastic import PlasticMemory, tokenize

from . import files
from .files import Format, Outcomes

_G = torch.Generator().manual_seed(9)
PATTERNS = torch.randn(5, 4, generator=_G)
BIPOLAR = torch.randint(0, 2, (3, 12), generator=_G).float() * 2 - 1


def _episodic() -> EpisodicMemory:
    mem = EpisodicMemory(5, 3, payload_dim=2, input_shape=(1, 2, 2), clock=SalienceClock(0.1, source="timestamps"))
    g = torch.Generator().manual_seed(2)
    mem.add(torch.randn(4, 2, generator=g), torch.randn(4, 3, generator=g), torch.rand(4, generator=g) + 0.1,
            torch.tensor([3, 1, 2, 0]), x=torch.randn(4, 1, 2, 2, generator=g), now=2.0)
    return mem


def _plastic() -> PlasticMemory:
    mem = PlasticMemory()
    mem.learn_many([tokenize(n) for n in ("emma", "emily", "ella", "bo")], progress=False)
    return mem


def _use_episodic(mem: EpisodicMemory) -> None:
    from mnemonix.epinet import RecallEngine

    RecallEngine(2).recall(torch.randn(2, mem.key_dim), mem)
    mem.add(torch.randn(3, mem.payload_dim), torch.randn(3, mem.key_dim), 1.0, torch.arange(3),
            x=None if mem.input_shape is None else torch.randn(3, *mem.input_shape), now=mem.clock.now() + 1)


def _memoria() -> Memoria:
    mem = Memoria(num_reminded_stm=2, stm_capacity=4, ltm_search_depth=2, initial_lifespan=3, num_final_ltms=2,
                  generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        _use_memoria(mem, g)
    return mem


def _memoria_v2() -> Memoria:
    """Format version 2: tracked ids and ages, two rows, an asymmetric count (the graph's overlay)."""
    mem = Memoria(num_reminded_stm=2, stm_capacity=3, ltm_search_depth=2, initial_lifespan=4, num_final_ltms=2,
                  track_age=True, track_id=True, keep_history=True, tie_break="random", distances="exact",
                  fix_padding=True, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        _use_memoria(mem, g, batch=2, hidden=3)
    counts = mem.engrams.induce_counts
    counts[0, 0, 1] += 3
    mem.engrams.induce_counts = counts
    return mem


def _use_memoria(mem: Memoria, g: torch.Generator | None = None, batch: int = 1, hidden: int = 4) -> None:
    e = mem.engrams
    if len(e):  # data of the loaded memory's batch and hidden size
        batch, hidden = e.batch_size, e.hidden_dim
    mem.add_working_memory(torch.rand(batch, 2, hidden, generator=g))
    _, indices = mem.remind()
    mem.adjust_lifespan_and_memories(indices, torch.ones_like(indices, dtype=torch.float))


def _use_plastic(mem: PlasticMemory) -> None:
    mem.infer(">e"), mem.stats(), mem.learn(">emil_"), mem.infer(">e", mode="sample", seed=1)


FORMATS = [
    Format("ModernHopfield", lambda: ModernHopfield(PATTERNS, beta=3.0, max_iter=2), lambda m, p: m.save(p),
           # one step: iterating from a state of ~1e30 (a finite stored value) overflows, as it would for the
           # same network built by the constructor, with a clear ValueError
           ModernHopfield.load, lambda m: m.retrieve(torch.randn(2, m.patterns.shape[1]).to(m.patterns.dtype),
                                                     max_iter=1)),
    Format("ClassicalHopfield", lambda: ClassicalHopfield(BIPOLAR, max_iter=4), lambda m, p: m.save(p),
           ClassicalHopfield.load, lambda m: m.retrieve(torch.ones(2, m.weights.shape[0]))),
    Format("DenseHopfield", lambda: DenseHopfield(BIPOLAR, interaction="polynomial", degree=4),
           lambda m, p: m.save(p), DenseHopfield.load, lambda m: m.retrieve(torch.ones(2, m.patterns.shape[1]))),
    Format("PlasticMemory", _plastic, lambda m, p: m.save(p), PlasticMemory.load, _use_plastic),
    Format("EpisodicMemory", _episodic, lambda m, p: m.save(p), EpisodicMemory.load, _use_episodic),
    Format("Memoria", _memoria, lambda m, p: m.save(p), Memoria.load, _use_memoria),
    Format("Memoria2", _memoria_v2, lambda m, p: m.save(p), Memoria.load, _use_memoria),
]
IDS = [f.name for f in FORMATS]



@pytest.fixture
def bounded():
    """Fail when one load allocated more than 16 MiB in Python or the process grew by 256 MiB.

    torch._dynamo is imported at the top: the first call of a torch custom op imports it (and
    sympy), ~70 MiB of Python objects that were counted against whichever load ran first.
    """
    tracemalloc.start()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024  # KiB on Linux
    assert peak < 16 << 20, f"a load allocated {peak} bytes for a file of a few KiB"
    assert grown < 256 << 20, f"the process grew by {grown} bytes"


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_truncation_at_every_section_boundary(fmt: Format, tmp_path: Path, bounded) -> None:
    out = Outcomes(fmt, tmp_path)
    for what, data in files.truncations(out.raw, out.original):
        out.load(data, what)
    assert out.identical == 0 and out.rejected > 20  # the digest is the file's end: no cut keeps it


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_random_byte_flips(fmt: Format, tmp_path: Path, bounded) -> None:
    out = Outcomes(fmt, tmp_path)
    for what, data in files.byte_flips(out.raw, 150, seed=len(fmt.name)):
        out.load(data, what)
    assert out.rejected == 150  # the digest covers every byte but itself, and itself


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_many_byte_flips(fmt: Format, tmp_path: Path, bounded) -> None:
    out = Outcomes(fmt, tmp_path)
    for what, data in files.byte_flips(out.raw, 2000, seed=7 * len(fmt.name)):
        out.load(data, what)
    assert out.rejected == 2000


@pytest.mark.filterwarnings("ignore:DenseHopfield.energy exceeds the float64 range")  # a degree of 2**63: documented
@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_crafted_contents(fmt: Format, tmp_path: Path, bounded) -> None:
    out = Outcomes(fmt, tmp_path)
    arrays, header = files.decode(out.original)
    cases = list(files.crafted(arrays, header, seed=3))
    for what, arrays_, header_ in cases:
        out.load_crafted(what, arrays_, header_)
    assert out.rejected > len(cases) // 2, (out.rejected, out.identical, out.usable)
