"""Alerts in the database: conditions feed alerts, transitions write their notifications.

Every finding updates its condition (one per sensor and detector); the alert it feeds (one per
sensor and detector, or one incident per river or road when the rule groups) takes the highest
severity of its members that are not inhibited by a health fault. Each transition is recorded
in ``alert_events`` and writes its notifications into ``alert_outbox`` in the same
transaction, so a crash after the commit means a retry, never a lost notification.

Workers that race on one key are serialised by a transaction-scoped advisory lock, and the
partial unique index on ``alerts (alert_key)`` still guarantees one active alert per key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from ioc.alerting.notification import AlertView, Notification
from ioc.alerting.rules import AlertRule, AlertRules, group_value
from ioc.domain import SEVERITIES
from ioc.models import Finding
from ioc.storage.offset_ledger import claim_sparse

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_ALERT_COLS = (
    "alert_id, alert_key, state, severity, peak_severity, kind, family, sensor_id, rule, metric, opened_at,"
    " updated_at, value, threshold, message, message_en, resolved_at, acknowledged_at, acknowledged_by,"
    " predicted_crossing_at, crossing_uncertainty_s, lead_time_s, members, grouped, channels, muted_by"
)
_COND_COLS = (
    "condition_key, sensor_id, rule, kind, family, metric, severity, since, value, threshold, message,"
    " message_en, predicted_crossing_at, crossing_uncertainty_s, lead_time_s, detail"
)


@dataclass(frozen=True)
class Delivery:
    """What the alerts stage needs besides the findings: the rules and the channels configured."""

    rules: AlertRules
    channels: tuple[str, ...]  # enabled in this deployment: mqtt, webhook, grafana, cap

    def for_alert(self, wanted: Sequence[str]) -> list[str]:
        return [c for c in self.channels if c in wanted]


def _lock(cur: psycopg.Cursor[Any], key: str) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (key,))


def _event(cur: psycopg.Cursor[Any], alert_id: int, event: str, detail: dict[str, object], actor: str = "ioc") -> None:
    cur.execute(
        "INSERT INTO alert_events (alert_id, event, detail, actor) VALUES (%s, %s, %s, %s)",
        (alert_id, event, Jsonb(detail), actor),
    )


def _sensor_meta(cur: psycopg.Cursor[Any], sensor_ids: Iterable[str]) -> dict[str, tuple[Any, ...]]:
    ids = sorted(set(sensor_ids))
    if not ids:
        return {}
    cur.execute("SELECT sensor_id, name, district, lat, lon, extra FROM sensors WHERE sensor_id = ANY(%s)", (ids,))
    return {r[0]: r for r in cur.fetchall()}


def _view(row: Sequence[Any], previous: str | None, meta: dict[str, tuple[Any, ...]]) -> AlertView:
    (alert_id, key, state, severity, peak, kind, family, sensor_id, rule, metric, opened_at, updated_at, value,
     threshold, message, message_en, resolved_at, ack_at, ack_by, pred, unc, lead, members, grouped, _ch, _m) = row
    m = meta.get(sensor_id)
    return AlertView(
        alert_id=alert_id, alert_key=key, state=state, severity=severity, peak_severity=peak or severity,
        previous_severity=previous, kind=kind, family=family, sensor_id=sensor_id, rule=rule, metric=metric,
        opened_at=opened_at, updated_at=updated_at, value=value, threshold=threshold, message=message,
        message_en=message_en, resolved_at=resolved_at, acknowledged_at=ack_at, acknowledged_by=ack_by,
        predicted_crossing_at=pred, crossing_uncertainty_s=unc, lead_time_s=lead,
        incident_key=key if grouped else None, members=list(members or []),
        sensor_name=m[1] if m else None, district=m[2] if m else None, lat=m[3] if m else None,
        lon=m[4] if m else None,
    )


def _active_silence(cur: psycopg.Cursor[Any], kind: str, sensors: Sequence[str], now: datetime) -> int | None:
    """The silence that mutes an alert: one on its kind, or sensor silences covering every member.

    A maintenance silence on one gauge must not mute a river's incident that another gauge raised.
    """
    cur.execute(
        "SELECT sensor_id, min(silence_id) FROM alert_silences WHERE expired_at IS NULL AND starts_at <= %s"
        " AND ends_at > %s AND (kind = %s OR sensor_id = ANY(%s)) GROUP BY sensor_id",
        (now, now, kind, list(sensors)),
    )
    found = {sid: int(silence_id) for sid, silence_id in cur.fetchall()}
    if None in found:
        return found[None]
    if sensors and all(s in found for s in sensors):
        return min(found.values())
    return None


def _notify(cur: psycopg.Cursor[Any], row: Sequence[Any], event: str, previous: str | None, channels: Sequence[str],
            now: datetime, out: list[Notification]) -> None:
    """Write one notification per channel into the outbox, unless a silence covers the alert."""
    alert_id, kind, members, sensor_id = row[0], row[5], list(row[22] or []), row[7]
    silence = _active_silence(cur, kind, sorted({*members, sensor_id}), now)
    if silence is not None:
        cur.execute("UPDATE alerts SET muted_by = %s WHERE alert_id = %s", (f"silence:{silence}", alert_id))
        _event(cur, alert_id, "notification_suppressed", {"event": event, "silence_id": silence})
        return
    if not channels:
        return
    view = _view(row, previous, _sensor_meta(cur, [sensor_id]))
    payload = msgspec.to_builtins(view)
    for ch in channels:
        n = Notification(uuid.uuid4().hex, ch, event, now, view)
        cur.execute(
            "INSERT INTO alert_outbox (notification_id, alert_id, channel, event, created_at, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (n.notification_id, alert_id, ch, event, now, Jsonb(payload)),
        )
        out.append(n)
    cur.execute("UPDATE alerts SET last_notified_at = %s, muted_by = NULL WHERE alert_id = %s", (now, alert_id))


def _upsert_condition(cur: psycopg.Cursor[Any], f: Finding, severity: str | None, alert_key: str,
                      rules: AlertRules, now: datetime) -> None:
    inhibited = False
    if severity is not None:
        sources = sorted(s for s in rules.inhibit_sources)
        if f.family in rules.inhibit_targets:
            cur.execute(
                "SELECT 1 FROM alert_conditions WHERE sensor_id = %s AND severity IS NOT NULL AND family = ANY(%s)"
                " AND condition_key <> %s LIMIT 1",
                (f.sensor_id, sources, f.alert_key),
            )
            inhibited = cur.fetchone() is not None
    cur.execute(
        "INSERT INTO alert_conditions (condition_key, alert_key, sensor_id, rule, kind, family, metric, severity,"
        " inhibited, since, updated_at, value, threshold, message, message_en, predicted_crossing_at,"
        " crossing_uncertainty_s, lead_time_s, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (condition_key) DO UPDATE SET alert_key = EXCLUDED.alert_key, kind = EXCLUDED.kind,"
        " family = EXCLUDED.family, metric = EXCLUDED.metric, severity = EXCLUDED.severity,"
        " inhibited = EXCLUDED.inhibited,"
        " since = CASE WHEN alert_conditions.severity IS NULL OR EXCLUDED.severity IS NULL THEN EXCLUDED.since"
        " ELSE alert_conditions.since END,"
        " updated_at = EXCLUDED.updated_at, value = EXCLUDED.value, threshold = EXCLUDED.threshold,"
        " message = EXCLUDED.message, message_en = EXCLUDED.message_en,"
        " predicted_crossing_at = EXCLUDED.predicted_crossing_at,"
        " crossing_uncertainty_s = EXCLUDED.crossing_uncertainty_s, lead_time_s = EXCLUDED.lead_time_s,"
        " detail = EXCLUDED.detail",
        (f.alert_key, alert_key, f.sensor_id, f.rule, f.kind, f.family, f.metric, severity, inhibited, f.ts, now,
         f.value, f.threshold, f.message, f.message_en, f.predicted_crossing_at, f.crossing_uncertainty_s,
         f.lead_time_s, Jsonb(dict(f.detail))),
    )


def _reinhibit(cur: psycopg.Cursor[Any], sensor_id: str, rules: AlertRules) -> list[str]:
    """A health condition changed: re-mark the sensor's hazard conditions; returns the alert keys touched."""
    cur.execute(
        "SELECT 1 FROM alert_conditions WHERE sensor_id = %s AND severity IS NOT NULL AND family = ANY(%s) LIMIT 1",
        (sensor_id, sorted(rules.inhibit_sources)),
    )
    faulty = cur.fetchone() is not None
    cur.execute(
        "UPDATE alert_conditions SET inhibited = %s WHERE sensor_id = %s AND family = ANY(%s)"
        " AND inhibited <> %s RETURNING alert_key",
        (faulty, sensor_id, sorted(rules.inhibit_targets), faulty),
    )
    return [r[0] for r in cur.fetchall()]


def _aggregate(cur: psycopg.Cursor[Any], alert_key: str, ts: datetime, rule: AlertRule | None, delivery: Delivery,
               now: datetime, out: list[Notification]) -> None:
    """Bring the alert for ``alert_key`` in line with its active, uninhibited conditions."""
    cur.execute(
        f"SELECT {_COND_COLS} FROM alert_conditions WHERE alert_key = %s AND severity IS NOT NULL"  # noqa: S608
        " AND NOT inhibited",
        (alert_key,),
    )
    conds = cur.fetchall()
    cur.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE alert_key = %s AND state <> 'resolved' FOR UPDATE",  # noqa: S608
                (alert_key,))
    active = cur.fetchone()
    if not conds:
        if active is None:
            return
        cur.execute(
            f"UPDATE alerts SET state = 'resolved', resolved_at = %s, updated_at = %s WHERE alert_id = %s"  # noqa: S608
            f" RETURNING {_ALERT_COLS}",
            (ts, now, active[0]),
        )
        row = cur.fetchone()
        assert row is not None
        _event(cur, active[0], "resolved", {"ts": ts.isoformat()})
        _notify(cur, row, "resolved", active[3], list(row[24] or []), now, out)
        return
    top = max(conds, key=lambda c: (_RANK[c[6]], c[7]))
    # Members are every sensor that has counted towards the incident while it was open: the report
    # after a flood lists all the gauges of the river that crossed, not just the last one to clear.
    members = sorted({c[1] for c in conds} | set(active[22] or [] if active is not None else []))
    (_ck, sensor_id, rname, kind, family, metric, severity, _since, value, threshold, message, message_en, pred, unc,
     lead, detail) = top
    if active is None:
        r = rule
        channels = delivery.for_alert(r.channels if r is not None else delivery.channels)
        cur.execute(
            "INSERT INTO alerts (alert_key, sensor_id, rule, kind, family, metric, severity, peak_severity, state,"  # noqa: S608
            " opened_at, updated_at, value, threshold, predicted_crossing_at, crossing_uncertainty_s, lead_time_s,"
            " message, message_en, detail, members, grouped, repeat_s, channels)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'open', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (alert_key) WHERE state <> 'resolved' DO NOTHING RETURNING {_ALERT_COLS}",
            (alert_key, sensor_id, rname, kind, family, metric, severity, severity, ts, now, value, threshold, pred,
             unc, lead, message, message_en, Jsonb(detail), members, alert_key != _ck,
             (r.repeat_s or None) if r is not None else None, channels),
        )
        row = cur.fetchone()
        if row is not None:
            _event(cur, row[0], "opened", {"severity": severity, "value": value, "ts": ts.isoformat(),
                                           "members": members})
            _notify(cur, row, "opened", None, channels, now, out)
            return
        cur.execute(f"SELECT {_ALERT_COLS} FROM alerts WHERE alert_key = %s AND state <> 'resolved' FOR UPDATE",  # noqa: S608
                    (alert_key,))
        active = cur.fetchone()
        if active is None:  # pragma: no cover - resolved concurrently between the two statements
            return
    previous = active[3]
    old_members = list(active[22] or [])
    cur.execute(
        "UPDATE alerts SET severity = %s, updated_at = %s, value = %s, threshold = %s, message = %s, message_en = %s,"  # noqa: S608
        " predicted_crossing_at = %s, crossing_uncertainty_s = %s, lead_time_s = %s, members = %s,"
        " sensor_id = %s, rule = %s, metric = %s,"
        " state = CASE WHEN array_position(%s::text[], %s) > array_position(%s::text[], severity) THEN 'open'"
        " ELSE state END,"
        " peak_severity = CASE WHEN array_position(%s::text[], %s) > array_position(%s::text[], peak_severity)"
        f" THEN %s ELSE peak_severity END WHERE alert_id = %s RETURNING {_ALERT_COLS}",
        (severity, now, value, threshold, message, message_en, pred, unc, lead, members, sensor_id, rname, metric,
         list(SEVERITIES), severity, list(SEVERITIES), list(SEVERITIES), severity, list(SEVERITIES), severity,
         active[0]),
    )
    row = cur.fetchone()
    assert row is not None
    channels = list(row[24] or [])
    if previous != severity:
        event = "escalated" if _RANK[severity] > _RANK[previous] else "deescalated"
        _event(cur, active[0], event, {"from": previous, "to": severity, "value": value, "ts": ts.isoformat(),
                                       "sensor_id": sensor_id})
        _notify(cur, row, event, previous, channels, now, out)
    elif set(members) - set(old_members):
        _event(cur, active[0], "updated", {"members": members, "added": sorted(set(members) - set(old_members)),
                                           "ts": ts.isoformat()})
        _notify(cur, row, "updated", previous, channels, now, out)


def apply_finding(conn: psycopg.Connection, f: Finding, delivery: Delivery,
                  now: datetime | None = None) -> list[Notification]:
    """One finding in its own transaction (tests and tools); the worker uses :func:`apply_detected`."""
    out: list[Notification] = []
    with conn.transaction(), conn.cursor() as cur:
        _apply(cur, [f], delivery, now or datetime.now(UTC), out)
    return out


def _alert_key(cur: psycopg.Cursor[Any], f: Finding, rule: AlertRule) -> str:
    if rule.group_by is None:
        return f.alert_key
    meta = _sensor_meta(cur, [f.sensor_id]).get(f.sensor_id)
    group = group_value(rule.group_by, dict(meta[5] or {}) if meta else {})
    return f.alert_key if group is None else f"{f.kind}:{rule.group_by}:{group}"


def _apply(cur: psycopg.Cursor[Any], group: Sequence[Finding], delivery: Delivery, now: datetime,
           out: list[Notification]) -> None:
    """The findings one reading of one sensor produced, applied together: every condition first,
    then inhibition, then the alerts. A spike that raises a health fault and a hazard together,
    and clears both at the next reading, then never opens the hazard for an instant in between."""
    rules = delivery.rules
    sensor_id = group[0].sensor_id
    _lock(cur, f"sensor:{sensor_id}")
    keys: dict[str, tuple[datetime, AlertRule | None]] = {}
    for f in group:
        rule = rules.match(kind=f.kind, family=f.family, rule=f.rule, sensor_id=f.sensor_id)
        severity = rule.map_severity(f.severity) if f.severity is not None else None
        alert_key = _alert_key(cur, f, rule)
        cur.execute("SELECT alert_key FROM alert_conditions WHERE condition_key = %s", (f.alert_key,))
        prev = cur.fetchone()
        if prev is not None and prev[0] != alert_key:  # the registry moved the sensor to another group
            keys.setdefault(prev[0], (f.ts, None))
        _upsert_condition(cur, f, severity, alert_key, rules, now)
        keys[alert_key] = (f.ts, rule)
    if any(f.family in rules.inhibit_sources for f in group):
        for key in _reinhibit(cur, sensor_id, rules):
            keys.setdefault(key, (group[-1].ts, None))
    for key in sorted(keys):
        _lock(cur, f"alert:{key}")
        ts, key_rule = keys[key]
        _aggregate(cur, key, ts, key_rule, delivery, now, out)


def _groups(findings: Sequence[Finding]) -> list[list[Finding]]:
    """Consecutive findings of one sensor at one timestamp (one reading) form a group."""
    out: list[list[Finding]] = []
    for f in findings:
        if out and out[-1][0].sensor_id == f.sensor_id and out[-1][0].ts == f.ts:
            out[-1].append(f)
        else:
            out.append([f])
    return out


def apply_findings(conn: psycopg.Connection, findings: list[Finding], delivery: Delivery, *,
                   now: datetime | None = None) -> list[Notification]:
    """A whole findings batch in one transaction, unclaimed (tests and tools; the worker uses
    :func:`apply_detected`, which claims each source envelope)."""
    out: list[Notification] = []
    at_now = now or datetime.now(UTC)
    with conn.transaction(), conn.cursor() as cur:
        for group in _groups(findings):
            _apply(cur, group, delivery, at_now, out)
    return out


def apply_detected(
    conn: psycopg.Connection, batches: Sequence[tuple[int | None, int | None, Sequence[Finding]]], stream: str,
    delivery: Delivery, *, now: datetime | None = None,
) -> list[Notification]:
    """The findings of stored records, applied by the worker that made them, in one transaction.

    Each batch is ``(partition, offset, findings)`` of the record that produced it, claimed in the
    sparse ledger ``stream`` (see :func:`claim_sparse`): a record redelivered after a crash changes
    nothing the second time. ``(None, None, findings)`` has no source record (the silence timer's,
    as when they went through the findings topic: a repeat only updates the open alert).
    """
    out: list[Notification] = []
    at_now = now or datetime.now(UTC)
    newest: dict[int, int] = {}
    for p, o, _ in batches:
        if p is not None and o is not None:
            newest[p] = max(o, newest.get(p, -1))
    with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
        applied_below = claim_sparse(cur, stream, newest)
        for p, o, findings in batches:
            if p is not None and o is not None and o < applied_below.get(p, 0):
                continue
            for group in _groups(findings):
                _apply(cur, group, delivery, at_now, out)
    return out


def acknowledge(conn: psycopg.Connection, alert_id: int, by: str, delivery: Delivery, note: str | None = None,
                now: datetime | None = None) -> list[Notification] | None:
    """open → acknowledged; None when the alert is not open (already acknowledged, resolved or unknown)."""
    at = now or datetime.now(UTC)
    out: list[Notification] = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s, ack_note = %s,"  # noqa: S608
            f" updated_at = %s WHERE alert_id = %s AND state = 'open' RETURNING {_ALERT_COLS}",
            (at, by, note, at, alert_id),
        )
        row = cur.fetchone()
        if row is None:
            return None
        _event(cur, alert_id, "acknowledged", {"note": note} if note else {}, actor=by)
        _notify(cur, row, "acknowledged", row[3], list(row[24] or []), at, out)
    return out


def due_repeats(conn: psycopg.Connection, now: datetime | None = None) -> list[Notification]:
    """Re-notify unacknowledged critical alerts whose repeat interval passed, and alerts whose
    silence ended while they were still active. Safe with several workers: the UPDATE claims."""
    at = now or datetime.now(UTC)
    out: list[Notification] = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE alerts SET last_notified_at = %s WHERE alert_id IN (SELECT alert_id FROM alerts"  # noqa: S608
            " WHERE state = 'open' AND severity = 'critical' AND repeat_s > 0 AND muted_by IS NULL"
            " AND last_notified_at + make_interval(secs => repeat_s) <= %s FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_ALERT_COLS}",
            (at, at),
        )
        for row in cur.fetchall():
            _event(cur, row[0], "repeat", {})
            _notify(cur, row, "repeat", row[3], list(row[24] or []), at, out)
        cur.execute(
            f"SELECT {_ALERT_COLS} FROM alerts a WHERE state <> 'resolved' AND muted_by IS NOT NULL"  # noqa: S608
            " FOR UPDATE SKIP LOCKED",
        )
        for row in cur.fetchall():
            if _active_silence(cur, row[5], sorted({*(row[22] or []), row[7]}), at) is not None:
                continue
            _event(cur, row[0], "unmuted", {"was": row[25]})
            _notify(cur, row, "unmuted", row[3], list(row[24] or []), at, out)
    return out


@dataclass(frozen=True)
class AlertRow:
    alert_id: int
    severity: str
    peak_severity: str
    kind: str
    sensor_id: str
    rule: str
    state: str
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    value: float | None
    threshold: float | None
    message: str
    message_en: str
    members: list[str]
    acknowledged_by: str | None
    muted_by: str | None
    predicted_crossing_at: datetime | None
    lead_time_s: float | None


def list_alerts(conn: psycopg.Connection, *, active_only: bool = True, limit: int = 500) -> list[AlertRow]:
    """Most severe first, then the newest: what an operator must look at first."""
    rows = conn.execute(
        "SELECT alert_id, severity, peak_severity, kind, sensor_id, rule, state, opened_at, updated_at, resolved_at,"
        " value, threshold, message, message_en, members, acknowledged_by, muted_by, predicted_crossing_at,"
        " lead_time_s FROM alerts WHERE (NOT %s OR state <> 'resolved')"
        " ORDER BY array_position(%s::text[], severity) DESC, opened_at DESC LIMIT %s",
        (active_only, list(SEVERITIES), limit),
    ).fetchall()
    return [AlertRow(r[0], r[1], r[2] or r[1], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
                     list(r[14] or []), r[15], r[16], r[17], r[18]) for r in rows]


@dataclass(frozen=True)
class AlertHistory:
    alert_id: int
    alert_key: str
    kind: str
    members: list[str]
    peak_severity: str
    state: str
    events: list[tuple[datetime, str, dict[str, Any]]]  # (event time or wall time, event, detail)


def alert_history(conn: psycopg.Connection, kind: str | None = None) -> list[AlertHistory]:
    """Every alert with its transitions in order, for reports and ``ioc score --e2e``."""
    rows = conn.execute(
        "SELECT a.alert_id, a.alert_key, a.kind, a.members, coalesce(a.peak_severity, a.severity), a.state,"
        " coalesce(json_agg(json_build_array(e.at, e.event, e.detail) ORDER BY e.event_id)"
        "   FILTER (WHERE e.event_id IS NOT NULL), '[]')"
        " FROM alerts a LEFT JOIN alert_events e ON e.alert_id = a.alert_id"
        " AND e.event IN ('opened', 'escalated', 'deescalated', 'updated', 'acknowledged', 'resolved')"
        " WHERE %s::text IS NULL OR a.kind = %s GROUP BY a.alert_id ORDER BY a.opened_at, a.alert_id",
        (kind, kind),
    ).fetchall()
    return [AlertHistory(r[0], r[1], r[2], list(r[3] or []), r[4], r[5],
                         [(datetime.fromisoformat(e[0]), e[1], e[2]) for e in r[6]]) for r in rows]
