"""Detector parameters per metric and per metric family (sensor kind): the one table to tune.

Nothing here is set per scenario. Physical ranges come from the metric definitions
(``ioc.domain.KIND_METRICS`` units) and the domain tables (VN_AQI Bảng 2 for gases and dust,
QCVN 26 / instrument ranges for noise, world and Vietnamese records for weather), widened to what a
working instrument can report; a river gauge's range and rise/fall rates are tightened per station
from the registry (``alarm_levels``, ``extra.record_m``, ``extra.max_rise_m_per_h`` …) by
:func:`water_level_overrides`. Rate limits are ``max_step`` (noise, quantum, one gust) plus a
physical rate per hour, with a safety factor already applied, and ``min_jump``: the smallest error
the statistical spike test may call a spike (well above quantum and noise, below a real instrument
fault; 0 = off for bursty or saturating metrics: wind, humidity). A flood's first hour after a
quiet spell rises a few decimetres, so a river's floor is half a metre: a false spike there would
mute the flood alerts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from detectors.flatline import FlatSpec
from detectors.rate_of_change import RateLimit


@dataclass(frozen=True)
class MetricSpec:
    low: float
    high: float
    resolution: float  # smallest meaningful change: reporting quantum or noise floor (z-score scale floor)
    rate: RateLimit | None  # None: bursty by nature, no rate-of-change test (rain, traffic flow)
    flat: FlatSpec | None  # None: no flat-line test
    anomaly: bool = True  # feed the univariate anomaly detectors (not for circular or intermittent metrics)


#: Per metric (names are unique across kinds, see ioc.domain.KIND_METRICS).
METRICS: dict[str, MetricSpec] = {
    # river stage, gauge datum: generic bounds; per station tightened from the registry
    "water_level_m": MetricSpec(-10.0, 100.0, 0.01, RateLimit(0.15, 4.0, 2.0, 0.5), FlatSpec(prior_run=8.0, min_run=4.0)),
    # sea level, chart datum: mean ~1.2 m, spring range 1.5-2 m, surge + waves up to ~3 m more
    "sea_level_m": MetricSpec(-3.0, 7.0, 0.01, RateLimit(0.3, 1.5, 1.5, 0.4), FlatSpec(prior_run=3.0)),
    # per reading; bursty; zero is the normal state (exempt from flat-line)
    "rain_mm": MetricSpec(0.0, 400.0, 0.1, None, FlatSpec(exempt_below=0.0, prior_run=3.0), anomaly=False),
    "temperature_c": MetricSpec(0.0, 50.0, 0.1, RateLimit(5.0, 10.0, 15.0, 3.0), FlatSpec(prior_run=3.0)),
    # near saturation (rain, fog) whole-percent humidity sits still for hours: exempt
    "humidity_pct": MetricSpec(0.0, 100.0, 1.0, RateLimit(25.0, 40.0, 40.0),
                               FlatSpec(exempt_above=90.0, prior_run=5.0)),
    "wind_speed_ms": MetricSpec(0.0, 90.0, 0.1, RateLimit(25.0, 30.0, 30.0), FlatSpec(exempt_below=0.5, prior_run=3.0)),
    "wind_gust_ms": MetricSpec(0.0, 115.0, 0.1, RateLimit(40.0, 40.0, 40.0), FlatSpec(exempt_below=0.5, prior_run=3.0)),
    "wind_dir_deg": MetricSpec(0.0, 360.0, 1.0, None, FlatSpec(prior_run=3.0), anomaly=False),  # circular
    # typhoon eye passage drops 10-20 hPa/h at most
    "pressure_hpa": MetricSpec(870.0, 1085.0, 0.1, RateLimit(3.0, 20.0, 20.0, 2.0), FlatSpec(prior_run=4.0)),
    # µg/m³; upper bounds = 2 × the VN_AQI 500 breakpoint (QĐ 1459/QĐ-TCMT, Bảng 2); small negative zero offsets
    "pm25": MetricSpec(-5.0, 1000.0, 1.0, RateLimit(400.0, 400.0, 400.0, 30.0, immediate=False), FlatSpec(prior_run=2.0, min_run=2.0)),
    "pm10": MetricSpec(-5.0, 1200.0, 1.0, RateLimit(800.0, 800.0, 800.0, 50.0, immediate=False), FlatSpec(prior_run=2.0, min_run=2.0)),
    "no2": MetricSpec(-5.0, 7700.0, 1.0, RateLimit(500.0, 500.0, 500.0, 40.0, immediate=False), FlatSpec(prior_run=2.0, min_run=2.0)),
    "o3": MetricSpec(-5.0, 2400.0, 1.0, RateLimit(300.0, 300.0, 300.0, 40.0, immediate=False), FlatSpec(prior_run=2.0, min_run=2.0)),
    "so2": MetricSpec(-5.0, 5260.0, 1.0, RateLimit(500.0, 500.0, 500.0, 20.0, immediate=False), FlatSpec(prior_run=2.0, min_run=2.0)),
    "co": MetricSpec(-50.0, 300000.0, 20.0, RateLimit(20000.0, 20000.0, 20000.0, 1000.0, immediate=False), FlatSpec(prior_run=2.0, min_run=2.0)),
    # class-1 sound level meters: 20-140 dBA
    "laeq_dba": MetricSpec(20.0, 140.0, 0.5, RateLimit(40.0, 40.0, 40.0, 8.0, immediate=False), FlatSpec(prior_run=2.0)),
    # traffic changes abruptly at incidents: no rate test; jams and empty roads repeat legitimately
    "speed_kmh": MetricSpec(0.0, 200.0, 1.0, None, FlatSpec(exempt_below=5.0, prior_run=2.0)),
    "flow_vph": MetricSpec(0.0, 12000.0, 20.0, None, FlatSpec(exempt_below=0.0, prior_run=2.0)),
    "occupancy_pct": MetricSpec(0.0, 100.0, 1.0, None, FlatSpec(exempt_below=0.0, exempt_above=95.0, prior_run=2.0)),
}


@dataclass(frozen=True)
class FamilyParams:
    """Per sensor kind. ``*_s`` durations are converted to readings with the sensor's interval."""

    stuck_min_flat_s: float
    zscore: dict[str, Any] | None = field(default_factory=dict)  # RobustZScoreDetector kwargs; None = off
    zscore_persist_s: float = 900.0
    level_shift: dict[str, Any] | None = field(default_factory=dict)  # LevelShiftDetector kwargs; None = off
    level_shift_metrics: tuple[str, ...] | None = None  # None = every anomaly metric
    seasonal: dict[str, Any] | None = None  # SeasonalBaselineDetector kwargs; None = off
    seasonal_persist_s: float = 1800.0
    warmup_s: float = 24 * 3600.0  # history before the z-score and CUSUM judge: one full daily cycle


FAMILIES: dict[str, FamilyParams] = {
    "water_level": FamilyParams(stuck_min_flat_s=5 * 3600.0, zscore={"z_on": 8.0}, level_shift={"k": 1.0, "h": 30.0}),
    "tide": FamilyParams(stuck_min_flat_s=2 * 3600.0, zscore={"z_on": 8.0}, level_shift=None),
    "rain": FamilyParams(stuck_min_flat_s=3 * 3600.0, zscore=None, level_shift=None),
    "weather": FamilyParams(stuck_min_flat_s=3 * 3600.0, zscore={"z_on": 8.0},
                            level_shift={"k": 1.5, "h": 40.0}, level_shift_metrics=("pressure_hpa",)),
    "air": FamilyParams(stuck_min_flat_s=2 * 3600.0, zscore={"z_on": 8.0}, level_shift={"k": 1.5, "h": 40.0},
                        seasonal={"z_on": 6.0}),
    "noise": FamilyParams(stuck_min_flat_s=2 * 3600.0, zscore={"z_on": 8.0}, level_shift=None,
                          seasonal={"z_on": 6.0}),
    "traffic": FamilyParams(stuck_min_flat_s=3600.0, zscore={"z_on": 8.0}, level_shift=None,
                            seasonal={"z_on": 6.0}),
}


def readings_for(seconds: float, interval_s: float, minimum: int = 1) -> int:
    """A duration expressed in readings of this sensor.

    >>> readings_for(900, 300, 2), readings_for(900, 3600, 2), readings_for(900, 60)
    (3, 2, 15)
    """
    return max(minimum, math.ceil(seconds / max(interval_s, 1e-9)))


def water_level_overrides(
    spec: MetricSpec, alarm_levels: Mapping[str, float | None] | None, extra: Mapping[str, Any] | None
) -> MetricSpec:
    """A river gauge's own bounds: ceiling above its record and BĐ III, rise/fall from its observed maxima.

    >>> s = water_level_overrides(METRICS["water_level_m"], {"bd1": 4.2, "bd2": 5.0, "bd3": 5.7},
    ...                           {"record_m": 6.58, "max_rise_m_per_h": 0.12, "max_fall_m_per_h": 0.07})
    >>> s.high, s.rate
    (16.58, RateLimit(max_step=0.15, rise_per_h=0.36, fall_per_h=0.21, min_jump=0.5, immediate=True))
    """
    extra = extra or {}
    tops = [v for v in (alarm_levels or {}).values() if isinstance(v, int | float)]
    tops += [float(extra[k]) for k in ("record_m", "max_wl_m") if isinstance(extra.get(k), int | float)]
    out = spec
    if tops:
        out = replace(out, high=round(max(tops) + 10.0, 6))  # a record can be broken, by metres, not tens of metres
    rise, fall = extra.get("max_rise_m_per_h"), extra.get("max_fall_m_per_h")
    if out.rate is not None and isinstance(rise, int | float) and isinstance(fall, int | float) and rise > 0:
        # 3 × the station's observed maximum: flash releases happen, spikes of metres do not
        out = replace(out, rate=out.rate._replace(rise_per_h=round(3.0 * rise, 6), fall_per_h=round(3.0 * max(fall, 0.01), 6)))
    return out
