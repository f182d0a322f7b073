"""The offset guard against a real Kafka-protocol broker and PostgreSQL: after an assignment, a
partition's log is checked against the ledger before anything is applied, so a log the broker lost
and started again is neither read from an old position nor mixed with records of the old log."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import faust
import psycopg
import pytest
from faust.types import TP

from ioc.settings import Settings
from ioc.storage.offset_ledger import Claim, Position, claim_offset, next_offsets
from ioc.wire import Reading, encode_envelope
from streams.agents_sink import ReadingsSink
from streams.db_worker import DbWorker
from streams.detector_stage import DetectorStage
from streams.kafka_admin import ensure_topics
from streams.offset_guard import OffsetGuard
from streams.pipeline_stats import StageStats
from tests.support import produce, register_sensors

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _claim(db_url: str, stream: str, values: list[bytes]) -> None:
    """The ledger applied these records at offsets 0.. of partition 0 (as a writer would)."""
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        for offset, value in enumerate(values):
            assert claim_offset(cur, Position.of(stream, 0, offset, value)).claim is Claim.NEXT


class _Event:
    """What the guard and the sink read of a Faust event (weak-referenceable, as Faust's is)."""

    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self.value = value
        self.message = SimpleNamespace(topic=topic, partition=0, offset=offset, tp=TP(topic, 0))


def _event(topic: str, offset: int, value: bytes) -> Any:
    return _Event(topic, offset, value)


async def _produce(kafka_url: str, topic: str, values: list[bytes]) -> None:
    await ensure_topics(kafka_url, {topic: 1})
    await produce(kafka_url, topic, values)


def _guard(kafka_url: str, db_url: str, topic: str) -> tuple[OffsetGuard, faust.App, list[int]]:
    app = faust.App(f"guard-{uuid.uuid4().hex[:6]}", broker=kafka_url)
    guard = OffsetGuard(app, kafka_url, "g", topic, DbWorker(db_url, "guard-test"), StageStats("test"),
                        read_timeout_s=5.0)
    recreated: list[int] = []
    guard.on_recreated = recreated.append
    return guard, app, recreated


def test_a_log_the_broker_started_again_resets_the_ledger_and_old_records_are_not_applied(
        kafka_url: str, db_url: str) -> None:
    topic = f"guard-{uuid.uuid4().hex[:8]}"
    new = [f"new log {i}".encode() for i in range(20)]
    old = [f"old log {i}".encode() for i in range(14)]
    asyncio.run(_produce(kafka_url, topic, new))
    stream = f"g:{topic}"
    _claim(db_url, stream, old)  # the ledger applied 0..13 of a log the broker has lost

    async def run() -> tuple[list[bool], OffsetGuard, list[int]]:
        guard, app, recreated = _guard(kafka_url, db_url, topic)
        try:
            # Before any assignment, nothing is checked (the steady state costs nothing).
            unchecked = await guard.of_current_log(_event(topic, 14, b"anything"))
            await app.on_partitions_assigned.send({TP(topic, 0)})
            verdicts = [unchecked,
                        # Faust still held a record it fetched from the old log before the crash:
                        await guard.of_current_log(_event(topic, 13, old[13])),
                        # and one more, at an offset the new log holds with other content:
                        await guard.of_current_log(_event(topic, 5, b"old log 5, another")),
                        # then the new log, from the old log's position (Faust's stale offsets):
                        await guard.of_current_log(_event(topic, 14, new[14])),
                        # checked once: what follows is applied without asking the broker
                        await guard.of_current_log(_event(topic, 15, new[15]))]
            return verdicts, guard, recreated
        finally:
            await guard.close()

    verdicts, guard, recreated = asyncio.run(run())
    assert verdicts == [True, False, False, True, True]
    assert recreated == [0]  # reset once, not for each record
    assert guard.stats.counters["records_of_lost_log"] == 2
    assert guard.stats.counters["topics_recreated"] == 1
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        assert next_offsets(conn, stream) == {}  # the ledger starts the partition afresh
        # so the record in hand is ahead of offset 0 and the guard reads 0..13 back before it
        assert claim_offset(cur, Position.of(stream, 0, 14, new[14])).expected == 0


def test_the_same_log_after_an_assignment_keeps_its_ledger(kafka_url: str, db_url: str) -> None:
    topic = f"guard-{uuid.uuid4().hex[:8]}"
    values = [f"record {i}".encode() for i in range(10)]
    asyncio.run(_produce(kafka_url, topic, values))
    stream = f"g:{topic}"
    _claim(db_url, stream, values[:6])

    async def run() -> tuple[list[bool], OffsetGuard, list[int]]:
        guard, app, recreated = _guard(kafka_url, db_url, topic)
        try:
            await app.on_partitions_assigned.send({TP(topic, 0), TP("another topic", 0)})
            return [await guard.of_current_log(_event(topic, 6, values[6])),
                    await guard.of_current_log(_event(topic, 3, values[3]))], guard, recreated
        finally:
            await guard.close()

    verdicts, guard, recreated = asyncio.run(run())
    assert verdicts == [True, True]
    assert recreated == [] and "topics_recreated" not in guard.stats.counters
    with psycopg.connect(db_url) as conn:
        assert next_offsets(conn, stream) == {0: 6}


def test_an_empty_new_log_is_told_from_the_old_one(kafka_url: str, db_url: str) -> None:
    """The broker came back and nothing was written yet: a record still in hand is of the lost log."""
    topic = f"guard-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(kafka_url, {topic: 1}))
    stream = f"g:{topic}"
    old = [f"old {i}".encode() for i in range(4)]
    _claim(db_url, stream, old[:3])

    async def run() -> tuple[bool, list[int]]:
        guard, _app, recreated = _guard(kafka_url, db_url, topic)
        guard.doubt([0])  # what the topic keeper does when it finds the topic missing
        try:
            return await guard.of_current_log(_event(topic, 3, old[3])), recreated
        finally:
            await guard.close()

    current, recreated = asyncio.run(run())
    assert current is False and recreated == [0]
    with psycopg.connect(db_url) as conn:
        assert next_offsets(conn, stream) == {}


def _envelope(sensor: str, minute: int) -> bytes:
    return encode_envelope([Reading(sensor, "rain", T0 + timedelta(minutes=minute), minute, {"rain_mm": 1.0})])


def test_the_sink_keeps_the_lost_logs_rows_in_hand_and_reads_the_new_log_from_its_start(
        kafka_url: str, db_url: str) -> None:
    """Faust hands the writer a record it fetched before the broker lost its log, then the new log
    from the old log's position: the first is stored without a claim, the new log from offset 0."""
    topic = f"sink-{uuid.uuid4().hex[:8]}"
    sensor = f"LOSTLOG_{uuid.uuid4().hex[:6].upper()}"
    register_sensors(db_url, [(sensor, "rain", None)])
    new = [_envelope(sensor, 100 + i) for i in range(6)]
    old = [_envelope(sensor, i) for i in range(4)]
    asyncio.run(_produce(kafka_url, topic, new))
    _claim(db_url, f"g:{topic}", old)  # the old log's 0..3 were applied (their rows never written here)

    async def run() -> list[int]:
        guard, app, _recreated = _guard(kafka_url, db_url, topic)
        settings = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url=kafka_url, database_url=db_url,
                            kafka_partitions=1, detectors_enabled=False)
        stage = DetectorStage(settings, {}, _never_sent, guard.stats, topic)
        guard.on_recreated = stage.topic_recreated
        sink = ReadingsSink(settings, guard.db, guard, stage, guard.stats, topic)
        acked: list[int] = []
        stream = SimpleNamespace(ack=lambda ev: _ack(acked, ev))
        await app.on_partitions_assigned.send({TP(topic, 0)})
        for offset, value in ((3, old[3]), (4, new[4]), (5, new[5])):
            sink.waiting.put_nowait((stream, _event(topic, offset, value)))
        writer = asyncio.create_task(sink.writer())
        try:
            for _ in range(200):
                if len(acked) == 3:
                    break
                await asyncio.sleep(0.05)
        finally:
            writer.cancel()
            await guard.close()
        return acked

    assert asyncio.run(run()) == [3, 4, 5]
    with psycopg.connect(db_url) as conn:
        minutes = [int((ts - T0).total_seconds() // 60) for (ts,) in conn.execute(
            "SELECT DISTINCT ts FROM readings WHERE sensor_id = %s ORDER BY ts", (sensor,)).fetchall()]
        assert minutes == [3, 100, 101, 102, 103, 104, 105]  # old 3 kept; new 0..3 read back, then 4 and 5
        assert next_offsets(conn, f"g:{topic}") == {0: 6}


async def _ack(acked: list[int], event: Any) -> None:
    acked.append(event.message.offset)


async def _never_sent(**_: Any) -> Any:
    raise AssertionError("detectors are off: nothing is sent")


def test_a_range_read_leaves_no_partition_fetchable_so_nothing_is_fetched_after_it(kafka_url: str, db_url: str) -> None:
    """A partition left fetchable is fetched for ever: aiokafka polls the broker every fetch wait while
    it is quiet and buffers live records no one reads while it is busy. Read to the end, cut short,
    and read again: each read ends with nothing fetchable, and the next read still gets its range."""
    topic = f"guard-{uuid.uuid4().hex[:8]}"
    values = [f"r {i}".encode() for i in range(6)]
    asyncio.run(_produce(kafka_url, topic, values))

    async def run() -> tuple[list[tuple[int, bytes]], list[int], list[int], list[set[Any]]]:
        guard, _app, _ = _guard(kafka_url, db_url, topic)
        fetchable: list[set[Any]] = []

        def note() -> None:
            assert guard._reader is not None
            fetchable.append(set(guard._reader.assignment()) - guard._reader.paused())

        try:
            whole = [r async for r in guard.read_range(0, 1, 5)]
            note()
            cut: list[int] = []
            reading = guard.read_range(0, 0, 6)
            async for off, _v in reading:
                cut.append(off)
                if off == 2:
                    break
            await reading.aclose()
            note()
            again = [off async for off, _v in guard.read_range(0, 3, 6)]
            note()
            return whole, cut, again, fetchable
        finally:
            await guard.close()

    whole, cut, again, fetchable = asyncio.run(run())
    assert whole == [(i, values[i]) for i in range(1, 5)]
    assert cut == [0, 1, 2] and again == [3, 4, 5]
    assert fetchable == [set(), set(), set()]
