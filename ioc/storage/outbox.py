"""The notification outbox: claimed with a lease, delivered, or retried with backoff until it is.

A claim is a lease, not a lock held across the network call: a dispatcher that dies while
delivering leaves the lease to run out, and another (or the restarted one) delivers again.
Per alert and channel only the oldest undelivered notification is handed out, so a retained
MQTT message is never overwritten by an older state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from ioc.alerting.notification import AlertView, Notification

_view = msgspec.convert


@dataclass(frozen=True)
class Backlog:
    channel: str
    pending: int
    failed: int
    oldest_pending_s: float | None


def claim_due(conn: psycopg.Connection, channel: str, limit: int = 50, lease_s: float = 30.0,
              now: datetime | None = None) -> list[Notification]:
    at = now or datetime.now(UTC)
    rows = conn.execute(
        "UPDATE alert_outbox o SET lease_until = %s, attempts = attempts + 1 WHERE notification_id IN ("
        " SELECT notification_id FROM alert_outbox x WHERE x.channel = %s AND x.delivered_at IS NULL"
        " AND x.failed_at IS NULL AND x.next_attempt_at <= %s AND (x.lease_until IS NULL OR x.lease_until <= %s)"
        " AND NOT EXISTS (SELECT 1 FROM alert_outbox y WHERE y.alert_id = x.alert_id AND y.channel = x.channel"
        "   AND y.delivered_at IS NULL AND y.failed_at IS NULL"
        "   AND (y.created_at, y.notification_id) < (x.created_at, x.notification_id))"
        " ORDER BY x.created_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING notification_id, channel, event, created_at, payload, attempts",
        (at + timedelta(seconds=lease_s), channel, at, at, limit),
    ).fetchall()
    conn.commit()
    return [Notification(r[0], r[1], r[2], r[3], _view(r[4], AlertView), r[5]) for r in
            sorted(rows, key=lambda r: (r[3], r[0]))]


def mark_delivered(conn: psycopg.Connection, n: Notification, now: datetime | None = None) -> bool:
    """True if this call marked it (False: already delivered by someone else)."""
    at = now or datetime.now(UTC)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE alert_outbox SET delivered_at = %s, lease_until = NULL, last_error = NULL"
            " WHERE notification_id = %s AND delivered_at IS NULL RETURNING alert_id, attempts",
            (at, n.notification_id),
        )
        row = cur.fetchone()
        if row is None:
            return False
        cur.execute(
            "INSERT INTO alert_events (alert_id, event, detail) VALUES (%s, %s, %s)",
            (row[0], f"notified:{n.channel}",
             Jsonb({"notification_id": n.notification_id, "event": n.event, "attempt": row[1]})),
        )
    return True


def mark_failed_attempt(conn: psycopg.Connection, n: Notification, error: str, retry_in_s: float | None,
                        now: datetime | None = None) -> None:
    """Record the attempt; ``retry_in_s`` None means give up (the row stays, marked failed)."""
    at = now or datetime.now(UTC)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE alert_outbox SET lease_until = NULL, last_error = %s, next_attempt_at = %s,"
            " failed_at = CASE WHEN %s THEN %s::timestamptz ELSE NULL END"
            " WHERE notification_id = %s AND delivered_at IS NULL RETURNING alert_id, attempts",
            (error[:500], at + timedelta(seconds=retry_in_s or 0.0), retry_in_s is None, at, n.notification_id),
        )
        row = cur.fetchone()
        if row is None:
            return
        event = f"notify_failed:{n.channel}" if retry_in_s is None else f"notify_retry:{n.channel}"
        cur.execute(
            "INSERT INTO alert_events (alert_id, event, detail) VALUES (%s, %s, %s)",
            (row[0], event, Jsonb({"notification_id": n.notification_id, "event": n.event, "attempt": row[1],
                                   "error": error[:500]})),
        )


def backlog(conn: psycopg.Connection, now: datetime | None = None) -> list[Backlog]:
    at = now or datetime.now(UTC)
    rows = conn.execute(
        "SELECT channel, count(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL),"
        " count(*) FILTER (WHERE failed_at IS NOT NULL),"
        " extract(epoch FROM %s - min(created_at) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL))"
        " FROM alert_outbox GROUP BY channel ORDER BY channel",
        (at,),
    ).fetchall()
    conn.commit()
    return [Backlog(r[0], int(r[1]), int(r[2]), None if r[3] is None else float(r[3])) for r in rows]


def outbox_rows(conn: psycopg.Connection, alert_id: int | None = None) -> list[dict[str, Any]]:
    """Every notification (for `ioc alerts show` and tests), oldest first."""
    rows = conn.execute(
        "SELECT notification_id, alert_id, channel, event, created_at, attempts, delivered_at, failed_at, last_error"
        " FROM alert_outbox WHERE %s::bigint IS NULL OR alert_id = %s ORDER BY created_at, notification_id",
        (alert_id, alert_id),
    ).fetchall()
    conn.commit()
    keys = ("notification_id", "alert_id", "channel", "event", "created_at", "attempts", "delivered_at", "failed_at",
            "last_error")
    return [dict(zip(keys, r, strict=True)) for r in rows]
