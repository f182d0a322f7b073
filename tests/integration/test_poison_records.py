"""A record on Kafka that is not an envelope is stored as a dead letter; the worker keeps going."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest

from ioc.wire import encode_payload
from streams.topics import TopicNames
from tests.support import produce, publish, register_sensors, scalar, wait_for

pytestmark = pytest.mark.integration


def test_poison_records_become_dead_letters_and_do_not_stop_the_sink(pipeline: dict[str, str]) -> None:
    db = pipeline["IOC_DATABASE_URL"]
    topic = TopicNames(pipeline["IOC_TOPIC_PREFIX"]).readings
    junk = [b"not an envelope " + uuid.uuid4().hex.encode(), b'{"v": 1, "readings": [["too", "short"]]}']
    asyncio.run(produce(pipeline["IOC_KAFKA_URL"], topic, junk))
    for raw in junk:
        wait_for(lambda raw=raw: scalar(db, "SELECT reason FROM deadletters WHERE raw = %s AND source = 'kafka'",
                                        (raw,)) == "bad_envelope", 60, "poison dead letter")
    assert scalar(db, "SELECT kafka_partition FROM deadletters WHERE raw = %s", (junk[0],)) == 0
    # the sink is still alive: a valid reading afterwards is stored
    sid = f"AFTER_POISON_{uuid.uuid4().hex[:6].upper()}"
    register_sensors(db, [(sid, "rain", None)])
    time.sleep(2.5)
    assert publish(pipeline["IOC_MQTT_URL"], [(f"khanhhoa/v1/rain/{sid}",
                                               encode_payload(sid, datetime.now(UTC), 1, {"rain_mm": 2.0}))]) == 1
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sid,)) == 1, 60, "reading")
