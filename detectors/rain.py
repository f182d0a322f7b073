"""Rain accumulations over 1 h, 3 h and 24 h against the Vietnamese categories, on one rain gauge.

Categories (KTTV, by 24 h total): mưa nhỏ < 6 mm, mưa 6–15, mưa vừa 15–50, mưa to 50–100,
mưa rất to ≥ 100 mm (the table's classes are contiguous at 6/15/50/100 mm; 100 mm/24h is also
where QĐ 18/2021 Điều 44 starts heavy-rain risk level 1). High intensity ("cường suất lớn", as
NCHMF bulletins phrase it) is > 80 mm and > 100 mm in 3 h.

Severity is the worse of the two scales:

=====================  ==========================================
info                   mưa to (≥ 50 mm/24h)
warning                mưa rất to (≥ 100 mm/24h) or ≥ 80 mm/3h
critical               ≥ 200 mm/24h (the next QĐ 18 band) or ≥ 100 mm/3h
=====================  ==========================================

The 1 h total has no category of its own in the sources; it is reported (and any 1 h total that
high already trips the 3 h scale). Gauges report ``rain_mm`` per interval (a tipping bucket's mm
since the previous reading, as ``sensors_sim`` does); set ``cumulative=True`` for gauges that
report a running total, whose resets (a restart, a daily reset) start a new total.

State: the rainy readings of the last 24 h are kept once (the 1 h and 3 h windows are their newest
entries) with times as seconds before the last reading, and the running sums are updated by the same
additions and subtractions as three separate windows would be, so the totals are exact and a
restarted detector carries on bit for bit.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from detectors.common import label_of
from ioc.models import Finding, Reading

STATE_VERSION = 2  # 2: one 24 h window (the 1 h and 3 h ones are its tail), times relative to last_ts
#: (lower bound mm/24h, Vietnamese, English) in rising order; mưa nhỏ below the first.
CATEGORIES_24H: tuple[tuple[float, str, str], ...] = (
    (0.0, "mưa nhỏ", "light rain"),
    (6.0, "mưa", "rain"),
    (15.0, "mưa vừa", "moderate rain"),
    (50.0, "mưa to", "heavy rain"),
    (100.0, "mưa rất to", "very heavy rain"),
)
#: mm/24h -> severity rank (1 info, 2 warning, 3 critical).
LEVELS_24H: tuple[tuple[float, int], ...] = ((50.0, 1), (100.0, 2), (200.0, 3))
#: mm/3h -> severity rank: NCHMF "cường suất lớn" thresholds.
LEVELS_3H: tuple[tuple[float, int], ...] = ((80.0, 2), (100.0, 3))
SEVERITY = {1: "info", 2: "warning", 3: "critical"}
WINDOWS_S = (3600, 3 * 3600, 24 * 3600)
#: A single interval above this is a gauge fault: the 1-hour world record is about 305 mm.
MAX_INTERVAL_MM = 500.0


def category_24h(total_mm: float) -> tuple[str, str]:
    """KTTV category of a 24-hour total, (Vietnamese, English).

    >>> category_24h(5.9), category_24h(120.0)
    (('mưa nhỏ', 'light rain'), ('mưa rất to', 'very heavy rain'))
    """
    vi, en = CATEGORIES_24H[0][1:]
    for bound, v, e in CATEGORIES_24H:
        if total_mm >= bound:
            vi, en = v, e
    return vi, en


def _rank(total: float, levels: tuple[tuple[float, int], ...], held: int, hold_frac: float) -> int:
    """Highest level reached; a level already held stays until the total drops ``hold_frac`` below it."""
    rank = 0
    for bound, r in levels:
        if total >= bound or (r <= held and total >= bound * (1 - hold_frac)):
            rank = r
    return rank


class RainAccumulationDetector:
    """Rolling 1 h / 3 h / 24 h rain totals; a finding whenever the alert level changes.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = RainAccumulationDetector("RAIN_CHO_GA")
    >>> t0 = datetime(2025, 11, 19, tzinfo=UTC)
    >>> out = []
    >>> for i in range(36):  # 3 h of 30 mm/h in 10-minute tips, then dry
    ...     mm = 5.0 if i < 18 else 0.0
    ...     out += d.update(Reading("RAIN_CHO_GA", "rain", t0 + timedelta(minutes=10 * i), i, {"rain_mm": mm}))
    >>> [(f.severity, f.value) for f in out]
    [('info', 50.0), ('warning', 80.0), ('info', 90.0)]
    >>> out[1].message_en
    'RAIN_CHO_GA: high-intensity rain, 80.0 mm in 3 h (24 h: 80.0 mm, heavy rain; threshold 80 mm/3h)'
    """

    rule = "heavy_rain"

    def __init__(
        self,
        sensor_id: str,
        *,
        metric: str = "rain_mm",
        name: str | None = None,
        cumulative: bool = False,
        hold_fraction: float = 0.1,  # a level clears only 10 % below its bound: no flapping on one tip
        max_interval_mm: float = MAX_INTERVAL_MM,
    ) -> None:
        if not 0 <= hold_fraction < 1:
            raise ValueError("hold_fraction must be in [0, 1): the share below a bound before a level clears")
        if not max_interval_mm > 0:
            raise ValueError("max_interval_mm must be > 0 (the largest plausible rain in one reading)")
        self.sensor_id = sensor_id
        self.metric = metric
        self.label = label_of(sensor_id, name)
        self.cumulative = cumulative
        self.hold_fraction = hold_fraction
        self.max_interval_mm = max_interval_mm
        self.reset()

    def reset(self) -> None:
        #: the rainy readings (mm > 0) of the last 24 h, oldest first; the 1 h and 3 h windows are
        #: their newest ``counts[0]`` and ``counts[1]`` (one list, not three copies)
        self.times: deque[float] = deque()
        self.amounts: deque[float] = deque()
        self.counts = [0, 0, 0]
        self.sums = [0.0 for _ in WINDOWS_S]
        self.last_ts: float | None = None
        self.last_total: float | None = None  # cumulative gauges: the previous running total
        self.rank = 0
        self.rank_24h = 0
        self.rank_3h = 0

    @property
    def ready(self) -> bool:
        return True  # totals only grow as the window fills, so a partial window never over-warns

    def _increment(self, value: float) -> float | None:
        if not self.cumulative:
            return value if value >= 0 else None
        if value < 0:
            return None
        prev, self.last_total = self.last_total, value
        if prev is None:
            return 0.0  # the first total is the baseline
        return value - prev if value >= prev else value  # a reset starts counting again from 0

    def update(self, reading: Reading) -> list[Finding]:
        value = reading.metrics.get(self.metric)
        if value is None or not isinstance(value, int | float) or not math.isfinite(value):
            return []
        now = reading.ts.timestamp()
        if self.last_ts is not None and now <= self.last_ts:
            return []  # duplicate or late: counting it again would inflate the totals
        mm = self._increment(float(value))
        if mm is None or mm > self.max_interval_mm:
            return []
        self.last_ts = now
        times, amounts, counts, sums = self.times, self.amounts, self.counts, self.sums
        if mm > 0:
            times.append(now)
            amounts.append(mm)
        size = len(times)
        for k in (0, 1, 2):  # the same additions and subtractions, in the same order, as one deque per window
            c = counts[k]
            if mm > 0:
                sums[k] += mm
                c += 1
            cutoff = now - WINDOWS_S[k]
            while c and times[size - c] <= cutoff:
                sums[k] -= amounts[size - c]
                c -= 1
            if not c:
                sums[k] = 0.0  # no float residue once the window is empty
            counts[k] = c
        while size > counts[2]:  # out of the 24 h window: gone
            times.popleft()
            amounts.popleft()
            size -= 1
        mm_1h, mm_3h, mm_24h = (round(max(0.0, s), 6) for s in self.sums)  # 0.2 mm tips: no 99.99999
        self.rank_24h = _rank(mm_24h, LEVELS_24H, self.rank_24h, self.hold_fraction)
        self.rank_3h = _rank(mm_3h, LEVELS_3H, self.rank_3h, self.hold_fraction)
        rank = max(self.rank_24h, self.rank_3h)
        if rank == self.rank:
            return []
        self.rank = rank
        return [self._finding(reading, rank, mm_1h, mm_3h, mm_24h)]

    def _finding(self, reading: Reading, rank: int, mm_1h: float, mm_3h: float, mm_24h: float) -> Finding:
        vi_cat, en_cat = category_24h(mm_24h)
        detail: dict[str, object] = {
            "mm_1h": round(mm_1h, 2), "mm_3h": round(mm_3h, 2), "mm_24h": round(mm_24h, 2),
            "category_24h": vi_cat, "category_24h_en": en_cat,
        }
        if rank == 0:
            msg = (f"{self.label}: hết cảnh báo mưa lớn ({vi_cat}; 1 giờ: {_vn(mm_1h)} mm, "
                   f"3 giờ: {_vn(mm_3h)} mm, 24 giờ: {_vn(mm_24h)} mm)")
            msg_en = (f"{self.label}: heavy-rain alert cleared ({en_cat}; 1 h: {mm_1h:.1f} mm, "
                      f"3 h: {mm_3h:.1f} mm, 24 h: {mm_24h:.1f} mm)")
            return Finding(self.sensor_id, self.rule, "rain", self.metric, reading.ts, None, mm_24h, None, msg,
                           detail=detail, score=0.0, message_en=msg_en)
        by_3h = self.rank_3h >= self.rank_24h
        if by_3h:
            bound = max(b for b, r in LEVELS_3H if r <= rank)
            value = mm_3h
            msg = (f"{self.label}: mưa cường suất lớn, {_vn(mm_3h)} mm trong 3 giờ "
                   f"(24 giờ: {_vn(mm_24h)} mm, {vi_cat}; ngưỡng {bound:.0f} mm/3 giờ)")
            msg_en = (f"{self.label}: high-intensity rain, {mm_3h:.1f} mm in 3 h "
                      f"(24 h: {mm_24h:.1f} mm, {en_cat}; threshold {bound:.0f} mm/3h)")
        else:
            bound = max(b for b, r in LEVELS_24H if r <= rank)
            value = mm_24h
            msg = (f"{self.label}: {vi_cat}, {_vn(mm_24h)} mm trong 24 giờ "
                   f"(3 giờ: {_vn(mm_3h)} mm, 1 giờ: {_vn(mm_1h)} mm; ngưỡng {bound:.0f} mm/24 giờ)")
            msg_en = (f"{self.label}: {en_cat}, {mm_24h:.1f} mm in 24 h "
                      f"(3 h: {mm_3h:.1f} mm, 1 h: {mm_1h:.1f} mm; threshold {bound:.0f} mm/24h)")
        detail["window_h"] = 3 if by_3h else 24
        score = min(1.0, value / (2 * bound))  # 0.5 at the bound, 1 at twice it
        return Finding(self.sensor_id, self.rule, "rain", self.metric, reading.ts, SEVERITY[rank], value, bound,
                       msg, detail=detail, score=score, message_en=msg_en)

    def to_state(self) -> dict[str, Any]:
        last = self.last_ts
        return {
            "state_version": STATE_VERSION,
            # seconds before last_ts (exact: both are epochs less than a day apart), whole seconds as ints
            "ago_s": [_compact(last - t) for t in self.times] if last is not None else [],
            "mm": list(self.amounts),
            "counts": list(self.counts),
            "sums": list(self.sums),
            "last_ts": last,
            "last_total": self.last_total,
            "rank": self.rank,
            "rank_24h": self.rank_24h,
            "rank_3h": self.rank_3h,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported RainAccumulationDetector state_version {state.get('state_version')!r}")
        last = None if state.get("last_ts") is None else float(state["last_ts"])
        ago, mm = state["ago_s"], state["mm"]
        counts = [int(c) for c in state["counts"]]
        if len(ago) != len(mm) or len(counts) != 3 or not 0 <= counts[0] <= counts[1] <= counts[2] == len(mm):
            raise ValueError("rain state: ago_s, mm and counts do not describe one window")
        if ago and last is None:
            raise ValueError("rain state: a window without last_ts")
        self.times = deque(last - float(a) for a in ago) if last is not None else deque()
        self.amounts = deque(float(x) for x in mm)
        self.counts = counts
        self.sums = [float(s) for s in state["sums"]]
        self.last_ts = last
        self.last_total = None if state.get("last_total") is None else float(state["last_total"])
        self.rank = int(state["rank"])
        self.rank_24h = int(state["rank_24h"])
        self.rank_3h = int(state["rank_3h"])


def _compact(x: float) -> float | int:
    """A whole number of seconds as an int (shorter JSON, the same value)."""
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def _vn(x: float) -> str:
    return f"{x:.1f}".replace(".", ",")

