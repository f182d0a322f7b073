"""Agents that store: readings (then detect) and dead letters. Offsets advance only after commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from ioc.models import Finding, FindingBatch
from ioc.settings import Settings
from ioc.storage.deadletters import DeadLetter, decode_batch, write_deadletters
from ioc.storage.offset_ledger import Claim, ClaimResult, Position
from ioc.storage.readings_sink import write_readings, write_readings_group
from ioc.storage.sensors_store import load_sensor_entries
from ioc.wire import decode_envelope
from streams.db_worker import DbWorker
from streams.detection import DetectorBank, decode_state
from streams.event_clock import EventClock
from streams.faust_compat import as_current_event, committed_offsets
from streams.offset_guard import OffsetGuard
from streams.pipeline_stats import StageStats, write_stats
from streams.topics import partition_for

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)
_enc = msgspec.json.Encoder()
CHECKPOINT = "__offset__:"  # table key of a partition's detector checkpoint (never a sensor id)


def register_sink_agents(p: Pipeline, settings: Settings) -> None:
    assert settings.database_url is not None
    db = DbWorker(settings.database_url, "sink")
    dl_db = DbWorker(settings.database_url, "deadletters")
    stats = StageStats("sink")
    bank: list[DetectorBank] = []
    clock = EventClock()  # silence is judged in event time, so a replay is judged as live was
    worker_started = datetime.now(UTC)
    tick_s = settings.silence_check_s
    ticked: dict[int, float] = {}  # partition -> last silence tick (event time) checked in-stream
    busy_at: dict[int, float] = {}  # partition -> wall time of its latest envelope
    part_of: dict[str, int] = {}

    def part(sensor_id: str) -> int:
        got = part_of.get(sensor_id)
        if got is None:
            got = part_of[sensor_id] = partition_for(sensor_id, settings.kafka_partitions)
        return got

    def partition_sensors(partition: int) -> list[str]:
        """Sensors of one partition: in the table, or live here and not yet checkpointed."""
        keys = {k for k in p.detector_state.keys() if not k.startswith(CHECKPOINT)}
        if bank:
            keys |= bank[0].live_sensors()
        return sorted(k for k in keys if part(k) == partition)

    def detect(readings: list[Any], partition: int) -> list[Finding]:
        """The detectors over an envelope, with the silence timer run in event time between readings:
        every tick the partition's readings step over is checked before the reading after it."""
        b = bank[0]
        out: list[Finding] = []
        start = 0
        for i, r in enumerate(readings):
            upto = math.ceil(r.ts.timestamp() / tick_s) * tick_s - tick_s  # the last tick before this reading
            if upto > ticked.get(partition, -math.inf):
                out += b.process(readings[start:i], p.detector_state)
                start = i
                ticked[partition] = upto
                out += b.silence_ticks(partition_sensors(partition), p.detector_state,
                                       datetime.fromtimestamp(upto, UTC), tick_s, clock.started)
        out += b.process(readings[start:], p.detector_state)
        return out

    assert settings.kafka_url is not None
    guard = OffsetGuard(p.app, settings.kafka_url, settings.app_id, p.topics.readings, db, stats)
    # Detector state is checkpointed, not written per envelope: every ``detector_checkpoint_s`` a
    # partition's changed sensors go to the table with the next offset they cover. A worker that
    # takes a partition over (after a crash or a rebalance) replays the readings after the
    # checkpoint through the detectors, silently: their findings went out before those offsets
    # were committed. Writing ~10 KB per sensor per envelope cost more than the detectors.
    rereader = OffsetGuard(p.app, settings.kafka_url, settings.app_id, p.topics.readings, db, stats)
    sent_reader = OffsetGuard(p.app, settings.kafka_url, settings.app_id, p.topics.findings, db, stats)
    findings_sent_upto: dict[int, int] = {}  # partition -> envelopes below this already sent their findings
    caught_up: set[int] = set()
    seen_upto: dict[str, int] = {}  # sensor -> first offset its restored state has not seen
    flushed_at: dict[int, float] = {}

    async def catch_up(partition: int, offset: int) -> None:
        """Restore the partition's detectors from the table, then replay what they have not seen.

        Each sensor's state records the first offset it has not seen (``upto``); a flush cut short
        by a crash leaves sensors at different offsets, so the replay starts at the oldest and
        feeds each envelope only to the sensors that have not seen it yet.
        """
        b = bank[0]
        sensors = partition_sensors(partition)
        for sid in sensors:
            b.forget(sid)  # reload from the table: the checkpoint, maybe another worker's
        raw = p.detector_state.get(f"{CHECKPOINT}{partition}")
        ckpt = int(raw) if raw else None
        caught_up.add(partition)
        for sid in sensors:
            st = decode_state(p.detector_state.get(sid))
            if st is not None and isinstance(st.get("upto"), int):
                seen_upto[sid] = st["upto"]
            else:
                seen_upto.pop(sid, None)
        findings_sent_upto[partition] = await last_findings_source(partition) + 1
        if ckpt is None:
            return  # never checkpointed: a fresh partition, or state written before checkpoints
        start = min([ckpt, *(seen_upto[sid] for sid in sensors if sid in seen_upto)])
        if start >= offset:
            return
        replayed = 0
        async for off, value in rereader.read_range(partition, start, offset):
            try:
                env = decode_envelope(value)
            except (msgspec.DecodeError, TypeError):
                continue  # stored as poison when it came; nothing for the detectors
            todo = unseen(env.readings, off)
            detect(todo, partition)  # findings discarded: sent before these offsets were committed
            replayed += len(todo)
        stats.add("detector_replayed_readings", replayed)
        log.info("%s[%s]: detector state restored (checkpoint %s, oldest sensor %s); %s readings up to %s replayed",
                 p.topics.readings, partition, ckpt, start, replayed, offset)

    async def last_findings_source(partition: int, look_back: int = 64) -> int:
        """The newest readings offset whose findings reached ``ioc.findings`` (-1 if none): envelopes
        up to it that come again after a crash are run through the detectors silently."""
        end = await sent_reader.end_offset(partition)
        newest = -1
        floor = max(0, end - 16 * look_back)  # only silence batches that far back: nothing recent to match
        while end > floor and newest < 0:
            start = max(floor, end - look_back)
            async for _off, value in sent_reader.read_range(partition, start, end):
                try:
                    src = msgspec.json.decode(value, type=FindingBatch).source_offset
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if src is not None:
                    newest = max(newest, src)
            end = start
        return newest

    def unseen(readings: list[Any], offset: int) -> list[Any]:
        """The readings of an envelope whose sensors' restored state does not already hold it."""
        if not seen_upto:
            return readings
        return [r for r in readings if seen_upto.get(r.sensor_id, -1) <= offset]

    def checkpoint(partition: int, next_offset: int, now: float) -> None:
        if now - flushed_at.get(partition, 0.0) < settings.detector_checkpoint_s:
            return
        b = bank[0]
        b.flush([sid for sid in b.dirty if part(sid) == partition], p.detector_state, next_offset)
        # written last: if a crash cuts the flush short, the key still names an offset every
        # sensor's state had reached, and each sensor's own `upto` says where it stands
        p.detector_state[f"{CHECKPOINT}{partition}"] = str(next_offset).encode()
        flushed_at[partition] = now
        stats.add("detector_checkpoints")

    async def on_revoked(_sender: Any, revoked: Any = (), **_: Any) -> None:
        for tp in revoked or ():
            if tp.topic == p.topics.readings:
                caught_up.discard(tp.partition)

    p.app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # Faust passes signal= too
    dl_guard = OffsetGuard(p.app, settings.kafka_url, settings.app_id, p.topics.deadletter, dl_db, stats)

    def record_write(readings: list[Any], at: Position, claim: Claim, committed: datetime) -> None:
        clock.observe(at.partition, [r.ts for r in readings], committed)
        if claim is Claim.NEXT:
            stats.add("readings", len(readings))
            stats.add("envelopes")
            for r in readings[:: max(1, len(readings) // 20)]:  # sample: latency of ~20 per envelope
                stats.latency((committed - r.ts).total_seconds() * 1000.0)
        else:
            stats.add("envelopes_redelivered")
        busy_at[at.partition] = committed.timestamp()

    async def ensure_bank() -> None:
        if not bank:
            bank.append(DetectorBank(await db.run(load_sensor_entries, "load sensor registry"), defer_writes=True))

    async def detect_envelope(readings: list[Any], at: Position) -> list[Finding]:
        """The findings of one stored envelope; a detector bug is logged, never stops storage."""
        try:
            if at.partition not in caught_up:
                await catch_up(at.partition, at.offset)
            # A redelivery after a crash: sensors whose restored state already holds it are skipped,
            # and an envelope whose findings were already sent runs silently.
            findings = detect(unseen(readings, at.offset), at.partition)
            return [] if at.offset < findings_sent_upto.get(at.partition, -1) else findings
        except Exception:
            log.exception("detectors failed on %s[%s]@%s", p.topics.readings, at.partition, at.offset)
            stats.add("detector_errors")
            return []

    async def send_findings(findings: list[Finding], at: Position) -> Any:
        """Send now; the caller awaits the broker's acknowledgement before the envelope is acked or
        checkpointed. Faust would otherwise attach the send to the next offset commit (up to a second
        later on the alert path), and a checkpoint could get ahead of findings that never left."""
        fut = await p.findings.send(value=_enc.encode(FindingBatch(1, findings, at.offset)),
                                    partition=at.partition, force=True)
        stats.add("findings", len(findings))
        return fut

    def safe_checkpoint(partition: int, next_offset: int, now: float) -> None:
        try:
            checkpoint(partition, next_offset, now)
        except Exception:
            log.exception("detector checkpoint failed on %s[%s]", p.topics.readings, partition)
            stats.add("detector_errors")

    async def apply_envelope(value: bytes, at: Position, jump: bool) -> ClaimResult:
        """Store one envelope (claiming its offset), then run the detectors over it."""
        try:
            envelope = decode_envelope(value)
        except (msgspec.DecodeError, TypeError) as e:
            return await store_poison(db, stats, p.topics.readings, value, at, jump, "bad_envelope", str(e))
        readings = envelope.readings
        result = await db.run(partial(write_readings, readings=readings, at=at, allow_jump=jump), "write readings")
        if result.claim is Claim.AHEAD:
            return ClaimResult(result.claim, result.expected_offset or 0)
        committed = datetime.now(UTC)
        record_write(readings, at, result.claim, committed)
        stats.add("rows_in", result.rows_in)
        stats.add("rows_inserted", result.rows_inserted)
        await run_detectors([(at, readings, None)], committed)  # under the caller's current event
        return ClaimResult(result.claim, result.expected_offset or at.offset)

    async def run_detectors(items: list[tuple[Position, list[Any], Any]], committed: datetime) -> None:
        """The detectors over stored envelopes in partition order; their findings are acknowledged by
        Kafka before any partition is checkpointed (and before the caller acks the envelopes).

        Each item may carry the event whose changelog partition the checkpoint goes to; None keeps
        the current one."""
        await ensure_bank()
        if not settings.detectors_enabled:
            return
        sent = []
        for at, rs, _ in items:
            findings = await detect_envelope(rs, at)
            if findings:
                sent.append(await send_findings(findings, at))
        for fut in sent:
            await fut
        last = {at.partition: (at.offset, ev) for at, _, ev in items}
        for partition, (offset, ev) in last.items():
            with as_current_event(ev) if ev is not None else contextlib.nullcontext():
                safe_checkpoint(partition, offset + 1, committed.timestamp())

    async def apply_group(events: list[Any]) -> bool:
        """Group commit: the envelopes waiting on this worker in one transaction, then the detectors
        over each in partition order. False (nothing written) unless every envelope decodes and each
        partition's offsets are the ledger's next ones in a row; the caller then goes one by one."""
        items: list[tuple[Any, Position, list[Any]]] = []
        ranges: dict[int, list[int]] = {}
        for ev in events:
            at = guard.position(ev)
            try:
                items.append((ev, at, decode_envelope(ev.value).readings))
            except (msgspec.DecodeError, TypeError):
                return False
            span = ranges.get(at.partition)
            if span is None:
                ranges[at.partition] = [at.offset, at.offset]
            elif at.offset == span[1] + 1:
                span[1] = at.offset
            else:
                return False
        result = await db.run(partial(write_readings_group, readings=[r for _, _, rs in items for r in rs],
                                      stream=guard.stream, ranges=[(k, a, b) for k, (a, b) in ranges.items()]),
                              "write readings")
        if result is None:
            return False
        committed = datetime.now(UTC)
        stats.add("rows_in", result.rows_in)
        stats.add("rows_inserted", result.rows_inserted)
        stats.add("group_commits")
        for _, at, rs in items:
            record_write(rs, at, Claim.NEXT, committed)
        await run_detectors([(at, rs, ev) for ev, at, rs in items], committed)
        return True

    waiting: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue(maxsize=2 * settings.sink_group_max)

    async def sink(stream: Any) -> None:
        """Hands events to the group writer; the queue's bound is the back-pressure."""
        stream.enable_acks = False  # the writer acks by hand, only after the DB commit
        async for event in stream.events():
            await waiting.put((stream, event))

    async def group_writer() -> None:
        """Takes what has queued up while the previous transaction ran: one envelope at low rates
        (no added latency), up to ``sink_group_max`` under load (fewer, larger transactions)."""
        while True:
            batch = [await waiting.get()]
            while len(batch) < settings.sink_group_max and not waiting.empty():
                batch.append(waiting.get_nowait())
            with guard.in_flight():
                done = await apply_group([event for _, event in batch])
            if not done:
                for _, event in batch:
                    with as_current_event(event):
                        await guard.apply_in_order(event, apply_envelope)
            for stream, event in batch:
                await stream.ack(event)

    async def apply_deadletters(value: bytes, at: Position, jump: bool) -> ClaimResult:
        try:
            items = decode_batch(value)
        except (msgspec.DecodeError, TypeError) as e:
            return await store_poison(dl_db, stats, p.topics.deadletter, value, at, jump, "bad_deadletter_batch", str(e))
        written = await dl_db.run(partial(write_deadletters, items=items, at=at, allow_jump=jump), "write dead letters")
        if written.claim is Claim.NEXT:
            by_reason: dict[str, int] = defaultdict(int)
            for d in items:
                by_reason[d.reason] += d.count  # a rate-limited letter stands for many arrivals
            for reason, n in by_reason.items():
                stats.add(f"deadletters_{reason}", n)
            stats.add("deadletters_new", written.new)
        return ClaimResult(written.claim, written.expected_offset or at.offset)

    async def deadletters(stream: Any) -> None:
        stream.enable_acks = False
        async for event in stream.events():
            await dl_guard.apply_in_order(event, apply_deadletters)
            await stream.ack(event)

    def consumer_lag() -> float | None:
        """Readings not yet committed on this worker's partitions (highwater - committed offset)."""
        consumer = p.app.consumer
        try:
            tps = [tp for tp in consumer.assignment() if tp.topic == p.topics.readings]
            committed = committed_offsets(consumer)
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
            bank[0].update_registry(await db.run(load_sensor_entries, "reload sensor registry"))

    async def silence_timer() -> None:
        """Absence is a timer: for partitions that receive nothing at all (the in-stream ticks of
        ``detect`` cover the others, in event time), on the event clock."""
        if not bank:
            return
        wall = datetime.now(UTC)
        idle: dict[int, list[str]] = defaultdict(list)
        for k in {k for k in p.detector_state.keys() if not k.startswith(CHECKPOINT)} | bank[0].live_sensors():
            if wall.timestamp() - busy_at.get(part(k), 0.0) > 2 * tick_s:
                idle[part(k)].append(k)
        found: list[Finding] = []
        try:
            for partition, keys in idle.items():
                if clock.observed(partition):
                    found += bank[0].check_silence(keys, p.detector_state, clock.now(partition, wall), clock.started)
                else:  # nothing from it since this worker started: its clock is unknown, so give it the
                    # grace of k intervals from the start (a replayed backlog arrives well before that)
                    found += bank[0].check_silence(keys, p.detector_state, wall, worker_started)
        except Exception:  # a detector bug must not stop the timer
            log.exception("silence check failed")
            return
        for f in found:
            await p.findings.send(value=_enc.encode(FindingBatch(1, [f])), partition=part(f.sensor_id))
            stats.add("findings", 1)

    p.app.agent(p.readings, name="sink")(sink)
    p.app.task(group_writer)
    p.app.timer(settings.registry_refresh_s, name="registry_refresh")(refresh_registry)
    p.app.timer(settings.silence_check_s, name="silence")(silence_timer)

    p.app.timer(settings.offset_check_s, name="readings_offset_tail")(guard.check_tail)
    p.app.timer(settings.offset_check_s, name="deadletters_offset_tail")(dl_guard.check_tail)
    p.app.agent(p.deadletter, name="deadletters")(deadletters)
    p.app.timer(settings.metrics_interval_s, name="sink_metrics")(flush_metrics)


async def store_poison(db: DbWorker, stats: StageStats, topic: str, value: bytes, at: Position, jump: bool,
                       reason: str, detail: str) -> ClaimResult:
    """An undecodable Kafka record becomes a dead letter (its offset claimed) instead of a crash."""
    dl = DeadLetter(datetime.now(UTC), "kafka", reason, detail[:500], topic, bytes(value or b""), at.partition, at.offset)
    written = await db.run(partial(write_deadletters, items=[dl], at=at, allow_jump=jump), "store poison record")
    if written.claim is Claim.NEXT:
        stats.add("poison")
        log.error("poison record %s[%s]@%s: %s", topic, at.partition, at.offset, detail[:200])
    return ClaimResult(written.claim, written.expected_offset or at.offset)


def findings_of(raw: bytes) -> list[Finding]:
    return msgspec.json.decode(raw, type=FindingBatch).findings
