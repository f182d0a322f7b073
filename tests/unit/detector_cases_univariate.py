"""Conformance cases for the univariate anomaly score (joined by test_detector_conformance.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from detectors.univariate import UnivariateAnomalyDetector
from ioc.models import Reading

T0 = datetime(2025, 10, 6, tzinfo=UTC)


def _noise(i: int) -> float:
    """Deterministic pseudo-noise in [-0.5, 0.5)."""
    return ((i * 2654435761) % 1000) / 1000.0 - 0.5


def seasonal_speed(n: int = 520) -> list[Reading]:
    """5-minute road speed with a 4-hour cycle and noise, one sensor glitch (reading 300) and a
    lasting drop after reading 420, delivered with one duplicate and one late reading."""
    out = []
    for i in range(n):
        v = 55 + 8 * math.sin(2 * math.pi * i / 48) + 3 * _noise(i)
        if i == 300:
            v += 40
        if i >= 420:
            v -= 30
        out.append(Reading("TRF_TRAN_PHU_24", "traffic", T0 + timedelta(minutes=5 * i), i + 1,
                           {"speed_kmh": round(v, 1)}))
    out.insert(200, out[199])
    out.insert(350, out[120])
    return out


CASES: dict[str, tuple[Callable[[], Any], Callable[[], list[Reading]]]] = {
    "univariate_knn_range": (lambda: UnivariateAnomalyDetector("TRF_TRAN_PHU_24", "speed_kmh"), seasonal_speed),
    "univariate_windowed_gaussian": (
        lambda: UnivariateAnomalyDetector("TRF_TRAN_PHU_24", "speed_kmh", method="windowed-gaussian"),
        seasonal_speed,
    ),
}
