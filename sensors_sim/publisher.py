"""Publish messages to MQTT at QoS 1 with a bounded in-flight window and burst pacing.

``published`` counts PUBACKs with a success reason code, not calls to ``publish()``: a message
only counts once the broker owns it. The window keeps paho below its 65,535-unacked stall and
bounds memory when publishing as fast as possible.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from ioc.errors import ServiceUnavailable
from ioc.mqtt_client import connect, make_client
from ioc.settings import mask_url
from sensors_sim.clock import Pacer
from sensors_sim.encode import Chunk
from sensors_sim.errors import PublishIncomplete

#: Messages handed to paho but not yet acknowledged (paho stalls at 65,535 unacked; this bounds memory).
WINDOW = 20_000
#: paho's own in-flight limit on the wire; the rest of the window waits in paho's queue.
INFLIGHT = 1000


@dataclass
class Counts:
    sent: int = 0
    published: int = 0
    valid: int = 0
    malformed: int = 0
    failed: int = 0


class Publisher:
    """One MQTT connection that publishes chunks of messages with pacing and ack accounting."""

    def __init__(self, url: str, *, window: int = WINDOW, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.window = window
        self.counts = Counts()
        self._acks: deque[tuple[int, bool]] = deque()
        self._pending: dict[int, bool] = {}
        self._connected = threading.Event()
        self._connect_error: str | None = None
        client, target, props = make_client(url, max_inflight=min(window, INFLIGHT))
        self.client = client
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        try:
            connect(client, target, props)
        except OSError as e:
            raise ServiceUnavailable("MQTT broker", mask_url(url), str(e)) from e
        client.loop_start()
        if not self._connected.wait(connect_timeout) or self._connect_error:
            client.loop_stop()
            raise ServiceUnavailable("MQTT broker", mask_url(url), self._connect_error or "no CONNACK")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._connect_error = f"connection refused: {reason}"
        self._connected.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._acks.append((mid, not getattr(reason, "is_failure", False)))

    def _drain(self) -> None:
        acks = self._acks
        c = self.counts
        while acks:
            mid, ok = acks.popleft()
            bad = self._pending.pop(mid, False)
            if ok:
                c.published += 1
                if bad:
                    c.malformed += 1
                else:
                    c.valid += 1
            else:
                c.failed += 1

    @property
    def outstanding(self) -> int:
        return len(self._pending) - len(self._acks)

    def publish_chunks(
        self,
        chunks: Iterable[Chunk],
        pacer: Pacer,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Counts:
        """Send every chunk on the pacer's schedule; returns the counts so far (acks still pending)."""
        publish = self.client.publish
        pending = self._pending
        for chunk in chunks:
            emit, topics, payloads, bad = chunk.emit, chunk.topics, chunk.payloads, chunk.malformed
            i, n = 0, len(emit)
            while i < n:
                if stop is not None and stop.is_set():
                    return self.counts
                horizon = pacer.horizon()
                j = i
                while j < n and emit[j] <= horizon and self.outstanding < self.window:
                    info = publish(topics[j], payloads[j], qos=1)
                    pending[info.mid] = bad[j]
                    j += 1
                self._drain()
                if j > i:
                    self.counts.sent += j - i
                    if progress is not None:
                        progress(j - i)
                    i = j
                elif self.outstanding >= self.window:
                    time.sleep(0.002)
                else:
                    pacer.wait_for(emit[i], max_wait=0.2)
        return self.counts

    def wait_acked(self, timeout: float = 60.0) -> bool:
        """Wait until every sent message is acknowledged (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            if not self._pending:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)

    def finish(self, timeout: float = 60.0) -> None:
        """Wait for every acknowledgement; :class:`PublishIncomplete` names how many are missing."""
        if not self.wait_acked(timeout):
            missing = len(self._pending)
            raise PublishIncomplete(
                f"{missing} of {self.counts.sent} message(s) were not acknowledged by the MQTT broker"
                f" {mask_url(self.url)} within {timeout:g} s; they may not have been delivered")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
