"""Flood early warning: when will the river reach the next BĐ level (QĐ 05/2020/QĐ-TTg)?

A robust rise rate (Theil–Sen slope over a *time* window) extrapolates the gauge to each alarm
level still above it; the warning names the highest level expected within ``horizon_s``:
"BĐ III dự kiến lúc 14:40 ± 15 phút". The forecast gives the whole window and its most recent
half an equal say, so a river that speeds up or levels off moves it. The ± is half the width of
the interval spanned by Sen's (1968) rank confidence interval of the slope and by the two rates,
and never less than ``min_relative_uncertainty`` of the lead: a straight line cannot see a crest.

Built for national-network gauges as well as dense sensors: readings are pooled into time buckets
(``window_s / max_points`` wide, mean time and mean level), so an hourly gauge quantised to 1 cm
gives one point per reading, a 1-minute sensor gives at most ``max_points`` points, and a gap just
leaves buckets empty. The fit needs ``min_points`` buckets spanning ``min_span_s``. One spike
corrupts one bucket, which the median of pairwise slopes ignores; with fewer than 6 points, where
a spike at the newest point holds half the pairs, the slope is Siegel's repeated median instead.
The level the forecast starts from is the fit's value now, kept between the last two
observations. The fit is recomputed only when a new bucket opens, so most readings of a dense
sensor cost a few comparisons.

The warning opens only on a significant rise (the slope's lower confidence bound is above 0 and
both rates at least ``min_rise_m_per_h``), is re-emitted only when the predicted time moves by
more than ``max(min_move_s, uncertainty / 2)``, and clears (severity None) once the level is
reached, the rise stops, or the crossing slips beyond ``hold_factor × horizon_s``. The authoritative
crossing alert stays with :mod:`detectors.alarm_levels`; this detector only forecasts.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from detectors.common import label_of
from ioc.models import Finding, Reading

STATE_VERSION = 1
#: Projected BĐ band -> alert severity (same ladder as the level-crossing alert).
BAND_SEVERITY = {1: "info", 2: "warning", 3: "critical"}
ROMAN = {1: "I", 2: "II", 3: "III"}
#: Vietnam (Asia/Ho_Chi_Minh) is UTC+7 all year; no tz database lookup needed.
VN_UTC_OFFSET_S = 7 * 3600
#: Levels this far outside any plausible gauge datum are sensor faults, not water.
_MAX_ABS_LEVEL_M = 10_000.0
#: Below this many points the slope is Siegel's repeated median (50 % breakdown) instead of Theil–Sen.
SIEGEL_BELOW = 6


def theil_sen(xs: list[float], ys: list[float], z: float) -> tuple[float, float, float, list[float]] | None:
    """Robust slope with Sen's rank confidence interval; ``None`` if the xs are all equal.

    The slope is the median of pairwise slopes (Theil–Sen). Below ``SIEGEL_BELOW`` points, where
    one spike at the newest point already holds half of the pairs, it is Siegel's repeated median
    (the median over points of each point's median slope), which survives it. Returns
    ``(slope, slope_lo, slope_hi, sorted_pairwise_slopes)``; ``z`` is the normal quantile of the
    two-sided interval (1.0 ≈ 68 %, 1.645 ≈ 90 %).

    >>> b, lo, hi, _ = theil_sen([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 30.0, 4.0], 1.0)
    >>> b, lo <= b <= hi
    (1.0, True)
    >>> theil_sen([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 30.0], 1.0)[0]  # a spike at the newest point
    1.0
    """
    n = len(xs)
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(n) for j in range(i + 1, n) if xs[j] != xs[i]
    ]
    m = len(slopes)
    if m == 0:
        return None
    if n < SIEGEL_BELOW:
        slope = _median([
            _median([(ys[j] - ys[i]) / (xs[j] - xs[i]) for j in range(n) if xs[j] != xs[i]])
            for i in range(n) if any(x != xs[i] for x in xs)
        ])
        slopes.sort()
    else:
        slopes.sort()
        mid = m // 2
        slope = slopes[mid] if m % 2 else 0.5 * (slopes[mid - 1] + slopes[mid])
    c = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    lo = min(m - 1, max(0, round((m - c) / 2) - 1))
    hi = min(m - 1, max(0, round((m + c) / 2)))
    return slope, slopes[lo], slopes[hi], slopes


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def _vn_num(x: float, digits: int = 2) -> str:
    """Vietnamese decimal comma: 10.5 -> '10,50'."""
    return f"{x:.{digits}f}".replace(".", ",")


def _clock(epoch: float, ref_epoch: float, offset_s: int, vi: bool) -> str:
    """Local HH:MM, with the date when it is not the reference's local day."""
    local = datetime.fromtimestamp(epoch + offset_s, UTC)
    ref = datetime.fromtimestamp(ref_epoch + offset_s, UTC)
    hm = local.strftime("%H:%M")
    if local.date() == ref.date():
        return hm
    return f"{hm} ngày {local:%d/%m}" if vi else f"{hm} on {local:%d/%m}"


def _round_minutes(seconds: float, step: int = 5) -> int:
    """Uncertainty shown to staff, in whole ``step``-minute units and never below ``step``."""
    return max(step, int(round(seconds / 60.0 / step)) * step)


class FloodProjectionDetector:
    """Forecasts the next BĐ crossing of one river gauge from its robust rise rate.

    >>> from datetime import timedelta
    >>> d = FloodProjectionDetector("HYD_DONG_TRANG", {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0})
    >>> t0 = datetime(2025, 11, 16, 12, tzinfo=UTC)
    >>> out = []
    >>> for h in range(11):  # hourly, rising 0.5 m/h from 6 m
    ...     r = Reading("HYD_DONG_TRANG", "water_level", t0 + timedelta(hours=h), h, {"water_level_m": 6 + h / 2})
    ...     out += d.update(r)
    >>> [(f.severity, f.lead_time_s) for f in out]
    [('warning', 14400.0), ('critical', 14400.0), (None, None)]
    >>> out[1].message
    'HYD_DONG_TRANG: BĐ III dự kiến lúc 05:00 ± 70 phút (mực nước 9,00 m, đang lên 0,50 m/giờ)'
    >>> out[1].message_en
    'HYD_DONG_TRANG: BĐ III expected at 05:00 ± 70 min (level 9.00 m, rising 0.50 m/h)'
    """

    rule = "flood_projection"

    def __init__(
        self,
        sensor_id: str,
        levels: dict[str, float | None],
        *,
        metric: str = "water_level_m",
        name: str | None = None,
        window_s: float = 6 * 3600,  # longer: rides out gaps and 1 cm steps of hourly gauges, lags a speed-up
        max_points: int = 18,  # buckets per window: caps the O(n²) fit at 153 slopes
        min_points: int = 4,  # hourly gauge: 4 readings; 5+ ride out one spike untouched
        min_span_s: float = 2 * 3600,  # the fit must cover at least this much time
        horizon_s: float = 4 * 3600,  # warn only for crossings this close: more lead vs more false warnings
        hold_factor: float = 1.5,  # keep a warning until the crossing slips beyond hold_factor × horizon
        min_rise_m_per_h: float = 0.01,  # below 1 cm/h is gauge quantisation, not a flood
        confidence_z: float = 1.0,  # ± of about one standard error (68 %); 1.645 gives a 90 % band
        min_move_s: float = 600.0,  # re-announce only if the forecast moves more than this ...
        hysteresis_m: float = 0.1,  # a reached level is re-targeted only after falling this far below it
        min_relative_uncertainty: float = 0.3,  # a line cannot see the crest: ± >= 30 % of lead (~2/3 coverage)
        utc_offset_s: int = VN_UTC_OFFSET_S,
    ) -> None:
        thresholds = [(i, levels.get(f"bd{i}")) for i in (1, 2, 3)]
        self.thresholds = [(i, float(v)) for i, v in thresholds if v is not None]
        if not self.thresholds or not all(math.isfinite(v) for _, v in self.thresholds):
            raise ValueError(f"{sensor_id}: alarm levels need at least one finite bd1, bd2 or bd3; got {levels!r}")
        values = [v for _, v in self.thresholds]
        if values != sorted(values):
            raise ValueError(f"{sensor_id}: alarm levels must increase from BĐ I to BĐ III; got {levels!r}")
        if not window_s > 0 or not horizon_s > 0:
            raise ValueError("window_s and horizon_s must be > 0 seconds")
        if max_points < 3 or not 3 <= min_points <= max_points:
            raise ValueError("need 3 <= min_points <= max_points (Theil–Sen needs at least 3 points)")
        if not 0 <= min_span_s < window_s:
            raise ValueError("min_span_s must be >= 0 and shorter than window_s")
        if hold_factor < 1:
            raise ValueError("hold_factor must be >= 1 (it only delays the all-clear)")
        if min(min_rise_m_per_h, min_move_s, hysteresis_m, min_relative_uncertainty) < 0 or confidence_z <= 0:
            raise ValueError(
                "min_rise_m_per_h, min_move_s, hysteresis_m and min_relative_uncertainty must be >= 0; confidence_z > 0"
            )
        self.sensor_id = sensor_id
        self.metric = metric
        self.label = label_of(sensor_id, name)
        self.window_s = float(window_s)
        self.max_points = max_points
        self.bucket_s = self.window_s / max_points
        self.min_points = min_points
        self.min_span_s = float(min_span_s)
        self.horizon_s = float(horizon_s)
        self.hold_s = float(horizon_s) * hold_factor
        self.min_rise = min_rise_m_per_h
        self.z = confidence_z
        self.min_move_s = float(min_move_s)
        self.hysteresis_m = hysteresis_m
        self.rel_unc = min_relative_uncertainty
        self.offset_s = utc_offset_s
        self.reset()

    def reset(self) -> None:
        #: [bucket index, sum of epoch seconds, sum of levels, count], oldest first
        self.buckets: list[list[float]] = []
        self.last_ts: float | None = None
        self.reached = 0  # highest band reached (with hysteresis); never a forecast target
        #: the open warning: band, predicted epoch, uncertainty (s); None when no warning is open
        self.active: dict[str, float] | None = None

    @property
    def ready(self) -> bool:
        return self._fit_inputs() is not None

    # -- the fit -------------------------------------------------------------------------------

    def _fit_inputs(self) -> tuple[list[float], list[float]] | None:
        if len(self.buckets) < self.min_points:
            return None
        ts = [b[1] / b[3] for b in self.buckets]
        if ts[-1] - ts[0] < self.min_span_s:
            return None
        return ts, [b[2] / b[3] for b in self.buckets]

    def _band_of(self, level: float) -> int:
        band = 0
        for i, thr in self.thresholds:
            if level >= thr or (i <= self.reached and level >= thr - self.hysteresis_m):
                band = i
        return band

    def update(self, reading: Reading) -> list[Finding]:
        value = reading.metrics.get(self.metric)
        if value is None or not isinstance(value, int | float) or not math.isfinite(value):
            return []
        if abs(value) > _MAX_ABS_LEVEL_M:
            return []
        now = reading.ts.timestamp()
        if self.last_ts is not None and now <= self.last_ts:
            return []  # duplicate or late: the window already holds newer data
        self.last_ts = now
        idx = math.floor(now / self.bucket_s)
        if self.buckets and self.buckets[-1][0] == idx:
            b = self.buckets[-1]
            b[1] += now
            b[2] += value
            b[3] += 1
            return []  # the fit only moves when a bucket opens
        self.buckets.append([idx, now, float(value), 1])
        oldest = idx - self.max_points + 1
        while self.buckets[0][0] < oldest:
            self.buckets.pop(0)
        return self._project(reading, now)

    def _project(self, reading: Reading, now: float) -> list[Finding]:
        inputs = self._fit_inputs()
        if inputs is None:
            return []  # too little recent data: keep whatever is open until the fit is back
        ts, vs = inputs
        xs = [(t - now) / 3600.0 for t in ts]  # hours before now: slopes come out in m/h
        fit = theil_sen(xs, vs, self.z)
        if fit is None:
            return []
        slope_h, lo_h, hi_h, slopes = fit
        fitted = _median([v - slope_h * x for x, v in zip(xs, vs, strict=True)])
        # The fit's level now, kept between the last two observations: a crest does not overshoot
        # into a level never seen, and one spike cannot make a level "reached".
        level = min(max(fitted, min(vs[-2:])), max(vs[-2:]))
        self.reached = self._band_of(level)
        # The rise over the most recent half of the window: where the full-window rate and the
        # recent rate disagree the river is accelerating or levelling off, and the band widens.
        half = [i for i, x in enumerate(xs) if x >= -self.window_s / 7200.0]
        recent_h = slope_h
        if len(half) >= 4:  # 4 points outvote one spike (repeated median); fewer: the full window alone
            rfit = theil_sen([xs[i] for i in half], [vs[i] for i in half], self.z)
            if rfit is not None:
                recent_h = rfit[0]
        active_band = int(self.active["band"]) if self.active else 0

        target = 0
        forecast: dict[int, tuple[float, float]] = {}
        for band, thr in self.thresholds:
            if band <= self.reached or slope_h <= 0:
                continue
            need = (thr - level) * 3600.0  # metres x seconds-per-hour: divide by a rate in m/h
            lead_full = need / slope_h
            if not math.isfinite(lead_full) or lead_full > 2 * self.hold_s:
                continue
            cap = 2 * self.hold_s
            lead_recent = need / recent_h if recent_h > 0 else cap
            early = min(lead_full, lead_recent, need / hi_h if hi_h > 0 else cap)
            late = min(cap, max(lead_full, lead_recent, need / lo_h if lo_h > 0 else cap))
            lead = (lead_full + min(lead_recent, cap)) / 2  # equal say for the window and its recent half
            unc = max((late - early) / 2, self.rel_unc * lead)  # ± half the interval's width
            if lead > self.hold_s:
                continue
            forecast[band] = (max(0.0, lead), unc)
            opens = lead <= self.horizon_s and lo_h > 0 and min(slope_h, recent_h) >= self.min_rise
            holds = band == active_band  # an open warning only needs a rise and the hold horizon
            if opens or holds:
                target = max(target, band)

        if target == 0:
            if self.active is None:
                return []
            self.active = None
            return [self._cleared(reading, level, slope_h, active_band)]
        lead, unc = forecast[target]
        at = now + lead
        if self.active is not None and active_band == target:
            moved = abs(at - self.active["at"])
            if moved <= max(self.min_move_s, self.active["unc"] / 2):
                return []
        self.active = {"band": target, "at": at, "unc": unc}
        thr = dict(self.thresholds)[target]
        need = (thr - level) / self.horizon_s * 3600.0
        score = sum(1 for s in slopes if s >= need) / len(slopes)  # share of slopes crossing in time
        return [self._warning(reading, level, slope_h, lo_h, hi_h, target, thr, lead, unc, score, len(xs))]

    # -- findings ------------------------------------------------------------------------------

    def _warning(
        self, reading: Reading, level: float, rate: float, rate_lo: float, rate_hi: float,
        band: int, thr: float, lead: float, unc: float, score: float, points: int,
    ) -> Finding:
        now = reading.ts.timestamp()
        at = now + lead
        roman = ROMAN[band]
        pm = _round_minutes(unc)
        msg = (
            f"{self.label}: BĐ {roman} dự kiến lúc {_clock(at, now, self.offset_s, True)} ± {pm} phút "
            f"(mực nước {_vn_num(level)} m, đang lên {_vn_num(rate)} m/giờ)"
        )
        msg_en = (
            f"{self.label}: BĐ {roman} expected at {_clock(at, now, self.offset_s, False)} ± {pm} min "
            f"(level {level:.2f} m, rising {rate:.2f} m/h)"
        )
        return Finding(
            self.sensor_id, self.rule, "flood", self.metric, reading.ts, BAND_SEVERITY[band], level, thr, msg,
            predicted_crossing_at=datetime.fromtimestamp(at, UTC), lead_time_s=lead,
            detail={"band": band, "rate_m_per_h": rate, "rate_lo_m_per_h": rate_lo, "rate_hi_m_per_h": rate_hi,
                    "points": points},
            family="warning", score=min(1.0, max(0.0, score)), message_en=msg_en, crossing_uncertainty_s=unc,
        )

    def _cleared(self, reading: Reading, level: float, rate: float, band: int) -> Finding:
        roman = ROMAN[band]
        thr = dict(self.thresholds)[band]
        if self.reached >= band:
            msg = f"{self.label}: mực nước {_vn_num(level)} m đã đạt BĐ {roman}; kết thúc dự báo"
            msg_en = f"{self.label}: level {level:.2f} m has reached BĐ {roman}; forecast closed"
        else:
            msg = f"{self.label}: hết cảnh báo BĐ {roman}, mực nước {_vn_num(level)} m không còn lên nhanh"
            msg_en = f"{self.label}: BĐ {roman} warning cleared, level {level:.2f} m no longer rising fast"
        return Finding(
            self.sensor_id, self.rule, "flood", self.metric, reading.ts, None, level, thr, msg,
            detail={"band": band, "rate_m_per_h": rate, "reached": self.reached >= band},
            family="warning", score=0.0, message_en=msg_en,
        )

    # -- state ---------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "buckets": [list(b) for b in self.buckets],
            "last_ts": self.last_ts,
            "reached": self.reached,
            "active": dict(self.active) if self.active else None,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported FloodProjectionDetector state_version {state.get('state_version')!r}")
        self.buckets = [[int(b[0]), float(b[1]), float(b[2]), int(b[3])] for b in state["buckets"]]
        self.last_ts = None if state.get("last_ts") is None else float(state["last_ts"])
        self.reached = int(state.get("reached", 0))
        active = state.get("active")
        self.active = {k: float(v) for k, v in active.items()} if active else None
