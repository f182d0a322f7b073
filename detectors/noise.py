"""Noise against QCVN 26:2010/BTNMT day (06–21 h) and night (21–06 h) limits, in local time (UTC+7).

The compared quantity is a sustained level, not a sample: the energy-average LAeq of the samples
in the last ``window_s`` *within the current period* (a night LAeq never includes evening traffic),
evaluated once ``min_span_s`` of the period has data. Limits (LAeq, dBA):

==========================================================  =====  =====
area                                                          day  night
==========================================================  =====  =====
special: hospitals, schools, kindergartens, libraries, …       55     45
normal: housing, hotels, offices                               70     55
==========================================================  =====  =====

QCVN 26:2025/BNNMT replaced it on 14/11/2025 but its values were not found: pass ``limits`` to
use other numbers. Busy roads routinely exceed 70 dBA, so an exceedance is ``info``, one of
``severe_excess_db`` or more is ``warning``, and a level clears only ``hysteresis_db`` under it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from detectors.common import label_of
from ioc.models import Finding, Reading

STATE_VERSION = 1
#: QCVN 26:2010/BTNMT, LAeq dBA: area -> (day 06-21 h, night 21-06 h).
QCVN26_2010_LIMITS: dict[str, tuple[float, float]] = {"special": (55.0, 45.0), "normal": (70.0, 55.0)}
AREA_VI = {"special": "khu vực đặc biệt", "normal": "khu vực thông thường"}
DAY_START_H, NIGHT_START_H = 6, 21
VN_UTC_OFFSET_S = 7 * 3600
SEVERITY = {1: "info", 2: "warning"}
#: Outside this range a "sound level" is a sensor fault (194 dB is the limit of sound in air).
VALID_DBA = (0.0, 200.0)


def period_of(epoch: float, offset_s: int = VN_UTC_OFFSET_S) -> tuple[bool, float]:
    """(is day, epoch when the period began) for a UTC epoch, by local clock.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2025, 3, 12, 15, 30, tzinfo=UTC).timestamp()  # 22:30 in Nha Trang
    >>> day, start = period_of(t)
    >>> day, datetime.fromtimestamp(start, UTC).isoformat()
    (False, '2025-03-12T14:00:00+00:00')
    """
    local = epoch + offset_s
    midnight = math.floor(local / 86400) * 86400
    sec = local - midnight
    if DAY_START_H * 3600 <= sec < NIGHT_START_H * 3600:
        return True, midnight + DAY_START_H * 3600 - offset_s
    if sec >= NIGHT_START_H * 3600:
        return False, midnight + NIGHT_START_H * 3600 - offset_s
    return False, midnight - 86400 + NIGHT_START_H * 3600 - offset_s


def laeq(levels_dba: list[float]) -> float:
    """Energy average of equal-duration levels.

    >>> round(laeq([70.0, 60.0]), 2)
    67.4
    """
    return 10.0 * math.log10(math.fsum(10.0 ** (v / 10.0) for v in levels_dba) / len(levels_dba))


class NoiseLimitDetector:
    """Sustained LAeq of one noise sensor against its QCVN 26 day/night limit.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = NoiseLimitDetector("NOISE_BV_TINH", area="special")
    >>> t0 = datetime(2025, 3, 12, 1, tzinfo=UTC)  # 08:00 local, day limit 55 dBA
    >>> out = []
    >>> for i in range(24):  # 5-minute LAeq, 62 dBA for an hour then 50 dBA
    ...     r = Reading("NOISE_BV_TINH", "noise", t0 + timedelta(minutes=5 * i), i, {"laeq_dba": 62.0 if i < 12 else 50.0})
    ...     out += d.update(r)
    >>> [(f.severity, round(f.value, 1), f.threshold) for f in out]
    [('info', 62.0, 55.0), (None, 50.0, 55.0)]
    >>> out[0].message_en
    'NOISE_BV_TINH: LAeq 62.0 dBA over 30 min exceeds the day limit 55 dBA (QCVN 26, special area)'
    """

    rule = "noise_limit"

    def __init__(
        self,
        sensor_id: str,
        *,
        area: str = "normal",
        limits: tuple[float, float] | None = None,
        metric: str = "laeq_dba",
        name: str | None = None,
        window_s: float = 3600.0,  # LAeq over the last hour: longer smooths more and reacts later
        min_span_s: float = 1800.0,  # the samples must span this much of the period before it is judged
        min_points: int = 3,
        hysteresis_db: float = 3.0,  # roadside levels hover at the limit: clear only 3 dB below it
        severe_excess_db: float = 10.0,  # +10 dB is ten times the sound energy the limit allows
        utc_offset_s: int = VN_UTC_OFFSET_S,
    ) -> None:
        if limits is None:
            if area not in QCVN26_2010_LIMITS:
                raise ValueError(f"{sensor_id}: area must be one of {sorted(QCVN26_2010_LIMITS)} or give limits")
            limits = QCVN26_2010_LIMITS[area]
        if len(limits) != 2 or not all(math.isfinite(v) for v in limits):
            raise ValueError(f"{sensor_id}: limits must be (day dBA, night dBA), got {limits!r}")
        if not 0 < min_span_s <= window_s or min_points < 1:
            raise ValueError("need 0 < min_span_s <= window_s and min_points >= 1")
        if hysteresis_db < 0 or severe_excess_db <= 0:
            raise ValueError("hysteresis_db must be >= 0 and severe_excess_db > 0")
        self.sensor_id = sensor_id
        self.area = area
        self.limits = (float(limits[0]), float(limits[1]))
        self.metric = metric
        self.label = label_of(sensor_id, name)
        self.window_s = float(window_s)
        self.min_span_s = float(min_span_s)
        self.min_points = min_points
        self.hysteresis_db = hysteresis_db
        self.severe_excess_db = severe_excess_db
        self.offset_s = utc_offset_s
        self.reset()

    def reset(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()  # (epoch, dBA) within window and period
        self.energy: deque[float] = deque()  # 10^(dBA/10) of each sample: not recomputed per reading
        self.period_start: float | None = None
        self.last_ts: float | None = None
        self.level = 0  # 0 within limit, 1 over, 2 over by severe_excess_db
        self.level_period: float | None = None  # the period whose limit set ``level``

    @property
    def ready(self) -> bool:
        return len(self.samples) >= self.min_points and self.samples[-1][0] - self.samples[0][0] >= self.min_span_s

    def update(self, reading: Reading) -> list[Finding]:
        value = reading.metrics.get(self.metric)
        if value is None or not isinstance(value, int | float) or not math.isfinite(value):
            return []
        if not VALID_DBA[0] <= value <= VALID_DBA[1]:
            return []
        now = reading.ts.timestamp()
        if self.last_ts is not None and now <= self.last_ts:
            return []  # duplicate or late: already past it
        self.last_ts = now
        is_day, start = period_of(now, self.offset_s)
        if start != self.period_start:
            self.samples.clear()  # a new period is judged on its own sound only
            self.energy.clear()
            self.period_start = start
        self.samples.append((now, float(value)))
        self.energy.append(10.0 ** (float(value) / 10.0))
        while self.samples[0][0] <= now - self.window_s:
            self.samples.popleft()
            self.energy.popleft()
        if not self.ready:
            return []  # early in a period: keep the current state until there is enough of it
        level_db = 10.0 * math.log10(math.fsum(self.energy) / len(self.energy))  # laeq() of the samples
        limit = self.limits[0] if is_day else self.limits[1]
        held = self.level if self.level_period == self.period_start else 0  # a new limit: judge afresh
        new = 0
        for rank, bound in ((1, limit), (2, limit + self.severe_excess_db)):
            if level_db > bound or (rank <= held and level_db > bound - self.hysteresis_db):
                new = rank
        self.level_period = self.period_start
        if new == self.level:
            return []
        self.level = new
        return [self._finding(reading, level_db, limit, is_day, now)]

    def _finding(self, reading: Reading, level_db: float, limit: float, is_day: bool, now: float) -> Finding:
        minutes = round((now - self.samples[0][0]) / 60) if len(self.samples) > 1 else 0
        period_vi, period_en = ("ban ngày", "day") if is_day else ("ban đêm", "night")
        area_vi = AREA_VI.get(self.area, self.area)
        level_vi = f"{level_db:.1f}".replace(".", ",")
        if self.level == 0:
            msg = f"{self.label}: tiếng ồn LAeq {level_vi} dBA đã về dưới giới hạn {period_vi} {limit:.0f} dBA"
            msg_en = f"{self.label}: LAeq {level_db:.1f} dBA back within the {period_en} limit {limit:.0f} dBA"
            severity = None
        else:
            msg = (f"{self.label}: tiếng ồn LAeq {level_vi} dBA trong {minutes} phút vượt giới hạn {period_vi} "
                   f"{limit:.0f} dBA (QCVN 26, {area_vi})")
            msg_en = (f"{self.label}: LAeq {level_db:.1f} dBA over {minutes} min exceeds the {period_en} limit "
                      f"{limit:.0f} dBA (QCVN 26, {self.area} area)")
            severity = SEVERITY[self.level]
        excess = level_db - limit
        return Finding(
            self.sensor_id, self.rule, "noise", self.metric, reading.ts, severity, level_db, limit, msg,
            detail={"period": period_en, "excess_db": round(excess, 2), "window_min": minutes, "area": self.area},
            score=min(1.0, max(0.0, excess / (2 * self.severe_excess_db) + 0.5)) if severity else 0.0,
            message_en=msg_en,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "samples": [list(s) for s in self.samples],
            "period_start": self.period_start,
            "last_ts": self.last_ts,
            "level": self.level,
            "level_period": self.level_period,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported NoiseLimitDetector state_version {state.get('state_version')!r}")
        self.samples = deque((float(t), float(v)) for t, v in state["samples"])
        self.energy = deque(10.0 ** (v / 10.0) for _, v in self.samples)
        self.period_start = None if state.get("period_start") is None else float(state["period_start"])
        self.last_ts = None if state.get("last_ts") is None else float(state["last_ts"])
        self.level = int(state["level"])
        self.level_period = None if state.get("level_period") is None else float(state["level_period"])
