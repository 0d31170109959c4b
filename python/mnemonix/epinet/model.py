"""The EpiNet network: encoder, mixture-of-experts decoder, and their assembly with the episodic memory."""

from __future__ import annotations

import torch
from torch import nn

from mnemonix import _checks
from mnemonix.epinet.clock import SalienceClock
from mnemonix.epinet.memory import EpisodicMemory, buffer_bytes, memory_available
from mnemonix.epinet.recall import RECALL_BACKENDS, RecallEngine

__all__ = ["Encoder", "MoEDecoder", "EpiNet"]


def _check_encoder_args(latent_dim: object, image_size: object, in_channels: object) -> None:
    _checks.positive_int("latent_dim", latent_dim)
    if _checks.positive_int("image_size", image_size) < 4:
        raise ValueError(f"image_size must be >= 4 (two 2x2 poolings), got {image_size}")
    _checks.positive_int("in_channels", in_channels)


def _check_decoder_args(latent_dim: object, hidden_dim: object, num_classes: object, num_experts: object) -> None:
    for name, value in [("latent_dim", latent_dim), ("hidden_dim", hidden_dim),
                        ("num_classes", num_classes), ("num_experts", num_experts)]:
        _checks.positive_int(name, value)


class Encoder(nn.Module):
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool) and a linear projection to ``latent_dim``.

    Input [B, in_channels, image_size, image_size]; output z [B, latent_dim].
    """

    def __init__(self, latent_dim: int = 128, *, image_size: int = 28, in_channels: int = 1) -> None:
        super().__init__()
        _check_encoder_args(latent_dim, image_size, in_channels)
        self.image_size = image_size
        self.in_channels = in_channels
        side = image_size // 4
        with _checks.building(f"latent_dim={latent_dim}, image_size={image_size}, in_channels={in_channels}"):
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(),
            )
            self.project = nn.Linear(64 * side * side, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """z [B, latent_dim] of images x [B, in_channels, image_size, image_size]."""
        # a meta x is fine only for a module built on the meta device (shape inference)
        _checks.tensor("x", x, ndim=4, dtypes=(torch.float64, *_checks.FLOAT_DTYPES),
                       meta_ok=self.project.weight.is_meta)
        want = (self.in_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape [B, {want[0]}, {want[1]}, {want[2]}], got {tuple(x.shape)}")
        return self.project(self.features(x))


class MoEDecoder(nn.Module):
    """Mixture of experts over ``h = [z; r]``: ``logits = sum_e softmax(G h)_e * expert_e(h)``.

    Each expert is Linear(2d, hidden) -> ReLU -> Linear(hidden, num_classes).
    Inputs z, r [B, latent_dim]; output logits [B, num_classes].
    """

    def __init__(self, latent_dim: int, hidden_dim: int, num_classes: int, num_experts: int = 4) -> None:
        super().__init__()
        _check_decoder_args(latent_dim, hidden_dim, num_classes, num_experts)
        self.latent_dim = latent_dim
        with _checks.building(f"latent_dim={latent_dim}, hidden_dim={hidden_dim}, num_classes={num_classes}, "
                              f"num_experts={num_experts}"):
            self.gate = nn.Linear(2 * latent_dim, num_experts)
            self.experts = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes))
                for _ in range(num_experts)
            )

    def forward(self, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] from the latent z and the recall r, both [B, latent_dim]."""
        dtype = self.gate.weight.dtype
        for name, value in (("z", z), ("r", r)):
            _checks.tensor(name, value, ndim=2, dtypes=(dtype,), meta_ok=self.gate.weight.is_meta)
            if value.shape[1] != self.latent_dim:
                raise ValueError(f"{name} must have shape [B, {self.latent_dim}], got {tuple(value.shape)}")
            if value.device != self.gate.weight.device:
                raise ValueError(f"{name} is on {value.device} but the decoder is on {self.gate.weight.device}")
        if r.shape[0] != z.shape[0]:
            raise ValueError(f"r must have the rows of z [{z.shape[0]}, {self.latent_dim}], got {tuple(r.shape)}")
        h = torch.cat([z, r], dim=1)
        gate = torch.softmax(self.gate(h), dim=1)  # [B, E]
        expert_logits = torch.stack([expert(h) for expert in self.experts], dim=1)  # [B, E, C]
        return (gate.unsqueeze(-1) * expert_logits).sum(dim=1)


# EpiNet.memorize stores z as both key and payload and r0 = salience: errors name its arguments.
_MEMORIZE_NAMES = {"z": "z", "c": "z", "r0": "salience", "y": "y", "x": "x"}


class EpiNet(nn.Module):
    """Encoder + episodic memory + recall + MoE decoder, assembled.

    ``forward(x) -> (logits, z)``: ``z = encoder(x)``; the recall of ``z``
    from the memory (zeros when ``use_memory`` is False or the memory is
    empty); ``logits = decoder(z, recall)``. :meth:`memorize` stores a batch
    (inputs kept for replay); :meth:`replay_batch` samples stored inputs.

    Device: the episodic memory is not a parameter or buffer (its float64
    salience must not follow ``.half()`` / ``.to(dtype)``), yet it lives with
    the model. :attr:`memory` keeps it on the device of the parameters: after
    ``model.to(device)`` / ``.cuda()`` / ``.cpu()`` the next access to
    ``model.memory`` (``forward``, ``memorize`` and ``replay_batch`` all go
    through it) moves its buffers there in place, once
    (:meth:`EpisodicMemory.move_`); its dtype stays. No ``nn.Module``
    internals are overridden.

    Parameters
    ----------
    latent_dim, hidden_dim, num_experts, num_classes : int >= 1
    image_size : int >= 4;  in_channels : int >= 1
        Inputs are [B, in_channels, image_size, image_size].
    memory_capacity : int >= 1
    top_k : int >= 1
        Memories recalled per query.
    clock : SalienceClock, optional
        Default ``SalienceClock(1e-3)`` (training steps).
    use_memory : bool
        False: the decoder sees zeros instead of the recall.
    recall_backend : {"torch", "triton"} or None
        Forwarded to :func:`mnemonix.ops.salience_topk`.
    """

    def __init__(
        self,
        *,
        latent_dim: int = 128,
        num_classes: int = 10,
        image_size: int = 28,
        in_channels: int = 1,
        hidden_dim: int = 256,
        num_experts: int = 4,
        memory_capacity: int = 1000,
        top_k: int = 5,
        clock: SalienceClock | None = None,
        use_memory: bool = True,
        recall_backend: str | None = None,
    ) -> None:
        super().__init__()
        # Every argument is checked before the first module is built: a failed constructor
        # consumes no randomness (weight initialisation draws from the global RNG).
        _check_encoder_args(latent_dim, image_size, in_channels)
        _check_decoder_args(latent_dim, hidden_dim, num_classes, num_experts)
        _checks.positive_int("memory_capacity", memory_capacity)
        _checks.positive_int("top_k", top_k)
        _checks.flag("use_memory", use_memory)
        _checks.choice("recall_backend", recall_backend, RECALL_BACKENDS, none_ok=True)
        if clock is not None and not isinstance(clock, SalienceClock):
            raise TypeError(f"clock must be a SalienceClock, got {type(clock).__name__}")
        need = buffer_bytes(memory_capacity, latent_dim, latent_dim, (in_channels, image_size, image_size),
                            torch.float32)
        available = memory_available(torch.device("cpu"))
        if available is not None and need > available:
            raise ValueError(f"memory_capacity={memory_capacity}, latent_dim={latent_dim}, image_size={image_size}, "
                             f"in_channels={in_channels}: the episodic memory needs {need} bytes, more than the "
                             f"CPU has ({available})")
        with _checks.building(f"latent_dim={latent_dim}, hidden_dim={hidden_dim}, memory_capacity={memory_capacity}"):
            self.encoder = Encoder(latent_dim, image_size=image_size, in_channels=in_channels)
            self.decoder = MoEDecoder(latent_dim, hidden_dim, num_classes, num_experts)
            self._memory = EpisodicMemory(
                memory_capacity, latent_dim, input_shape=(in_channels, image_size, image_size),
                clock=clock if clock is not None else SalienceClock(1e-3),
            )
        self.recaller = RecallEngine(top_k, backend=recall_backend)
        self.use_memory = use_memory

    @property
    def memory(self) -> EpisodicMemory:
        """The episodic memory, on the device of the parameters (moved in place on first access after a move)."""
        device = self.encoder.project.weight.device
        if self._memory.device != device:
            self._memory.move_(device)
        return self._memory

    @memory.setter
    def memory(self, value: EpisodicMemory) -> None:
        if not isinstance(value, EpisodicMemory):
            raise TypeError(f"memory must be an EpisodicMemory, got {type(value).__name__}")
        self._memory = value

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, num_classes], z [B, latent_dim])`` of images x [B, C, H, W]."""
        z = self.encoder(x)
        if self.use_memory:
            queries = z.detach().float()
            # the recall refuses non-finite queries in its own (single) host read; name what the caller
            # passed, not the recall's argument, without a second read of the data
            try:
                r = self.recaller.recall(queries, self.memory).to(z.dtype)
            except _checks.NonFiniteError as err:
                if err.argument != "queries":
                    raise
                raise ValueError("x gives a non-finite latent z (NaN or Inf in x or in the encoder's weights): "
                                 "the recall needs finite queries") from err
        else:
            r = torch.zeros_like(z)
        return self.decoder(z, r), z

    @torch.no_grad()
    def memorize(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, salience: torch.Tensor) -> torch.Tensor:
        """Store a batch: key and payload = z, initial salience = ``salience``, input x for replay.

        Parameters
        ----------
        x : Tensor [n, in_channels, image_size, image_size]
        z : Tensor [n, latent_dim] (detached and stored as float32)
        y : labels [n] of any integer dtype (stored as int64; bool, float, complex refused)
        salience : Tensor [n] floating, > 0 (or one number for all)

        Returns
        -------
        slots : Tensor [n] int64, -1 for items not stored (see :meth:`EpisodicMemory.add`).

        Everything is checked before the first write (errors name these arguments);
        a failed call leaves the memory bit-identical.
        """
        return self.memory._add(z, z, salience, y, x=x, now=None, names=_MEMORIZE_NAMES)

    def replay_batch(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Up to n stored ``(x [m, C, H, W], y [m])`` pairs drawn uniformly without replacement, or None when empty.

        Parameters
        ----------
        n : int >= 1
        generator : torch.Generator, optional
            The permutation is drawn on the generator's device, then moved to the memory's
            device (a CPU generator gives the same draws whatever device the model is on).
            None: the default generator of the memory's device.
        """
        n = _checks.positive_int("n", n)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        mem = self.memory
        m = len(mem)
        if m == 0:
            return None
        if generator is None:
            pick = torch.randperm(m, device=mem.device)[: min(n, m)]
        else:
            # a CPU permutation reaches the GPU without making the host wait (non_blocking host-to-device)
            pick = torch.randperm(m, generator=generator, device=generator.device)[: min(n, m)]
            pick = pick.to(mem.device, non_blocking=pick.device.type == "cpu")
        return mem.x[pick], mem.y[pick]
