"""Alerts in the database: one active alert per key, every transition in ``alert_events``.

The partial unique index on ``alert_key`` makes a duplicate open impossible even when two
workers race; the loser's insert simply returns nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from ioc.domain import SEVERITIES
from ioc.models import AlertChange, Finding
from ioc.storage.offset_ledger import Claim, ClaimResult, Position, claim_offset

_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def _change(row: tuple, event: str, previous: str | None, at: datetime) -> AlertChange:  # type: ignore[type-arg]
    alert_id, key, state, severity, kind, sensor_id, rule, value, threshold, message = row
    return AlertChange(
        alert_id, key, event, state, severity, previous, kind, sensor_id, rule, at, value, threshold, message
    )


def _event(cur: psycopg.Cursor, alert_id: int, event: str, detail: dict[str, object]) -> None:  # type: ignore[type-arg]
    cur.execute(
        "INSERT INTO alert_events (alert_id, event, detail) VALUES (%s, %s, %s)", (alert_id, event, Jsonb(detail))
    )


def apply_finding(conn: psycopg.Connection, f: Finding) -> list[AlertChange]:
    """Open, escalate, de-escalate or resolve the alert for the finding's key, in one transaction."""
    now = datetime.now(UTC)
    changes: list[AlertChange] = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT alert_id, alert_key, state, severity, kind, sensor_id, rule, value, threshold, message FROM alerts WHERE alert_key = %s AND state <> 'resolved' FOR UPDATE", (f.alert_key,))
        active = cur.fetchone()
        if f.severity is None:
            if active is None:
                return []
            cur.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at = %s, updated_at = %s, value = %s,"
                " detail = detail || %s WHERE alert_id = %s RETURNING alert_id, alert_key, state, severity, kind, sensor_id, rule, value, threshold, message",
                (f.ts, now, f.value, Jsonb({"resolution": f.message}), active[0]),
            )
            row = cur.fetchone()
            _event(cur, active[0], "resolved", {"value": f.value, "ts": f.ts.isoformat()})
            changes.append(_change(row, "resolved", active[3], f.ts))  # type: ignore[arg-type]
            return changes
        if active is None:
            cur.execute(
                "INSERT INTO alerts (alert_key, sensor_id, rule, kind, metric, severity, peak_severity, state, opened_at,"
                " updated_at, value, threshold, predicted_crossing_at, lead_time_s, message, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (alert_key) WHERE state <> 'resolved' DO NOTHING RETURNING alert_id, alert_key, state, severity, kind, sensor_id, rule, value, threshold, message",
                (
                    f.alert_key, f.sensor_id, f.rule, f.kind, f.metric, f.severity, f.severity, f.ts, now, f.value,
                    f.threshold, f.predicted_crossing_at, f.lead_time_s, f.message, Jsonb(dict(f.detail)),
                ),
            )
            row = cur.fetchone()
            if row is None:  # a concurrent worker opened it first
                return []
            _event(cur, row[0], "opened", {"severity": f.severity, "value": f.value, "ts": f.ts.isoformat()})
            changes.append(_change(row, "opened", None, f.ts))
            return changes
        previous = active[3]
        if previous == f.severity:
            return []
        event = "escalated" if _RANK[f.severity] > _RANK[previous] else "deescalated"
        cur.execute(
            "UPDATE alerts SET severity = %s, updated_at = %s, value = %s, threshold = %s, message = %s,"
            " peak_severity = CASE WHEN array_position(%s::text[], %s) > array_position(%s::text[], peak_severity)"
            " THEN %s ELSE peak_severity END"
            " WHERE alert_id = %s RETURNING alert_id, alert_key, state, severity, kind, sensor_id, rule, value, threshold, message",
            (f.severity, now, f.value, f.threshold, f.message, list(SEVERITIES), f.severity, list(SEVERITIES),
             f.severity, active[0]),
        )
        row = cur.fetchone()
        _event(cur, active[0], event, {"from": previous, "to": f.severity, "value": f.value})
        changes.append(_change(row, event, previous, f.ts))  # type: ignore[arg-type]
    return changes


def acknowledge(conn: psycopg.Connection, alert_id: int, by: str) -> AlertChange | None:
    now = datetime.now(UTC)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s, updated_at = %s"
            " WHERE alert_id = %s AND state = 'open' RETURNING alert_id, alert_key, state, severity, kind, sensor_id, rule, value, threshold, message",
            (now, by, now, alert_id),
        )
        row = cur.fetchone()
        if row is None:
            return None
        _event(cur, alert_id, "acknowledged", {"by": by})
        return _change(row, "acknowledged", row[3], now)


def active_alerts(conn: psycopg.Connection) -> list[tuple]:  # type: ignore[type-arg]
    return conn.execute(
        "SELECT alert_id, severity, kind, sensor_id, rule, state, opened_at, value, threshold, message"
        " FROM alerts WHERE state <> 'resolved' ORDER BY alert_id"
    ).fetchall()


def record_notification(conn: psycopg.Connection, alert_id: int, channel: str, ok: bool, detail: str = "") -> None:
    conn.execute(
        "INSERT INTO alert_events (alert_id, event, detail) VALUES (%s, %s, %s)",
        (alert_id, ("notified:" if ok else "notify_failed:") + channel, Jsonb({"detail": detail[:500]})),
    )


def apply_findings(
    conn: psycopg.Connection, findings: list[Finding], at: Position | None = None, *, allow_jump: bool = False
) -> tuple[ClaimResult | None, list[AlertChange]]:
    """A whole findings batch (one Kafka record) in one transaction, claimed in the offset ledger."""
    with conn.transaction():
        if at is not None:
            with conn.cursor() as cur:
                claimed = claim_offset(cur, at, allow_jump=allow_jump)
            if claimed.claim is not Claim.NEXT:
                return claimed, []
        else:
            claimed = None
        return claimed, [ch for f in findings for ch in apply_finding(conn, f)]
