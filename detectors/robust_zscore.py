"""Anomaly: a robust z-score on EWMA residuals scaled by an exponentially weighted MAD.

Per metric, the level is an EWMA and the scale an exponentially weighted mean absolute deviation
(×1.2533 ≈ σ for Gaussian noise), floored at the metric's resolution so a quantised series (a
gauge at 1 cm) cannot produce huge z from one step. Once warm, residuals are winsorised at
``clip`` × scale before they are learned, so an outlier barely moves the baseline. A finding needs
``persist`` consecutive readings beyond ``z_on`` (one stray reading is the health detectors'
business) and clears after ``clear_after`` readings within ``z_off``. O(1) per reading, pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from detectors.common import (
    BIG,
    bounded,
    calm_long_enough,
    check_version,
    finite,
    from_iso,
    iso,
    make_finding,
    require,
    z_score01,
)
from ioc.models import Finding, Reading

STATE_VERSION = 1
_SIGMA_PER_MAD = 1.2533  # σ / mean absolute deviation for Gaussian noise


class RobustZScoreDetector:
    """Raises ``anomaly_zscore`` when a metric leaves its recent level by many robust σ, persistently.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = RobustZScoreDetector("N", {"laeq_dba": 0.5}, warmup=20, persist=2, clear_after=2)
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> vals = [60.0 + (i % 5) * 0.5 for i in range(40)] + [95.0] * 3 + [61.0] * 4
    >>> r = lambda i, v: Reading("N", "noise", t0 + timedelta(minutes=5 * i), i, {"laeq_dba": v})
    >>> [(i, f.severity) for i, v in enumerate(vals) for f in d.update(r(i, v))]
    [(41, 'info'), (44, None)]
    """

    rule = "anomaly_zscore"

    def __init__(
        self,
        sensor_id: str,
        min_scale: Mapping[str, float],
        *,
        alpha: float = 0.05,  # level EWMA weight per reading; higher tracks faster and sees less
        scale_alpha: float = 0.02,  # MAD EWMA weight; lower = steadier threshold, slower to adapt
        z_on: float = 6.0,  # robust σ to count as anomalous; lower = more recall, more false alarms
        z_off: float = 3.0,
        persist: int = 3,  # anomalous readings in a row before raising
        clear_after: int = 3,
        warmup: int = 50,  # readings learned before scoring
        clip: float = 3.0,  # winsorise residuals at this many σ when learning
        severity: str = "info",
    ) -> None:
        require(bool(min_scale), f"{sensor_id}: give at least one metric and its minimum scale (resolution)")
        require(all((finite(s) or 0.0) > 0 for s in min_scale.values()),
                f"{sensor_id}: minimum scales must be finite and > 0 (the metric's resolution), got {dict(min_scale)}")
        require(0 < alpha <= 1 and 0 < scale_alpha <= 1, "alpha and scale_alpha must be in (0, 1]")
        require(0 < z_off < z_on, f"need 0 < z_off < z_on, got z_off={z_off}, z_on={z_on}")
        require(persist >= 1 and clear_after >= 1 and warmup >= 2 and clip > 0,
                "persist, clear_after >= 1, warmup >= 2 and clip > 0 are required")
        self.sensor_id = sensor_id
        self.min_scale = {m: float(s) for m, s in min_scale.items()}
        self.alpha = alpha
        self.scale_alpha = scale_alpha
        self.z_on = z_on
        self.z_off = z_off
        self.persist = persist
        self.clear_after = clear_after
        self.warmup = warmup
        self.clip = clip
        self.severity = severity
        self.reset()

    def reset(self) -> None:
        self.stats: dict[str, list[float]] = {}  # metric -> [mean, mad, n, run_over_z_on]
        self.active = False
        self.ok_run = 0
        self.last_ts: datetime | None = None

    @property
    def ready(self) -> bool:
        return any(st[2] >= self.warmup for st in self.stats.values())

    def update(self, reading: Reading) -> list[Finding]:
        if self.last_ts is not None and reading.ts <= self.last_ts:
            return []
        best: tuple[float, str, float, float] | None = None  # |z|, metric, value, expected
        calm = True
        seen = False
        metrics = reading.metrics
        warmup, z_on, clip = self.warmup, self.z_on, self.clip
        for metric, floor in self.min_scale.items():
            v = metrics.get(metric)
            if v.__class__ is float:  # the usual case, inline: bounded() costs a call per metric
                if v - v != 0.0:  # NaN or ±inf
                    continue
                if v > BIG:
                    v = BIG
                elif v < -BIG:
                    v = -BIG
            else:
                v = bounded(v)
                if v is None:
                    continue
            seen = True
            st = self.stats.get(metric)
            if st is None:
                self.stats[metric] = [v, 0.0, 1.0, 0.0]
                continue
            mean, mad, n = st[0], st[1], st[2]
            s = mad * _SIGMA_PER_MAD
            if s < floor:
                s = floor
            r = v - mean
            if n >= warmup:
                z = abs(r) / s
                if z >= z_on:
                    st[3] += 1.0
                    if st[3] >= self.persist and (best is None or z > best[0]):
                        best = (z, metric, v, mean)
                else:
                    st[3] = 0.0
                if z > self.z_off:
                    calm = False
                c = clip * s
                if r > c:
                    r = c
                elif r < -c:
                    r = -c
                st[0] = mean + self.alpha * r
                st[1] = mad + self.scale_alpha * (abs(r) - mad)
            else:  # warm-up: exact running mean and mean absolute deviation
                st[0] = mean + r / (n + 1.0)
                st[1] = mad + (abs(r) - mad) / n
            st[2] = n + 1.0
        if not seen:
            return []
        self.last_ts = reading.ts
        if best is not None:
            self.ok_run = 0
            if self.active:
                return []
            self.active = True
            z, metric, v, expected = best
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=metric,
                ts=reading.ts, severity=self.severity, value=v, threshold=expected, score=z_score01(z, z_on),
                message=f"{self.sensor_id}: {metric} = {v:g} bất thường so với mức gần đây ({expected:g})",
                message_en=f"{self.sensor_id}: {metric} = {v:g} is anomalous against its recent level ({expected:g})",
                detail={"z": round(min(z, 1e9), 3)},
            )]
        if not calm_long_enough(self, calm):
            return []
        metric = next(m for m in self.min_scale if finite(metrics.get(m)) is not None)
        return [make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=metric,
            ts=reading.ts, severity=None, value=float(metrics[metric]), threshold=None, score=0.0,
            message=f"{self.sensor_id}: giá trị đã trở lại bình thường",
            message_en=f"{self.sensor_id}: values are back to normal",
        )]

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "stats": {m: list(v) for m, v in self.stats.items()},
                "active": self.active, "ok_run": self.ok_run, "last_ts": iso(self.last_ts)}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "RobustZScoreDetector")
        self.stats = {m: [float(x) for x in v] for m, v in state["stats"].items() if m in self.min_scale}
        self.active = bool(state["active"])
        self.ok_run = int(state["ok_run"])
        self.last_ts = from_iso(state.get("last_ts"))
