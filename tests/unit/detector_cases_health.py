"""Conformance cases for the sensor-health detectors (joined by test_detector_conformance.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from detectors.clock_skew import ClockSkewDetector
from detectors.flatline import FlatSpec, StuckDetector
from detectors.physical_range import PhysicalRangeDetector
from detectors.rate_of_change import RateLimit, RateOfChangeDetector
from detectors.silence import SilenceDetector
from ioc.models import Reading

T0 = datetime(2025, 10, 10, tzinfo=UTC)


def _with_delivery_faults(out: list[Reading]) -> list[Reading]:
    out.insert(40, out[39])  # duplicate delivery
    out.insert(90, out[60])  # late, out of order
    return out


def gauge_with_spikes(n: int = 300) -> list[Reading]:
    """Ninh Hòa-like quiet river, 5-min cadence, 1 cm, with two 3 m spikes and a step of 0.5 m."""
    out = []
    for i in range(n):
        level = round(3.0 + 0.02 * math.sin(i / 20), 2) + (3.0 if i in (100, 180) else 0.0) + (0.5 if i > 240 else 0.0)
        out.append(Reading("HYD_NINH_HOA", "water_level", T0 + timedelta(minutes=5 * i), i + 1, {"water_level_m": level}))
    return _with_delivery_faults(out)


def national_gauge_with_spikes(n: int = 240) -> list[Reading]:
    """An hourly gauge reported to 1 cm (VNDMS style): quiet, a flood wave, two spikes inside the
    5 m/h physical limit (one during the quiet spell, one on the falling limb)."""
    out = []
    for i in range(n):
        wave = 4.0 * math.exp(-(((i - 120) / 18.0) ** 2))  # rises ~0.3 m/h at its steepest
        level = round(2.5 + wave + 0.004 * math.sin(i * 1.7), 2) + (1.3 if i == 60 else 0.0) - (1.2 if i == 150 else 0.0)
        out.append(Reading("HYD_DONG_TRANG", "water_level", T0 + timedelta(hours=i), i + 1, {"water_level_m": level}))
    return _with_delivery_faults(out)


def air_blips_and_an_episode(n: int = 200) -> list[Reading]:
    """Hourly PM means: two one-hour blips (spikes) and a pollution episode that starts abruptly."""
    out = []
    for i in range(n):
        pm25 = round(20 + 4 * math.sin(i / 4) + (i * 7919 % 5)) + (80 if i in (50, 90) else 0) + (70 if 140 <= i < 170 else 0)
        out.append(Reading("AIR_NINH_HOA", "air", T0 + timedelta(hours=i), i + 1, {"pm25": float(pm25)}))
    return _with_delivery_faults(out)


def humidity_out_of_range(n: int = 200) -> list[Reading]:
    out = []
    for i in range(n):
        hum = 140.0 if 80 <= i < 90 else 75.0 + 10 * math.sin(i / 30)
        out.append(Reading("WX_CXR", "weather", T0 + timedelta(minutes=5 * i), i + 1,
                           {"humidity_pct": round(hum), "temperature_c": 27.0}))
    return _with_delivery_faults(out)


def air_freezes(n: int = 400) -> list[Reading]:
    """Every channel of an air station freezes for 4 h, then recovers."""
    out = []
    for i in range(n):
        j = min(i, 150) if 150 <= i < 198 else i
        out.append(Reading("AIR_CHO_DAM", "air", T0 + timedelta(minutes=5 * i), i + 1, {
            "pm25": round(15 + 5 * math.sin(j / 7) + (j * 7919 % 13) / 10, 1),
            "no2": round(20 + 4 * math.cos(j / 5) + (j * 104729 % 11) / 10, 1),
        }))
    return _with_delivery_faults(out)


def skewed_clock(n: int = 200) -> list[Reading]:
    """WX_CXR's clock runs 240 s ahead for 8 h (sensor_faults), with a sequence restart at the end."""
    out = []
    for i in range(n):
        skew = 240 if 60 <= i < 156 else 0
        seq = i + 1 if i < 180 else i - 179
        out.append(Reading("WX_CXR", "weather", T0 + timedelta(seconds=300 * i + skew), seq, {"pressure_hpa": 1010.0}))
    return _with_delivery_faults(out)


def dropout(n: int = 200) -> list[Reading]:
    """AIR_CHO_DAM stops for 3 h; without a timer the next reading backfills the silence."""
    out = [Reading("AIR_CHO_DAM", "air", T0 + timedelta(minutes=5 * i), i + 1, {"pm25": 12.0})
           for i in range(n) if not 100 <= i < 136]
    return _with_delivery_faults(out)


CASES: dict[str, tuple[Callable[[], Any], Callable[[], list[Reading]]]] = {
    "physical_range": (
        lambda: PhysicalRangeDetector("WX_CXR", {"humidity_pct": (0.0, 100.0), "temperature_c": (0.0, 50.0)}),
        humidity_out_of_range,
    ),
    "rate_of_change": (
        lambda: RateOfChangeDetector("HYD_NINH_HOA", {"water_level_m": RateLimit(0.15, 0.36, 0.21)}),
        gauge_with_spikes,
    ),
    "rate_of_change_statistical": (
        lambda: RateOfChangeDetector("HYD_DONG_TRANG", {"water_level_m": RateLimit(0.15, 5.31, 2.28, 0.5)},
                                     interval_s=3600, clear_after=2),
        national_gauge_with_spikes,
    ),
    "rate_of_change_confirmed": (
        lambda: RateOfChangeDetector("AIR_NINH_HOA", {"pm25": RateLimit(400.0, 400.0, 400.0, 30.0, immediate=False)},
                                     interval_s=3600, clear_after=2),
        air_blips_and_an_episode,
    ),
    "flatline": (
        lambda: StuckDetector("AIR_CHO_DAM", {"pm25": FlatSpec(prior_run=2.0), "no2": FlatSpec(prior_run=2.0)},
                              min_flat_s=3600.0),
        air_freezes,
    ),
    "clock_skew": (lambda: ClockSkewDetector("WX_CXR", interval_s=300), skewed_clock),
    "silence": (lambda: SilenceDetector("AIR_CHO_DAM", interval_s=300), dropout),
}
