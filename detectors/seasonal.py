"""Anomaly: a reading far from what is normal for this hour of the week (local time, UTC+7).

Traffic, air and noise follow the clock: 60 dBA is quiet at 18:00 on Trần Phú and loud at 03:00.
Each metric keeps a mean and an exponentially weighted MAD per local hour of the week (168 bins),
and per hour of the day (24 bins) as the fallback while the weekly bins are still filling: a bin is
used once it has seen ``min_visits`` hours of data, so the detector is warm after a few days (daily
profile) and sharper after a few weeks (weekly profile). The bins learn with memory of
``memory_visits`` hours of data each, winsorised, and anomalous readings are learned clipped so an
episode does not become the new normal. A finding needs ``persist`` readings beyond ``z_on``.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Mapping
from typing import Any

from detectors.common import (
    LOCAL_UTC_OFFSET_S,
    bounded,
    calm_long_enough,
    check_version,
    finite,
    hour_of_week,
    make_finding,
    require,
    z_score01,
)
from ioc.models import Finding, Reading

STATE_VERSION = 1
_SIGMA_PER_MAD = 1.2533


def _encode(a: array[float]) -> str:
    """float32 little-endian, base64 (portable across hosts)."""
    if sys.byteorder == "big":
        a = array("f", a)
        a.byteswap()
    return base64.b64encode(a.tobytes()).decode("ascii")


def _decode(s: str) -> array[float]:
    a = array("f")
    raw = base64.b64decode(s) if s else b""
    if len(raw) % 4 == 0:
        a.frombytes(raw)
        if sys.byteorder == "big":
            a.byteswap()
    return a


class SeasonalBaselineDetector:
    """Raises ``anomaly_seasonal`` when a metric is far from its hour-of-week (or hour-of-day) norm.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = SeasonalBaselineDetector("N", {"laeq_dba": 0.5}, interval_s=3600, min_visits=2, persist=1, clear_after=1)
    >>> t0 = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
    >>> day = lambda h: 50.0 + 15.0 * (7 <= (h + 7) % 24 <= 21) + (h % 3) * 0.5
    >>> rs = [Reading("N", "noise", t0 + timedelta(hours=h), h, {"laeq_dba": day(h)}) for h in range(24 * 4)]
    >>> rs.append(Reading("N", "noise", t0 + timedelta(hours=24 * 4 + 20), 999, {"laeq_dba": 68.0}))  # 03:00 local
    >>> [(f.rule, f.severity) for r in rs for f in d.update(r)]
    [('anomaly_seasonal', 'info')]
    """

    rule = "anomaly_seasonal"

    def __init__(
        self,
        sensor_id: str,
        min_scale: Mapping[str, float],
        *,
        interval_s: float,
        min_visits: float = 3.0,  # hours of data a bin needs before it is trusted
        memory_visits: float = 8.0,  # each bin's memory in hours of data; longer = steadier, slower to adapt
        z_on: float = 5.0,
        z_off: float = 2.5,
        persist: int = 3,
        clear_after: int = 3,
        clip: float = 3.0,
        weekly: bool = True,  # False: hour-of-day profile only (no weekday/weekend difference)
        utc_offset_s: int = LOCAL_UTC_OFFSET_S,
        severity: str = "info",
    ) -> None:
        require(bool(min_scale), f"{sensor_id}: give at least one metric and its minimum scale (resolution)")
        require(all((finite(s) or 0.0) > 0 for s in min_scale.values()),
                f"{sensor_id}: minimum scales must be finite and > 0, got {dict(min_scale)}")
        require(interval_s > 0, f"{sensor_id}: interval_s must be > 0 (the registry's reporting interval)")
        require(min_visits >= 1 and memory_visits >= 1, "min_visits and memory_visits must be >= 1 hour of data")
        require(0 < z_off < z_on, f"need 0 < z_off < z_on, got z_off={z_off}, z_on={z_on}")
        require(persist >= 1 and clear_after >= 1 and clip > 0, "persist, clear_after >= 1 and clip > 0 are required")
        self.sensor_id = sensor_id
        self.min_scale = {m: float(s) for m, s in min_scale.items()}
        per_hour = max(1.0, 3600.0 / interval_s)
        self.min_n = min_visits * per_hour
        self.min_alpha = 1.0 / (memory_visits * per_hour)
        self.interval_s = float(interval_s)
        self.z_on = z_on
        self.z_off = z_off
        self.persist = persist
        self.clear_after = clear_after
        self.clip = clip
        self.weekly = weekly
        self.utc_offset_s = utc_offset_s
        self.severity = severity
        self.reset()

    def reset(self) -> None:
        # metric -> {"w": [mean, mad, n] * 168 flattened, "d": [mean, mad, n] * 24, "run": [n]}, float32:
        # the state is these bytes (base64), ~3 KB per metric instead of ~8 KB of JSON numbers, and the
        # live detector computes on exactly what a restarted one will read back
        self.bins: dict[str, dict[str, array[float]]] = {}
        self.active = False
        self.ok_run = 0
        self.last_t: float | None = None

    @property
    def ready(self) -> bool:
        return any(max(b["d"][2::3]) >= self.min_n for b in self.bins.values())

    def _new(self) -> dict[str, array[float]]:
        return {"w": array("f", bytes(4 * 168 * 3 if self.weekly else 0)), "d": array("f", bytes(4 * 24 * 3)),
                "run": array("f", bytes(4))}

    def update(self, reading: Reading) -> list[Finding]:
        t = reading.ts.timestamp()
        if self.last_t is not None and t <= self.last_t:
            return []
        how = hour_of_week(t, self.utc_offset_s)
        iw, idy = how * 3, (how % 24) * 3
        best: tuple[float, str, float, float] | None = None
        calm = True
        seen = False
        metrics = reading.metrics
        min_alpha = self.min_alpha
        for metric, floor in self.min_scale.items():
            v = bounded(metrics.get(metric))
            if v is None:
                continue
            seen = True
            b = self.bins.get(metric)
            if b is None:
                b = self.bins[metric] = self._new()
            w, d, run = b["w"], b["d"], b["run"]
            if self.weekly and w[iw + 2] >= self.min_n:
                mean, mad, warm = w[iw], w[iw + 1], True
            elif d[idy + 2] >= self.min_n:
                mean, mad, warm = d[idy], d[idy + 1], True
            else:
                mean, mad, warm = 0.0, 0.0, False
            s = floor
            if warm:
                s = mad * _SIGMA_PER_MAD
                if s < floor:
                    s = floor
                z = abs(v - mean) / s
                if z >= self.z_on:
                    run[0] += 1.0
                    if run[0] >= self.persist and (best is None or z > best[0]):
                        best = (z, metric, v, mean)
                else:
                    run[0] = 0.0
                if z > self.z_off:
                    calm = False
            c = self.clip * s
            for arr, i in ((w, iw), (d, idy)) if self.weekly else ((d, idy),):
                n = arr[i + 2] + 1.0
                if n == 1.0:
                    arr[i], arr[i + 2] = v, 1.0
                    continue
                a = 1.0 / n if n * min_alpha < 1.0 else min_alpha
                r = v - arr[i]
                if warm:  # winsorise once the bin is trusted, so an episode is learned clipped
                    r = c if r > c else (-c if r < -c else r)
                arr[i] += a * r
                arr[i + 1] += a * ((r if r >= 0 else -r) - arr[i + 1])
                arr[i + 2] = n
        if not seen:
            return []
        self.last_t = t
        if best is not None:
            self.ok_run = 0
            if self.active:
                return []
            self.active = True
            z, metric, v, mean = best
            hour = how % 24
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=metric,
                ts=reading.ts, severity=self.severity, value=v, threshold=mean, score=z_score01(z, self.z_on),
                message=f"{self.sensor_id}: {metric} = {v:g} bất thường so với thường lệ lúc {hour:02d}h ({mean:g})",
                message_en=f"{self.sensor_id}: {metric} = {v:g} is unusual for {hour:02d}:00 local (usually {mean:g})",
                detail={"z": round(min(z, 1e9), 3), "hour_of_week": how},
            )]
        if not calm_long_enough(self, calm):
            return []
        metric = next(m for m in self.min_scale if finite(metrics.get(m)) is not None)
        return [make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=metric,
            ts=reading.ts, severity=None, value=float(bounded(metrics[metric]) or 0.0), threshold=None, score=0.0,
            message=f"{self.sensor_id}: giá trị đã trở lại mức thường lệ theo giờ",
            message_en=f"{self.sensor_id}: values are back to the usual level for the hour",
        )]

    def to_state(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "bins": {m: {k: _encode(v) for k, v in b.items()} for m, b in self.bins.items()},
            "active": self.active,
            "ok_run": self.ok_run,
            "last_t": self.last_t,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "SeasonalBaselineDetector")
        bins: dict[str, dict[str, array[float]]] = {}
        for m, b in state["bins"].items():
            if m not in self.min_scale:
                continue
            fresh = self._new()
            for key in fresh:
                got = _decode(b.get(key, ""))
                if len(got) == len(fresh[key]):
                    fresh[key] = got
            bins[m] = fresh
        self.bins = bins
        self.active = bool(state["active"])
        self.ok_run = int(state["ok_run"])
        self.last_t = None if state.get("last_t") is None else float(state["last_t"])
