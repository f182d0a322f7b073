"""Through the real Mosquitto: messages with and without MQTT v5 properties arrive as sent, those
without on the fast path (``ioc.paho_compat``) that every client of ``make_client`` uses."""

from __future__ import annotations

import queue
import uuid

import pytest
from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ioc import paho_compat
from ioc.mqtt_client import connect, make_client
from ioc.stack.stack import StackState
from tests.conftest import mqtt_account_url

pytestmark = pytest.mark.integration


def test_messages_arrive_as_sent_and_those_without_properties_skip_building_them(stack: StackState) -> None:
    url = mqtt_account_url(stack.urls, "worker")  # may read and write alert topics
    topic = f"khanhhoa/v1/alerts/test/paho-{uuid.uuid4().hex[:8]}/x"
    got: queue.Queue[MQTTMessage] = queue.Queue()
    ready: queue.Queue[int] = queue.Queue()
    client, target, props = make_client(url, client_id=f"paho-compat-{uuid.uuid4().hex[:6]}")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: ready.put(rcs[0].value)
    client.on_message = lambda c, u, m: got.put(m)
    connect(client, target, props)
    client.loop_start()
    try:
        assert ready.get(timeout=10) < 128
        with_props = Properties(PacketTypes.PUBLISH)
        with_props.ContentType = "application/json"
        with_props.UserProperty = [("site", "Nha Trang")]
        sent = [(b'{"n": 1}', 1, None), (b'{"n": 2}', 1, with_props), (b"\x00\x01", 0, None), (b"", 1, None)]
        for payload, qos, p in sent:
            client.publish(topic, payload, qos=qos, properties=p).wait_for_publish(10)
        received = [got.get(timeout=10) for _ in sent]
    finally:
        client.loop_stop()
        client.disconnect()
    assert [(m.topic, bytes(m.payload), m.qos) for m in received] == [(topic, pl, q) for pl, q, _ in sent]
    plain = [received[i].properties for i in (0, 2, 3)]
    assert all(p is paho_compat.NO_PROPERTIES for p in plain)
    assert received[1].properties.json() == {"ContentType": "application/json", "UserProperty": [("site", "Nha Trang")]}
