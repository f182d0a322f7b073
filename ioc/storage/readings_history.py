"""One sensor's stored history, read back for offline work (training anomaly models)."""

from __future__ import annotations

from datetime import datetime

import psycopg


def sensor_kind(conn: psycopg.Connection, sensor_id: str) -> str | None:
    row = conn.execute("SELECT kind FROM sensors WHERE sensor_id = %s", (sensor_id,)).fetchone()
    return None if row is None else str(row[0])


def load_sensor_history(
    conn: psycopg.Connection, sensor_id: str, *, since: datetime | None = None, until: datetime | None = None
) -> list[tuple[datetime, dict[str, float]]]:
    """Readings of one sensor as (ts, {metric: value}) in time order, pivoted from the long table."""
    rows = conn.execute(
        "SELECT ts, metric, value FROM readings WHERE sensor_id = %s"
        " AND (%s::timestamptz IS NULL OR ts >= %s::timestamptz)"
        " AND (%s::timestamptz IS NULL OR ts < %s::timestamptz) ORDER BY ts, metric",
        (sensor_id, since, since, until, until),
    )
    out: list[tuple[datetime, dict[str, float]]] = []
    for ts, metric, value in rows:
        if not out or out[-1][0] != ts:
            out.append((ts, {}))
        out[-1][1][metric] = float(value)
    return out
