"""Partitions per topic: the dead-letter topic is created small, an existing topic keeps its count,
and a pipeline whose dead-letter topic was created with more partitions (an earlier release)
still stores the letters of every partition; a bridge refuses a readings topic whose count differs
from its setting."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ioc.errors import ConfigError
from ioc.settings import Settings
from ioc.stack.stack import StackState
from streams.bridge import Bridge
from streams.kafka_admin import ensure_topics
from streams.topics import TopicNames, bootstrap_servers
from tests.conftest import fresh_db
from tests.support import publish, scalar, start_pipeline, wait_for

pytestmark = pytest.mark.integration


async def _partitions(kafka_url: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(kafka_url))
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def _end_offsets(kafka_url: str, topic: str, partitions: int) -> list[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(kafka_url))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


def test_the_dead_letter_topic_is_created_with_its_own_count_and_an_existing_topic_keeps_its_own(
    kafka_url: str,
) -> None:
    names = TopicNames(f"layout-{uuid.uuid4().hex[:8]}")
    defaults = Settings.model_fields
    layout = names.layout(defaults["kafka_partitions"].default, defaults["deadletter_partitions"].default)
    assert layout[names.deadletter] == 1 and layout[names.readings] == 8

    created = asyncio.run(ensure_topics(kafka_url, layout))
    assert sorted(created) == sorted(names.all())
    assert asyncio.run(_partitions(kafka_url, names.all())) == layout

    # A second call (another process, a topic keeper) creates nothing and changes no count.
    assert asyncio.run(ensure_topics(kafka_url, names.layout(4, 4))) == []
    assert asyncio.run(_partitions(kafka_url, names.all())) == layout


def test_letters_on_every_partition_of_a_dead_letter_topic_created_larger_are_stored(
    stack: StackState, tmp_path: Path,
) -> None:
    prefix = f"ioc-old-{uuid.uuid4().hex[:8]}"
    deadletter = TopicNames(prefix).deadletter
    asyncio.run(ensure_topics(stack.urls["IOC_KAFKA_URL"], {deadletter: 4}))  # as an earlier release made it
    db = fresh_db(stack.urls["IOC_DATABASE_URL"])
    p = start_pipeline(stack.urls, db, tmp_path, IOC_TOPIC_PREFIX=prefix, IOC_MQTT_SHARED_SUBSCRIPTION="false")
    try:
        p.warm_up()
        topic = f"khanhhoa/v1/rain/LAYOUT_{uuid.uuid4().hex[:6].upper()}"
        sent = 0
        for burst in range(12):  # separate bursts: separate dead-letter records, spread over the partitions
            raws = [b'{"broken": ' + f"{burst}-{k}".encode() for k in range(5)]
            sent += publish(p.env["IOC_MQTT_URL"], [(topic, raw) for raw in raws])
            time.sleep(0.3)
        assert sent == 60
        wait_for(lambda: scalar(db, "SELECT count(*) FROM deadletters WHERE topic = %s", (topic,)) == 60, 60,
                 "60 dead letters")
        assert asyncio.run(_partitions(stack.urls["IOC_KAFKA_URL"], [deadletter])) == {deadletter: 4}
        used = [n for n in asyncio.run(_end_offsets(stack.urls["IOC_KAFKA_URL"], deadletter, 4)) if n > 0]
        assert len(used) >= 2, "the letters did not reach more than one partition"
    finally:
        p.stop()


def test_a_bridge_refuses_a_readings_topic_made_with_another_partition_count(kafka_url: str, mqtt_url: str) -> None:
    """IOC_KAFKA_PARTITIONS changed after the topics were made: the bridge names both counts at start-up
    instead of sending to partitions the topic lacks, or moving sensors between partitions mid-stream."""
    tag = uuid.uuid4().hex[:8]
    names = TopicNames(f"ioc-parts-{tag}")
    asyncio.run(ensure_topics(kafka_url, names.layout(4, 1)))

    def settings(partitions: int) -> Settings:
        return Settings(mqtt_url=mqtt_url, kafka_url=kafka_url, topic_prefix=names.prefix, bridge_id=f"parts-{tag}",
                        share_group=f"parts{tag}", kafka_partitions=partitions, bridge_retire_on_exit=True)

    async def start(partitions: int) -> None:
        bridge = Bridge(settings(partitions), {})
        stop, ready = asyncio.Event(), asyncio.Event()
        run = asyncio.create_task(bridge.run(stop, ready))
        done, _ = await asyncio.wait([run, asyncio.create_task(ready.wait())], timeout=60,
                                     return_when=asyncio.FIRST_COMPLETED)
        if run not in done:
            stop.set()
        await run

    for wrong in (8, 2):
        with pytest.raises(ConfigError, match=rf"has 4 partitions but IOC_KAFKA_PARTITIONS is {wrong}"):
            asyncio.run(start(wrong))
    asyncio.run(start(4))  # the count the topic has: starts, subscribes and stops cleanly
