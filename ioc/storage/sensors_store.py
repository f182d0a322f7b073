"""The sensor registry in the database: seeded from sensors_sim's data, read by the bridge."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from ioc.wire import SensorInfo, urgent_level


def upsert_sensors(conn: psycopg.Connection, sensors: Iterable[Any]) -> int:
    """Insert or update registry entries (objects shaped like ``sensors_sim.registry.SensorSpec``)."""
    rows = [
        (
            s.sensor_id, s.kind, s.name, s.district, s.lat, s.lon, s.approximate, Jsonb(s.metrics),
            Jsonb(s.alarm_levels) if s.alarm_levels else None, s.interval_s, Jsonb(s.extra),
        )
        for s in sensors
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensors (sensor_id, kind, name, district, lat, lon, approximate, metrics, alarm_levels,"
            " interval_s, extra) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (sensor_id) DO UPDATE SET kind = EXCLUDED.kind, name = EXCLUDED.name,"
            " district = EXCLUDED.district, lat = EXCLUDED.lat, lon = EXCLUDED.lon,"
            " approximate = EXCLUDED.approximate, metrics = EXCLUDED.metrics,"
            " alarm_levels = EXCLUDED.alarm_levels, interval_s = EXCLUDED.interval_s, extra = EXCLUDED.extra,"
            " updated_at = now()",
            rows,
        )
    return len(rows)


def auto_register(conn: psycopg.Connection, sensor_id: str, kind: str) -> None:
    conn.execute(
        "INSERT INTO sensors (sensor_id, kind, name, auto_registered) VALUES (%s, %s, %s, true)"
        " ON CONFLICT (sensor_id) DO NOTHING",
        (sensor_id, kind, sensor_id),
    )


def load_sensor_infos(conn: psycopg.Connection) -> dict[str, SensorInfo]:
    rows = conn.execute("SELECT sensor_id, kind, alarm_levels FROM sensors WHERE retired_at IS NULL").fetchall()
    return {r[0]: SensorInfo(r[1], urgent_level(r[1], r[2])) for r in rows}


T = TypeVar("T")


def registry_version(conn: psycopg.Connection) -> int | None:
    """Moves with every statement that changes ``sensors`` (a trigger); None before migration 009."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT version FROM registry_version").fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else int(row[0])


def load_if_changed(conn: psycopg.Connection, seen: int | None,
                    load: Callable[[psycopg.Connection], T]) -> tuple[int | None, T | None]:
    """``(version, load(conn))``, or ``(seen, None)`` while the registry's version is still ``seen``.

    The version is read before the rows: a change committed in between is in the rows and moves
    the version past the one returned, so it is loaded once more, never missed. An unknown version
    (None) always loads.
    """
    version = registry_version(conn)
    if version is not None and version == seen:
        return seen, None
    return version, load(conn)


def load_alarm_levels(conn: psycopg.Connection) -> dict[str, dict[str, float | None]]:
    rows = conn.execute("SELECT sensor_id, alarm_levels FROM sensors WHERE alarm_levels IS NOT NULL").fetchall()
    return {r[0]: dict(r[1]) for r in rows}


@dataclass(frozen=True)
class SensorEntry:
    """What the detectors need to know about one live sensor."""

    sensor_id: str
    kind: str
    name: str
    metrics: tuple[str, ...]
    interval_s: float
    alarm_levels: dict[str, float | None] | None
    extra: dict[str, Any]


def load_sensor_entries(conn: psycopg.Connection) -> dict[str, SensorEntry]:
    """Live (not retired) sensors; a retired sensor or removed alarm level disappears from here."""
    rows = conn.execute(
        "SELECT sensor_id, kind, name, metrics, interval_s, alarm_levels, extra FROM sensors WHERE retired_at IS NULL"
    ).fetchall()
    return {
        r[0]: SensorEntry(r[0], r[1], r[2] or r[0], tuple(sorted((r[3] or {}).keys())), float(r[4] or 60),
                          dict(r[5]) if r[5] else None, dict(r[6] or {}))
        for r in rows
    }
