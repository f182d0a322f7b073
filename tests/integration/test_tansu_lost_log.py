"""What a Tansu broker restarted empty does to producers that still hold its metadata, and how the
pipeline's send retry gets past it. A private broker: the test restarts it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from ioc.stack.services import start_tansu
from streams.kafka_admin import ensure_topics
from streams.kafka_retry import SendRetry
from streams.topics import bootstrap_servers
from tests.support import restart_tansu

pytestmark = pytest.mark.integration
TOPIC = "lost.readings"


async def _topics(bs: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def _miss_the_broker(producer: AIOKafkaProducer) -> None:
    """Let the producer find its connection dead and fail to refresh its metadata while no broker
    answers. Otherwise it finds out after the restart (``restart_tansu`` blocks the event loop), and
    the refresh, a metadata request that lets the broker create the topics it names, could create
    the topic again before the test writes to it."""
    for _ in range(2):  # the second awaits the refresh the dead connection's close may have begun
        assert await producer.client.force_metadata_update() is False


async def _send(producer: AIOKafkaProducer, value: bytes, retry: SendRetry) -> list[tuple[str, float]]:
    """Send until acknowledged, as the bridge does; the refusals met on the way and their delays."""
    met = []
    while True:
        try:
            await producer.send_and_wait(TOPIC, value, partition=1)
            return met
        except KafkaError as e:
            delay = retry.delay(e)
            met.append((type(e).__name__, delay))
            await asyncio.sleep(delay)


def test_records_written_before_the_topic_is_created_again_are_passed_by_retrying_at_once(tmp_path: Path) -> None:
    old = start_tansu(tmp_path)
    bs = bootstrap_servers(old.url)

    async def run() -> tuple[list[str], list[tuple[str, float]], list[bytes]]:
        await ensure_topics(old.url, {TOPIC: 2})
        producer = AIOKafkaProducer(bootstrap_servers=bs, request_timeout_ms=5000)
        await producer.start()
        os.kill(old.pid, signal.SIGKILL)
        await _miss_the_broker(producer)
        new = restart_tansu(old)
        try:
            # The producer still holds the topic's metadata: the new broker takes these writes
            # but does not list the topic.
            for i in range(5):
                await _send(producer, f"before creation {i}".encode(), SendRetry(0.05, 0.2))
            listed = await _topics(bs)
            await ensure_topics(old.url, {TOPIC: 2})  # what the topic keepers do
            met = await _send(producer, b"after creation", SendRetry(base_s=5.0, cap_s=5.0))
            return listed, met, await _read(bs)
        finally:
            await producer.stop()
            os.kill(new.pid, signal.SIGKILL)

    listed, met, values = asyncio.run(run())
    assert TOPIC not in listed
    # one refusal per record written before the creation, each retried at once (a backoff of 5 s
    # each here; minutes in the pipeline, where dozens of records were written)
    assert met == [("UnknownError", 0.0)] * 5
    assert values == [f"before creation {i}".encode() for i in range(5)] + [b"after creation"]


async def _read(bs: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bs, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 1)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = await consumer.getmany(tp, timeout_ms=3000)
        return [bytes(r.value or b"") for r in got.get(tp, [])]
    finally:
        await consumer.stop()
