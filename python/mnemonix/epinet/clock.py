"""The salience clock: a time source and a decay rate.

Salience decays as ``log s = log r0 - alpha * (now - tau)``; the clock says
what ``now`` is (a step counter, user timestamps or wall seconds) and holds
``alpha``. Times are float64 Python floats, never tensors: reading the clock
costs no host sync.
"""

from __future__ import annotations

import math
import numbers
import time

import torch

from mnemonix import _checks

__all__ = ["SalienceClock", "CLOCK_SOURCES", "real_number"]

CLOCK_SOURCES = ("steps", "timestamps", "wall")


def real_number(name: str, value: object) -> float:
    """A finite real number (int, float, numpy scalar or 0-dim real tensor) as a Python float.

    A bool is refused (``True`` is not a time); so are complex numbers and strings (TypeError),
    and NaN/Inf or values that overflow float64 (ValueError).
    """
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.dtype == torch.bool or value.is_meta:
            raise TypeError(f"{name} must be a real number, got a tensor of shape {tuple(value.shape)} "
                            f"and dtype {value.dtype} on {value.device}")
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return out


class SalienceClock:
    """Time source and decay rate of salience: ``log s = log r0 - alpha * (now - tau)``.

    Parameters
    ----------
    alpha : float >= 0
        Decay rate per time unit.
    source : {"steps", "timestamps", "wall"}
        ``"steps"`` (default): time is a counter advanced by :meth:`tick`
        (reproducible). ``"timestamps"``: time is whatever :meth:`set_time`
        last supplied. ``"wall"``: seconds since the clock was created
        (``time.time()`` relative to that origin, float64).
    start : float
        Initial time for ``"steps"`` and ``"timestamps"``.

    Raises
    ------
    TypeError
        ``alpha`` or ``start`` is not a real number, ``source`` not a string.
    ValueError
        ``alpha`` negative or not finite, ``start`` not finite, unknown ``source``.

    Notes
    -----
    Only time differences matter: salience-based ranking and recall weights
    are the same whatever the origin of the times (see
    :class:`~mnemonix.epinet.EpisodicMemory`), so epoch timestamps
    (``now`` ~ 1e15 microseconds) are fine as long as the differences fit
    float64's 53 bits.
    """

    def __init__(self, alpha: float = 1e-3, *, source: str = "steps", start: float = 0.0) -> None:
        alpha_value = real_number("alpha", alpha)
        if alpha_value < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not isinstance(source, str):
            raise TypeError(f"source must be a str, one of {CLOCK_SOURCES}, got {type(source).__name__}")
        if source not in CLOCK_SOURCES:
            raise ValueError(f"source must be one of {CLOCK_SOURCES}, got {source!r}")
        self.alpha = alpha_value
        self.source = source
        self._time = real_number("start", start)
        self._origin = time.time()

    def now(self) -> float:
        """Current time (float64 Python float)."""
        if self.source == "wall":
            return time.time() - self._origin
        return self._time

    def tick(self, steps: int = 1) -> float:
        """Advance a ``"steps"`` clock by ``steps`` (int >= 0); returns the new time.

        Raises ValueError (clock unchanged) on a clock of another source, or when
        the new time would not be a finite float64.
        """
        if self.source != "steps":
            raise ValueError(f"tick() needs source='steps', this clock has source={self.source!r}")
        steps = _checks.nonneg_int("steps", steps)
        try:
            new_time = self._time + steps
        except OverflowError:
            new_time = math.inf
        if not math.isfinite(new_time):
            raise ValueError(f"steps={steps} would move the clock from {self._time} past float64's range")
        self._time = new_time
        return self._time

    def set_time(self, t: float) -> None:
        """Set the time of a ``"timestamps"`` clock; ``t`` must be finite and must not go backwards.

        Raises TypeError for a non-number ``t``, ValueError (clock unchanged) otherwise.
        """
        if self.source != "timestamps":
            raise ValueError(f"set_time() needs source='timestamps', this clock has source={self.source!r}")
        value = real_number("t", t)
        if value < self._time:
            raise ValueError(f"t must be finite and >= the current time {self._time}, got {t!r}")
        self._time = value

    def state(self) -> dict[str, object]:
        """``{"alpha", "source", "time"}``: what :meth:`from_state` needs (saved with a memory)."""
        return {"alpha": self.alpha, "source": self.source, "time": self._time}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> SalienceClock:
        """The clock described by :meth:`state` (a ``"wall"`` clock restarts at 0)."""
        return cls(state["alpha"], source=state["source"], start=state["time"])  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"SalienceClock(alpha={self.alpha}, source={self.source!r}, now={self.now():.6g})"
