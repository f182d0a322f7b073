"""The worker's event-time clock, for timers that judge readings (silence) rather than people.

Live, it is the wall clock. In a replay of recorded or simulated traffic, readings carry the
time they were measured, far behind the wall clock and moving faster; a silence timer on the
wall clock would call every sensor silent. The clock follows the median lag of the sensors'
latest readings (their timestamp minus when they arrived), so a few sensors with a skewed
clock move it neither way, and it never runs ahead of the wall clock.

>>> from datetime import UTC, datetime, timedelta
>>> c = EventClock()
>>> wall = datetime(2026, 1, 1, tzinfo=UTC)
>>> c.now(wall) == wall
True
>>> two_days = timedelta(days=2)
>>> c.observe([("A", wall - two_days), ("B", wall - two_days - timedelta(seconds=10)),
...            ("SKEWED", wall - two_days + timedelta(hours=1))], wall)
>>> c.now(wall + timedelta(seconds=5)) == wall - timedelta(days=2) + timedelta(seconds=5)
True
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import datetime, timedelta


class EventClock:
    def __init__(self) -> None:
        self._lag_s: dict[str, float] = {}  # sensor -> its latest reading's ts - arrival (s)
        self._median: float | None = None
        self.started: datetime | None = None  # event time of the first reading this worker saw

    def observe(self, readings: Iterable[tuple[str, datetime]], wall: datetime) -> None:
        for sensor_id, ts in readings:
            self._lag_s[sensor_id] = (ts - wall).total_seconds()
        self._median = None
        if self.started is None and self._lag_s:
            self.started = wall + timedelta(seconds=min(0.0, self._lag()))

    def _lag(self) -> float:
        if self._median is None:
            self._median = statistics.median(self._lag_s.values()) if self._lag_s else 0.0
        return self._median

    def now(self, wall: datetime) -> datetime:
        return wall + timedelta(seconds=min(0.0, self._lag()))

    def forget(self, sensor_id: str) -> None:
        self._lag_s.pop(sensor_id, None)
        self._median = None
