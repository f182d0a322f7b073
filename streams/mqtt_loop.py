"""The bridge's MQTT side: paho driven by the bridge's own asyncio loop, with our reconnect loop.

paho's external-loop API (``loop_read``/``loop_write``/``loop_misc`` and the socket callbacks)
runs on the event loop's thread, so messages reach the bridge and PUBACKs leave it without a
second thread. With paho in a thread of its own, each message crossed threads twice (the message
in, its ack out) and the two threads handed the GIL back and forth: about four futex calls per
message, most of the bridge's CPU. A message's ack is valid only on the connection that received
it (``AckToken.generation``): after a reconnect the broker redelivers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from ioc.errors import IocError
from ioc.mqtt_client import connect, make_client
from ioc.retry import Backoff
from ioc.settings import Settings, mask_url
from streams.broker_drops import SYS_DROPPED

log = logging.getLogger(__name__)
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)

SUBSCRIPTION = "khanhhoa/v1/+/+"
# Reason codes that retrying cannot fix: stop with a clear error instead of looping.
FATAL_CONNACK = {"Bad user name or password", "Not authorized", "Client identifier not valid", "Banned"}
# Packets read per wake-up of the socket at most: a burst is read without a loop turn per packet,
# and other work (Kafka acknowledgements, timers) still gets its turn.
READ_BURST = 64
MISC_EVERY_S = 1.0  # paho's keepalive bookkeeping (PINGREQ, a silent broker noticed)
#: A retiring bridge gives up after losing its connection this often (see ``MqttLoop._on_disconnect``).
LEAVE_MAX_LOSSES = 3


class CredentialsRefused(IocError):
    pass


@dataclass(frozen=True)
class AckToken:
    """A pending MQTT ack; only valid on the connection that received the message."""

    generation: int
    mid: int


class MqttLoop:
    """paho on the running asyncio loop, with our reconnect loop (capped backoff, full jitter).

    Everything here runs on the loop's thread: ``run`` connects and reconnects, the socket is
    watched with ``add_reader``/``add_writer``, and ``ack`` queues PUBACKs that paho writes when
    the socket is writable.
    """

    def __init__(
        self,
        settings: Settings,
        on_message: Callable[[str, bytes, AckToken], None],
        on_broker_stat: Callable[[str, bytes], None] | None = None,
    ) -> None:
        assert settings.mqtt_url is not None
        self.url = settings.mqtt_url
        self.client_id = settings.bridge_id
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
        self.on_broker_stat = on_broker_stat  # Mosquitto's $SYS counters (see streams.broker_drops)
        self.generation = 0
        self.received = 0
        # threading.Event: read by callers that poll from other threads (bench, tests) as well.
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        # Leaving (retire): the subscription is dropped on this and every later connection, and
        # ``left`` is set by the broker's UNSUBACK; what the session still holds keeps coming.
        self.leaving = False
        self.left = threading.Event()
        self.losses_leaving = 0
        self.fatal: str | None = None
        # Why a retire gave up (set once, by ``_on_disconnect``): the bridge stops with it.
        self.leave_failed: str | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None  # the socket being watched, by number: paho closes the object itself
        self._writing = False  # a writer is registered: the socket was full
        self._flush_soon = False
        self._lost: asyncio.Event | None = None
        self._backoff = Backoff(base_s=0.2, cap_s=15.0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_unsubscribe = lambda c, u, mid, rcs, p: self.left.set()
        self.client.on_socket_open = self._on_socket_open
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_register_write
        self.client.on_socket_unregister_write = self._on_unregister_write

    # -- paho callbacks (on the loop's thread)
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode, props: object) -> None:
        if rc.is_failure:
            name = str(rc)
            log.error("MQTT broker %s refused the connection: %s", mask_url(self.url), name)
            if name in FATAL_CONNACK:
                self.fatal = f"MQTT broker {mask_url(self.url)} refused the credentials: {name}"
                self._stopping = True
                self._connection_lost()
            return
        self.generation += 1
        self._backoff.reset()
        present = getattr(flags, "session_present", "?")
        if self.leaving:  # the session's stored subscription would go on routing readings to it
            self.left.clear()
            client.unsubscribe(self.topic)
            self.connected.set()
            log.info("MQTT connected to %s (session present=%s), leaving %s", mask_url(self.url), present, self.topic)
            return
        # Subscribe on every connect: a broker that lost the session must not leave us deaf.
        subs = [(self.topic, 1)]
        if self.on_broker_stat is not None:
            subs.append((SYS_DROPPED, 0))
        client.subscribe(subs)
        self.connected.set()
        log.info("MQTT connected to %s (session present=%s), subscribed %s", mask_url(self.url), present, self.topic)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode, props: object) -> None:
        if self.leaving:
            # Another live client with this id (`ioc bridge --retire` run for a bridge still running)
            # evicts us on every connection, and we it; paho reports that only as an unspecified
            # error. A retire gives up after a few losses: the session is kept, nothing is lost.
            self.losses_leaving += 1
            if self.losses_leaving >= LEAVE_MAX_LOSSES and self.leave_failed is None:
                self._stopping = True
                self.leave_failed = (
                    f"the MQTT connection was lost {self.losses_leaving} times while retiring session"
                    f" {self.client_id!r}: is that bridge still running (each evicts the other)? Stop it first,"
                    " or retire it with IOC_BRIDGE_RETIRE_ON_EXIT=true; the session is kept")
        self.connected.clear()
        self.subscribed.clear()
        self.generation += 1  # acks for messages of the old connection are void
        if not self._stopping:
            log.warning("MQTT disconnected from %s: %s", mask_url(self.url), rc)
        self._connection_lost()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic  # paho decodes it on every access
        if topic.startswith("$SYS/"):  # QoS 0 broker statistics: never a reading, never acked
            if self.on_broker_stat is not None:
                self.on_broker_stat(topic, bytes(msg.payload))
            return
        self.received += 1
        try:
            self.on_message_cb(topic, bytes(msg.payload), AckToken(self.generation, msg.mid))
        except Exception:  # a handler must never die on one payload
            log.exception("bridge handler failed for topic %.200s", topic)

    def _on_socket_open(self, client: mqtt.Client, userdata: object, sock: socket.socket | object) -> None:
        assert self._loop is not None
        self._detach()
        fd = sock.fileno()  # type: ignore[union-attr]
        self._fd = fd
        self._loop.add_reader(fd, self._readable)

    def _on_socket_close(self, client: mqtt.Client, userdata: object, sock: socket.socket | object) -> None:
        self._detach()
        self._connection_lost()

    def _on_register_write(self, client: mqtt.Client, userdata: object, sock: socket.socket | object) -> None:
        """paho has packets to send: written on the loop's next turn, so the acks of one envelope go
        together, and a writer is registered only if the socket cannot take them all."""
        if not self._flush_soon and self._loop is not None:
            self._flush_soon = True
            self._loop.call_soon(self._flush_writes)

    def _on_unregister_write(self, client: mqtt.Client, userdata: object, sock: socket.socket | object) -> None:
        if self._writing and self._fd is not None and self._loop is not None:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _flush_writes(self) -> None:
        self._flush_soon = False
        if self._fd is None or self._loop is None:
            return
        self._writable()
        if self._fd is not None and self.client.want_write() and not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._writable)

    # -- socket events
    def _readable(self) -> None:
        """Read what arrived, a burst at a time. TLS may hold decrypted bytes the socket no longer
        signals (``pending``), so those are read before going back to the loop."""
        try:
            for _ in range(READ_BURST):
                before = self.received
                if self.client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                    self._connection_lost()
                    return
                sock = self.client.socket()
                pending = getattr(sock, "pending", None)
                if self.received == before and not (pending is not None and pending() > 0):
                    return  # nothing more in the socket (or a packet that was not a message)
            if self._loop is not None:  # a full burst: go on at the loop's next turn, even if only
                self._loop.call_soon(self._readable)  # TLS holds the rest (the socket would not say)
        except Exception:  # the loop must survive anything one packet does to paho
            log.exception("MQTT read failed; reconnecting")
            self._connection_lost()

    def _writable(self) -> None:
        """Write what paho queued. paho sends each packet with a call of its own (with TCP_NODELAY),
        so an envelope's fifty PUBACKs left as fifty segments, each woken up for in the broker;
        corked, they leave together when the cork is pulled."""
        sock = self.client.socket()
        _cork(sock, True)
        try:
            if self.client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                self._connection_lost()
        except Exception:
            log.exception("MQTT write failed; reconnecting")
            self._connection_lost()
        finally:
            _cork(sock, False)

    def _detach(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
        self._fd = None
        self._writing = False

    def _connection_lost(self) -> None:
        if self.connected.is_set():
            self.generation += 1  # acks for messages of this connection are void from now on
        self.connected.clear()
        if self._lost is not None:
            self._lost.set()

    # -- used by the bridge
    def ack(self, tokens: Iterable[AckToken]) -> int:
        """PUBACK the messages of this connection; returns how many were still valid for it."""
        mids = [t.mid for t in tokens if t.generation == self.generation]
        # The others belong to a closed connection: the broker redelivers them, the sinks dedupe.
        for mid in mids:
            self.client.ack(mid, 1)
        return len(mids)

    def leave(self) -> None:
        """Leave the (shared) subscription so the broker stops routing messages to this session;
        the messages it already queued for the session are still delivered (see ``left``)."""
        self.leaving = True
        self.left.clear()
        self.subscribed.clear()
        if self.connected.is_set():
            self.client.unsubscribe(self.topic)

    async def run(self) -> None:
        """Connect, and connect again after every loss until ``stop``; a refused login stops it."""
        self._loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                # Blocks for the TCP connect only (loopback or the LAN); nothing else comes in from
                # MQTT while it is down, and Kafka's acknowledgements wait in their sockets.
                connect(self.client, self.target, self.props)
            except OSError as e:
                self._detach()
                delay = self._backoff.next()
                log.warning("MQTT %s unreachable (%s); retrying in %.1f s", mask_url(self.url), e, delay)
                await asyncio.sleep(delay)
                continue
            # Made after connect: paho closing the previous socket there must not end this connection.
            lost = self._lost = asyncio.Event()
            misc = asyncio.create_task(self._misc(lost))
            try:
                await lost.wait()
            finally:
                misc.cancel()
            self._detach()
            if not self._stopping:
                delay = self._backoff.next()
                log.warning("MQTT connection lost; reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)

    async def _misc(self, lost: asyncio.Event) -> None:
        while not lost.is_set():
            if self.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                self._connection_lost()
                return
            await asyncio.sleep(MISC_EVERY_S)

    async def stop(self, retire: bool = False) -> bool:
        """Send pending acks and disconnect; ``retire`` also ends the persistent session (returns
        whether that DISCONNECT left).

        Without ``retire`` the session outlives the process, so a restart resumes it and nothing
        queued meanwhile is lost. A retired bridge (scale-down) must end it: otherwise the broker
        keeps giving its share of a shared subscription to a session nobody will resume.
        """
        self._stopping = True
        if retire and self.connected.is_set():
            # What the broker sent last, read before the session is ended: a take-over by another
            # client with this id (after which a DISCONNECT of ours would end nothing, and would
            # still be written without error), or a message that came after the drain was declared.
            before = self.received
            self._readable()
            if self.received != before:
                log.warning("MQTT: %d message(s) arrived as session %r was being ended; it is kept",
                            self.received - before, self.client_id)
                retire = False
        ended = False
        if self.connected.is_set():
            try:
                props = None
                if retire:
                    props = mqtt.Properties(PacketTypes.DISCONNECT)
                    props.SessionExpiryInterval = 0
                self.client.disconnect(properties=props)
                for _ in range(20):  # let the acks and the DISCONNECT leave
                    if not self.client.want_write():  # a failed write puts its packet back
                        ended = retire
                        break
                    await asyncio.sleep(0.05)
            except Exception:
                log.exception("MQTT disconnect failed")
        self._connection_lost()
        self._detach()
        return ended


def _cork(sock: object, on: bool) -> None:
    """Hold (or release) partial segments on Linux; elsewhere, and on a socket already closed, nothing."""
    if _TCP_CORK is None or sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)  # type: ignore[attr-defined]
    except OSError:
        pass  # closed under us by paho: the connection is being lost and will be reported
