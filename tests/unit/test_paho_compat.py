"""The fast decode of v5 PUBLISH packets without properties decodes exactly as paho does."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ioc import paho_compat

V5 = MQTTProtocolVersion.MQTTv5


def _props(**values: Any) -> bytes:
    p = Properties(PacketTypes.PUBLISH)
    for k, v in values.items():
        setattr(p, k, v)
    return bytes(p.pack())


def _packet_of(topic: bytes, payload: bytes, qos: int, props: bytes) -> tuple[int, bytearray]:
    header, body = paho_compat._publish_packet(topic, payload, qos=qos, props=props)
    return header, bytearray(body)


def _paho(header: int, body: bytearray) -> Any:
    original = paho_compat._ORIGINAL or _packet.decode_publish
    return original(header, bytearray(body), V5)


NONE = b"\x00"
CASES = {
    "qos0": (b"ioc/v1/env/AIR_1", b'{"seq": 1}', 0, NONE),
    "qos1": (b"ioc/v1/env/AIR_1", b'{"seq": 1}', 1, NONE),
    "qos2": (b"ioc/v1/env/AIR_1", b'{"seq": 1}', 2, NONE),
    "unicode topic": ("ioc/v1/thủy_văn/Đá_Bàn".encode(), b"x", 1, NONE),
    "empty payload": (b"a/b", b"", 1, NONE),
    "payload starting with a zero byte": (b"a/b", b"\x00\x00\x01", 1, NONE),
    "payload looking like properties": (b"a/b", _props(ContentType="text/plain") + b"{}", 1, NONE),
    "content type": (b"a/b", b"{}", 1, _props(ContentType="application/json")),
    "user properties": (b"a/b", b"{}", 0, _props(UserProperty=[("site", "Nha Trang"), ("k", "v")])),
    "expiry and format": (b"a/b", b"\x00{}", 2, _props(MessageExpiryInterval=60, PayloadFormatIndicator=1)),
    "topic alias, no topic": (b"", b"{}", 1, _props(TopicAlias=3)),
    "no topic, no properties": (b"", b"{}", 1, NONE),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_every_field_is_what_paho_decodes(case: tuple[bytes, bytes, int, bytes]) -> None:
    assert paho_compat.install()
    header, body = _packet_of(*case)
    got = _packet.decode_publish(header, bytearray(body), V5)
    want = _paho(header, body)
    assert got._replace(properties=None) == want._replace(properties=None)
    assert got.properties.json() == want.properties.json()
    # the fast path takes a topic without properties; an empty topic (a v5 protocol error without
    # a topic alias) is left to paho
    assert (got.properties is paho_compat.NO_PROPERTIES) == (case[3] == NONE and case[0] != b"")


def test_the_shared_empty_properties_refuse_writes() -> None:
    assert paho_compat.install()
    header, body = _packet_of(b"a/b", b"{}", 1, NONE)
    props = _packet.decode_publish(header, body, V5).properties
    with pytest.raises(AttributeError, match="shared"):
        props.ContentType = "text/plain"
    assert props.json() == {}


def test_v311_packets_are_left_to_paho() -> None:
    assert paho_compat.install()
    header, body = paho_compat._publish_packet(b"a/b", b"\x00\x01", qos=1, props=b"")
    got = _packet.decode_publish(header, bytearray(body), MQTTProtocolVersion.MQTTv311)
    assert (got.topic, got.mid, got.payload, got.properties) == (b"a/b", 7, b"\x00\x01", None)


def test_a_paho_that_decodes_differently_keeps_its_own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    original = paho_compat._ORIGINAL or _packet.decode_publish

    def changed(header: int, packet: bytes | bytearray, protocol: MQTTProtocolVersion) -> Any:
        got = original(header, packet, protocol)
        return got._replace(payload=bytes(got.payload)[1:]) if protocol != V5 else got

    monkeypatch.setattr(paho_compat, "_ORIGINAL", None)
    monkeypatch.setattr(_packet, "decode_publish", changed)
    assert paho_compat.install() is False
    assert _packet.decode_publish is changed


def test_clients_made_on_several_threads_at_once_install_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Had a second thread taken the fast path for paho's own, every decode would recurse."""
    import threading

    original = paho_compat._ORIGINAL or _packet.decode_publish
    monkeypatch.setattr(paho_compat, "_ORIGINAL", None)
    monkeypatch.setattr(_packet, "decode_publish", original)
    start = threading.Barrier(8)
    results: list[bool] = []

    def make() -> None:
        start.wait()
        results.append(paho_compat.install())

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
    assert paho_compat._ORIGINAL is original
    header, body = _packet_of(b"a/b", b"{}", 1, NONE)
    assert _packet.decode_publish(header, body, V5).payload == b"{}"
