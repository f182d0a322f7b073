"""VN_AQI (Quyết định 1459/QĐ-TCMT, 12/11/2019): pure calculation functions and an hourly detector.

The functions are what dashboards and reports reuse:

- :func:`sub_index` interpolates one pollutant on the decision's breakpoints (Bảng 2; µg/m³ for
  every pollutant, CO included: 10 000 µg/m³ = 10 mg/m³). O3 is scored on its 1 h column hourly,
  and on the larger of its 1 h and 8 h sub-indices daily.
- :func:`nowcast` weights the last 12 hourly PM means (c1 = the latest hour): w = max(Cmin/Cmax, ½),
  NowCast = Σ w^(i−1)·c_i / Σ w^(i−1) over the hours present, valid when at least 2 of c1..c3 exist.
  For w = ½ the decision prints Σ(½)^i·c_i, which equals this normalised form to within (½)^12 when
  all 12 hours exist and, unlike it, does not drop towards 0 when hours are missing.
- :func:`hourly_aqi` and :func:`daily_aqi` take the largest sub-index, rounded half up to an integer,
  and need PM2.5 or PM10. :func:`category` gives the official band, its colour and its name.

The worked example of the decision reproduces exactly except one printed figure: hourly NO2 at
118.7 µg/m³ is 59.35, which the decision prints as 60 while its daily example rounds 65.4 to 65;
we round half up everywhere, so that hour's AQI is 59.

:class:`VnAqiDetector` closes each clock hour of an air station (first reading of the next hour),
computes the hourly VN_AQI and raises a finding whenever the category changes into or within the
alerting bands (Kém and worse), and an all-clear when it falls back to Tốt/Trung bình.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.common import label_of
from ioc.models import Finding, Reading

STATE_VERSION = 1

#: Bảng 2 of QĐ 1459: index breakpoints I and concentrations (µg/m³); the last row means ">=".
INDEX_BREAKPOINTS: tuple[int, ...] = (0, 50, 100, 150, 200, 300, 400, 500)
BREAKPOINTS: dict[str, tuple[float | None, ...]] = {
    "o3_1h": (0, 160, 200, 300, 400, 800, 1000, 1200),
    "o3_8h": (0, 100, 120, 170, 210, 400, None, None),
    "co": (0, 10_000, 30_000, 45_000, 60_000, 90_000, 120_000, 150_000),
    "so2": (0, 125, 350, 550, 800, 1600, 2100, 2630),
    "no2": (0, 100, 200, 700, 1200, 2350, 3100, 3850),
    "pm10": (0, 50, 150, 250, 350, 420, 500, 600),
    "pm25": (0, 25, 50, 80, 150, 250, 350, 500),
}
#: Reading metric -> breakpoint column for the hourly index.
HOURLY_COLUMN = {"pm25": "pm25", "pm10": "pm10", "no2": "no2", "so2": "so2", "co": "co", "o3": "o3_1h"}
PM_METRICS = ("pm25", "pm10")
#: Ten times the top breakpoint of each pollutant: above it a reading is a sensor fault, not air.
MAX_PLAUSIBLE = {m: 10.0 * float(BREAKPOINTS[c][-1] or 0.0) for m, c in HOURLY_COLUMN.items()}
POLLUTANT_NAMES = {"pm25": "PM2.5", "pm10": "PM10", "no2": "NO2", "so2": "SO2", "co": "CO", "o3": "O3",
                   "o3_1h": "O3", "o3_8h": "O3"}


@dataclass(frozen=True)
class AqiCategory:
    """One VN_AQI band with its official colour."""

    min: int
    max: int
    vi: str
    en: str
    rgb: tuple[int, int, int]
    hex: str


CATEGORIES: tuple[AqiCategory, ...] = (
    AqiCategory(0, 50, "Tốt", "Good", (0, 228, 0), "#00E400"),
    AqiCategory(51, 100, "Trung bình", "Moderate", (255, 255, 0), "#FFFF00"),
    AqiCategory(101, 150, "Kém", "Poor", (255, 126, 0), "#FF7E00"),
    AqiCategory(151, 200, "Xấu", "Bad", (255, 0, 0), "#FF0000"),
    AqiCategory(201, 300, "Rất xấu", "Very bad", (143, 63, 151), "#8F3F97"),
    AqiCategory(301, 500, "Nguy hại", "Hazardous", (126, 0, 35), "#7E0023"),
)
#: Category index -> alert severity; Tốt and Trung bình raise nothing.
CATEGORY_SEVERITY: dict[int, str | None] = {0: None, 1: None, 2: "info", 3: "warning", 4: "critical", 5: "critical"}


def round_half_up(x: float) -> int:
    """Round as the decision's tables do (59.5 -> 60), tolerant of float residue like 109.49999999.

    >>> round_half_up(40.6), round_half_up(109.5), round_half_up(59.35)
    (41, 110, 59)
    """
    return math.floor(x + 0.5 + 1e-9)


def sub_index(column: str, concentration: float) -> float | None:
    """Sub-index of one pollutant on one breakpoint column (µg/m³), capped at 500.

    ``None`` for a negative or non-finite concentration, or for O3 8 h above 400 µg/m³ (the
    decision then scores O3 on its 1 h column only).

    >>> sub_index("o3_1h", 136.1), sub_index("no2", 118.7), sub_index("pm25", 20.3)
    (42.53125, 59.35, 40.6)
    >>> sub_index("pm25", 900.0), sub_index("o3_8h", 450.0)
    (500.0, None)
    """
    bps = BREAKPOINTS[column]
    if not math.isfinite(concentration) or concentration < 0:
        return None
    for k in range(len(bps) - 1):
        lo, hi = bps[k], bps[k + 1]
        if lo is None or hi is None:
            return None  # beyond the column (O3 8 h above 400)
        if concentration <= hi:
            i_lo, i_hi = INDEX_BREAKPOINTS[k], INDEX_BREAKPOINTS[k + 1]
            return (i_hi - i_lo) / (hi - lo) * (concentration - lo) + i_lo
    return float(INDEX_BREAKPOINTS[-1])


def nowcast(hourly_newest_first: Sequence[float | None]) -> float | None:
    """NowCast of PM from up to 12 hourly means, newest first (``None`` = hour missing).

    >>> pm25 = [26.9, 24.7, 20.5, 23.5, 19.5, 16.5, 19.0, 16.5, 20.3, 22.4, 19.6, 20.6]
    >>> round(nowcast(pm25[::-1]), 1)  # the decision's worked example (listed oldest first)
    20.3
    >>> nowcast([None, None, 30.0, 30.0]) is None  # needs 2 of the latest 3 hours
    True
    """
    c = list(hourly_newest_first[:12])
    if sum(1 for v in c[:3] if v is not None) < 2:
        return None
    present = [v for v in c if v is not None]
    c_max, c_min = max(present), min(present)
    w = 0.5 if c_max <= 0 else max(c_min / c_max, 0.5)
    num = den = 0.0
    for i, v in enumerate(c):
        if v is not None:
            weight = w**i
            num += weight * v
            den += weight
    return num / den


def category(aqi: int) -> AqiCategory:
    """Official band of an integer VN_AQI.

    >>> category(110).vi, category(110).hex, category(0).en, category(650).en
    ('Kém', '#FF7E00', 'Good', 'Hazardous')
    """
    for cat in reversed(CATEGORIES):
        if aqi >= cat.min:
            return cat
    return CATEGORIES[0]


@dataclass(frozen=True)
class AqiResult:
    """An overall VN_AQI with the sub-indices it came from (unrounded) and the dominant pollutant."""

    aqi: int
    sub_indices: dict[str, float]
    dominant: str
    category: AqiCategory


def _overall(subs: dict[str, float]) -> AqiResult | None:
    if not any(k.startswith("pm") for k in subs):
        return None  # the decision requires PM2.5 or PM10
    dominant = max(subs, key=lambda k: (subs[k], k))
    aqi = min(500, round_half_up(subs[dominant]))
    return AqiResult(aqi, subs, dominant, category(aqi))


def hourly_aqi(concentrations: Mapping[str, float | None]) -> AqiResult | None:
    """Hourly VN_AQI from 1 h means (SO2, CO, NO2, O3) and PM NowCasts, keyed by metric name.

    >>> r = hourly_aqi({"o3": 136.1, "no2": 118.7, "pm25": 20.3})
    >>> r.aqi, r.dominant, {k: round_half_up(v) for k, v in r.sub_indices.items()}
    (59, 'no2', {'o3': 43, 'no2': 59, 'pm25': 41})
    """
    subs: dict[str, float] = {}
    for metric, conc in concentrations.items():
        column = HOURLY_COLUMN.get(metric)
        if column is None or conc is None:
            continue
        s = sub_index(column, conc)
        if s is not None:
            subs[metric] = s
    return _overall(subs)


def daily_aqi(
    *, pm25_24h: float | None = None, pm10_24h: float | None = None, o3_1h_max: float | None = None,
    o3_8h_max: float | None = None, no2_1h_max: float | None = None, so2_1h_max: float | None = None,
    co_1h_max: float | None = None,
) -> AqiResult | None:
    """Daily VN_AQI: PM 24 h means, the day's largest 1 h means, and O3 on max(1 h, 8 h) sub-index.

    >>> r = daily_aqi(o3_8h_max=89.3, o3_1h_max=114.6, no2_1h_max=130.8, pm25_24h=55.7)
    >>> r.aqi, {k: round_half_up(v) for k, v in r.sub_indices.items()}
    (110, {'pm25': 110, 'o3_1h': 36, 'o3_8h': 45, 'no2': 65})
    """
    inputs = {"pm25": pm25_24h, "pm10": pm10_24h, "o3_1h": o3_1h_max, "o3_8h": o3_8h_max,
              "no2": no2_1h_max, "so2": so2_1h_max, "co": co_1h_max}
    subs: dict[str, float] = {}
    for column, conc in inputs.items():
        if conc is not None:
            s = sub_index(column, conc)
            if s is not None:
                subs[column] = s
    return _overall(subs)


def _vn(x: float) -> str:
    return f"{x:.1f}".replace(".", ",")


class VnAqiDetector:
    """Hourly VN_AQI of one air station; a finding whenever its alerting category changes.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = VnAqiDetector("AIR_BINH_TAN")
    >>> t0 = datetime(2025, 3, 12, 9, tzinfo=UTC)
    >>> pm25 = [20.0] * 3 + [70.0] * 3 + [120.0] * 6
    >>> out = []
    >>> for h, c in enumerate(pm25):  # two readings per hour; each hour closes on the next hour's first
    ...     for m in (0, 30):
    ...         r = Reading("AIR_BINH_TAN", "air", t0 + timedelta(hours=h, minutes=m), 2 * h, {"pm25": c})
    ...         out += d.update(r)
    >>> [(f.severity, f.value, f.detail["category"]) for f in out]
    [('info', 115.0, 'Kém'), ('warning', 159.0, 'Xấu')]
    >>> out[0].message
    'AIR_BINH_TAN: VN_AQI 115 (Kém), chất chính PM2.5 (NowCast 58,7 µg/m³)'
    """

    rule = "air_quality"

    def __init__(
        self,
        sensor_id: str,
        *,
        name: str | None = None,
        min_samples_per_hour: int = 1,  # more refuses hours with gaps; 1 scores any hour that has data
        hysteresis: int = 5,  # AQI points below a band before it is left: no flapping at 100/101
    ) -> None:
        if min_samples_per_hour < 1:
            raise ValueError("min_samples_per_hour must be >= 1")
        if hysteresis < 0:
            raise ValueError("hysteresis must be >= 0 AQI points")
        self.sensor_id = sensor_id
        self.label = label_of(sensor_id, name)
        self.min_samples = min_samples_per_hour
        self.hysteresis = hysteresis
        self.reset()

    def reset(self) -> None:
        self.hour: int | None = None  # epoch hour being accumulated
        self.acc: dict[str, list[float]] = {}  # metric -> [sum, count] for that hour
        #: metric -> {epoch hour: mean} for PM, the last 12 hours
        self.pm_hours: dict[str, dict[int, float]] = {m: {} for m in PM_METRICS}
        self.last_ts: float | None = None
        self.level = 0  # category index with hysteresis
        self.aqi: int | None = None

    @property
    def ready(self) -> bool:
        return self.aqi is not None

    def update(self, reading: Reading) -> list[Finding]:
        now = reading.ts.timestamp()
        if self.last_ts is not None and now <= self.last_ts:
            return []  # duplicate or late: the hour's mean already has newer data
        clean: dict[str, float] = {}
        for m, v in reading.metrics.items():
            top = MAX_PLAUSIBLE.get(m)  # None: not a pollutant of the index
            if top is None or not (v.__class__ is float or isinstance(v, int | float)):
                continue
            if v - v == 0.0 and 0 <= v <= top:  # finite (NaN and ±inf fail), plausible
                clean[m] = float(v)
        if not clean:
            return []
        self.last_ts = now
        hour = math.floor(now / 3600)
        out: list[Finding] = []
        if self.hour is not None and hour != self.hour:
            out = self._close_hour(reading)
            self.acc = {}
        self.hour = hour
        for m, v in clean.items():
            a = self.acc.setdefault(m, [0.0, 0])
            a[0] += v
            a[1] += 1
        return out

    def _close_hour(self, reading: Reading) -> list[Finding]:
        assert self.hour is not None
        h = self.hour
        means = {m: s / n for m, (s, n) in self.acc.items() if n >= self.min_samples}
        concentrations: dict[str, float | None] = {}
        nowcasts: dict[str, float] = {}
        for m in PM_METRICS:
            hist = self.pm_hours[m]
            if m in means:
                hist[h] = means[m]
            for old in [k for k in hist if k <= h - 12]:
                del hist[old]
            nc = nowcast([hist.get(h - i) for i in range(12)]) if hist else None
            if nc is not None:
                nowcasts[m] = nc
                concentrations[m] = nc
        for m, v in means.items():
            if m not in PM_METRICS:
                concentrations[m] = v
        result = hourly_aqi(concentrations)
        if result is None:
            return []  # no valid PM this hour: keep the current category
        self.aqi = result.aqi
        level = CATEGORIES.index(result.category)
        if level < self.level and result.aqi > CATEGORIES[self.level].min - 1 - self.hysteresis:
            level = self.level  # inside the hysteresis below the held band
        if level == self.level:
            return []
        before, self.level = self.level, level
        if CATEGORY_SEVERITY[level] is None and CATEGORY_SEVERITY[before] is None:
            return []  # moves between Tốt and Trung bình raise nothing
        return [self._finding(reading, result, nowcasts)]

    def _finding(self, reading: Reading, result: AqiResult, nowcasts: dict[str, float]) -> Finding:
        cat = CATEGORIES[self.level]
        dom = POLLUTANT_NAMES[result.dominant]
        if result.dominant in nowcasts:
            conc_vi = f"NowCast {_vn(nowcasts[result.dominant])} µg/m³"
            conc_en = f"NowCast {nowcasts[result.dominant]:.1f} µg/m³"
        else:
            conc_vi, conc_en = "trung bình 1 giờ", "1 h mean"
        severity = CATEGORY_SEVERITY[self.level]
        if severity is None:
            msg = f"{self.label}: hết cảnh báo chất lượng không khí, VN_AQI {result.aqi} ({cat.vi})"
            msg_en = f"{self.label}: air quality alert cleared, VN_AQI {result.aqi} ({cat.en})"
        else:
            msg = f"{self.label}: VN_AQI {result.aqi} ({cat.vi}), chất chính {dom} ({conc_vi})"
            msg_en = f"{self.label}: VN_AQI {result.aqi} ({cat.en}), dominant pollutant {dom} ({conc_en})"
        detail: dict[str, object] = {
            "category": cat.vi, "category_en": cat.en, "colour": cat.hex, "rgb": list(cat.rgb),
            "dominant": result.dominant, "sub_indices": {k: round(v, 2) for k, v in result.sub_indices.items()},
            "nowcast": {k: round(v, 2) for k, v in nowcasts.items()},
        }
        return Finding(
            self.sensor_id, self.rule, "air", "vn_aqi", reading.ts, severity, float(result.aqi), float(cat.min), msg,
            detail=detail, score=min(1.0, result.aqi / 300.0), message_en=msg_en,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "hour": self.hour,
            "acc": {m: list(a) for m, a in self.acc.items()},
            "pm_hours": {m: [[h, v] for h, v in sorted(hist.items())] for m, hist in self.pm_hours.items()},
            "last_ts": self.last_ts,
            "level": self.level,
            "aqi": self.aqi,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported VnAqiDetector state_version {state.get('state_version')!r}")
        self.hour = None if state.get("hour") is None else int(state["hour"])
        self.acc = {m: [float(a[0]), int(a[1])] for m, a in state["acc"].items()}
        self.pm_hours = {m: {int(h): float(v) for h, v in state["pm_hours"].get(m, [])} for m in PM_METRICS}
        self.last_ts = None if state.get("last_ts") is None else float(state["last_ts"])
        self.level = int(state["level"])
        self.aqi = None if state.get("aqi") is None else int(state["aqi"])
