"""Sensor health: an implausible rate of change (a spike or a jump no physical process makes).

Each metric keeps a reference: the last value that was reached plausibly. A reading further from
it than ``max_step + rate_per_h × hours elapsed`` is implausible. A spike that comes back to the
reference clears after ``clear_after`` plausible readings; a jump to a new level that stays there
(``adopt_after`` readings consistent with each other) becomes the new reference, so the fault also
clears instead of lasting forever. Rates are per metric family (river stage, pressure, …) and, for
river gauges, the station's observed maximum rise and fall from the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import isfinite
from typing import Any, NamedTuple

from detectors.common import calm_long_enough, check_version, excess_score, finite, make_finding, require
from ioc.models import Finding, Reading

STATE_VERSION = 1


class RateLimit(NamedTuple):
    """Allowed change between readings: ``max_step`` (noise, quantum) + rate × elapsed hours."""

    max_step: float
    rise_per_h: float
    fall_per_h: float


class RateOfChangeDetector:
    """Raises ``sensor_spike`` when a metric moves faster than physics allows.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = RateOfChangeDetector("HYD", {"water_level_m": RateLimit(0.1, 0.12, 0.07)}, clear_after=2)
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> r = lambda i, v: Reading("HYD", "water_level", t0 + timedelta(minutes=5 * i), i, {"water_level_m": v})
    >>> [[f.severity for f in d.update(r(i, v))] for i, v in enumerate([3.0, 3.01, 6.0, 3.01, 3.02])]
    [[], [], ['warning'], [], [None]]
    """

    rule = "sensor_spike"

    def __init__(
        self,
        sensor_id: str,
        limits: Mapping[str, RateLimit],
        *,
        clear_after: int = 3,  # plausible readings before the all-clear; fewer = more flapping under bursts
        adopt_after: int = 3,  # readings at a new level before it becomes the reference (a real step)
        severity: str = "warning",
    ) -> None:
        require(bool(limits), f"{sensor_id}: give at least one metric rate limit")
        for m, lim in limits.items():
            require(all(finite(x) is not None and x >= 0 for x in lim),
                    f"{sensor_id}: rate limit of {m} must be finite and >= 0, got {lim}")
            require(lim.max_step > 0 or lim.rise_per_h > 0, f"{sensor_id}: rate limit of {m} allows no change at all")
        require(clear_after >= 1, f"clear_after must be >= 1, got {clear_after}")
        require(adopt_after >= 2, f"adopt_after must be >= 2, got {adopt_after}")
        self.sensor_id = sensor_id
        self.limits = {m: RateLimit(*(float(x) for x in lim)) for m, lim in limits.items()}
        self._items = [(m, lim.max_step, lim.rise_per_h, lim.fall_per_h) for m, lim in self.limits.items()]
        self.clear_after = clear_after
        self.adopt_after = adopt_after
        self.severity = severity
        self.reset()

    def reset(self) -> None:
        # metric -> [ref_value, ref_t, cand_value, cand_t, cand_n]
        self.refs: dict[str, list[float]] = {}
        self.active = False
        self.ok_run = 0
        self.last_t: float | None = None

    @property
    def ready(self) -> bool:
        return bool(self.refs)

    @staticmethod
    def _allowed(lim: RateLimit, dv: float, dt_s: float) -> float:
        return lim.max_step + (lim.rise_per_h if dv > 0 else lim.fall_per_h) * dt_s / 3600.0

    def update(self, reading: Reading) -> list[Finding]:
        t = reading.ts.timestamp()
        if self.last_t is not None and t <= self.last_t:
            return []  # duplicate or out of order: the reference already moved past it
        worst: tuple[float, str, float, float] | None = None
        seen = False
        metrics = reading.metrics
        refs = self.refs
        for metric, step, rise, fall in self._items:
            v = metrics.get(metric)
            if v is None or not isfinite(v):
                continue
            seen = True
            st = refs.get(metric)
            if st is None:
                refs[metric] = [v, t, 0.0, 0.0, 0.0]
                continue
            dv = v - st[0]
            allowed = step + (rise if dv > 0 else fall) * (t - st[1]) / 3600.0  # _allowed(), inline
            if abs(dv) <= allowed:
                st[0], st[1], st[4] = v, t, 0.0
                continue
            score = excess_score(dv, allowed)
            if worst is None or score > worst[0]:
                worst = (score, metric, v, allowed)
            if st[4] > 0 and abs(v - st[2]) <= self._allowed(self.limits[metric], v - st[2], t - st[3]):
                st[2], st[3], st[4] = v, t, st[4] + 1
            else:
                st[2], st[3], st[4] = v, t, 1.0
            if st[4] >= self.adopt_after:  # a step to a new level that holds: adopt it
                st[0], st[1], st[4] = v, t, 0.0
        if not seen:
            return []
        self.last_t = t
        if worst is not None:
            self.ok_run = 0
            if self.active:
                return []
            self.active = True
            score, metric, v, allowed = worst
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric=metric,
                ts=reading.ts, severity=self.severity, value=v, threshold=allowed, score=score,
                message=f"{self.sensor_id}: {metric} thay đổi bất thường (nhảy tới {v:g}), có thể là nhiễu hoặc lỗi cảm biến",
                message_en=f"{self.sensor_id}: {metric} changed implausibly fast (jumped to {v:g}); "
                           "likely a spike or sensor fault",
            )]
        if not calm_long_enough(self):
            return []
        metric = next(m for m in self.limits if finite(metrics.get(m)) is not None)
        return [make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric=metric,
            ts=reading.ts, severity=None, value=float(metrics[metric]), threshold=None, score=0.0,
            message=f"{self.sensor_id}: tốc độ thay đổi đã trở lại bình thường",
            message_en=f"{self.sensor_id}: rate of change is plausible again",
        )]

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "refs": {m: list(v) for m, v in self.refs.items()},
                "active": self.active, "ok_run": self.ok_run, "last_t": self.last_t}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "RateOfChangeDetector")
        self.refs = {m: [float(x) for x in v] for m, v in state["refs"].items() if m in self.limits}
        self.active = bool(state["active"])
        self.ok_run = int(state["ok_run"])
        self.last_t = None if state.get("last_t") is None else float(state["last_t"])

