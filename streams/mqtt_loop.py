"""The bridge's MQTT side: paho in its own thread, with our reconnect loop and batched PUBACKs.

paho is not safe to drive from two threads, so everything that touches the client (acks,
unsubscribe, disconnect) is queued to the paho thread. A message's ack is valid only on the
connection that received it (``AckToken.generation``): after a reconnect the broker redelivers.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from ioc.errors import IocError
from ioc.mqtt_client import connect, make_client
from ioc.retry import Backoff
from ioc.settings import Settings, mask_url

log = logging.getLogger(__name__)

SUBSCRIPTION = "khanhhoa/v1/+/+"
# Reason codes that retrying cannot fix: stop with a clear error instead of looping.
FATAL_CONNACK = {"Bad user name or password", "Not authorized", "Client identifier not valid", "Banned"}



class CredentialsRefused(IocError):
    pass


@dataclass(frozen=True)
class AckToken:
    """A pending MQTT ack; only valid on the connection that received the message."""

    generation: int
    mid: int


class MqttLoop:
    """paho client in its own thread, with our reconnect loop (capped backoff, full jitter)."""

    def __init__(self, settings: Settings, on_message: Callable[[str, bytes, AckToken], None]) -> None:
        assert settings.mqtt_url is not None
        self.url = settings.mqtt_url
        self.topic = (
            f"$share/{settings.share_group}/{SUBSCRIPTION}" if settings.mqtt_shared_subscription else SUBSCRIPTION
        )
        self.client, self.target, props = make_client(
            settings.mqtt_url,
            client_id=settings.bridge_id,
            clean_start=False,
            session_expiry_s=86400,
            manual_ack=True,
            ca_file=settings.mqtt_ca_file,
        )
        if props is None:
            props = mqtt.Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = 5000  # QoS 1 messages in flight to us, bounds bridge memory
        self.props = props
        self.on_message_cb = on_message
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.fatal: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-loop", daemon=True)
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._retire = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode, props: object) -> None:
        if rc.is_failure:
            name = str(rc)
            log.error("MQTT broker %s refused the connection: %s", mask_url(self.url), name)
            if name in FATAL_CONNACK:
                self.fatal = f"MQTT broker {mask_url(self.url)} refused the credentials: {name}"
                self._stop.set()
            return
        with self._lock:
            self.generation += 1
        # Subscribe on every connect: a broker that lost the session must not leave us deaf.
        client.subscribe(self.topic, qos=1)
        self.connected.set()
        log.info("MQTT connected to %s (session present=%s), subscribed %s", mask_url(self.url),
                 getattr(flags, "session_present", "?"), self.topic)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode, props: object) -> None:
        self.connected.clear()
        self.subscribed.clear()
        with self._lock:
            self.generation += 1  # acks for messages of the old connection are void
        if not self._stop.is_set():
            log.warning("MQTT disconnected from %s: %s", mask_url(self.url), rc)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self.on_message_cb(msg.topic, bytes(msg.payload), AckToken(self.generation, msg.mid))
        except Exception:  # a handler must never die on one payload
            log.exception("bridge handler failed for topic %.200s", msg.topic)

    def ack(self, tokens: Iterable[AckToken]) -> int:
        """Queue PUBACKs for the paho thread to send (paho is not safe to drive from two threads),
        one hand-over per envelope; returns how many are still valid for this connection."""
        with self._lock:
            mids = [t.mid for t in tokens if t.generation == self.generation]
            generation = self.generation
        if mids:  # the others belong to a closed connection: the broker redelivers, the sinks dedupe
            self._calls.put(partial(self._ack_now, generation, mids))
        return len(mids)

    def _ack_now(self, generation: int, mids: list[int]) -> None:
        if generation == self.generation:  # re-checked: a reconnect may have happened since
            for mid in mids:
                self.client.ack(mid, 1)

    def start(self) -> None:
        self._thread.start()

    def unsubscribe(self) -> None:
        """Leave the (shared) subscription so the broker stops routing messages to this session."""
        self._calls.put(lambda: self.client.unsubscribe(self.topic))

    def stop(self, retire: bool = False) -> None:
        """Send pending acks and disconnect; ``retire`` also ends the persistent session.

        Without ``retire`` the session outlives the process, so a restart resumes it and nothing
        queued meanwhile is lost. A retired bridge (scale-down) must end it: otherwise the broker
        keeps giving its share of a shared subscription to a session nobody will resume.
        """
        self._retire = retire
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        backoff = Backoff(base_s=0.2, cap_s=15.0)
        while not self._stop.is_set():
            try:
                connect(self.client, self.target, self.props)
            except OSError as e:
                delay = backoff.next()
                log.warning("MQTT %s unreachable (%s); retrying in %.1f s", mask_url(self.url), e, delay)
                self._stop.wait(delay)
                continue
            while not self._stop.is_set():
                try:
                    self._run_calls()
                    rc = self.client.loop(timeout=0.01)
                except Exception:  # the loop must survive anything one packet does to paho
                    log.exception("MQTT network loop failed; reconnecting")
                    rc = mqtt.MQTT_ERR_UNKNOWN
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                if self.connected.is_set():
                    backoff.reset()
            if self._stop.is_set() and self.connected.is_set():
                self._disconnect_cleanly()
            self.connected.clear()
            if not self._stop.is_set():
                delay = backoff.next()
                log.warning("MQTT connection lost; reconnecting in %.1f s", delay)
                self._stop.wait(delay)

    def _run_calls(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            call()

    def _disconnect_cleanly(self) -> None:
        """From the paho thread: flush acks, then DISCONNECT (ending the session when retiring)."""
        try:
            self._run_calls()
            props = None
            if self._retire:
                props = mqtt.Properties(PacketTypes.DISCONNECT)
                props.SessionExpiryInterval = 0
            self.client.disconnect(properties=props)
            for _ in range(20):  # let the packets leave
                if self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        except Exception:
            log.exception("MQTT disconnect failed")
