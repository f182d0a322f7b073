"""The worker's event-time clock per partition, for timers that judge readings (silence).

Live, it is the wall clock. In a replay of recorded or simulated traffic, readings carry the
time they were measured, far behind the wall clock and moving faster; a silence timer on the
wall clock would call every sensor silent. Each partition's clock follows the lag of its latest
envelope (the median of its readings' timestamp minus arrival, so a sensor with a skewed clock
moves it neither way), and runs on with the wall clock while the partition is idle. Partitions
are judged on their own clocks because under load one partition's backlog can trail another's
by hours of replayed time. The clock never runs ahead of the wall clock.

>>> from datetime import UTC, datetime, timedelta
>>> c = EventClock()
>>> wall = datetime(2026, 1, 1, tzinfo=UTC)
>>> c.now(3, wall) == wall
True
>>> two_days = timedelta(days=2)
>>> c.observe(3, [wall - two_days, wall - two_days - timedelta(seconds=10),
...               wall - two_days + timedelta(hours=1)], wall)  # one sensor's clock is an hour fast
>>> c.now(3, wall + timedelta(seconds=5)) == wall - two_days + timedelta(seconds=5)
True
>>> c.now(4, wall) == wall  # another partition, never seen: the wall clock
True
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta


class EventClock:
    def __init__(self) -> None:
        self._lag_s: dict[int, float] = {}  # partition -> lag of its latest envelope (s, <= 0)
        self.started: datetime | None = None  # event time of the first envelope this worker saw

    def observe(self, partition: int, timestamps: Sequence[datetime], wall: datetime) -> None:
        if not timestamps:
            return
        lag = min(0.0, statistics.median((ts - wall).total_seconds() for ts in timestamps))
        self._lag_s[partition] = lag
        if self.started is None:
            self.started = wall + timedelta(seconds=lag)

    def observed(self, partition: int) -> bool:
        return partition in self._lag_s

    def now(self, partition: int, wall: datetime) -> datetime:
        return wall + timedelta(seconds=self._lag_s.get(partition, 0.0))
