"""Anomaly: a level shift or slow drift, by a two-sided CUSUM on standardised residuals.

The baseline is a slow EWMA and the scale a slow exponentially weighted MAD of the residuals
(floored at the metric's resolution), so the ordinary daily swing is part of "normal" and only a
sustained departure accumulates. ``S⁺ = max(0, S⁺ + z − k)`` and ``S⁻ = max(0, S⁻ − z − k)``;
a finding when either reaches ``h``. The sums are capped at ``2h`` and the baseline keeps learning
(winsorised), so after a permanent shift the baseline catches up, the sums drain and the finding
clears once both are below ``h_off``: a shift is news once, not forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from detectors.common import BIG, bounded, check_version, finite, from_iso, iso, make_finding, require
from ioc.models import Finding, Reading

STATE_VERSION = 1
_SIGMA_PER_MAD = 1.2533


class LevelShiftDetector:
    """Raises ``anomaly_level_shift`` when a metric's level moves and stays moved (CUSUM).

    >>> from datetime import UTC, datetime, timedelta
    >>> d = LevelShiftDetector("AQ", {"no2": 0.5}, alpha=0.01, k=0.5, h=8.0, warmup=30)
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> vals = [20.0 + (i % 4) for i in range(60)] + [20.0 + 0.4 * i for i in range(40)]
    >>> r = lambda i, v: Reading("AQ", "air", t0 + timedelta(minutes=5 * i), i, {"no2": v})
    >>> [(i, f.severity) for i, v in enumerate(vals) for f in d.update(r(i, v))][:1]
    [(73, 'info')]
    """

    rule = "anomaly_level_shift"

    def __init__(
        self,
        sensor_id: str,
        min_scale: Mapping[str, float],
        *,
        alpha: float = 0.01,  # baseline EWMA weight; lower remembers longer and catches slower drifts
        scale_alpha: float = 0.01,
        k: float = 0.5,  # allowance in σ per reading; higher ignores small shifts (and daily swings)
        h: float = 10.0,  # decision threshold in σ·readings; higher = fewer false alarms, later alarms
        h_off: float | None = None,  # clear below this (default h / 4)
        warmup: int = 100,
        clip: float = 4.0,
        severity: str = "info",
    ) -> None:
        require(bool(min_scale), f"{sensor_id}: give at least one metric and its minimum scale (resolution)")
        require(all((finite(s) or 0.0) > 0 for s in min_scale.values()),
                f"{sensor_id}: minimum scales must be finite and > 0, got {dict(min_scale)}")
        require(0 < alpha <= 1 and 0 < scale_alpha <= 1, "alpha and scale_alpha must be in (0, 1]")
        require(k >= 0 and h > 0, f"need k >= 0 and h > 0, got k={k}, h={h}")
        h_off = h / 4.0 if h_off is None else h_off
        require(0 <= h_off < h, f"need 0 <= h_off < h, got {h_off}")
        require(warmup >= 2 and clip > 0, "warmup >= 2 and clip > 0 are required")
        self.sensor_id = sensor_id
        self.min_scale = {m: float(s) for m, s in min_scale.items()}
        self.alpha = alpha
        self.scale_alpha = scale_alpha
        self.k = k
        self.h = h
        self.h_off = h_off
        self.warmup = warmup
        self.clip = clip
        self.severity = severity
        self.reset()

    def reset(self) -> None:
        self.stats: dict[str, list[float]] = {}  # metric -> [mean, mad, n, s_pos, s_neg]
        self.active = False
        self.last_ts: datetime | None = None

    @property
    def ready(self) -> bool:
        return any(st[2] >= self.warmup for st in self.stats.values())

    def update(self, reading: Reading) -> list[Finding]:
        if self.last_ts is not None and reading.ts <= self.last_ts:
            return []
        best: tuple[float, str, float, float, float] | None = None  # S, metric, value, baseline, sign
        top = 0.0
        seen = False
        metrics = reading.metrics
        k, cap = self.k, 2.0 * self.h
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
                self.stats[metric] = [v, 0.0, 1.0, 0.0, 0.0]
                continue
            mean, mad, n = st[0], st[1], st[2]
            r = v - mean
            if n >= self.warmup:
                s = mad * _SIGMA_PER_MAD
                if s < floor:
                    s = floor
                z = r / s
                sp = st[3] + z - k
                sn = st[4] - z - k
                st[3] = 0.0 if sp < 0 else (cap if sp > cap else sp)
                st[4] = 0.0 if sn < 0 else (cap if sn > cap else sn)
                big = st[3] if st[3] >= st[4] else st[4]
                if big > top:
                    top = big
                if big >= self.h and (best is None or big > best[0]):
                    best = (big, metric, v, mean, 1.0 if st[3] >= st[4] else -1.0)
                c = self.clip * s
                if r > c:
                    r = c
                elif r < -c:
                    r = -c
                st[0] = mean + self.alpha * r
                st[1] = mad + self.scale_alpha * (abs(r) - mad)
            else:
                st[0] = mean + r / (n + 1.0)
                st[1] = mad + (abs(r) - mad) / n
            st[2] = n + 1.0
        if not seen:
            return []
        self.last_ts = reading.ts
        if best is not None:
            if self.active:
                return []
            self.active = True
            big, metric, v, mean, sign = best
            vi_dir, en_dir = ("tăng", "up") if sign > 0 else ("giảm", "down")
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=metric,
                ts=reading.ts, severity=self.severity, value=v, threshold=mean,
                score=1.0 - self.h / (big + self.h),  # 0.5 at h, towards 1 for a large accumulated shift
                message=f"{self.sensor_id}: {metric} dịch chuyển mức ({vi_dir}) so với nền {mean:g}, có thể trôi hoặc thay đổi thật",
                message_en=f"{self.sensor_id}: {metric} level shifted {en_dir} from its baseline {mean:g} "
                           "(drift or a real change)",
                detail={"cusum": round(big, 3)},
            )]
        if not self.active or top > self.h_off:
            return []
        self.active = False
        metric = next(m for m in self.min_scale if finite(metrics.get(m)) is not None)
        return [make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=metric,
            ts=reading.ts, severity=None, value=float(bounded(metrics[metric]) or 0.0), threshold=None, score=0.0,
            message=f"{self.sensor_id}: mức nền đã ổn định trở lại",
            message_en=f"{self.sensor_id}: the level is stable again",
        )]

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "stats": {m: list(v) for m, v in self.stats.items()},
                "active": self.active, "last_ts": iso(self.last_ts)}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "LevelShiftDetector")
        self.stats = {m: [float(x) for x in v] for m, v in state["stats"].items() if m in self.min_scale}
        self.active = bool(state["active"])
        self.last_ts = from_iso(state.get("last_ts"))
