"""Anomaly: a reading far from what is normal for this hour of the week (local time, UTC+7).

Traffic, air and noise follow the clock: 60 dBA is quiet at 18:00 on Trần Phú and loud at 03:00.
Each metric keeps a mean and an exponentially weighted MAD per local hour of the week (168 bins),
and per hour of the day (24 bins) as the fallback while the weekly bins are still filling: a bin is
used once it has seen ``min_visits`` hours of data, so the detector is warm after a few days (daily
profile) and sharper after a few weeks (weekly profile). The bins learn with memory of
``memory_visits`` hours of data each, winsorised, and anomalous readings are learned clipped so an
episode does not become the new normal. A finding needs ``persist`` readings beyond ``z_on``.

Cost. Within one local hour only that hour's weekly and daily bin change, so they are worked on
in a small "hot" record and folded back into the 192-bin profile when the hour moves on. The
profile (the bulk of the state) therefore changes once an hour: it is encoded (float32, visit
counts capped where they stop mattering, byte planes deflated, base64) once per hour, not at every
state write. Everything is stored as float32 and the live detector computes on exactly those
values, so a restarted detector carries on bit for bit.
"""

from __future__ import annotations

import base64
import math
import sys
import zlib
from array import array
from collections.abc import Mapping
from typing import Any

from detectors.common import (
    BIG,
    LOCAL_UTC_OFFSET_S,
    calm_long_enough,
    check_version,
    finite,
    hour_of_week,
    make_finding,
    require,
    z_score01,
)
from ioc.models import Finding, Reading

STATE_VERSION = 2  # 2: hot bins + a deflated, hourly profile (1 stored the whole profile raw)
_SIGMA_PER_MAD = 1.2533
_WEEK, _DAY = 168, 24


def _planes(a: array[Any]) -> bytes:
    """Little-endian bytes of ``a`` regrouped by byte position: exponents and high mantissa bytes of
    similar floats line up and deflate well, the noisy low bytes stay apart."""
    if a.itemsize > 1 and sys.byteorder == "big":  # store little-endian on every host
        a = array(a.typecode, a)
        a.byteswap()
    raw = a.tobytes()
    k = a.itemsize
    return b"".join(raw[j::k] for j in range(k))


def _unplanes(raw: bytes, typecode: str, n: int) -> array[Any]:
    a = array(typecode)
    k = a.itemsize
    if len(raw) != n * k:
        raise ValueError(f"seasonal profile: expected {n * k} bytes, got {len(raw)}")
    inter = bytearray(n * k)
    for j in range(k):
        inter[j::k] = raw[j * n:(j + 1) * n]
    a.frombytes(bytes(inter))
    if k > 1 and sys.byteorder == "big":
        a.byteswap()
    return a


_ZERO_W = array("f", bytes(4 * _WEEK * 3))
_ZERO_D = array("f", bytes(4 * _DAY * 3))
_ZERO_HOT = array("f", bytes(4 * 6))
_EMPTY_BLOBS: dict[tuple[int, float], str] = {}  # (weekly bins, count cap) -> encoding of an empty profile


class _Metric:
    """One metric's profile: ``w`` (168) and ``d`` (24) bins of [mean, mad, n] (float32), and the hot
    record of the bins of hour-of-week ``how``: [w mean, w mad, w n, d mean, d mad, d n]."""

    __slots__ = ("w", "d", "hot", "how", "run", "blob", "empty")

    def __init__(self, weekly: bool) -> None:
        self.w = _ZERO_W[:] if weekly else array("f")
        self.d = _ZERO_D[:]
        self.hot = _ZERO_HOT[:]
        self.how = -1  # no hot bins yet
        self.run = 0.0  # readings in a row beyond z_on
        self.blob: str | None = None  # the encoded profile, while it is unchanged
        self.empty = True  # nothing folded in yet: every new sensor shares one encoding

    def move_to(self, how: int) -> None:
        """Fold the hot bins back into the profile and take up the bins of ``how``."""
        w, d, hot = self.w, self.d, self.hot
        if self.how >= 0:
            i = (self.how % _DAY) * 3
            d[i:i + 3] = hot[3:6]
            if w:
                i = self.how * 3
                w[i:i + 3] = hot[0:3]
            self.blob = None
            self.empty = False
        i = (how % _DAY) * 3
        hot[3:6] = d[i:i + 3]
        if w:
            i = how * 3
            hot[0:3] = w[i:i + 3]
        self.how = how

    def encode(self, cap: float) -> str:
        """The profile (hot bins excluded) as text: means and MADs float32, counts uint16 (capped)."""
        if self.blob is None and self.empty:  # all zeros: the same for every new sensor
            key = (len(self.w), cap)
            if key not in _EMPTY_BLOBS:
                _EMPTY_BLOBS[key] = self.encode_profile(cap)
            self.blob = _EMPTY_BLOBS[key]
        if self.blob is None:
            self.blob = self.encode_profile(cap)
        return self.blob

    def encode_profile(self, cap: float) -> str:
        prof = self.w + self.d
        counts = array("H", (int(min(n, cap)) for n in prof[2::3]))
        payload = _planes(array("f", prof[0::3]) + array("f", prof[1::3])) + _planes(counts)
        return base64.b64encode(zlib.compress(payload, 6)).decode("ascii")

    def decode(self, blob: str) -> None:
        n = (len(self.w) + len(self.d)) // 3
        try:
            raw = zlib.decompress(base64.b64decode(blob, validate=True))
        except (ValueError, zlib.error) as e:
            raise ValueError(f"seasonal profile is not valid deflated base64: {e}") from e
        values = _unplanes(raw[:8 * n], "f", 2 * n)
        counts = _unplanes(raw[8 * n:], "H", n)
        prof = array("f", bytes(4 * 3 * n))
        prof[0::3], prof[1::3], prof[2::3] = values[:n], values[n:], array("f", counts)
        nw = len(self.w)
        self.w, self.d = prof[:nw], prof[nw:]
        self.blob = blob
        self.empty = False


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
        self._items = list(self.min_scale.items())
        per_hour = max(1.0, 3600.0 / interval_s)
        self.min_n = min_visits * per_hour
        self.min_alpha = 1.0 / (memory_visits * per_hour)
        # A bin's count past this changes nothing (it is trusted and learns at min_alpha), so the
        # stored count is capped here: the same behaviour, and a profile that stays small.
        cap = max(1, math.ceil(self.min_n), math.ceil(1.0 / self.min_alpha) - 1)
        while (cap + 1) * self.min_alpha < 1.0:
            cap += 1
        require(cap <= 65535, f"{sensor_id}: memory_visits × readings per hour must stay below 65535 readings")
        self.count_cap = float(cap)
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
        self.bins: dict[str, _Metric] = {}
        self.active = False
        self.ok_run = 0
        self.last_t: float | None = None

    @property
    def ready(self) -> bool:
        return any(max(max(b.d[2::3]), b.hot[5]) >= self.min_n for b in self.bins.values())

    def update(self, reading: Reading) -> list[Finding]:
        t = reading.ts.timestamp()
        if self.last_t is not None and t <= self.last_t:
            return []
        how = hour_of_week(t, self.utc_offset_s)
        best: tuple[float, str, float, float] | None = None
        calm = True
        seen = False
        metrics = reading.metrics
        min_alpha, min_n, cap, weekly = self.min_alpha, self.min_n, self.count_cap, self.weekly
        z_on, z_off, clip = self.z_on, self.z_off, self.clip
        for metric, floor in self._items:
            v = metrics.get(metric)
            if v.__class__ is not float:
                v = finite(v)  # None, bool, int, str …: the slow, careful path
                if v is None:
                    continue
            elif v - v != 0.0:  # NaN or ±inf
                continue
            if v > BIG:
                v = BIG
            elif v < -BIG:
                v = -BIG
            seen = True
            b = self.bins.get(metric)
            if b is None:
                b = self.bins[metric] = _Metric(weekly)
            if b.how != how:
                b.move_to(how)
            hot = b.hot
            if weekly and hot[2] >= min_n:
                mean, mad, warm = hot[0], hot[1], True
            elif hot[5] >= min_n:
                mean, mad, warm = hot[3], hot[4], True
            else:
                mean, mad, warm = 0.0, 0.0, False
            s = floor
            if warm:
                s = mad * _SIGMA_PER_MAD
                if s < floor:
                    s = floor
                z = abs(v - mean) / s
                if z >= z_on:
                    b.run += 1.0
                    if b.run >= self.persist and (best is None or z > best[0]):
                        best = (z, metric, v, mean)
                else:
                    b.run = 0.0
                if z > z_off:
                    calm = False
            c = clip * s
            for i in (0, 3) if weekly else (3,):
                n = hot[i + 2] + 1.0
                if n == 1.0:
                    hot[i], hot[i + 2] = v, 1.0
                    continue
                a = 1.0 / n if n * min_alpha < 1.0 else min_alpha
                r = v - hot[i]
                if warm:  # winsorise once the bin is trusted, so an episode is learned clipped
                    r = c if r > c else (-c if r < -c else r)
                hot[i] += a * r
                hot[i + 1] += a * ((r if r >= 0 else -r) - hot[i + 1])
                hot[i + 2] = n if n < cap else cap
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
        value = finite(metrics[metric]) or 0.0
        return [make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=metric,
            ts=reading.ts, severity=None, value=max(-BIG, min(BIG, value)), threshold=None, score=0.0,
            message=f"{self.sensor_id}: giá trị đã trở lại mức thường lệ theo giờ",
            message_en=f"{self.sensor_id}: values are back to the usual level for the hour",
        )]

    def to_state(self) -> dict[str, Any]:
        """``profile`` (the 192 bins, hot ones excluded) changes once an hour; the rest every reading."""
        cap = self.count_cap
        return {
            "state_version": STATE_VERSION,
            "profile": {m: b.encode(cap) for m, b in self.bins.items()},
            "hot": {m: [b.how, b.run, *b.hot] for m, b in self.bins.items()},
            "active": self.active,
            "ok_run": self.ok_run,
            "last_t": self.last_t,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "SeasonalBaselineDetector")
        bins: dict[str, _Metric] = {}
        hot = state["hot"]
        for m, blob in state["profile"].items():
            if m not in self.min_scale:
                continue
            b = _Metric(self.weekly)
            b.decode(str(blob))
            h = hot[m]
            if len(h) != 8:
                raise ValueError(f"seasonal hot record of {m} needs 8 numbers, got {len(h)}")
            b.how, b.run = int(h[0]), float(h[1])
            b.hot = array("f", (float(x) for x in h[2:]))
            bins[m] = b
        self.bins = bins
        self.active = bool(state["active"])
        self.ok_run = int(state["ok_run"])
        self.last_t = None if state.get("last_t") is None else float(state["last_t"])
