"""Flood alarm levels (BĐ I/II/III, QĐ 05/2020/QĐ-TTg) on one river gauge, with hysteresis.

The band only drops once the level is ``hysteresis_m`` below the band's threshold, so a river
hovering at an alarm line does not flap alerts open and closed.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from ioc.models import Finding, Reading

#: BĐ band -> alert severity for emergency staff.
BAND_SEVERITY = {1: "info", 2: "warning", 3: "critical"}
STATE_VERSION = 1


class AlarmLevelDetector:
    """Raises a finding whenever the alarm band of a gauge changes.

    >>> from datetime import UTC
    >>> d = AlarmLevelDetector("G", {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0})
    >>> t = iter(range(1, 100))
    >>> r = lambda v: Reading("G", "water_level", datetime(2026, 1, 1, 0, next(t), tzinfo=UTC), 1, {"water_level_m": v})
    >>> d.update(r(7.0)), [f.severity for f in d.update(r(9.6))], [f.severity for f in d.update(r(9.45))]
    ([], ['warning'], [])
    >>> [f.severity for f in d.update(r(7.8))]
    [None]
    """

    rule = "flood_alarm_level"

    def __init__(
        self,
        sensor_id: str,
        levels: dict[str, float | None],
        *,
        metric: str = "water_level_m",
        hysteresis_m: float = 0.1,  # ~ gauge noise plus wave chop; larger delays all-clear
    ) -> None:
        thresholds = [(i, levels.get(f"bd{i}")) for i in (1, 2, 3)]
        self.thresholds = [(i, float(v)) for i, v in thresholds if v is not None]
        if not self.thresholds:
            raise ValueError(f"{sensor_id}: alarm levels need at least one of bd1, bd2, bd3; got {levels!r}")
        values = [v for _, v in self.thresholds]
        if values != sorted(values):
            raise ValueError(f"{sensor_id}: alarm levels must increase from BĐ I to BĐ III; got {levels!r}")
        if hysteresis_m < 0:
            raise ValueError("hysteresis_m must be >= 0")
        self.sensor_id = sensor_id
        self.metric = metric
        self.hysteresis_m = hysteresis_m
        self.band = 0
        self.last_ts: datetime | None = None

    @property
    def ready(self) -> bool:
        return True  # thresholds are physical, no warm-up

    def _band_for(self, value: float) -> int:
        band = 0
        for i, level in self.thresholds:
            if value >= level:
                band = i
            elif i <= self.band and value >= level - self.hysteresis_m:
                band = i  # hold the band inside the hysteresis zone
        return band

    def update(self, reading: Reading) -> list[Finding]:
        value = reading.metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return []  # a broken value says nothing about the river (the health detectors flag it)
        if self.last_ts is not None and reading.ts <= self.last_ts:
            return []  # duplicate or late delivery: the band already reflects newer data
        self.last_ts = reading.ts
        band = self._band_for(value)
        if band == self.band:
            return []
        self.band = band
        level = dict(self.thresholds).get(band)
        if band == 0:
            msg = f"{self.sensor_id}: water level {value:.2f} m back below BĐ I"
            return [Finding(self.sensor_id, self.rule, "flood", self.metric, reading.ts, None, value, None, msg)]
        roman = {1: "I", 2: "II", 3: "III"}[band]
        msg = f"{self.sensor_id}: water level {value:.2f} m at or above BĐ {roman} ({level:.2f} m)"
        return [
            Finding(
                self.sensor_id, self.rule, "flood", self.metric, reading.ts, BAND_SEVERITY[band], value, level, msg,
                detail={"band": band},
            )
        ]

    def to_state(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "band": self.band,
            "last_ts": self.last_ts.isoformat() if self.last_ts else None,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported AlarmLevelDetector state_version {state.get('state_version')!r}")
        self.band = int(state["band"])
        self.last_ts = datetime.fromisoformat(state["last_ts"]) if state.get("last_ts") else None

    def reset(self) -> None:
        self.band = 0
        self.last_ts = None
