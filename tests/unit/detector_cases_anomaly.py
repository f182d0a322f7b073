"""Conformance cases for the anomaly detectors (joined by test_detector_conformance.py)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from detectors.isolation_forest import IsolationForestDetector
from detectors.level_shift import LevelShiftDetector
from detectors.robust_zscore import RobustZScoreDetector
from detectors.seasonal import SeasonalBaselineDetector
from ioc.anomaly_model import AnomalyModel, train
from ioc.models import Reading

T0 = datetime(2025, 10, 6, tzinfo=UTC)  # a Monday, 07:00 in Nha Trang


def _noise(i: int) -> float:
    """Deterministic pseudo-noise in [-0.5, 0.5)."""
    return ((i * 2654435761) % 1000) / 1000.0 - 0.5


def _with_delivery_faults(out: list[Reading]) -> list[Reading]:
    out.insert(50, out[49])
    out.insert(120, out[80])
    return out


def noise_burst(n: int = 400) -> list[Reading]:
    """Roadside LAeq with a 40-minute burst 20 dB above normal."""
    out = [Reading("NOISE_CHO_DAM", "noise", T0 + timedelta(minutes=5 * i), i + 1,
                   {"laeq_dba": round(65 + 2 * _noise(i) + (20 if 300 <= i < 308 else 0), 1)}) for i in range(n)]
    return _with_delivery_faults(out)


def drifting_no2(n: int = 400) -> list[Reading]:
    """NO2 that drifts up by 8 µg/m³ per hour after reading 250 (sensor_faults' vinh_hoa_no2_drift)."""
    out = [Reading("AIR_VINH_HOA", "air", T0 + timedelta(minutes=5 * i), i + 1,
                   {"no2": round(18 + 3 * _noise(i) + max(0, i - 250) * 8 / 12, 1)}) for i in range(n)]
    return _with_delivery_faults(out)


def _traffic_day(h: float) -> float:
    """Local hour -> traffic flow shape (two rush hours)."""
    return 300 + 900 * math.exp(-((h - 7.5) / 1.2) ** 2) + 800 * math.exp(-((h - 17.5) / 1.5) ** 2)


def noisy_nights(days: int = 5) -> list[Reading]:
    """Hourly flow for 5 days; on the last night it runs at rush-hour level for 3 hours."""
    out = []
    for k in range(24 * days):
        local_h = (k + 7) % 24
        flow = _traffic_day(local_h) * (1 + 0.05 * _noise(k))
        if k >= 24 * (days - 1) and local_h in (1, 2, 3):
            flow = 1400.0
        out.append(Reading("TRF_TRAN_PHU_24", "traffic", T0 + timedelta(hours=k), k + 1, {"flow_vph": round(flow)}))
    return _with_delivery_faults(out)


def _traffic_rows(n: int, jam_from: int | None = None) -> list[Reading]:
    out = []
    for i in range(n):
        h = ((i * 5) / 60 + 7) % 24
        flow = _traffic_day(h) * (1 + 0.05 * _noise(i))
        speed = 45 - flow / 100 + _noise(i + 7)
        occ = flow / 60 + _noise(i + 3)
        if jam_from is not None and jam_from <= i < jam_from + 12:
            flow, speed, occ = 150.0, 6.0, 85.0
        out.append(Reading("TRF_TRAN_PHU_24", "traffic", T0 + timedelta(minutes=5 * i), i + 1,
                           {"speed_kmh": round(speed, 1), "flow_vph": round(flow), "occupancy_pct": round(occ, 1)}))
    return out


@functools.cache
def traffic_model() -> AnomalyModel:
    """A small deterministic model on two clean days (trained once per session)."""
    rows = [(r.ts, r.metrics) for r in _traffic_rows(576)]
    return train(rows, sensor_id="TRF_TRAN_PHU_24", kind="traffic", trained_at=T0, n_estimators=25,
                 max_samples=64, seed=7)


def jammed_day() -> list[Reading]:
    return _with_delivery_faults(_traffic_rows(300, jam_from=200))


CASES: dict[str, tuple[Callable[[], Any], Callable[[], list[Reading]]]] = {
    "robust_zscore": (
        lambda: RobustZScoreDetector("NOISE_CHO_DAM", {"laeq_dba": 0.5}, warmup=100, persist=3), noise_burst,
    ),
    "level_shift": (lambda: LevelShiftDetector("AIR_VINH_HOA", {"no2": 1.0}, k=1.0, h=20.0), drifting_no2),
    "seasonal_baseline": (
        lambda: SeasonalBaselineDetector("TRF_TRAN_PHU_24", {"flow_vph": 20.0}, interval_s=3600, persist=2),
        noisy_nights,
    ),
    "isolation_forest": (lambda: IsolationForestDetector.from_model(traffic_model(), persist=2), jammed_day),
}
