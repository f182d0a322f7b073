"""Per-sensor rate limits at the edge: a token bucket per sensor, and the excess folded into dead letters.

One sensor flooding (a fault, or a spoofed id) must not crowd out the others nor fill the
database: each sensor gets ``rate_hz`` sustained and ``burst`` at once, and what goes over is
counted into one dead letter per sensor per window, never dropped silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ioc.storage.deadletters import DeadLetter
from streams.mqtt_loop import AckToken

# A rate-limited flood is folded into one dead letter per sensor per window. A longer window
# means fewer rows but acks held longer (they count against ReceiveMaximum); the max count
# closes a window early under a heavy flood.
RATE_WINDOW_S = 1.0
RATE_WINDOW_MAX = 1000

class SensorRateLimiter:
    """A token bucket per sensor id: ``rate_hz`` sustained, up to ``burst`` at once.

    Pure apart from the injected ``monotonic`` clock. ``rate_hz`` 0 disables the limit.

    >>> now = [0.0]
    >>> rl = SensorRateLimiter(rate_hz=1.0, burst=2, monotonic=lambda: now[0])
    >>> [rl.allow("S1") for _ in range(3)], rl.allow("S2")
    ([True, True, False], True)
    >>> now[0] = 1.0
    >>> rl.allow("S1"), rl.allow("S1")
    (True, False)
    """

    def __init__(self, rate_hz: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate_hz < 0 or rate_hz != rate_hz or rate_hz == float("inf"):
            raise ValueError(f"rate_hz must be a finite number >= 0 (0 disables the limit), got {rate_hz}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate_hz = rate_hz
        self.burst = float(burst)
        self.monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # sensor id -> (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.rate_hz > 0

    def allow(self, sensor_id: str) -> bool:
        """Take one token for ``sensor_id``; False when its bucket is empty."""
        if not self.enabled:
            return True
        now = self.monotonic()
        tokens, at = self._buckets.get(sensor_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_hz)
        if tokens < 1.0 - 1e-9:  # the epsilon: a sensor exactly at the rate must not lose to rounding
            self._buckets[sensor_id] = (tokens, now)
            return False
        self._buckets[sensor_id] = (max(0.0, tokens - 1.0), now)
        return True

    def evict_full(self) -> int:
        """Forget buckets that have refilled: keeps memory bounded when ids churn (spoofed ids)."""
        if not self.enabled:
            return 0
        now = self.monotonic()
        full = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate_hz >= self.burst]
        for k in full:
            del self._buckets[k]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class _Excess:
    """The rate-limited messages of one sensor in one window: one dead letter with a count."""

    opened: float  # monotonic
    received_at: datetime
    topic: str
    raw: bytes
    tokens: list[AckToken]


class ExcessAggregator:
    """Folds each sensor's rate-limited messages into one dead letter per window.

    The letter keeps the window's first payload as a sample and counts every message; each
    message's ack waits for that letter, so the excess is dead-lettered, never dropped silently.
    Aggregating is what protects the database from a flood: a flood becomes one row per second.
    """

    def __init__(self, window_s: float, max_count: int, rate_hz: float, burst: int,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_count = max_count
        self.rate_hz = rate_hz
        self.burst = burst
        self.monotonic = monotonic
        self._open: dict[str, _Excess] = {}

    def add(self, sensor_id: str, topic: str, raw: bytes, token: AckToken, received_at: datetime
            ) -> list[tuple[DeadLetter, tuple[AckToken, ...]]]:
        """Count one message; returns the window's letter when it has reached ``max_count``."""
        ex = self._open.get(sensor_id)
        if ex is None:
            ex = self._open[sensor_id] = _Excess(self.monotonic(), received_at, topic, bytes(raw[:4096]), [])
        ex.tokens.append(token)
        if len(ex.tokens) >= self.max_count:
            return [self._close(sensor_id)]
        return []

    @property
    def pending(self) -> int:
        """Windows open (sensors with excess not yet written as a dead letter)."""
        return len(self._open)

    def due(self) -> list[tuple[DeadLetter, tuple[AckToken, ...]]]:
        now = self.monotonic()
        return [self._close(k) for k, ex in list(self._open.items()) if now - ex.opened >= self.window_s]

    def drain(self) -> list[tuple[DeadLetter, tuple[AckToken, ...]]]:
        return [self._close(k) for k in list(self._open)]

    def _close(self, sensor_id: str) -> tuple[DeadLetter, tuple[AckToken, ...]]:
        ex = self._open.pop(sensor_id)
        n = len(ex.tokens)
        detail = (f"{n} message(s) from sensor {sensor_id[:64]!r} over the limit of {self.rate_hz:g}/s"
                  f" (burst {self.burst}) within {self.window_s:g} s; the first one is kept as a sample")
        return DeadLetter(ex.received_at, "mqtt", "rate_limited", detail, ex.topic, ex.raw, count=n), tuple(ex.tokens)
