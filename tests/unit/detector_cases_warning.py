"""Conformance cases for the early-warning detectors (flood projection, rain, VN_AQI, noise, traffic).

Every stream carries what the sink really delivers: duplicates, a late reading, a gap, a spike and
non-finite values, and each one makes its detector raise at least one finding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from detectors.flood_projection import FloodProjectionDetector
from detectors.noise import NoiseLimitDetector
from detectors.rain import RainAccumulationDetector
from detectors.traffic import TrafficCongestionDetector
from detectors.vn_aqi import VnAqiDetector
from ioc.models import Reading

LEVELS = {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}
T0 = datetime(2025, 11, 16, tzinfo=UTC)


def _deliver(readings: list[Reading]) -> list[Reading]:
    """Add a duplicate, a late (out-of-order) reading and a NaN, as the sink sees them."""
    out = list(readings)
    n = len(out)
    out.insert(n // 3, out[n // 3 - 1])  # duplicate delivery
    out.insert(2 * n // 3, out[n // 4])  # late, out of order
    bad = out[n // 2]
    out.insert(n // 2 + 1, Reading(bad.sensor_id, bad.kind, bad.ts + timedelta(seconds=1), bad.seq,
                                   {k: math.nan for k in bad.metrics}))
    return out


def _flood_wave(step_min: int, quantise: bool) -> list[Reading]:
    """A flood wave over BĐ III; hourly-quantised with a 2-hour gap and one spike, or 5-minute."""
    out = []
    for i in range(0, 48 * 60, step_min):
        h = i / 60
        level = 4.0 + 8.0 * math.exp(-(((h - 24) / 9) ** 2)) + (0.0 if quantise else 0.01 * math.sin(i * 1.7))
        if quantise:
            level = round(level, 2)
            if 14 <= h < 16:
                continue  # the station did not report for two hours
            if h == 18:
                level += 3.0  # one spike
        out.append(Reading("HYD_DONG_TRANG", "water_level", T0 + timedelta(minutes=i), i, {"water_level_m": level}))
    return _deliver(out)


def _rain_storm(cumulative: bool) -> list[Reading]:
    """Two days of 5-minute rain: a 10-hour storm peaking at 40 mm/h, then dry."""
    out, total = [], 0.0
    for i in range(0, 2 * 288):
        h = i / 12
        rate = 40.0 * math.exp(-(((h - 12) / 3) ** 2))
        mm = round(rate / 12 / 0.2) * 0.2  # whole 0.2 mm bucket tips
        total += mm
        value = round(total if cumulative else mm, 1)
        if cumulative and i == 400:
            total = 0.0  # the logger restarted its counter
        out.append(Reading("RAIN_CHO_GA", "rain", T0 + timedelta(minutes=5 * i), i, {"rain_mm": value}))
    return _deliver(out)


def _dust_episode() -> list[Reading]:
    """Two days of 5-minute air readings with a dust episode taking PM2.5 from 20 to 130 µg/m³."""
    out = []
    for i in range(0, 2 * 288):
        h = i / 12
        pm25 = 20.0 + 110.0 * math.exp(-(((h - 24) / 6) ** 2))
        metrics = {"pm25": round(pm25, 1), "pm10": round(1.8 * pm25, 1), "no2": 40.0 + 10 * math.sin(h), "o3": 60.0}
        out.append(Reading("AIR_BINH_TAN", "air", T0 + timedelta(minutes=5 * i), i, metrics))
    return _deliver(out)


def _noise_day() -> list[Reading]:
    """A day of 5-minute LAeq at a hospital: quiet nights, 60-66 dBA by day (limit 55)."""
    out = []
    for i in range(0, 288):
        local_h = (i / 12 + 7) % 24
        level = 48.0 + (14.0 if 6.5 <= local_h < 20 else 0.0) + 2.0 * math.sin(i * 0.9)
        out.append(Reading("NOISE_BV_TINH", "noise", T0 + timedelta(minutes=5 * i), i, {"laeq_dba": round(level, 1)}))
    return _deliver(out)


def _incident() -> list[Reading]:
    """Three hours of 1-minute speeds: free flow, a crash (4 km/h) for 40 minutes, a slow recovery."""
    out = []
    for i in range(0, 180):
        if i < 60:
            v = 38.0 + (i % 3)
        elif i < 100:
            v = 4.0 + (i % 2) if i != 80 else 40.0  # one probe at full speed mid-jam
        elif i < 130:
            v = 16.0 + (i % 3)
        else:
            v = 37.0
        out.append(Reading("TRF_2T4_XOM_BONG", "traffic", T0 + timedelta(minutes=i), i, {"speed_kmh": v}))
    return _deliver(out)


CASES: dict[str, tuple[Callable[[], Any], Callable[[], list[Reading]]]] = {
    "flood_projection_5min": (
        lambda: FloodProjectionDetector("HYD_DONG_TRANG", LEVELS), lambda: _flood_wave(5, quantise=False)
    ),
    "flood_projection_hourly_quantised": (
        lambda: FloodProjectionDetector("HYD_DONG_TRANG", LEVELS), lambda: _flood_wave(60, quantise=True)
    ),
    "rain_per_interval": (lambda: RainAccumulationDetector("RAIN_CHO_GA"), lambda: _rain_storm(cumulative=False)),
    "rain_cumulative": (
        lambda: RainAccumulationDetector("RAIN_CHO_GA", cumulative=True), lambda: _rain_storm(cumulative=True)
    ),
    "vn_aqi": (lambda: VnAqiDetector("AIR_BINH_TAN"), _dust_episode),
    "noise_qcvn26": (lambda: NoiseLimitDetector("NOISE_BV_TINH", area="special"), _noise_day),
    "traffic_congestion": (lambda: TrafficCongestionDetector("TRF_2T4_XOM_BONG", free_flow_kmh=40.0), _incident),
}
