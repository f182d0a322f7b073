"""Agents that store: readings (then detect) and dead letters. Offsets advance only after commit."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from ioc.models import Finding, FindingBatch
from ioc.settings import Settings
from ioc.storage.deadletters import DeadLetter, decode_batch, write_deadletters
from ioc.storage.readings_sink import write_readings
from ioc.storage.sensors_store import load_alarm_levels
from ioc.wire import decode_envelope
from streams.db_worker import DbWorker
from streams.detection import DetectorBank
from streams.pipeline_stats import StageStats, write_stats

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)
_enc = msgspec.json.Encoder()


def register_sink_agents(p: Pipeline, settings: Settings) -> None:
    assert settings.database_url is not None
    db = DbWorker(settings.database_url, "sink")
    dl_db = DbWorker(settings.database_url, "deadletters")
    stats = StageStats("sink")
    bank: list[DetectorBank] = []

    async def poison(event: Any, reason: str, detail: str) -> None:
        """An undecodable Kafka record: store it as a dead letter instead of crashing the agent."""
        msg = event.message
        dl = DeadLetter(datetime.now(UTC), "kafka", reason, detail[:500], msg.topic, bytes(event.value or b""),
                        msg.partition, msg.offset)
        await db.run(partial(write_deadletters, items=[dl]), "store poison record")
        stats.add("poison")
        log.error("poison record %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, detail[:200])

    async def sink(stream: Any) -> None:
        stream.enable_acks = False  # we ack by hand, only after the DB commit
        async for event in stream.events():
            try:
                envelope = decode_envelope(event.value)
            except (msgspec.DecodeError, TypeError) as e:
                await poison(event, "bad_envelope", str(e))
                await stream.ack(event)
                continue
            readings = envelope.readings
            result = await db.run(partial(write_readings, readings=readings), "write readings")
            committed = datetime.now(UTC)
            stats.add("readings", len(readings))
            stats.add("rows_in", result.rows_in)
            stats.add("rows_inserted", result.rows_inserted)
            stats.add("envelopes")
            for r in readings[:: max(1, len(readings) // 20)]:  # sample: latency of ~20 per envelope
                stats.latency((committed - r.ts).total_seconds() * 1000.0)
            if not bank:
                bank.append(DetectorBank(await db.run(load_alarm_levels, "load alarm levels")))
            try:
                findings = bank[0].process(readings, p.detector_state)
            except Exception:  # the readings are stored; a detector bug must not stop storage
                log.exception("detectors failed on %s[%s]@%s", event.message.topic, event.message.partition,
                              event.message.offset)
                stats.add("detector_errors")
                findings = []
            if findings:
                await p.findings.send(
                    value=_enc.encode(FindingBatch(1, findings)), partition=event.message.partition
                )
                stats.add("findings", len(findings))
            await stream.ack(event)

    async def deadletters(stream: Any) -> None:
        stream.enable_acks = False
        async for event in stream.events():
            try:
                items = decode_batch(event.value)
            except (msgspec.DecodeError, TypeError) as e:
                await poison(event, "bad_deadletter_batch", str(e))
                await stream.ack(event)
                continue
            new = await dl_db.run(partial(write_deadletters, items=items), "write dead letters")
            by_reason: dict[str, int] = defaultdict(int)
            for d in items:
                by_reason[d.reason] += 1
            for reason, n in by_reason.items():
                stats.add(f"deadletters_{reason}", n)
            stats.add("deadletters_new", new)
            await stream.ack(event)

    def consumer_lag() -> float | None:
        """Readings not yet committed on this worker's partitions (highwater - committed offset)."""
        consumer = p.app.consumer
        try:
            tps = [tp for tp in consumer.assignment() if tp.topic == p.topics.readings]
            committed = consumer._committed_offset  # type: ignore[attr-defined]  # no public accessor
            return float(sum(max(0, (consumer.highwater(tp) or 0) - (committed.get(tp) or 0)) for tp in tps))
        except Exception:  # noqa: BLE001 - lag is best effort; never stop the metrics timer
            return None

    async def flush_metrics() -> None:
        lag = consumer_lag()
        if lag is not None:
            stats.gauges["consumer_lag_envelopes"] = lag
        rows = stats.rows()
        if rows:
            await db.run(partial(write_stats, rows=rows), "write pipeline metrics")

    async def refresh_registry() -> None:
        if bank:
            bank[0].update_registry(await db.run(load_alarm_levels, "reload alarm levels"))

    p.app.agent(p.readings, name="sink")(sink)
    p.app.timer(settings.registry_refresh_s, name="registry_refresh")(refresh_registry)
    p.app.agent(p.deadletter, name="deadletters")(deadletters)
    p.app.timer(settings.metrics_interval_s, name="sink_metrics")(flush_metrics)


def findings_of(raw: bytes) -> list[Finding]:
    return msgspec.json.decode(raw, type=FindingBatch).findings
