"""Traffic congestion on one road segment: sustained speed against the segment's free-flow speed.

The speed is the median of the last ``window_s`` of readings (one odd probe or a spike does not
count); its ratio to free flow gives the level (the proposed operator levels in the domain data):

======  ===============================================  ===========
level   median speed / free flow                         alert
======  ===============================================  ===========
free    >= 0.7                                           none
slow    0.5 – 0.7 (a normal rush hour in Nha Trang)      none
heavy   0.3 – 0.5                                        warning
jam     < 0.3, or below ``jam_speed_kmh`` (10 km/h)      critical
======  ===============================================  ===========

A new level is adopted only after it has held for ``sustain_s``; leaving a level needs the ratio
``hysteresis`` above its bound. The HCMC transport department's formal definition of "ùn tắc"
asks for < 10 km/h over 30 minutes; operators need to know sooner, so that duration is not the
default (set ``sustain_s=1800`` to follow it).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from detectors.common import label_of
from ioc.models import Finding, Reading

STATE_VERSION = 1
#: (name, Vietnamese, lower bound of the speed ratio), best first.
LEVELS: tuple[tuple[str, str, float], ...] = (
    ("free", "thông thoáng", 0.7),
    ("slow", "chậm", 0.5),
    ("heavy", "đông, ùn ứ", 0.3),
    ("jam", "ùn tắc", 0.0),
)
DEFAULT_SEVERITY: dict[int, str | None] = {0: None, 1: None, 2: "warning", 3: "critical"}
_N_LEVELS = len(LEVELS)


class TrafficCongestionDetector:
    """Sustained congestion level of one segment; a finding whenever its alert level changes.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = TrafficCongestionDetector("TRF_2T4_XOM_BONG", free_flow_kmh=40.0)
    >>> t0 = datetime(2025, 10, 9, 10, tzinfo=UTC)
    >>> speeds = [38.0] * 10 + [6.0] * 20 + [36.0] * 20  # 1-minute readings: a crash, then cleared
    >>> out = []
    >>> for i, v in enumerate(speeds):
    ...     out += d.update(Reading("TRF_2T4_XOM_BONG", "traffic", t0 + timedelta(minutes=i), i, {"speed_kmh": v}))
    >>> [(i.ts.minute, i.severity, i.detail["level"]) for i in out]
    [(17, 'critical', 'jam'), (42, None, 'free')]
    >>> out[0].message_en
    'TRF_2T4_XOM_BONG: jam, median speed 6 km/h = 15 % of free flow (40 km/h) for 5 min'
    """

    rule = "traffic_congestion"

    def __init__(
        self,
        sensor_id: str,
        free_flow_kmh: float,
        *,
        metric: str = "speed_kmh",
        name: str | None = None,
        window_s: float = 300.0,  # median over 5 min: longer ignores more noise and reacts later
        sustain_s: float = 300.0,  # a worse level must hold this long: "sustained for several minutes"
        clear_after_s: float = 600.0,  # a better level must hold this long: stop-and-go does not flap
        min_points: int = 3,
        hysteresis: float = 0.1,  # speed ratio above a bound before a level is left
        jam_speed_kmh: float = 10.0,  # below this is a jam on any road (HCMC proposal)
        alert_slow: bool = False,  # True also raises "slow" as info (a weekday rush hour is "slow")
    ) -> None:
        if not (isinstance(free_flow_kmh, int | float) and math.isfinite(free_flow_kmh) and free_flow_kmh > 0):
            raise ValueError(f"{sensor_id}: free_flow_kmh must be a positive speed from the registry, got {free_flow_kmh!r}")
        if not window_s > 0 or sustain_s < 0 or clear_after_s < 0 or min_points < 1:
            raise ValueError("need window_s > 0, sustain_s >= 0, clear_after_s >= 0 and min_points >= 1")
        if not 0 <= hysteresis <= 0.2 or jam_speed_kmh < 0:
            raise ValueError("hysteresis must be in [0, 0.2] (a share of free flow) and jam_speed_kmh >= 0")
        self.sensor_id = sensor_id
        self.free_flow = float(free_flow_kmh)
        self.metric = metric
        self.label = label_of(sensor_id, name)
        self.window_s = float(window_s)
        self.sustain_s = float(sustain_s)
        self.clear_after_s = float(clear_after_s)
        self.min_points = min_points
        self.hysteresis = hysteresis
        self.jam_speed = jam_speed_kmh
        self.severity = dict(DEFAULT_SEVERITY)
        if alert_slow:
            self.severity[1] = "info"
        self.reset()

    def reset(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()
        self.last_ts: float | None = None
        self.level = 0
        #: since when the level has been at least k (worse) / at most k (better), continuously
        self.worse_since: list[float | None] = [None] * len(LEVELS)
        self.better_since: list[float | None] = [None] * len(LEVELS)

    @property
    def ready(self) -> bool:
        return len(self.samples) >= self.min_points

    def _candidate(self, speed: float) -> int:
        ratio = speed / self.free_flow
        level = 0
        for k in range(1, len(LEVELS)):
            upper = LEVELS[k - 1][2]  # the ratio below which level k begins
            if ratio < upper or (k <= self.level and ratio < upper + self.hysteresis):
                level = k
        if speed < self.jam_speed or (self.level == 3 and speed < self.jam_speed * (1 + 2 * self.hysteresis)):
            level = 3
        return level

    def update(self, reading: Reading) -> list[Finding]:
        value = reading.metrics.get(self.metric)
        if value is None or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            return []
        now = reading.ts.timestamp()
        if self.last_ts is not None and now <= self.last_ts:
            return []  # duplicate or late
        self.last_ts = now
        self.samples.append((now, float(value)))
        while self.samples[0][0] <= now - self.window_s:
            self.samples.popleft()
        if len(self.samples) < self.min_points:
            return []
        speeds = sorted([v for _, v in self.samples])
        mid = len(speeds) // 2
        median = speeds[mid] if len(speeds) % 2 else 0.5 * (speeds[mid - 1] + speeds[mid])
        candidate = self._candidate(median)
        worse, better = self.worse_since, self.better_since
        for k in range(_N_LEVELS):
            if candidate >= k:
                if worse[k] is None:
                    worse[k] = now
            else:
                worse[k] = None
            if candidate <= k:
                if better[k] is None:
                    better[k] = now
            else:
                better[k] = None
        level = self.level
        new = -1  # the worst sustained worse level, else the best sustained better one
        for k in range(level + 1, _N_LEVELS):
            since = worse[k]
            if since is not None and now - since >= self.sustain_s:
                new = k
        if new < 0:
            for k in range(level - 1, -1, -1):
                since = better[k]
                if since is not None and now - since >= self.clear_after_s:
                    new = k
        if new < 0:
            return []
        before, self.level = level, new
        if self.severity[before] == self.severity[self.level]:
            return []  # e.g. free <-> slow: no alert either side
        since = self.worse_since[self.level] if self.level > before else self.better_since[self.level]
        return [self._finding(reading, median, 0.0 if since is None else now - since)]

    def _finding(self, reading: Reading, median: float, span_s: float) -> Finding:
        name, vi, _ = LEVELS[self.level]
        ratio = median / self.free_flow
        minutes = max(1, round(span_s / 60))
        severity = self.severity[self.level]
        if severity is None:
            msg = f"{self.label}: hết ùn tắc, tốc độ trung vị {median:.0f} km/h ({ratio:.0%} tốc độ tự do)"
            msg_en = f"{self.label}: congestion cleared, median speed {median:.0f} km/h ({ratio:.0%} of free flow)"
        else:
            msg = (f"{self.label}: {vi}, tốc độ trung vị {median:.0f} km/h = {ratio:.0%} tốc độ tự do "
                   f"({self.free_flow:.0f} km/h) trong {minutes} phút")
            msg_en = (f"{self.label}: {name}, median speed {median:.0f} km/h = {ratio:.0%} of free flow "
                      f"({self.free_flow:.0f} km/h) for {minutes} min")
        msg = msg.replace("%", " %")
        msg_en = msg_en.replace("%", " %")
        threshold = LEVELS[max(self.level - 1, 0)][2] * self.free_flow  # the speed below which this level begins
        return Finding(
            self.sensor_id, self.rule, "traffic", self.metric, reading.ts, severity, median, threshold, msg,
            detail={"level": name, "speed_ratio": round(ratio, 3), "free_flow_kmh": self.free_flow},
            score=min(1.0, max(0.0, 1.0 - ratio)) if severity else 0.0, message_en=msg_en,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "samples": [list(s) for s in self.samples],
            "last_ts": self.last_ts,
            "level": self.level,
            "worse_since": list(self.worse_since),
            "better_since": list(self.better_since),
        }

    def from_state(self, state: dict[str, Any]) -> None:
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported TrafficCongestionDetector state_version {state.get('state_version')!r}")
        self.samples = deque((float(t), float(v)) for t, v in state["samples"])
        self.last_ts = None if state.get("last_ts") is None else float(state["last_ts"])
        self.level = int(state["level"])
        self.worse_since = [None if t is None else float(t) for t in state["worse_since"]]
        self.better_since = [None if t is None else float(t) for t in state["better_since"]]
