"""Alerts agent: findings become alert transitions in the DB, then fan out (MQTT, ioc.alerts)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from ioc.models import AlertChange
from ioc.retry import Backoff
from ioc.settings import Settings
from ioc.storage.alerts_store import apply_findings, record_notification
from ioc.storage.offset_ledger import ClaimResult, Position
from streams.agents_sink import findings_of, store_poison
from streams.alert_publisher import AlertPublisher
from streams.db_worker import DbWorker
from streams.offset_guard import OffsetGuard
from streams.pipeline_stats import StageStats, write_stats

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)
_enc = msgspec.json.Encoder()


async def publish_with_retry(pub: AlertPublisher, change: AlertChange, attempts: int = 6) -> bool:
    """Emergency staff must get the message: retry with backoff (about a minute) before giving up."""
    backoff = Backoff(base_s=1.0, cap_s=20.0)
    for attempt in range(attempts):
        try:
            if await asyncio.to_thread(pub.publish, change):
                return True
        except Exception as e:  # noqa: BLE001 - a broker problem must not kill the alerts agent
            log.warning("alert %s publish attempt %d failed: %s", change.alert_id, attempt + 1, e)
        await asyncio.sleep(backoff.next())
    log.error("alert %s could not be published to MQTT; recorded as notify_failed", change.alert_id)
    return False


def register_alert_agents(p: Pipeline, settings: Settings) -> None:
    assert settings.database_url is not None
    db = DbWorker(settings.database_url, "alerts")
    publisher: list[AlertPublisher] = []
    stats = StageStats("alerts")
    assert settings.kafka_url is not None
    guard = OffsetGuard(p.app, settings.kafka_url, settings.app_id, p.topics.findings, db, stats)

    async def apply_batch(value: bytes, at: Position, jump: bool) -> ClaimResult:
        try:
            findings = findings_of(value)
        except (msgspec.DecodeError, TypeError) as e:
            return await store_poison(db, stats, p.topics.findings, value, at, jump, "bad_findings_batch", str(e))
        claimed, changes = await db.run(partial(apply_findings, findings=findings, at=at, allow_jump=jump),
                                        "apply findings")
        assert claimed is not None
        for ch in changes:
            log.info("alert %s %s: %s (%s)", ch.alert_id, ch.event, ch.message, ch.severity)
            if not publisher:
                pub = AlertPublisher(settings, f"{settings.app_id}-alerts-{uuid.uuid4().hex[:8]}")
                pub.start()
                publisher.append(pub)
            ok = await publish_with_retry(publisher[0], ch)
            await db.run(partial(record_notification, alert_id=ch.alert_id, channel="mqtt", ok=ok), "audit")
            await p.alerts.send(value=_enc.encode(ch), partition=at.partition)
        return claimed

    async def alerts(stream: Any) -> None:
        stream.enable_acks = False
        async for event in stream.events():
            await guard.apply_in_order(event, apply_batch)
            await stream.ack(event)

    async def flush_metrics() -> None:
        rows = stats.rows()
        if rows:
            await db.run(partial(write_stats, rows=rows), "write alert metrics")

    p.app.agent(p.findings, name="alerts")(alerts)
    p.app.timer(settings.metrics_interval_s, name="alerts_metrics")(flush_metrics)

    p.app.timer(settings.offset_check_s, name="findings_offset_tail")(guard.check_tail)
