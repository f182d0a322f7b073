"""The worker's alert applier against a real PostgreSQL: findings the alert store refuses do not stop
storage or take the other envelopes' alerts with them; they become dead letters with their error."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import psycopg
import pytest

from ioc.alerting.rules import load_rules
from ioc.models import Finding, FindingBatch
from ioc.storage.alerts_store import Delivery
from ioc.storage.offset_ledger import alerts_stream
from streams.agents_alerts import AlertApplier
from streams.alert_dispatcher import Dispatcher
from streams.db_worker import DbWorker
from streams.pipeline_stats import StageStats

pytestmark = pytest.mark.integration
T0 = datetime(2017, 11, 4, tzinfo=UTC)


def _finding(sensor: str, severity: str | None) -> Finding:
    return Finding(sensor, "flood_alarm_level", "flood", "water_level_m", T0, severity, 9.7, 9.5, "BĐ II",
                   message_en="level II")


def test_a_refused_batch_becomes_a_dead_letter_and_the_rest_become_alerts(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sensors (sensor_id, kind, name, metrics) VALUES ('G1', 'water_level', 'G1',"
                     " '{\"water_level_m\": \"m\"}')")
    published: list[bytes] = []

    async def publish(value: bytes, key: bytes) -> None:
        published.append(value)

    async def run() -> StageStats:
        db = DbWorker(db_url, "alerts-test")
        stats = StageStats("alerts")
        applier = AlertApplier(db, Delivery(load_rules(), ("mqtt",)), Dispatcher(db, {}, stats), stats,
                               alerts_stream("t:readings"), publish, "t.findings")
        bad = _finding("G\x00", "warning")  # text PostgreSQL cannot store: the store refuses it
        await applier.apply([(0, 4, [_finding("G1", "warning")]), (1, 9, [bad])])
        await applier.apply([(0, 4, [_finding("G1", "critical")])])  # envelope 4 again: already applied
        return stats

    stats = asyncio.run(run())
    with psycopg.connect(db_url) as conn:
        alerts = conn.execute("SELECT sensor_id, severity, state FROM alerts").fetchall()
        letters = conn.execute("SELECT reason, topic, kafka_partition, kafka_offset, detail, raw FROM deadletters").fetchall()
    assert alerts == [("G1", "warning", "open")]
    assert len(published) == 1 and b'"G1"' in published[0]
    (reason, topic, partition, offset, detail, raw), = letters
    assert (reason, topic, partition, offset) == ("alert_apply_failed", "t.findings", 1, 9)
    assert "NUL" in detail or "0x00" in detail, detail
    assert msgspec.json.decode(bytes(raw), type=FindingBatch).findings == [_finding("G\x00", "warning")]
    assert stats.counters["alert_apply_failed"] == 1
