"""Hourly VN_AQI over a report window, computed with the project's own ``detectors.vn_aqi``.

Same recipe as the live detector: PM2.5/PM10 through NowCast over the last 12 hourly means,
the other pollutants as 1 h means, the overall index the largest sub-index. Nothing about the
breakpoints is repeated here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from detectors.vn_aqi import HOURLY_COLUMN, PM_METRICS, AqiCategory, hourly_aqi, nowcast

#: Metrics the report asks the database for (every pollutant VN_AQI scores hourly).
AQI_METRICS: tuple[str, ...] = tuple(HOURLY_COLUMN)
_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class AqiPoint:
    """VN_AQI of the clock hour starting at ``hour``."""

    hour: datetime
    aqi: int
    dominant: str
    category: AqiCategory


def aqi_series(
    hourly: Mapping[str, Mapping[datetime, float]], start: datetime, end: datetime
) -> list[AqiPoint]:
    """VN_AQI for each hour in [start, end) of one station, from its hourly means per metric.

    ``hourly`` must reach 11 hours before ``start`` for the first hours' NowCast to be complete.

    >>> from datetime import UTC
    >>> h0 = datetime(2025, 3, 12, 0, tzinfo=UTC)
    >>> pm25 = {h0 + i * _HOUR: c for i, c in enumerate([20.0] * 3 + [70.0] * 3 + [120.0] * 6)}
    >>> pts = aqi_series({"pm25": pm25}, h0 + 4 * _HOUR, h0 + 12 * _HOUR)
    >>> [(p.hour.hour, p.aqi, p.category.vi) for p in pts][:3]  # the VnAqiDetector doctest's 115 and 159
    [(4, 115, 'Kém'), (5, 124, 'Kém'), (6, 159, 'Xấu')]
    """
    first = start.replace(minute=0, second=0, microsecond=0)
    out: list[AqiPoint] = []
    h = first
    while h < end:
        conc: dict[str, float | None] = {}
        for metric, by_hour in hourly.items():
            if metric in PM_METRICS:
                conc[metric] = nowcast([by_hour.get(h - i * _HOUR) for i in range(12)])
            elif metric in HOURLY_COLUMN:
                conc[metric] = by_hour.get(h)
        result = hourly_aqi(conc)
        if result is not None:
            out.append(AqiPoint(h, result.aqi, result.dominant, result.category))
        h += _HOUR
    return out
