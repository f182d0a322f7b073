"""Record live MQTT readings to a ``.jsonl.gz`` file with receive times.

The subscription is made in ``on_connect`` so a reconnect (clean session) re-subscribes instead of
silently recording nothing. Messages are buffered by the network thread and written by the caller.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from ioc.errors import ServiceUnavailable
from ioc.mqtt_client import connect, make_client
from ioc.settings import mask_url
from sensors_sim.fileio import Message, Writer, embeddable, encode_lines

#: Readings only: khanhhoa/v1/<kind>/<sensor_id> (alerts live one level deeper).
READINGS_FILTER = "khanhhoa/v1/+/+"


class Recorder:
    """Subscribes at QoS 1 and buffers (receive time, topic, payload)."""

    def __init__(self, url: str, topic: str = READINGS_FILTER, *, now: Callable[[], float] = time.time) -> None:
        self.url = url
        self.topic = topic
        self._now = now
        self.buffer: deque[Message] = deque()
        self.subscribed = threading.Event()
        client, target, props = make_client(url)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client
        try:
            connect(client, target, props)
        except OSError as e:
            raise ServiceUnavailable("MQTT broker", mask_url(url), str(e)) from e
        client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not getattr(reason, "is_failure", False):
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.buffer.append(Message(self._now(), msg.topic, bytes(msg.payload)))

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        if not self.subscribed.wait(timeout):
            self.close()
            raise ServiceUnavailable("MQTT broker", mask_url(self.url), f"no SUBACK for {self.topic} in {timeout:g} s")

    def take(self) -> list[Message]:
        out = []
        buf = self.buffer
        while buf:
            out.append(buf.popleft())
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def record(
    url: str,
    out: Path,
    *,
    duration: float | None = None,
    count: int | None = None,
    topic: str = READINGS_FILTER,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Record until ``duration`` seconds pass, ``count`` messages arrive, or ``stop`` is set."""
    rec = Recorder(url, topic)
    rec.wait_subscribed()
    deadline = None if duration is None else time.monotonic() + duration
    n = 0
    try:
        with Writer(out) as w:
            while True:
                msgs = rec.take()
                if count is not None:
                    msgs = msgs[: max(count - n, 0)]
                if msgs:
                    ok = [embeddable(m.payload) for m in msgs]
                    w.write(encode_lines([m.t for m in msgs], [m.topic for m in msgs], [m.payload for m in msgs], ok),
                            len(msgs))
                    n += len(msgs)
                    if progress is not None:
                        progress(len(msgs))
                if (count is not None and n >= count) or (stop is not None and stop.is_set()):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
    finally:
        rec.close()
    return n
