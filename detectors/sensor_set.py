"""Builds one sensor's health and anomaly detectors from its registry entry (kind, metrics, interval).

This is the one place the stream stage (and the in-process scorer) should call::

    dets = sensor_detectors(sid, kind, metrics, interval_s, alarm_levels=levels, extra=extra, model=am)
    findings = update_all(dets, reading, received=received_at)   # per reading, in arrival order
    for d in dets:  table[f"{sid}:{d.rule}"] = d.to_state()      # once per envelope

and, from a timer, :func:`detectors.silence.check_silence` over the sensors' :class:`SilenceDetector`
objects (``silence_of(dets)``). Parameters come from :mod:`detectors.families`, never per scenario.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from detectors.clock_skew import ClockSkewDetector
from detectors.families import FAMILIES, METRICS, FamilyParams, readings_for, water_level_overrides
from detectors.flatline import StuckDetector
from detectors.isolation_forest import IsolationForestDetector
from detectors.level_shift import LevelShiftDetector
from detectors.physical_range import PhysicalRangeDetector
from detectors.rate_of_change import RateOfChangeDetector
from detectors.robust_zscore import RobustZScoreDetector
from detectors.seasonal import SeasonalBaselineDetector
from detectors.silence import SilenceDetector
from ioc.anomaly_model import AnomalyModel
from ioc.models import Finding, Reading

_DEFAULT_FAMILY = FamilyParams(stuck_min_flat_s=3 * 3600.0, zscore={"z_on": 8.0}, level_shift=None)


def _specs(
    kind: str, metrics: Iterable[str], interval_s: float,
    alarm_levels: Mapping[str, float | None] | None, extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    specs = {m: METRICS[m] for m in metrics if m in METRICS}
    if "water_level_m" in specs:
        specs["water_level_m"] = water_level_overrides(specs["water_level_m"], alarm_levels, extra)
    if "rain_mm" in specs:  # per reading: a 1-min burst can reach ~40 mm, hourly totals a few hundred
        specs["rain_mm"] = replace(specs["rain_mm"], high=40.0 + 4.0 * interval_s / 60.0)
    return specs


def health_detectors(
    sensor_id: str,
    kind: str,
    metrics: Iterable[str],
    interval_s: float,
    *,
    alarm_levels: Mapping[str, float | None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Range, rate of change, flat-line, clock skew and silence for one sensor."""
    specs = _specs(kind, metrics, interval_s, alarm_levels, extra)
    fam = FAMILIES.get(kind, _DEFAULT_FAMILY)
    out: list[Any] = []
    if specs:
        out.append(PhysicalRangeDetector(sensor_id, {m: (s.low, s.high) for m, s in specs.items()}))
        rates = {m: s.rate for m, s in specs.items() if s.rate is not None}
        if rates:
            out.append(RateOfChangeDetector(sensor_id, rates, interval_s=interval_s,
                                            clear_after=readings_for(1800, interval_s, 2)))
        flats = {m: s.flat for m, s in specs.items() if s.flat is not None}
        if flats:
            out.append(StuckDetector(sensor_id, flats, min_flat_s=fam.stuck_min_flat_s))
    out.append(ClockSkewDetector(sensor_id, interval_s))
    out.append(SilenceDetector(sensor_id, interval_s))
    return out


def anomaly_detectors(
    sensor_id: str,
    kind: str,
    metrics: Iterable[str],
    interval_s: float,
    *,
    model: AnomalyModel | None = None,
) -> list[Any]:
    """Robust z-score, CUSUM level shift, seasonal baseline (per family) and the sensor's IsolationForest."""
    specs = {m: s for m, s in _specs(kind, metrics, interval_s, None, None).items() if s.anomaly}
    fam = FAMILIES.get(kind, _DEFAULT_FAMILY)
    scales = {m: s.resolution for m, s in specs.items()}
    warmup = readings_for(fam.warmup_s, interval_s, 30)
    out: list[Any] = []
    if scales and fam.zscore is not None:
        kw = {"persist": readings_for(fam.zscore_persist_s, interval_s, 2), "warmup": warmup,
              "clear_after": readings_for(fam.zscore_persist_s, interval_s, 2)} | fam.zscore
        out.append(RobustZScoreDetector(sensor_id, scales, **kw))
    shift = {m: v for m, v in scales.items() if fam.level_shift_metrics is None or m in fam.level_shift_metrics}
    if shift and fam.level_shift is not None:
        out.append(LevelShiftDetector(sensor_id, shift, **({"warmup": warmup} | fam.level_shift)))
    if scales and fam.seasonal is not None:
        kw = {"persist": readings_for(fam.seasonal_persist_s, interval_s, 2),
              "clear_after": readings_for(fam.seasonal_persist_s, interval_s, 2)} | fam.seasonal
        out.append(SeasonalBaselineDetector(sensor_id, scales, interval_s=interval_s, **kw))
    if model is not None:
        if model.metadata.sensor_id != sensor_id:
            raise ValueError(f"anomaly model {model.metadata.model_id} is for {model.metadata.sensor_id}, not {sensor_id}")
        out.append(IsolationForestDetector.from_model(model, persist=readings_for(900, interval_s, 2)))
    return out


def sensor_detectors(
    sensor_id: str,
    kind: str,
    metrics: Iterable[str],
    interval_s: float,
    *,
    alarm_levels: Mapping[str, float | None] | None = None,
    extra: Mapping[str, Any] | None = None,
    model: AnomalyModel | None = None,
) -> list[Any]:
    """Every health and anomaly detector of one sensor (warnings are built elsewhere)."""
    return health_detectors(sensor_id, kind, metrics, interval_s, alarm_levels=alarm_levels, extra=extra) + \
        anomaly_detectors(sensor_id, kind, metrics, interval_s, model=model)


def update_all(detectors: Sequence[Any], reading: Reading, received: datetime | None = None) -> list[Finding]:
    """Feed one reading to each detector; ingest time goes to those that use it (clock skew, silence)."""
    out: list[Finding] = []
    if received is None:  # the common case: no type test per detector
        for d in detectors:
            found = d.update(reading)
            if found:
                out += found
        return out
    for d in detectors:
        if isinstance(d, ClockSkewDetector | SilenceDetector):
            out.extend(d.update(reading, received))
        else:
            out.extend(d.update(reading))
    return out


def silence_of(detectors: Iterable[Any]) -> SilenceDetector | None:
    """The sensor's silence detector (what the timer checks), if it has one."""
    return next((d for d in detectors if isinstance(d, SilenceDetector)), None)
