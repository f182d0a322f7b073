"""A faster decode of MQTT v5 PUBLISH packets that carry no properties, in one checked place.

paho builds a ``Properties`` object for every v5 PUBLISH, and its constructor builds two tables of
27 entries, clears every attribute it names, and runs string work on each ``setattr``: about a
fifth of the bridge's CPU at 1,000 readings/s (py-spy, December 2026), for packets whose property
length is 0, as every sensor reading here is. Such a packet is decoded by paho's own v3.1.1 path
with the empty property length taken out, which is the same decoding, and is given one shared
empty ``Properties``. A packet with properties goes through paho unchanged.

:func:`install` checks on sample packets that both paths decode alike before it takes over, so an
upgrade of paho that changes the decoding leaves paho's own path in place (logged) instead of
decoding differently.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

_ORIGINAL: Any = None
_INSTALLING = threading.Lock()  # clients may be made on several threads at once


class _NoProperties(Properties):
    """The properties of a PUBLISH that has none; shared by all of them, so it refuses writes."""

    def __init__(self) -> None:
        super().__init__(PacketTypes.PUBLISH)
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("the properties of a received PUBLISH without properties are shared: copy them")
        super().__setattr__(name, value)


NO_PROPERTIES = _NoProperties()


def _decode_publish(header: int, packet: bytes | bytearray, protocol: MQTTProtocolVersion) -> Any:
    if protocol == MQTTProtocolVersion.MQTTv5 and len(packet) >= 2:
        topic_end = 2 + int.from_bytes(packet[:2], "big")
        at = topic_end + (2 if header & 0x06 else 0)  # QoS 1 and 2 carry a packet id
        if topic_end > 2 and at < len(packet) and packet[at] == 0:  # a topic, and no properties
            got = _ORIGINAL(header, packet[:at] + packet[at + 1:], MQTTProtocolVersion.MQTTv311)
            return got._replace(properties=NO_PROPERTIES)
    return _ORIGINAL(header, packet, protocol)


def _publish_packet(topic: bytes, payload: bytes, *, qos: int, props: bytes) -> tuple[int, bytes]:
    """(first header byte, the rest after the remaining length) of a v5 PUBLISH."""
    body = len(topic).to_bytes(2, "big") + topic + (b"\x00\x07" if qos else b"") + props + payload
    return 0x30 | (qos << 1) | 0x08, body


def _agrees() -> bool:
    """Whether the fast path decodes sample packets as paho's v5 path does (properties aside)."""
    samples = [_publish_packet(b"ioc/v1/env/AIR_1", b'{"seq": 1}', qos=q, props=b"\x00") for q in (0, 1, 2)]
    samples.append(_publish_packet("ioc/v1/đo".encode(), b"", qos=1, props=b"\x00"))
    for header, body in samples:
        fast = _decode_publish(header, bytearray(body), MQTTProtocolVersion.MQTTv5)
        slow = _ORIGINAL(header, bytearray(body), MQTTProtocolVersion.MQTTv5)
        if fast._replace(properties=None) != slow._replace(properties=None) or slow.properties.json() != {}:
            return False
    return True


def install() -> bool:
    """Use the fast path in this process (idempotent); False if paho decodes differently here."""
    global _ORIGINAL
    with _INSTALLING:
        if _ORIGINAL is None:
            _ORIGINAL = _packet.decode_publish  # paho's own, taken once: never the fast path itself
            try:
                agrees = _agrees()
            except Exception:  # any change of paho's internals: keep paho's own path
                log.debug("the fast path's self-check failed", exc_info=True)
                agrees = False
            if agrees:
                _packet.decode_publish = _decode_publish
            else:
                log.warning("paho's PUBLISH decoding changed; the fast path for packets without properties is off")
        return _packet.decode_publish is _decode_publish
