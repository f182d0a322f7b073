"""The outbox dispatcher against a real PostgreSQL: a storm's backlog goes out concurrently, while
each alert's notifications still go out one after the other, in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ioc.alerting.notification import Notification
from ioc.alerting.rules import load_rules
from ioc.models import Finding
from ioc.storage.alerts_store import Delivery, apply_detected
from ioc.storage.outbox import outbox_rows
from streams.alert_dispatcher import Dispatcher
from streams.db_worker import DbWorker
from streams.pipeline_stats import StageStats

pytestmark = pytest.mark.integration
T0 = datetime(2017, 11, 4, tzinfo=UTC)


class SlowChannel:
    """A channel whose every delivery takes a while (a broker or HTTP round trip); records overlap."""

    name = "mqtt"

    def __init__(self) -> None:
        self.in_flight: dict[int, str] = {}
        self.most = 0
        self.delivered: list[tuple[int, str]] = []
        self.overlapping_same_alert = 0

    async def deliver(self, n: Notification) -> None:
        if n.alert.alert_id in self.in_flight:
            self.overlapping_same_alert += 1
        self.in_flight[n.alert.alert_id] = n.event
        self.most = max(self.most, len(self.in_flight))
        await asyncio.sleep(0.02)
        del self.in_flight[n.alert.alert_id]
        self.delivered.append((n.alert.alert_id, n.event))

    async def close(self) -> None:
        pass


def test_a_backlog_is_delivered_concurrently_and_each_alert_in_order(db_url: str) -> None:
    sensors = [f"T{i:03d}" for i in range(40)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for sid in sensors:
            conn.execute("INSERT INTO sensors (sensor_id, kind, name, metrics) VALUES (%s, 'traffic', %s, %s)",
                         (sid, sid, Jsonb({"speed_kmh": "km/h"})))
        delivery = Delivery(load_rules(), ("mqtt",))
        for k, severity in enumerate(("warning", "critical", None)):  # every transition queued before delivery
            findings = [Finding(sid, "clock_skew", "health", "speed_kmh", T0 + timedelta(minutes=k), severity, 1.0,
                                family="health", message="x") for sid in sensors]
            apply_detected(conn, [(None, None, findings)], "t:readings>alerts", delivery)
        queued: dict[int, list[str]] = {}
        for r in outbox_rows(conn):
            queued.setdefault(r["alert_id"], []).append(r["event"])
    assert len(queued) == len(sensors) and all(len(events) >= 2 for events in queued.values()), queued
    channel = SlowChannel()

    async def run() -> None:
        db = DbWorker(db_url, "outbox-test")
        dispatcher = Dispatcher(db, {"mqtt": channel}, StageStats("notify"))
        while await dispatcher.drain_once("mqtt", channel):
            pass

    asyncio.run(run())
    assert len(channel.delivered) == sum(len(events) for events in queued.values())
    assert 1 < channel.most <= 16  # concurrent, within the bound
    assert channel.overlapping_same_alert == 0
    by_alert: dict[int, list[str]] = {}
    for alert_id, event in channel.delivered:
        by_alert.setdefault(alert_id, []).append(event)
    assert by_alert == queued  # each alert's notifications in the order they were written
    with psycopg.connect(db_url) as conn:
        assert all(r["delivered_at"] is not None for r in outbox_rows(conn))
