"""Anomaly baseline: how many standard deviations a value sits from the mean of the last
``window`` values, as a two-sided Gaussian tail surprise ``-log10 p``.

This is NAB's "windowed Gaussian" baseline (scoreboard 39.6 standard), kept as the simple reference
the default detector has to beat, and the home of the Gaussian tail helper. Pure, ~10 µs a value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detectors.common import check_version, clamp, require

STATE_VERSION = 1
#: Surprise is capped here (p = 1e-300): beyond it every value is equally impossible.
MAX_SURPRISE = 300.0
_LN10 = math.log(10.0)


def gaussian_surprise(z: float) -> float:
    """``-log10`` of the upper Gaussian tail beyond ``z``, accurate far into the tail.

    >>> round(gaussian_surprise(0.0), 3), round(gaussian_surprise(3.0), 2), round(gaussian_surprise(40.0))
    (0.301, 2.87, 349)
    """
    if z < 30.0:
        return -math.log10(0.5 * math.erfc(z / math.sqrt(2.0)))
    # Mills ratio: Q(z) ~ φ(z) / z far in the tail, where erfc underflows
    return (z * z / 2.0 + math.log(z * math.sqrt(2.0 * math.pi))) / _LN10


class WindowedGaussianScorer:
    """Two-sided Gaussian surprise of each value against the previous ``window`` values.

    >>> s = WindowedGaussianScorer(window=50, min_count=10)
    >>> quiet = [s.surprise(10.0 + (i % 5) * 0.1) for i in range(100)]
    >>> max(v for v in quiet if v is not None) < 2, s.surprise(30.0) > 10
    (True, True)
    """

    def __init__(
        self,
        *,
        window: int = 1000,  # values the mean and deviation cover: longer is steadier, adapts slower
        min_count: int = 30,  # values needed before a surprise is reported
        min_sd: float = 1e-9,  # deviation floor, relative to max(1, |mean|), for flat series
    ) -> None:
        require(window >= 2 and 2 <= min_count <= window,
                f"need 2 <= min_count <= window, got min_count={min_count}, window={window}")
        require(min_sd > 0, "min_sd must be > 0")
        self.window = window
        self.min_count = min_count
        self.min_sd = min_sd
        self.reset()

    def reset(self) -> None:
        self.ring = np.zeros(self.window)
        self.count = 0
        self.pos = 0

    @property
    def ready(self) -> bool:
        return self.count >= self.min_count

    def surprise(self, value: float) -> float | None:
        """Score ``value`` (finite; clamped to ±1e12), then learn it. None while warming up."""
        v = clamp(float(value))
        out: float | None = None
        if self.count >= self.min_count:
            h = self.ring[: self.count]
            mean = float(h.mean())
            sd = max(float(h.std()), self.min_sd * max(1.0, abs(mean)))
            out = min(MAX_SURPRISE, max(0.0, gaussian_surprise(abs(v - mean) / sd) - math.log10(2.0)))
        self.ring[self.pos] = v
        self.pos = (self.pos + 1) % self.window
        self.count = min(self.count + 1, self.window)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "window": self.window,
                "ring": self.ring[: self.count].tolist(), "pos": self.pos}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "WindowedGaussianScorer")
        if int(state["window"]) != self.window:
            raise ValueError(f"WindowedGaussianScorer state has window {state['window']}, this one {self.window}: "
                             "drop the state to start cold")
        self.reset()
        ring = state["ring"]
        self.count = len(ring)
        if ring:
            self.ring[: self.count] = np.asarray(ring, dtype=float)
        self.pos = int(state["pos"])
