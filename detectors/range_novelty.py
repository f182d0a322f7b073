"""Anomaly: a value outside everything seen so far, by more than a tolerance of that range.

The "spatial anomaly" rule Numenta added in front of HTM for NAB: a new all-time high or low that
clears the previous range by ``tolerance`` of its width is surprising whatever the shape around it,
so it is reported as a fixed, large surprise (``-log10 p``). It catches the level shifts and spikes
that a shape detector only sees once the new values fill its window. O(1), pure.
"""

from __future__ import annotations

from typing import Any

from detectors.common import check_version, clamp, require

STATE_VERSION = 1


class RangeNoveltyScorer:
    """Surprise ``surprise_on`` when a value leaves [low − tol·width, high + tol·width], else 0.

    >>> s = RangeNoveltyScorer()
    >>> [s.surprise(v) for v in (1.0, 3.0, 2.0, 3.05, 3.2, 0.5)]
    [None, None, 0.0, 0.0, 6.0, 6.0]
    """

    def __init__(
        self,
        *,
        tolerance: float = 0.05,  # share of the seen range a new extreme must clear; lower = more alarms
        surprise_on: float = 6.0,  # -log10 p reported for such an extreme (a 1-in-a-million value)
    ) -> None:
        require(tolerance >= 0, f"tolerance must be >= 0, got {tolerance}")
        require(surprise_on > 0, f"surprise_on must be > 0, got {surprise_on}")
        self.tolerance = tolerance
        self.surprise_on = surprise_on
        self.reset()

    def reset(self) -> None:
        self.low: float | None = None
        self.high: float | None = None

    @property
    def ready(self) -> bool:
        return self.low is not None and self.high is not None and self.high > self.low

    def surprise(self, value: float) -> float | None:
        """Score ``value`` (finite) against the range so far, then widen the range. None until the
        range has a width."""
        v = clamp(float(value))
        if self.low is None or self.high is None:
            self.low = self.high = v
            return None
        out: float | None = None
        width = self.high - self.low
        if width > 0:
            margin = self.tolerance * width
            out = self.surprise_on if (v > self.high + margin or v < self.low - margin) else 0.0
        self.low = min(self.low, v)
        self.high = max(self.high, v)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "low": self.low, "high": self.high}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "RangeNoveltyScorer")
        self.low = None if state["low"] is None else float(state["low"])
        self.high = None if state["high"] is None else float(state["high"])
