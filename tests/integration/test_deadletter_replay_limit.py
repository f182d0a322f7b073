"""`ioc deadletters replay --limit N` replays N MQTT letters, however many Kafka letters come first."""

from __future__ import annotations

import queue
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from ioc.composition.deadletter_replay import replay_deadletters
from ioc.mqtt_client import connect, make_client
from ioc.settings import Settings
from ioc.storage.deadletters import DeadLetter, list_deadletters, write_deadletters
from tests.support import scalar

pytestmark = pytest.mark.integration


def test_limit_counts_only_replayable_mqtt_letters(db_url: str, mqtt_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    kafka = [DeadLetter(now, "kafka", "bad_envelope", "x", f"ioc-{tag}.readings", b"k%d" % i, 0, i) for i in range(30)]
    mqtt_topic = f"khanhhoa/v1/rain/REPLAY_{tag}"
    mqtt = [DeadLetter(now, "mqtt", "unknown_sensor", "x", mqtt_topic, b"m%d" % i) for i in range(4)]
    no_topic = [DeadLetter(now, "mqtt", "bad_topic", "x", "", b"empty-topic")]
    with psycopg.connect(db_url, autocommit=True) as conn:
        write_deadletters(conn, kafka)  # the oldest letters are the ones replay cannot use
        write_deadletters(conn, no_topic + mqtt)

    got: queue.Queue[bytes] = queue.Queue()
    client, target, props = make_client(mqtt_url, client_id=f"replay-probe-{tag}")
    client.on_message = lambda c, u, m: got.put(bytes(m.payload))
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(mqtt_topic, qos=1)
    connect(client, target, props)
    client.loop_start()
    try:
        time.sleep(0.5)
        settings = Settings(database_url=db_url, mqtt_url=mqtt_url)
        assert replay_deadletters(settings, reason=None, limit=3) == 3
        received = set()
        deadline = time.monotonic() + 10
        while len(received) < 3 and time.monotonic() < deadline:
            try:
                received.add(got.get(timeout=0.5))
            except queue.Empty:
                pass
        assert received == {b"m0", b"m1", b"m2"}  # oldest first, and only MQTT ones
        # the rest is still pending, Kafka letters were not touched
        assert replay_deadletters(settings, reason=None, limit=100) == 1
        assert scalar(db_url, "SELECT count(*) FROM deadletters WHERE source = 'kafka' AND replayed_at IS NULL") == 30
        with psycopg.connect(db_url) as conn:
            pending = list_deadletters(conn, source="mqtt", replayable=True, limit=100)
        assert pending == []
    finally:
        client.loop_stop()
        client.disconnect()


def test_reason_filter_and_limit_together(db_url: str, mqtt_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    topic = f"khanhhoa/v1/rain/REPLAY2_{tag}"
    letters = [DeadLetter(now, "mqtt", "too_late" if i % 2 else "unknown_sensor", "x", topic, b"r%d" % i)
               for i in range(10)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        write_deadletters(conn, letters)
        rows = list_deadletters(conn, reason="too_late", source="mqtt", replayable=True, limit=2)
    assert [r.raw for r in rows] == [b"r1", b"r3"]
