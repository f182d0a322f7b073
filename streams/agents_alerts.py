"""Alerts stage: findings become alert transitions and outbox notifications in one transaction.

The worker that stores a reading and runs its detectors applies their findings itself
(:class:`AlertApplier`). Delivery is not done here: the dispatcher takes the outbox, one loop per
channel, so neither a slow channel nor a dead one holds up the findings (or storage). New
notifications wake the dispatcher at once, which keeps the reading → alert path short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from ioc.alerting.notification import Notification
from ioc.alerting.rules import load_rules
from ioc.models import FindingBatch
from ioc.settings import Settings
from ioc.storage.alerts_store import Delivery, acknowledge, apply_detected, due_repeats
from ioc.storage.deadletters import DeadLetter, write_deadletters
from ioc.storage.offset_ledger import alerts_stream
from streams.ack_listener import AckListener, AckRequest
from streams.alert_channels import build_channels
from streams.alert_dispatcher import Dispatcher
from streams.db_worker import DbWorker
from streams.detector_stage import Sourced
from streams.pipeline_stats import StageStats, write_stats

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)
_enc = msgspec.json.Encoder()


#: Sends an alert's JSON (value, key) to the alerts topic, for consumers other than the channels.
Publish = Callable[[bytes, bytes], Awaitable[Any]]


class AlertApplier:
    """Applies the findings of stored readings in the worker that made them: alert transitions and
    their outbox rows in one transaction, claimed per source record (exactly once across crashes),
    then straight to the dispatcher. No Kafka hop and no second agent sit on the alert path; the
    findings topic stays the record of what the detectors found."""

    def __init__(self, db: DbWorker, delivery: Delivery, dispatcher: Dispatcher, stats: StageStats, stream: str,
                 publish: Publish, findings_topic: str) -> None:
        self.db = db
        self.delivery = delivery
        self.dispatcher = dispatcher
        self.stats = stats
        self.stream = stream
        self.publish = publish
        self.findings_topic = findings_topic

    async def apply(self, batches: Sequence[Sourced]) -> None:
        """A refused batch (a bug, or data the store cannot take) must not stop storage, nor take the
        other envelopes' alerts with it: they go one by one, and what still fails becomes a dead
        letter with its error, to inspect and replay (database outages are retried in ``db.run``)."""
        try:
            notes = await self._apply(batches)
        except Exception:
            log.exception("applying %s findings batch(es) failed; one by one", len(batches))
            notes = []
            for b in batches:
                try:
                    notes += await self._apply([b])
                except Exception as e:  # noqa: BLE001
                    await self._dead_letter(b, e)
        self.stats.add("findings", sum(len(f) for _, _, f in batches))
        if not notes:
            return
        self.stats.add("notifications", len(notes))
        self.dispatcher.wake(notes)
        seen: set[int] = set()
        for n in notes:
            if n.alert.alert_id not in seen:
                seen.add(n.alert.alert_id)
                log.info("alert %s %s: %s (%s)", n.alert.alert_id, n.event, n.alert.message, n.alert.severity)
                await self.publish(_enc.encode(n.alert), str(n.alert.alert_id).encode())

    async def _apply(self, batches: Sequence[Sourced]) -> list[Notification]:
        return await self.db.run(partial(apply_detected, batches=batches, stream=self.stream,
                                         delivery=self.delivery), "apply findings")

    async def _dead_letter(self, batch: Sourced, error: Exception) -> None:
        partition, offset, findings = batch
        log.error("findings of %s[%s]@%s could not become alerts (%s); stored as a dead letter",
                  self.findings_topic, partition, offset, error)
        self.stats.add("alert_apply_failed")
        raw = _enc.encode(FindingBatch(1, findings, offset))
        letter = DeadLetter(datetime.now(UTC), "kafka", "alert_apply_failed", repr(error)[:500], self.findings_topic,
                            raw, partition, offset)
        await self.db.run(partial(write_deadletters, items=[letter]), "store refused findings")


def register_alert_agents(p: Pipeline, settings: Settings) -> AlertApplier:
    assert settings.database_url is not None and settings.kafka_url is not None
    db = DbWorker(settings.database_url, "alerts")
    outbox_db = DbWorker(settings.database_url, "outbox")
    stats = StageStats("alerts")
    notify_stats = StageStats("notify")
    rules = load_rules(settings.alert_rules)  # a bad rule file stops the worker at start-up, named
    channels = build_channels(settings)
    delivery = Delivery(rules, tuple(channels))
    dispatcher = Dispatcher(outbox_db, channels, notify_stats, poll_s=settings.dispatch_poll_s,
                            give_up_s=settings.notify_give_up_s, retry_cap_s=settings.notify_retry_cap_s)

    async def publish(value: bytes, key: bytes) -> Any:
        return await p.alerts.send(value=value, key=key, force=True)

    applier = AlertApplier(db, delivery, dispatcher, stats, alerts_stream(f"{settings.app_id}:{p.topics.readings}"),
                           publish, p.topics.findings)
    log.info("alert rules from %s; channels: %s", rules.source, ", ".join(channels) or "none")

    async def ack(req: AckRequest) -> None:
        notes = await db.run(partial(acknowledge, alert_id=req.alert_id, by=req.by, delivery=delivery,
                                     note=req.note), "acknowledge")
        if notes is None:
            log.warning("acknowledgement by %s: alert %s is not open", req.by, req.alert_id)
            return
        log.info("alert %s acknowledged by %s over MQTT", req.alert_id, req.by)
        dispatcher.wake(notes)

    async def run_dispatcher() -> None:
        listener = AckListener(settings, ack, asyncio.get_running_loop()) if settings.mqtt_url else None
        if listener is not None:
            listener.start()
        try:
            await dispatcher.run()
        finally:
            if listener is not None:
                listener.stop()
            await dispatcher.close()

    async def repeats() -> None:
        notes = await db.run(due_repeats, "repeat notifications")
        if notes:
            dispatcher.wake(notes)

    async def flush_metrics() -> None:
        try:
            await dispatcher.backlog_gauges()
        except Exception:
            log.warning("outbox backlog not measured", exc_info=True)
        rows = stats.rows() + notify_stats.rows()
        if rows:
            await db.run(partial(write_stats, rows=rows), "write alert metrics")

    p.app.task(run_dispatcher)
    p.app.timer(settings.repeat_check_s, name="alert_repeats")(repeats)
    p.app.timer(settings.metrics_interval_s, name="alerts_metrics")(flush_metrics)
    return applier
