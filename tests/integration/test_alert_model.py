"""The alert model against a real PostgreSQL: grouping, inhibition, silences, repeats, acknowledgement,
and (hypothesis) the state machine's invariants over random finding sequences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from ioc.alerting.rules import load_rules, parse_rules
from ioc.models import Finding
from ioc.storage.alerts_store import (
    Delivery,
    acknowledge,
    apply_detected,
    apply_finding,
    apply_findings,
    due_repeats,
)
from ioc.storage.migrate import migrate
from ioc.storage.offset_ledger import alerts_stream, forget_partition
from ioc.storage.silences import add_silence, expire_silence
from tests.conftest import fresh_db

pytestmark = pytest.mark.integration

T0 = datetime(2017, 11, 4, 0, 0, tzinfo=UTC)
DELIVERY = Delivery(load_rules(), ("mqtt", "webhook"))
GAUGES = {
    "HYD_DONG_TRANG": "Cái Nha Trang",
    "HYD_DIEN_PHU": "Cái Nha Trang",
    "HYD_NINH_HOA": "Dinh (Ninh Hòa)",
    "HYD_DUC_MY": "Dinh (Ninh Hòa), upstream",
}


def _register(conn: psycopg.Connection) -> None:
    for sid, river in GAUGES.items():
        conn.execute(
            "INSERT INTO sensors (sensor_id, kind, name, district, lat, lon, metrics, interval_s, extra)"
            " VALUES (%s, 'water_level', %s, 'Diên Khánh', 12.28, 109.0, %s, 600, %s) ON CONFLICT DO NOTHING",
            (sid, sid.title(), Jsonb({"water_level_m": "m"}), Jsonb({"river": river})),
        )


@pytest.fixture
def conn(db_url: str) -> Any:
    with psycopg.connect(db_url, autocommit=True) as c:
        _register(c)
        yield c


def flood(sensor: str, severity: str | None, minutes: float, rule: str = "flood_alarm_level") -> Finding:
    return Finding(sensor, rule, "flood", "water_level_m", T0 + timedelta(minutes=minutes), severity, 9.0,
                   9.5, f"BĐ {severity}", message_en=f"level {severity}")


def health(sensor: str, severity: str | None, minutes: float) -> Finding:
    return Finding(sensor, "stuck", "health", "water_level_m", T0 + timedelta(minutes=minutes), severity, 9.0,
                   family="health", message="cảm biến kẹt")


def _rows(conn: psycopg.Connection, q: str, params: Any = ()) -> list[tuple[Any, ...]]:
    return conn.execute(q, params).fetchall()


def test_gauges_of_one_river_are_one_incident_that_escalates_and_resolves(conn: psycopg.Connection) -> None:
    events = []
    for f in (flood("HYD_DONG_TRANG", "info", 0), flood("HYD_DIEN_PHU", "info", 10),
              flood("HYD_DONG_TRANG", "warning", 20), flood("HYD_DIEN_PHU", "critical", 30),
              flood("HYD_DONG_TRANG", None, 40), flood("HYD_DIEN_PHU", "warning", 50), flood("HYD_DIEN_PHU", None, 60)):
        events += [(n.event, n.alert.severity, tuple(n.alert.members)) for n in apply_finding(conn, f, DELIVERY)
                   if n.channel == "mqtt"]
    assert events == [
        ("opened", "info", ("HYD_DONG_TRANG",)),
        ("updated", "info", ("HYD_DIEN_PHU", "HYD_DONG_TRANG")),
        ("escalated", "warning", ("HYD_DIEN_PHU", "HYD_DONG_TRANG")),
        ("escalated", "critical", ("HYD_DIEN_PHU", "HYD_DONG_TRANG")),
        ("deescalated", "warning", ("HYD_DIEN_PHU", "HYD_DONG_TRANG")),
        ("resolved", "warning", ("HYD_DIEN_PHU", "HYD_DONG_TRANG")),
    ]
    assert _rows(conn, "SELECT alert_key, state, peak_severity, grouped FROM alerts") == [
        ("flood:river:Cái Nha Trang", "resolved", "critical", True)]
    # Each transition gave one notification per channel, in the outbox with the same snapshot.
    assert _rows(conn, "SELECT channel, count(*) FROM alert_outbox GROUP BY channel ORDER BY channel") == [
        ("mqtt", 6), ("webhook", 6)]


def test_an_upstream_reach_belongs_to_its_rivers_incident_and_other_rivers_are_separate(conn: psycopg.Connection) -> None:
    for f in (flood("HYD_NINH_HOA", "warning", 0), flood("HYD_DUC_MY", "warning", 1), flood("HYD_DONG_TRANG", "info", 2)):
        apply_finding(conn, f, DELIVERY)
    assert _rows(conn, "SELECT alert_key, members FROM alerts ORDER BY alert_key") == [
        ("flood:river:Cái Nha Trang", ["HYD_DONG_TRANG"]),
        ("flood:river:Dinh (Ninh Hòa)", ["HYD_DUC_MY", "HYD_NINH_HOA"]),
    ]


def test_a_health_fault_mutes_the_same_sensors_hazards_until_it_clears(conn: psycopg.Connection) -> None:
    apply_finding(conn, health("HYD_NINH_HOA", "warning", 0), DELIVERY)
    assert apply_finding(conn, flood("HYD_NINH_HOA", "critical", 1), DELIVERY) == []
    assert _rows(conn, "SELECT kind, state FROM alerts ORDER BY alert_id") == [("health", "open")]
    # Another sensor on the same river is not muted by this one's fault.
    assert [n.event for n in apply_finding(conn, flood("HYD_DUC_MY", "warning", 2), DELIVERY)] == ["opened", "opened"]
    # The fault clears while the hazard still holds: the hazard now counts and escalates the incident.
    notes = apply_finding(conn, health("HYD_NINH_HOA", None, 3), DELIVERY)
    assert {(n.alert.kind, n.event, n.alert.severity) for n in notes} == {
        ("health", "resolved", "warning"), ("flood", "escalated", "critical")}


def test_a_health_fault_that_starts_during_a_flood_takes_the_sensor_out_of_the_incident(
        conn: psycopg.Connection) -> None:
    apply_finding(conn, flood("HYD_DONG_TRANG", "critical", 0), DELIVERY)
    notes = apply_finding(conn, health("HYD_DONG_TRANG", "warning", 1), DELIVERY)
    assert {(n.alert.kind, n.event) for n in notes} == {("health", "opened"), ("flood", "resolved")}


def test_a_silence_mutes_notifications_but_keeps_the_record_and_they_resume_after_it(
        conn: psycopg.Connection) -> None:
    sil = add_silence(conn, sensor_id="HYD_DONG_TRANG", kind=None, duration=timedelta(hours=2), by="Lan",
                      reason="bảo trì")
    assert apply_finding(conn, flood("HYD_DONG_TRANG", "warning", 0), DELIVERY) == []
    assert _rows(conn, "SELECT state, muted_by FROM alerts") == [("open", f"silence:{sil.silence_id}")]
    assert _rows(conn, "SELECT event FROM alert_events ORDER BY event_id") == [("opened",), ("notification_suppressed",)]
    assert due_repeats(conn) == []  # still silenced
    assert expire_silence(conn, sil.silence_id) and not expire_silence(conn, sil.silence_id)
    notes = due_repeats(conn)
    assert {(n.channel, n.event) for n in notes} == {("mqtt", "unmuted"), ("webhook", "unmuted")}
    assert _rows(conn, "SELECT muted_by FROM alerts") == [(None,)]
    assert due_repeats(conn) == []


def test_a_silence_on_one_gauge_mutes_its_rivers_incident_only_while_it_is_the_only_member(
        conn: psycopg.Connection) -> None:
    add_silence(conn, sensor_id="HYD_DUC_MY", kind=None, duration=timedelta(hours=1), by="Lan", reason="bảo trì")
    assert apply_finding(conn, flood("HYD_DUC_MY", "warning", 0), DELIVERY) == []
    # Another gauge of the same river crosses: the incident is no longer the silenced gauge's alone.
    notes = apply_finding(conn, flood("HYD_NINH_HOA", "critical", 1), DELIVERY)
    assert {(n.channel, n.event, tuple(n.alert.members)) for n in notes} == {
        ("mqtt", "escalated", ("HYD_DUC_MY", "HYD_NINH_HOA")), ("webhook", "escalated", ("HYD_DUC_MY", "HYD_NINH_HOA"))}
    assert _rows(conn, "SELECT muted_by FROM alerts") == [(None,)]
    # A silenced gauge joining an incident another gauge opened does not mute it either.
    assert [n.event for n in apply_finding(conn, flood("HYD_DONG_TRANG", "info", 2), DELIVERY)] == ["opened"] * 2
    add_silence(conn, sensor_id="HYD_DIEN_PHU", kind=None, duration=timedelta(hours=1), by="Lan", reason="bảo trì")
    assert [n.event for n in apply_finding(conn, flood("HYD_DIEN_PHU", "info", 3), DELIVERY)] == ["updated"] * 2


def test_a_kind_silence_covers_every_sensor_of_that_kind(conn: psycopg.Connection) -> None:
    add_silence(conn, sensor_id=None, kind="flood", duration=timedelta(minutes=30), by="Lan", reason="diễn tập")
    assert apply_finding(conn, flood("HYD_NINH_HOA", "critical", 0), DELIVERY) == []
    assert [n.alert.kind for n in apply_finding(conn, health("HYD_NINH_HOA", "warning", 1), DELIVERY)] == [
        "health", "health"]


def test_unacknowledged_critical_alerts_repeat_and_acknowledged_ones_do_not(conn: psycopg.Connection) -> None:
    (n, _) = apply_finding(conn, flood("HYD_DONG_TRANG", "critical", 0), DELIVERY)
    now = datetime.now(UTC)
    assert due_repeats(conn, now + timedelta(minutes=29)) == []
    repeated = due_repeats(conn, now + timedelta(minutes=31))
    assert {(r.channel, r.event, r.alert.alert_id) for r in repeated} == {
        ("mqtt", "repeat", n.alert.alert_id), ("webhook", "repeat", n.alert.alert_id)}
    assert due_repeats(conn, now + timedelta(minutes=32)) == []  # the interval restarts from the repeat
    acked = acknowledge(conn, n.alert.alert_id, "trực ban PCTT", DELIVERY, note="đã cử người")
    assert acked is not None and {a.event for a in acked} == {"acknowledged"}
    assert acknowledge(conn, n.alert.alert_id, "x", DELIVERY) is None
    assert due_repeats(conn, now + timedelta(hours=5)) == []
    assert _rows(conn, "SELECT actor, detail->>'note' FROM alert_events WHERE event = 'acknowledged'") == [
        ("trực ban PCTT", "đã cử người")]


def test_an_escalation_after_acknowledgement_reopens_the_alert(conn: psycopg.Connection) -> None:
    (n, _) = apply_finding(conn, flood("HYD_NINH_HOA", "warning", 0), DELIVERY)
    acknowledge(conn, n.alert.alert_id, "Lan", DELIVERY)
    apply_finding(conn, flood("HYD_NINH_HOA", "critical", 5), DELIVERY)
    assert _rows(conn, "SELECT state, severity, acknowledged_by FROM alerts") == [("open", "critical", "Lan")]


def test_findings_applied_by_their_worker_count_once_per_source_record(conn: psycopg.Connection) -> None:
    """The worker that stores a reading applies its findings (no findings topic in between): an
    envelope redelivered after a crash, or an older one of the same partition, changes nothing."""
    stream = alerts_stream("ioc:test.readings")

    def events(batches: list[tuple[int | None, int | None, list[Finding]]]) -> list[tuple[str, str]]:
        return [(n.event, n.alert.severity) for n in apply_detected(conn, batches, stream, DELIVERY)
                if n.channel == "mqtt"]

    assert events([(3, 10, [flood("HYD_NINH_HOA", "info", 0)])]) == [("opened", "info")]
    assert events([(3, 10, [flood("HYD_NINH_HOA", "warning", 1)])]) == []  # offset 10 again: already applied
    # A group: partition 3's offset 9 is older than what it applied; offset 12 and partition 5 are new
    # (Đức Mỹ is upstream on the same river: one incident).
    got = events([(3, 9, [flood("HYD_NINH_HOA", "critical", 2)]), (5, 4, [flood("HYD_DUC_MY", "info", 3)]),
                  (3, 12, [flood("HYD_NINH_HOA", "warning", 4)])])
    assert got == [("updated", "info"), ("escalated", "warning")]
    assert _rows(conn, "SELECT severity, peak_severity FROM alerts WHERE state = 'open'") == [("warning", "warning")]
    # The silence timer's findings have no source record: they are not claimed.
    assert events([(None, None, [flood("HYD_NINH_HOA", None, 5)]), (None, None, [flood("HYD_DUC_MY", None, 6)])]) \
        == [("deescalated", "info"), ("resolved", "info")]
    # A broker that lost its log starts the partition again at 0: the readings ledger and this one forget it.
    forget_partition(conn, "ioc:test.readings", 3)
    assert events([(3, 0, [flood("HYD_NINH_HOA", "info", 7)]), (5, 4, [flood("HYD_DUC_MY", "info", 8)])]) \
        == [("opened", "info")]


def test_severity_mapping_and_channels_come_from_the_rules(conn: psycopg.Connection) -> None:
    rules = parse_rules('[[rule]]\nmatch = { kind = "flood" }\nseverity = { info = "drop", critical = "warning" }\n'
                        'channels = ["webhook"]\n')
    d = Delivery(rules, ("mqtt", "webhook"))
    assert apply_finding(conn, flood("HYD_NINH_HOA", "info", 0), d) == []
    notes = apply_finding(conn, flood("HYD_NINH_HOA", "critical", 1), d)
    assert [(n.channel, n.alert.severity) for n in notes] == [("webhook", "warning")]


# -- the state machine's invariants, over random sequences ------------------------------------------------

SENSORS = sorted(GAUGES)
step = st.tuples(st.sampled_from(SENSORS), st.sampled_from(["flood", "health"]),
                 st.sampled_from([None, "info", "warning", "critical"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=25), silenced=st.sampled_from([None, *SENSORS]))
@example(steps=[("HYD_NINH_HOA", "flood", "info"), ("HYD_DUC_MY", "flood", "info")], silenced="HYD_DUC_MY")
def test_state_machine_invariants(pg_url: str, steps: list[tuple[str, str, str | None]], silenced: str | None) -> None:
    url = fresh_db(pg_url)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        _register(conn)
        if silenced:
            add_silence(conn, sensor_id=silenced, kind=None, duration=timedelta(hours=1), by="t", reason="t")
        current: dict[tuple[str, str], str | None] = {}
        findings = []
        for i, (sensor, what, sev) in enumerate(steps):
            f = flood(sensor, sev, i) if what == "flood" else health(sensor, sev, i)
            findings.append(f)
            current[(sensor, what)] = sev
        # Half applied one by one, half as one batch: the same end state either way.
        half = len(findings) // 2
        for f in findings[:half]:
            apply_finding(conn, f, DELIVERY)
        apply_findings(conn, findings[half:], DELIVERY)
        # 1. Never two active alerts per key.
        assert _rows(conn, "SELECT alert_key FROM alerts WHERE state <> 'resolved' GROUP BY alert_key"
                           " HAVING count(*) > 1") == []
        # 2. An alert is active exactly when one of its members has an active, uninhibited condition.
        faulty = {s for (s, w), v in current.items() if w == "health" and v is not None}
        want_health = {f"{s}:stuck" for (s, w), v in current.items() if w == "health" and v is not None}
        want_flood = {f"flood:river:{GAUGES[s].split(',')[0]}" for (s, w), v in current.items()
                      if w == "flood" and v is not None and s not in faulty}
        active = {r[0] for r in _rows(conn, "SELECT alert_key FROM alerts WHERE state <> 'resolved'")}
        assert active == want_health | want_flood
        # 3. Each active alert's severity is the highest of its counted members'.
        rank = {"info": 0, "warning": 1, "critical": 2}
        for key, sev in _rows(conn, "SELECT alert_key, severity FROM alerts WHERE state <> 'resolved'"):
            if key.startswith("flood:"):
                members = [v for (s, w), v in current.items() if w == "flood" and v is not None and s not in faulty
                           and key.endswith(GAUGES[s].split(",")[0])]
                assert sev == max(members, key=rank.__getitem__)
        # 3b. The in-memory model `ioc score` uses gives the same active alerts and severities.
        from ioc.alerting.conditions import CountedConditions

        model = CountedConditions(load_rules())
        model.apply_all(findings)
        want: dict[str, str] = {}
        for (sid, rule), sev in model._counted.items():
            key = f"{sid}:{rule}" if rule == "stuck" else f"flood:river:{GAUGES[sid].split(',')[0]}"
            if key not in want or rank[sev] > rank[want[key]]:
                want[key] = sev
        assert dict(_rows(conn, "SELECT alert_key, severity FROM alerts WHERE state <> 'resolved'")) == want
        # 4. A silence suppresses notifications, never the record: nothing was sent about an alert whose
        # members were all silenced when it was written.
        if silenced:
            assert _rows(conn, "SELECT count(*) FROM alert_outbox WHERE payload->'members' <@ jsonb_build_array(%s::text)"
                               " AND payload->>'sensor_id' = %s", (silenced, silenced)) == [(0,)]
        # 5. Every transition is in alert_events; every non-silenced transition has its notifications.
        n_events = _rows(conn, "SELECT count(*) FROM alert_events WHERE event IN"
                               " ('opened','escalated','deescalated','resolved')"
                               " OR (event = 'updated' AND detail ? 'added')")[0][0]
        n_suppressed = _rows(conn, "SELECT count(*) FROM alert_events WHERE event = 'notification_suppressed'")[0][0]
        n_mqtt = _rows(conn, "SELECT count(*) FROM alert_outbox WHERE channel = 'mqtt'"
                             " AND event IN ('opened','escalated','deescalated','resolved','updated')")[0][0]
        assert n_mqtt + n_suppressed == n_events
