"""Read-only queries behind ``ioc report``: one event window of readings, alerts and their transitions.

Everything here runs in a read-only transaction, takes the window as parameters and returns
plain frozen dataclasses, so the renderer in ``ioc/composition/report`` never sees a cursor or SQL. Series
are bucketed on the server (``date_bin``), so a month-long window still returns a few thousand
points per sensor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

import psycopg
from psycopg import errors as pg_errors

from ioc.errors import IocError
from ioc.settings import mask_url
from ioc.storage.db import connect

log = logging.getLogger(__name__)

#: date_bin origin: a Monday midnight UTC, so hourly and daily buckets fall on whole hours/days.
_ORIGIN: Final = datetime.fromisoformat("2000-01-03T00:00:00+00:00")
#: Alert transitions a report draws; notification bookkeeping (notified:*) is left out.
TRANSITIONS: Final = ("opened", "escalated", "deescalated", "acknowledged", "resolved")

Aggregate = Literal["max", "sum", "avg"]

# One fixed statement per aggregate: the aggregate is chosen from this table, never spliced in.
_SERIES_SQL: Final[dict[str, str]] = {
    "max": "SELECT sensor_id, date_bin(%(bucket)s, ts, %(origin)s) AS b, max(value)"
           " FROM readings WHERE metric = %(metric)s AND ts >= %(start)s AND ts < %(end)s"
           " GROUP BY sensor_id, b ORDER BY sensor_id, b",
    "sum": "SELECT sensor_id, date_bin(%(bucket)s, ts, %(origin)s) AS b, sum(value)"
           " FROM readings WHERE metric = %(metric)s AND ts >= %(start)s AND ts < %(end)s"
           " GROUP BY sensor_id, b ORDER BY sensor_id, b",
    "avg": "SELECT sensor_id, date_bin(%(bucket)s, ts, %(origin)s) AS b, avg(value)"
           " FROM readings WHERE metric = %(metric)s AND ts >= %(start)s AND ts < %(end)s"
           " GROUP BY sensor_id, b ORDER BY sensor_id, b",
}

_HOURLY_MEANS_SQL: Final = (
    "SELECT sensor_id, metric, date_bin(INTERVAL '1 hour', ts, %(origin)s) AS h, avg(value)"
    " FROM readings WHERE metric = ANY(%(metrics)s) AND ts >= %(start)s AND ts < %(end)s"
    " GROUP BY sensor_id, metric, h ORDER BY sensor_id, metric, h"
)

_SENSORS_SQL: Final = (
    "SELECT sensor_id, kind, name, district, alarm_levels, interval_s, retired_at FROM sensors ORDER BY sensor_id"
)

_ALERTS_SQL: Final = (
    "SELECT alert_id, sensor_id, rule, kind, metric, severity, COALESCE(peak_severity, severity), state,"
    " opened_at, acknowledged_at, acknowledged_by, resolved_at, value, threshold, predicted_crossing_at,"
    " lead_time_s, message, message_en, members"
    " FROM alerts WHERE opened_at < %(end)s AND (resolved_at IS NULL OR resolved_at >= %(start)s)"
    " ORDER BY opened_at, alert_id LIMIT %(limit)s"
)

_EVENTS_SQL: Final = (
    "SELECT alert_id, event, at, detail->>'ts', detail->>'to', detail->>'severity', detail->>'by'"
    " FROM alert_events WHERE alert_id = ANY(%(ids)s) AND event = ANY(%(events)s) ORDER BY alert_id, event_id"
)

_COUNT_SQL: Final = (
    "SELECT count(*), count(DISTINCT sensor_id) FROM readings WHERE ts >= %(start)s AND ts < %(end)s"
)


class ReportDataError(IocError):
    """The database cannot answer a report (not migrated, or a query failed); says what to do."""


@dataclass(frozen=True)
class SensorRow:
    """One registry entry as a report labels it."""

    sensor_id: str
    kind: str
    name: str
    district: str
    alarm_levels: dict[str, float | None] | None
    interval_s: int | None
    retired: bool


@dataclass(frozen=True)
class Point:
    ts: datetime
    value: float


@dataclass(frozen=True)
class AlertRow:
    """An alert that was active at some moment of the window."""

    alert_id: int
    sensor_id: str
    rule: str
    kind: str
    metric: str | None
    severity: str
    peak_severity: str
    state: str
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    value: float | None
    threshold: float | None
    predicted_crossing_at: datetime | None
    lead_time_s: float | None
    message: str
    message_en: str = ""
    #: sensors of a grouped incident (one alert for a river's gauges); empty for a single sensor
    members: tuple[str, ...] = ()

    def concerns(self, sensor_id: str) -> bool:
        """Whether this alert is about ``sensor_id`` (its own sensor or a member of its incident)."""
        return sensor_id == self.sensor_id or sensor_id in self.members


@dataclass(frozen=True)
class AlertEvent:
    """One transition of an alert, at its event time when it was recorded.

    Transitions from findings carry the finding's event time in their detail (``ts``); where it
    is missing the time the transition was written (``alert_events.at``) stands in, and
    ``event_time_known`` says so. An acknowledgement happens when it is recorded.
    """

    alert_id: int
    event: str
    at: datetime
    event_time_known: bool
    severity: str | None
    by: str | None


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows, for the half-open window [start, end)."""

    start: datetime
    end: datetime
    sensors: dict[str, SensorRow]
    water_levels: dict[str, list[Point]]
    water_bucket: timedelta
    rain: dict[str, list[Point]]
    rain_bucket: timedelta
    #: sensor -> metric -> hour start -> mean, from 11 h before ``start`` (NowCast needs 12 hours)
    air_hourly: dict[str, dict[str, dict[datetime, float]]]
    alerts: list[AlertRow]
    events: list[AlertEvent]
    readings: int
    sensors_reporting: int
    alerts_truncated: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.readings == 0 and not self.alerts


@contextmanager
def read_only(url: str) -> Iterator[psycopg.Connection]:
    """A connection whose transactions are READ ONLY snapshots: a report can never write."""
    conn = connect(url)
    try:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        yield conn
    finally:
        conn.close()


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else None


def load_sensors(conn: psycopg.Connection) -> dict[str, SensorRow]:
    """The whole registry (small: one row per sensor), retired sensors included for old events."""
    out: dict[str, SensorRow] = {}
    for sid, kind, name, district, levels, interval_s, retired_at in conn.execute(_SENSORS_SQL):
        clean = None
        if isinstance(levels, dict):
            clean = {str(k): (None if v is None else float(v)) for k, v in levels.items()}
        out[sid] = SensorRow(sid, kind, name or sid, district or "", clean, interval_s, retired_at is not None)
    return out


def bucketed_series(
    conn: psycopg.Connection, metric: str, start: datetime, end: datetime, bucket: timedelta, agg: Aggregate
) -> dict[str, list[Point]]:
    """One metric of every sensor in [start, end), aggregated per bucket (max, sum or avg)."""
    sql = _SERIES_SQL[agg]
    params = {"bucket": bucket, "origin": _ORIGIN, "metric": metric, "start": start, "end": end}
    out: dict[str, list[Point]] = {}
    for sid, b, v in conn.execute(sql, params):  # type: ignore[call-overload]  # fixed text, chosen above
        out.setdefault(sid, []).append(Point(b, float(v)))
    return out


def hourly_means(
    conn: psycopg.Connection, metrics: Sequence[str], start: datetime, end: datetime
) -> dict[str, dict[str, dict[datetime, float]]]:
    """Hourly means of the given metrics per sensor, keyed by the hour's start."""
    out: dict[str, dict[str, dict[datetime, float]]] = {}
    params = {"metrics": list(metrics), "start": start, "end": end, "origin": _ORIGIN}
    for sid, metric, h, v in conn.execute(_HOURLY_MEANS_SQL, params):
        out.setdefault(sid, {}).setdefault(metric, {})[h] = float(v)
    return out


def alerts_in_window(
    conn: psycopg.Connection, start: datetime, end: datetime, limit: int
) -> list[AlertRow]:
    """Alerts open at any moment of [start, end), oldest first, at most ``limit``."""
    rows = conn.execute(_ALERTS_SQL, {"start": start, "end": end, "limit": limit}).fetchall()
    return [
        AlertRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                 None if r[12] is None else float(r[12]), None if r[13] is None else float(r[13]), r[14],
                 None if r[15] is None else float(r[15]), r[16], r[17] or "", tuple(r[18] or ()))
        for r in rows
    ]


def alert_events(conn: psycopg.Connection, alert_ids: Sequence[int]) -> list[AlertEvent]:
    """The transitions of these alerts, in the order they were recorded."""
    if not alert_ids:
        return []
    out: list[AlertEvent] = []
    params = {"ids": list(alert_ids), "events": list(TRANSITIONS)}
    for alert_id, event, at, ts_text, to, severity, by in conn.execute(_EVENTS_SQL, params):
        ts = _parse_ts(ts_text)
        # an acknowledgement is an operator's act: the moment it was recorded is when it happened
        known = ts is not None or event == "acknowledged"
        out.append(AlertEvent(int(alert_id), event, ts or at, known, to or severity, by))
    return out


def reading_counts(conn: psycopg.Connection, start: datetime, end: datetime) -> tuple[int, int]:
    """(readings, distinct sensors) stored in [start, end)."""
    row = conn.execute(_COUNT_SQL, {"start": start, "end": end}).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def load_report_data(
    url: str,
    start: datetime,
    end: datetime,
    *,
    water_bucket: timedelta,
    rain_bucket: timedelta,
    air_metrics: Sequence[str],
    max_alerts: int = 5000,
) -> ReportData:
    """Load one window in a single read-only transaction (a consistent snapshot).

    Raises ``ReportDataError`` when the schema is missing, ``ServiceUnavailable`` when the
    server cannot be reached.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    try:
        with read_only(url) as conn, conn.transaction():
            sensors = load_sensors(conn)
            water = bucketed_series(conn, "water_level_m", start, end, water_bucket, "max")
            rain = bucketed_series(conn, "rain_mm", start, end, rain_bucket, "sum")
            air = hourly_means(conn, air_metrics, start - timedelta(hours=11), end)
            alerts = alerts_in_window(conn, start, end, max_alerts + 1)
            events = alert_events(conn, [a.alert_id for a in alerts[:max_alerts]])
            n, n_sensors = reading_counts(conn, start, end)
    except (pg_errors.UndefinedTable, pg_errors.UndefinedColumn) as e:
        raise ReportDataError(
            f"the database at {mask_url(url)} lacks the ioc schema ({str(e).splitlines()[0]}): run `ioc db migrate`"
        ) from e
    except psycopg.Error as e:
        raise ReportDataError(f"report query failed on {mask_url(url)}: {str(e).splitlines()[0]}") from e
    truncated = len(alerts) > max_alerts
    if truncated:
        log.warning("more than %s alerts in the window; the report lists the first %s", max_alerts, max_alerts)
    return ReportData(
        start=start, end=end, sensors=sensors, water_levels=water, water_bucket=water_bucket, rain=rain,
        rain_bucket=rain_bucket, air_hourly=air, alerts=alerts[:max_alerts], events=events, readings=n,
        sensors_reporting=n_sensors, alerts_truncated=truncated,
    )

