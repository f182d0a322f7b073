"""Sensor health: an implausible rate of change (a spike or a jump no physical process makes).

Two tests per metric, one finding per sensor:

* **Physics.** Each metric keeps a reference: the last value that was reached plausibly. A reading
  further from it than ``max_step + rate_per_h × hours elapsed`` is implausible. Rates are per metric
  family (river stage, pressure, …) and, for river gauges, the station's observed maximum rise and
  fall from the registry, with a safety factor, so they only catch gross faults.
* **The sensor's own behaviour.** Most real spikes (a quantised hourly gauge that reports one value
  a metre off, a PM monitor's single 80 µg/m³ blip) lie well inside physical limits. So each metric
  also predicts the next value from the reference and its recent trend (``ref + trend × steps``) and
  keeps a robust scale: the EWMA of the absolute prediction error of the readings it accepted, which
  never learns from the outliers it rejects. A reading whose error is at least ``min_jump`` (a
  per-metric floor well above quantum and noise) *and* more than ``z_on`` scales is a spike at once;
  one more than ``z_confirm`` scales is held as a suspect and called a spike when the next reading
  comes back to the old track (error below ``back_frac`` of the suspect's), one interval later. A
  suspect that does not come back was a real change and is learned. ``min_jump = 0`` turns the
  statistical test off for a metric (wind, humidity: bursty or saturating by nature).

A spike that comes back to the reference clears after ``clear_after`` plausible readings; a jump
to a new level that stays there (``adopt_after`` readings consistent with each other) becomes the
new reference, so the fault also clears instead of lasting forever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from math import isfinite
from typing import Any, NamedTuple

from detectors.common import calm_long_enough, check_version, excess_score, finite, make_finding, require
from ioc.models import Finding, Reading

STATE_VERSION = 2
# per metric state: ref value/time, adopt candidate value/time/count, scale, trend per step, accepted
# steps, suspect error (0 = none) and value
_REF_V, _REF_T, _CAND_V, _CAND_T, _CAND_N, _SCALE, _TREND, _N_OK, _SUSPECT, _SUSPECT_V = range(10)
_STATE_LEN = 10


class RateLimit(NamedTuple):
    """Allowed change between readings: ``max_step`` (noise, quantum) + rate × elapsed hours.

    ``min_jump`` (> 0) enables the statistical spike test: no error smaller than this is a spike.
    ``immediate`` False: a statistical spike is only called when the next reading comes back, for
    metrics whose real episodes start abruptly (a pollution plume, a loud event).
    """

    max_step: float
    rise_per_h: float
    fall_per_h: float
    min_jump: float = 0.0
    immediate: bool = True


class RateOfChangeDetector:
    """Raises ``sensor_spike`` when a metric moves faster than physics, or than the sensor itself, allows.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = RateOfChangeDetector("HYD", {"water_level_m": RateLimit(0.1, 0.12, 0.07)}, clear_after=2)
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> r = lambda i, v: Reading("HYD", "water_level", t0 + timedelta(minutes=5 * i), i, {"water_level_m": v})
    >>> [[f.severity for f in d.update(r(i, v))] for i, v in enumerate([3.0, 3.01, 6.0, 3.01, 3.02])]
    [[], [], ['warning'], [], [None]]

    An hourly gauge at 1 cm with a 1.2 m spike, well inside its 5 m/h physical limit:

    >>> d = RateOfChangeDetector("HYD", {"water_level_m": RateLimit(0.15, 5.3, 2.3, min_jump=0.5)}, interval_s=3600)
    >>> r = lambda i, v: Reading("HYD", "water_level", t0 + timedelta(hours=i), i, {"water_level_m": v})
    >>> vals = [4.0 + 0.01 * (i % 3 == 0) for i in range(12)] + [5.2, 4.01, 4.0, 4.0]
    >>> [(i, f.severity) for i, v in enumerate(vals) for f in d.update(r(i, v))]
    [(12, 'warning'), (15, None)]
    """

    rule = "sensor_spike"

    def __init__(
        self,
        sensor_id: str,
        limits: Mapping[str, RateLimit],
        *,
        interval_s: float = 300.0,  # the registry's reporting interval: errors are judged per step
        clear_after: int = 3,  # plausible readings before the all-clear; fewer = more flapping under bursts
        adopt_after: int = 3,  # readings at a new level before it becomes the reference (a real step)
        z_on: float = 12.0,  # error / scale for an immediate spike; lower = more spikes caught, more flood onsets called spikes
        z_confirm: float = 3.0,  # error / scale for a suspect that a return to the old track confirms
        back_frac: float = 0.5,  # "came back": the next reading is nearer the old track than the suspect
        alpha: float = 0.05,  # EWMA weight of the scale: ~20 readings of memory (4x faster to widen)
        trend_alpha: float = 0.3,  # EWMA weight of the trend: fast, so a flood's steady rise or fall is predicted
        warmup: int = 3,  # accepted readings before the statistical test judges (min_jump guards the start)
        severity: str = "warning",
    ) -> None:
        require(bool(limits), f"{sensor_id}: give at least one metric rate limit")
        for m, lim in limits.items():
            require(all(finite(x) is not None and x >= 0 for x in lim[:4]),
                    f"{sensor_id}: rate limit of {m} must be finite and >= 0, got {lim}")
            require(lim[0] > 0 or lim[1] > 0, f"{sensor_id}: rate limit of {m} allows no change at all")
        require(interval_s > 0, f"interval_s must be > 0 (the registry's reporting interval), got {interval_s}")
        require(clear_after >= 1, f"clear_after must be >= 1, got {clear_after}")
        require(adopt_after >= 2, f"adopt_after must be >= 2, got {adopt_after}")
        require(0 < z_confirm <= z_on, f"need 0 < z_confirm <= z_on, got {z_confirm}, {z_on}")
        require(0 < back_frac < 1 and 0 < alpha <= 1 and 0 < trend_alpha <= 1 and warmup >= 1,
                "need 0 < back_frac < 1, 0 < alpha <= 1, 0 < trend_alpha <= 1 and warmup >= 1")
        self.sensor_id = sensor_id
        self.limits = {m: RateLimit(float(lim[0]), float(lim[1]), float(lim[2]), float(lim.min_jump), bool(lim.immediate))
                       for m, lim in limits.items()}
        self.interval_s = float(interval_s)
        self.clear_after = clear_after
        self.adopt_after = adopt_after
        self.z_on = float(z_on)
        self.z_confirm = float(z_confirm)
        self.back_frac = float(back_frac)
        self.alpha = float(alpha)
        self.trend_alpha = float(trend_alpha)
        self.warmup = warmup
        self.severity = severity
        self._items = [(m, lim.max_step, lim.rise_per_h, lim.fall_per_h, lim.min_jump,
                        self.z_on if lim.immediate else math.inf) for m, lim in self.limits.items()]
        self.reset()

    def reset(self) -> None:
        self.refs: dict[str, list[float]] = {}  # metric -> state (see _REF_V …)
        self.active = False
        self.ok_run = 0
        self.last_t: float | None = None

    @property
    def ready(self) -> bool:
        return bool(self.refs)

    @staticmethod
    def _allowed(lim: RateLimit, dv: float, dt_s: float) -> float:
        return lim.max_step + (lim.rise_per_h if dv > 0 else lim.fall_per_h) * dt_s / 3600.0

    def _accept(self, st: list[float], v: float, t: float, steps: float, err: float) -> None:
        """Learn a plausible reading: it becomes the reference, its error and step feed scale and trend."""
        a = self.alpha
        if st[_N_OK] >= 1:
            e = min(abs(err), 1e12) / math.sqrt(steps)
            st[_SCALE] += (min(1.0, 4.0 * a) if e > st[_SCALE] else a) * (e - st[_SCALE])  # quick to widen, slow to narrow
            st[_TREND] += self.trend_alpha * (max(-1e12, min(1e12, (v - st[_REF_V]) / steps)) - st[_TREND])
        st[_REF_V], st[_REF_T], st[_CAND_N], st[_SUSPECT] = v, t, 0.0, 0.0
        st[_N_OK] += 1.0

    def update(self, reading: Reading) -> list[Finding]:
        t = reading.ts.timestamp()
        if self.last_t is not None and t <= self.last_t:
            return []  # duplicate or out of order: the reference already moved past it
        worst: tuple[float, str, float, float] | None = None
        seen = False
        metrics = reading.metrics
        refs = self.refs
        for metric, step, rise, fall, min_jump, z_on in self._items:
            v = metrics.get(metric)
            if v is None or not isfinite(v):
                continue
            seen = True
            st = refs.get(metric)
            if st is None:
                refs[metric] = [v, t, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
                continue
            dt = t - st[_REF_T]
            dv = v - st[_REF_V]
            allowed = step + (rise if dv > 0 else fall) * dt / 3600.0  # _allowed(), inline
            steps = max(1.0, dt / self.interval_s)
            err = dv - st[_TREND] * min(steps, 3.0)  # a trend is trusted for a few steps, not across an outage
            spike = abs(dv) > allowed
            if not spike and min_jump > 0.0:
                bar = max(st[_SCALE], 1e-12) * math.sqrt(steps)
                suspect = st[_SUSPECT]
                if suspect != 0.0:  # the previous reading jumped: did this one come back?
                    if abs(err) <= self.back_frac * abs(suspect):
                        worst = self._worse(worst, excess_score(suspect, min_jump), metric, st[_SUSPECT_V], min_jump)
                    self._accept(st, v, t, steps, err)  # back on track, or the jump was real: learn this one
                    continue
                if st[_N_OK] > self.warmup and abs(err) >= min_jump:
                    if abs(err) > z_on * bar:
                        spike, allowed = True, max(min_jump, z_on * bar)
                    elif abs(err) > self.z_confirm * bar:
                        st[_SUSPECT], st[_SUSPECT_V] = err, v  # held, not learned: the next reading decides
                        continue
            if not spike:
                self._accept(st, v, t, steps, err)
                continue
            worst = self._worse(worst, excess_score(dv, allowed), metric, v, allowed)
            if st[_CAND_N] > 0 and abs(v - st[_CAND_V]) <= self._allowed(self.limits[metric], v - st[_CAND_V],
                                                                         t - st[_CAND_T]):
                st[_CAND_V], st[_CAND_T], st[_CAND_N] = v, t, st[_CAND_N] + 1
            else:
                st[_CAND_V], st[_CAND_T], st[_CAND_N] = v, t, 1.0
            if st[_CAND_N] >= self.adopt_after:  # a step to a new level that holds: adopt it
                st[_REF_V], st[_REF_T], st[_CAND_N], st[_TREND] = v, t, 0.0, 0.0
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

    @staticmethod
    def _worse(worst: tuple[float, str, float, float] | None, score: float, metric: str, v: float,
               allowed: float) -> tuple[float, str, float, float]:
        return (score, metric, v, allowed) if worst is None or score > worst[0] else worst

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "refs": {m: list(v) for m, v in self.refs.items()},
                "active": self.active, "ok_run": self.ok_run, "last_t": self.last_t}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "RateOfChangeDetector")
        refs = {m: [float(x) for x in v] for m, v in state["refs"].items() if m in self.limits}
        if any(len(v) != _STATE_LEN for v in refs.values()):
            raise ValueError(f"RateOfChangeDetector state has references of the wrong length (want {_STATE_LEN}); "
                             "drop the stored state to start the detector cold")
        self.refs = refs
        self.active = bool(state["active"])
        self.ok_run = int(state["ok_run"])
        self.last_t = None if state.get("last_t") is None else float(state["last_t"])

