"""Build paho-mqtt v2 clients from one URL, so every process connects the same way."""

from __future__ import annotations

import socket
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ioc import paho_compat


@dataclass(frozen=True)
class MqttTarget:
    """Host, port, credentials and TLS flag parsed from an ``mqtt://`` or ``mqtts://`` URL."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> MqttTarget:
        """Parse a broker URL.

        >>> MqttTarget.parse("mqtt://u:p@127.0.0.1:1884").port
        1884
        """
        p = urlsplit(url)
        tls = p.scheme == "mqtts"
        return cls(
            host=p.hostname or "127.0.0.1",
            port=p.port or (8883 if tls else 1883),
            username=unquote(p.username) if p.username else None,
            password=unquote(p.password) if p.password else None,
            tls=tls,
        )


def make_client(
    url: str,
    *,
    client_id: str | None = None,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    manual_ack: bool = False,
    max_inflight: int = 1000,
    ca_file: Path | None = None,
) -> tuple[mqtt.Client, MqttTarget, mqtt.Properties | None]:
    """A configured but unconnected MQTT v5 client; returns (client, target, connect properties).

    ``session_expiry_s`` > 0 with ``clean_start=False`` gives a persistent session, so QoS 1
    messages queued while the client is away are delivered when it returns.
    """
    from paho.mqtt.packettypes import PacketTypes

    paho_compat.install()
    target = MqttTarget.parse(url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"ioc-{uuid.uuid4().hex[:12]}",
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if target.username:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        client.tls_set_context(ctx)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    props: mqtt.Properties | None = None
    if session_expiry_s:
        props = mqtt.Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
    client._ioc_clean_start = clean_start  # type: ignore[attr-defined]
    return client, target, props


def connect(client: mqtt.Client, target: MqttTarget, props: mqtt.Properties | None) -> None:
    """Connect (blocking for the TCP part) and disable Nagle, which costs ~30 ms p99 otherwise."""
    client.connect(
        target.host,
        target.port,
        keepalive=30,
        clean_start=getattr(client, "_ioc_clean_start", True),
        properties=props,
    )
    sock = client.socket()
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]


def start_background(client: mqtt.Client, target: MqttTarget, props: mqtt.Properties | None) -> None:
    """Connect in the background with paho's own reconnects: a broker that is down now must not
    crash a service that only publishes or listens on the side (alerts, acknowledgements)."""
    client.connect_async(target.host, target.port, keepalive=30, properties=props)
    client.loop_start()


def stop_background(client: mqtt.Client) -> None:
    client.loop_stop()
    client.disconnect()
