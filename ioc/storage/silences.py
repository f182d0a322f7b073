"""Maintenance windows: a silence mutes an alert's notifications, never its record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg


@dataclass(frozen=True)
class Silence:
    silence_id: int
    sensor_id: str | None
    kind: str | None
    starts_at: datetime
    ends_at: datetime
    created_by: str
    reason: str
    expired_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.expired_at is None and self.starts_at <= now < self.ends_at


def add_silence(conn: psycopg.Connection, *, sensor_id: str | None, kind: str | None, duration: timedelta,
                by: str, reason: str, now: datetime | None = None) -> Silence:
    if sensor_id is None and kind is None:
        raise ValueError("a silence needs a sensor or a kind")
    if duration <= timedelta(0):
        raise ValueError("a silence must last longer than zero")
    at = now or datetime.now(UTC)
    row = conn.execute(
        "INSERT INTO alert_silences (sensor_id, kind, starts_at, ends_at, created_by, reason)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " RETURNING silence_id, sensor_id, kind, starts_at, ends_at, created_by, reason, expired_at",
        (sensor_id, kind, at, at + duration, by, reason),
    ).fetchone()
    conn.commit()
    assert row is not None
    return Silence(*row)


def list_silences(conn: psycopg.Connection, *, include_ended: bool = False,
                  now: datetime | None = None) -> list[Silence]:
    at = now or datetime.now(UTC)
    rows = conn.execute(
        "SELECT silence_id, sensor_id, kind, starts_at, ends_at, created_by, reason, expired_at FROM alert_silences"
        " WHERE %s OR (expired_at IS NULL AND ends_at > %s) ORDER BY silence_id",
        (include_ended, at),
    ).fetchall()
    conn.commit()
    return [Silence(*r) for r in rows]


def expire_silence(conn: psycopg.Connection, silence_id: int, now: datetime | None = None) -> bool:
    """End a silence early; False if it is unknown or already over."""
    at = now or datetime.now(UTC)
    row = conn.execute(
        "UPDATE alert_silences SET expired_at = %s WHERE silence_id = %s AND expired_at IS NULL AND ends_at > %s"
        " RETURNING silence_id",
        (at, silence_id, at),
    ).fetchone()
    conn.commit()
    return row is not None
