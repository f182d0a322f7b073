"""Sensor health: a value outside the physical range of its metric.

One finding per sensor (rule ``sensor_range``), raised when any metric leaves its range and
cleared once every metric has been back inside for ``clear_after`` readings, so one alert opens
and resolves per fault rather than one per reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from math import isfinite
from typing import Any

from detectors.common import calm_long_enough, check_version, finite, from_iso, iso, make_finding, require
from ioc.models import Finding, Reading

STATE_VERSION = 1


class PhysicalRangeDetector:
    """Flags readings no working instrument could produce (e.g. humidity 130 %, PM2.5 -40 µg/m³).

    >>> from datetime import UTC, timedelta
    >>> d = PhysicalRangeDetector("WX", {"humidity_pct": (0.0, 100.0)}, clear_after=1)
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> r = lambda i, v: Reading("WX", "weather", t0 + timedelta(minutes=5 * i), i, {"humidity_pct": v})
    >>> [f.severity for f in d.update(r(0, 80.0))], [f.severity for f in d.update(r(1, 130.0))]
    ([], ['warning'])
    >>> [f.severity for f in d.update(r(2, 81.0))]
    [None]
    """

    rule = "sensor_range"

    def __init__(
        self,
        sensor_id: str,
        limits: Mapping[str, tuple[float, float]],
        *,
        clear_after: int = 2,  # readings back in range before the all-clear; more = fewer flaps, later resolve
        severity: str = "warning",
    ) -> None:
        require(bool(limits), f"{sensor_id}: give at least one metric range, e.g. {{'water_level_m': (-10, 100)}}")
        for m, (lo, hi) in limits.items():
            require(finite(lo) is not None and finite(hi) is not None and lo < hi,
                    f"{sensor_id}: range of {m} must be finite numbers with low < high, got ({lo}, {hi})")
        require(clear_after >= 1, f"clear_after must be >= 1 reading, got {clear_after}")
        self.sensor_id = sensor_id
        self.limits = {m: (float(lo), float(hi)) for m, (lo, hi) in limits.items()}
        self.clear_after = clear_after
        self.severity = severity
        self.reset()

    def reset(self) -> None:
        self.active = False
        self.ok_run = 0
        self.last_ts: datetime | None = None

    @property
    def ready(self) -> bool:
        return True  # physical limits need no warm-up

    def update(self, reading: Reading) -> list[Finding]:
        if self.last_ts is not None and reading.ts <= self.last_ts:
            return []  # duplicate or late: the newer reading already decided the state
        worst: tuple[float, str, float, float] | None = None
        seen = False
        metrics = reading.metrics
        for metric, (lo, hi) in self.limits.items():
            v = metrics.get(metric)
            if v is None or not isfinite(v):
                continue
            seen = True
            if v < lo or v > hi:
                limit = lo if v < lo else hi
                score = abs(v - limit) / (abs(v - limit) + (hi - lo))  # 0.5 when a full span outside
                if worst is None or score > worst[0]:
                    worst = (score, metric, v, limit)
        if not seen:
            return []
        self.last_ts = reading.ts
        if worst is not None:
            self.ok_run = 0
            if self.active:
                return []
            self.active = True
            score, metric, v, limit = worst
            lo, hi = self.limits[metric]
            return [self._finding(reading, metric, self.severity, v, limit, score,
                                  f"{self.sensor_id}: {metric} = {v:g} ngoài dải vật lý [{lo:g}, {hi:g}], cảm biến có thể hỏng",
                                  f"{self.sensor_id}: {metric} = {v:g} outside the physical range [{lo:g}, {hi:g}]; "
                                  "the sensor may be faulty")]
        if not calm_long_enough(self):
            return []
        metric = next(m for m in self.limits if finite(reading.metrics.get(m)) is not None)
        v = float(reading.metrics[metric])
        return [self._finding(reading, metric, None, v, None, 0.0,
                              f"{self.sensor_id}: giá trị đo đã trở lại dải vật lý",
                              f"{self.sensor_id}: readings are back inside the physical range")]

    def _finding(self, r: Reading, metric: str, severity: str | None, value: float, threshold: float | None,
                 score: float, vi: str, en: str) -> Finding:
        return make_finding(sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric=metric,
                            ts=r.ts, severity=severity, value=value, threshold=threshold, score=score,
                            message=vi, message_en=en)

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "active": self.active, "ok_run": self.ok_run,
                "last_ts": iso(self.last_ts)}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "PhysicalRangeDetector")
        self.active = bool(state["active"])
        self.ok_run = int(state["ok_run"])
        self.last_ts = from_iso(state.get("last_ts"))
