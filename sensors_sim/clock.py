"""The virtual clock: maps scenario (virtual) times onto the wall clock at speed ×N.

Time sources are injected (``monotonic`` and ``sleep``), so tests drive a fake clock instead of
sleeping. Messages are released in bursts: everything due within ``burst_s`` goes out at once,
which avoids the 120-165 µs cost of one sleep per message measured on these VMs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Burst window: messages due within this many wall seconds are sent together (1-10 ms is best).
BURST_S = 0.005


@dataclass
class Pacer:
    """Release schedule for virtual times ``v`` starting at ``v0``; ``speed=None`` means no pacing.

    >>> now = [100.0]
    >>> p = Pacer(v0=0.0, speed=10.0, monotonic=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    >>> p.due(50.0)
    105.0
    >>> p.wait_for(50.0); now[0]
    105.0
    """

    v0: float
    speed: float | None
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    burst_s: float = BURST_S
    w0: float = field(default=0.0)

    def __post_init__(self) -> None:
        if self.speed is not None and self.speed <= 0:
            raise ValueError(f"speed must be > 0 or None (as fast as possible), got {self.speed}")
        self.w0 = self.monotonic()

    def due(self, v: float) -> float:
        """Wall (monotonic) time at which virtual time ``v`` is due."""
        if self.speed is None:
            return self.w0
        return self.w0 + (v - self.v0) / self.speed

    def horizon(self) -> float:
        """Latest virtual time that may be released now (now + burst window)."""
        if self.speed is None:
            return float("inf")
        return self.v0 + (self.monotonic() - self.w0 + self.burst_s) * self.speed

    def wait_for(self, v: float, max_wait: float | None = None) -> None:
        """Sleep until ``v`` is due (or at most ``max_wait`` seconds, to poll a stop flag)."""
        delay = self.due(v) - self.monotonic()
        if max_wait is not None:
            delay = min(delay, max_wait)
        if delay > 0:
            self.sleep(delay)


def live_offset(v_start: float, v_end: float, speed: float | None, wall_now: float) -> int:
    """Shift (whole seconds) that makes every live timestamp <= the wall clock when it is sent.

    At speed 1 the scenario starts now; faster, it ends when publishing ends; as fast as possible,
    it ends now. The pipeline rejects readings >5 min ahead or >7 days old, so this keeps a run
    of up to ~7 days valid at any speed.

    >>> live_offset(0.0, 3600.0, 1.0, 10_000.0)
    10000
    >>> live_offset(0.0, 3600.0, 10.0, 10_000.0)  # ends at 10_000 + 360
    6760
    """
    if speed is None:
        return math.floor(wall_now - v_end)
    return math.floor(wall_now + (v_end - v_start) / speed - v_end)
