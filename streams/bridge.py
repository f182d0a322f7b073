"""The MQTT→Kafka bridge: validate at the edge, micro-batch per partition, ack MQTT after Kafka.

Threads: paho runs its network loop in our own thread (with our own reconnect loop and
jittered backoff); everything else runs on one asyncio loop. A QoS 1 message is PUBACKed only
after the envelope that carries it (or its dead letter) has been acked by Kafka, so a bridge
that dies loses nothing: the broker redelivers to the persistent session.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from ioc.errors import IocError, PayloadRejected
from ioc.mqtt_client import connect, make_client
from ioc.retry import Backoff
from ioc.settings import Settings, mask_url
from ioc.storage.deadletters import DeadLetter, encode_batch
from ioc.wire import Reading, SensorInfo, ValidationPolicy, encode_envelope, parse_topic, validate
from streams.envelope_batcher import Batch, EnvelopeBatcher, send_rounds
from streams.kafka_admin import ensure_topics
from streams.pipeline_stats import StageStats
from streams.topics import TopicNames, bootstrap_servers, partition_for

log = logging.getLogger(__name__)

SUBSCRIPTION = "khanhhoa/v1/+/+"
# A rate-limited flood is folded into one dead letter per sensor per window. A longer window
# means fewer rows but acks held longer (they count against ReceiveMaximum); the max count
# closes a window early under a heavy flood.
RATE_WINDOW_S = 1.0
RATE_WINDOW_MAX = 1000
# Reason codes that retrying cannot fix: stop with a clear error instead of looping.
FATAL_CONNACK = {"Bad user name or password", "Not authorized", "Client identifier not valid", "Banned"}


class CredentialsRefused(IocError):
    pass


@dataclass(frozen=True)
class AckToken:
    """A pending MQTT ack; only valid on the connection that received the message."""

    generation: int
    mid: int


@dataclass
class BridgeStats:
    received: int = 0
    valid: int = 0
    rejected: int = 0
    envelopes: int = 0
    acked: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)


class SensorRateLimiter:
    """A token bucket per sensor id: ``rate_hz`` sustained, up to ``burst`` at once.

    Pure apart from the injected ``monotonic`` clock. ``rate_hz`` 0 disables the limit.

    >>> now = [0.0]
    >>> rl = SensorRateLimiter(rate_hz=1.0, burst=2, monotonic=lambda: now[0])
    >>> [rl.allow("S1") for _ in range(3)], rl.allow("S2")
    ([True, True, False], True)
    >>> now[0] = 1.0
    >>> rl.allow("S1"), rl.allow("S1")
    (True, False)
    """

    def __init__(self, rate_hz: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate_hz < 0 or rate_hz != rate_hz or rate_hz == float("inf"):
            raise ValueError(f"rate_hz must be a finite number >= 0 (0 disables the limit), got {rate_hz}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate_hz = rate_hz
        self.burst = float(burst)
        self.monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # sensor id -> (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.rate_hz > 0

    def allow(self, sensor_id: str) -> bool:
        """Take one token for ``sensor_id``; False when its bucket is empty."""
        if not self.enabled:
            return True
        now = self.monotonic()
        tokens, at = self._buckets.get(sensor_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_hz)
        if tokens < 1.0 - 1e-9:  # the epsilon: a sensor exactly at the rate must not lose to rounding
            self._buckets[sensor_id] = (tokens, now)
            return False
        self._buckets[sensor_id] = (max(0.0, tokens - 1.0), now)
        return True

    def evict_full(self) -> int:
        """Forget buckets that have refilled: keeps memory bounded when ids churn (spoofed ids)."""
        if not self.enabled:
            return 0
        now = self.monotonic()
        full = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate_hz >= self.burst]
        for k in full:
            del self._buckets[k]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class _Excess:
    """The rate-limited messages of one sensor in one window: one dead letter with a count."""

    opened: float  # monotonic
    received_at: datetime
    topic: str
    raw: bytes
    tokens: list[AckToken]


class ExcessAggregator:
    """Folds each sensor's rate-limited messages into one dead letter per window.

    The letter keeps the window's first payload as a sample and counts every message; each
    message's ack waits for that letter, so the excess is dead-lettered, never dropped silently.
    Aggregating is what protects the database from a flood: a flood becomes one row per second.
    """

    def __init__(self, window_s: float, max_count: int, rate_hz: float, burst: int,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_count = max_count
        self.rate_hz = rate_hz
        self.burst = burst
        self.monotonic = monotonic
        self._open: dict[str, _Excess] = {}

    def add(self, sensor_id: str, topic: str, raw: bytes, token: AckToken, received_at: datetime
            ) -> list[tuple[DeadLetter, tuple[AckToken, ...]]]:
        """Count one message; returns the window's letter when it has reached ``max_count``."""
        ex = self._open.get(sensor_id)
        if ex is None:
            ex = self._open[sensor_id] = _Excess(self.monotonic(), received_at, topic, bytes(raw[:4096]), [])
        ex.tokens.append(token)
        if len(ex.tokens) >= self.max_count:
            return [self._close(sensor_id)]
        return []

    def due(self) -> list[tuple[DeadLetter, tuple[AckToken, ...]]]:
        now = self.monotonic()
        return [self._close(k) for k, ex in list(self._open.items()) if now - ex.opened >= self.window_s]

    def drain(self) -> list[tuple[DeadLetter, tuple[AckToken, ...]]]:
        return [self._close(k) for k in list(self._open)]

    def _close(self, sensor_id: str) -> tuple[DeadLetter, tuple[AckToken, ...]]:
        ex = self._open.pop(sensor_id)
        n = len(ex.tokens)
        detail = (f"{n} message(s) from sensor {sensor_id[:64]!r} over the limit of {self.rate_hz:g}/s"
                  f" (burst {self.burst}) within {self.window_s:g} s; the first one is kept as a sample")
        return DeadLetter(ex.received_at, "mqtt", "rate_limited", detail, ex.topic, ex.raw, count=n), tuple(ex.tokens)


def topic_sensor_id(topic: str) -> str | None:
    """The sensor id a readings topic names, or None when the topic is not one (validation says why).

    >>> topic_sensor_id("khanhhoa/v1/rain/R1"), topic_sensor_id("khanhhoa/v1/rain/R1/x")
    ('R1', None)
    """
    try:
        return parse_topic(topic)[1]
    except PayloadRejected:
        return None


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


class Bridge:
    """Owns validation, batching and the Kafka producer; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        sensors: dict[str, SensorInfo],
        *,
        on_unknown_sensor: Callable[[str, str], None] | None = None,
        reload_sensors: Callable[[], dict[str, SensorInfo]] | None = None,
        write_metrics: Callable[[list[tuple[datetime, str, str, str, float]]], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        settings.require("mqtt_url", "kafka_url")
        self.settings = settings
        self.sensors = sensors
        self.on_unknown_sensor = on_unknown_sensor
        self.reload_sensors = reload_sensors
        self.write_metrics = write_metrics
        self.metrics = StageStats("bridge", worker=settings.bridge_id)
        self.clock = clock
        self.topics = TopicNames(settings.topic_prefix)
        self.policy = ValidationPolicy(
            max_payload_bytes=settings.max_payload_bytes,
            max_future=timedelta(seconds=settings.max_future_s),
            late_bound=timedelta(seconds=settings.late_bound_s),
            auto_register=settings.auto_register,
        )
        self.stats = BridgeStats()
        self.batcher: EnvelopeBatcher[Reading, AckToken] = EnvelopeBatcher(
            settings.envelope_max_readings, settings.envelope_max_ms / 1000.0, time.monotonic
        )
        self.dead: list[tuple[DeadLetter, tuple[AckToken, ...]]] = []
        self.limiter = SensorRateLimiter(settings.sensor_max_rate_hz, settings.sensor_rate_burst)
        self.excess = ExcessAggregator(RATE_WINDOW_S, RATE_WINDOW_MAX, settings.sensor_max_rate_hz,
                                       settings.sensor_rate_burst)
        # Registering an unknown sensor is a blocking DB round trip: one thread, in arrival order.
        self._register_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-register")
        self.mqtt = MqttLoop(settings, self._from_thread)
        self.producer: AIOKafkaProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Queue[Batch[Reading, AckToken]] = asyncio.Queue()
        self._inbox: collections.deque[tuple[str, bytes, AckToken]] = collections.deque()  # appended by paho's thread
        self._wake_pending = False

    # -- MQTT thread -> asyncio loop
    def _from_thread(self, topic: str, payload: bytes, token: AckToken) -> None:
        """Queue the message; wake the loop only when nothing is queued yet. A wake-up per message
        (``call_soon_threadsafe`` writes the loop's self-pipe) cost the bridge a tenth of its CPU."""
        self._inbox.append((topic, payload, token))
        if not self._wake_pending:
            self._wake_pending = True
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        # Cleared before draining: a message queued meanwhile either is drained here or wakes us again.
        self._wake_pending = False
        inbox = self._inbox
        while inbox:
            self.handle(*inbox.popleft())

    def _lookup(self, sensor_id: str) -> SensorInfo | None:
        return self.sensors.get(sensor_id)

    def _reject(self, topic: str, payload: bytes, token: AckToken, reason: str, detail: str) -> None:
        self.stats.rejected += 1
        self.stats.by_reason[reason] += 1
        log.debug("rejected %s on %.200s: %s", reason, topic, detail)
        if reason == "too_large":  # keep a sample, not megabytes: a retry cannot fix the size anyway
            payload = payload[: self.policy.max_payload_bytes]
        self.dead.append((DeadLetter(self.clock(), "mqtt", reason, detail, topic, bytes(payload)), (token,)))

    def _rate_limited(self, sensor_id: str, topic: str, payload: bytes, token: AckToken) -> None:
        self.stats.rejected += 1
        self.stats.by_reason["rate_limited"] += 1
        self.dead.extend(self.excess.add(sensor_id, topic, payload, token, self.clock()))

    def _register(self, sensor_id: str, kind: str) -> None:
        """Off the event loop (the register thread): the DB insert for an auto-registered sensor."""
        assert self.on_unknown_sensor is not None
        try:
            self.on_unknown_sensor(sensor_id, kind)
        except Exception as e:  # noqa: BLE001 - the reading is kept; the registry row can follow
            log.warning("auto-registering sensor %s failed: %s", sensor_id, e)

    def handle(self, topic: str, payload: bytes, token: AckToken) -> None:
        """Rate-limit, validate one message and route it to its partition's envelope or to the dead letters.

        Runs on the event loop, so it never blocks: no I/O here.
        """
        self.stats.received += 1
        sid = topic_sensor_id(topic) if self.limiter.enabled else None
        if sid is not None and not self.limiter.allow(sid):
            self._rate_limited(sid, topic, payload, token)
            return
        try:
            reading = validate(topic, payload, sensors=self._lookup, now=self.clock(), policy=self.policy)
        except PayloadRejected as e:
            self._reject(topic, payload, token, e.reason, e.detail)
            return
        except Exception as e:  # a bug must not leave a message unacked forever
            log.exception("validation crashed on topic %.200s", topic)
            self._reject(topic, payload, token, "internal_error", repr(e)[:300])
            return
        if reading.sensor_id not in self.sensors:
            self.sensors[reading.sensor_id] = SensorInfo(reading.kind)
            if self.on_unknown_sensor is not None:
                self._register_pool.submit(self._register, reading.sensor_id, reading.kind)
        self.stats.valid += 1
        part = partition_for(reading.sensor_id, self.settings.kafka_partitions)
        for batch in self.batcher.add(part, reading, token):
            self._ready.put_nowait(batch)

    # -- Kafka side
    async def _send(self, topic: str, value: bytes, partition: int | None, what: str) -> None:
        """Send until Kafka acks; transient errors back off and retry, never drop."""
        assert self.producer is not None
        backoff = Backoff(base_s=0.1, cap_s=10.0)
        while True:
            try:
                await self.producer.send_and_wait(topic, value, partition=partition)
                return
            except KafkaError as e:
                delay = backoff.next()
                log.warning("Kafka send of %s failed (%s); retrying in %.2f s", what, e, delay)
                await asyncio.sleep(delay)

    async def _flush_batch(self, batch: Batch[Reading, AckToken]) -> None:
        # Called only by the single sender task, at most one envelope per partition at a time: in order.
        await self._send(self.topics.readings, encode_envelope(batch.items), batch.partition,
                         f"envelope of {len(batch.items)} to partition {batch.partition}")
        self.stats.envelopes += 1
        self.stats.acked += self.mqtt.ack(batch.acks)

    async def _flush_dead(self) -> None:
        if not self.dead:
            return
        items, self.dead = self.dead, []
        await self._send(self.topics.deadletter, encode_batch([d for d, _ in items]), None,
                         f"{len(items)} dead letters")
        self.stats.acked += self.mqtt.ack([t for _, tokens in items for t in tokens])

    async def _sender(self) -> None:
        """Everything ready goes in rounds (:func:`send_rounds`): one Kafka round trip per round instead
        of one per envelope. On loopback this measured no different; it is for a broker whose round
        trip is long (Kafka on its own host), where one envelope at a time bounds the rate."""
        cap = 4 * self.settings.envelope_max_readings
        while True:
            ready = [await self._ready.get()]
            while not self._ready.empty():
                ready.append(self._ready.get_nowait())
            for batches in send_rounds(ready, cap):
                await asyncio.gather(*(self._flush_batch(b) for b in batches))

    async def _ticker(self) -> None:
        tick = min(0.01, self.batcher.max_age_s / 2)
        last_evict = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            for batch in self.batcher.due():
                self._ready.put_nowait(batch)
            self.dead.extend(self.excess.due())
            if time.monotonic() - last_evict > 10.0:
                self.limiter.evict_full()
                last_evict = time.monotonic()
            await self._flush_dead()

    async def _registry_refresher(self) -> None:
        """New sensors registered in the DB are accepted without restarting the bridge."""
        if self.reload_sensors is None:
            return
        while True:
            await asyncio.sleep(self.settings.registry_refresh_s)
            try:
                fresh = await asyncio.to_thread(self.reload_sensors)
            except Exception as e:  # noqa: BLE001 - keep the old registry, try again later
                log.warning("sensor registry refresh failed: %s", e)
                continue
            self.sensors.update(fresh)

    async def _metrics_writer(self) -> None:
        """Counts, rates and rejects per reason to ``pipeline_metrics`` for the health dashboard."""
        if self.write_metrics is None:
            return
        while True:
            await asyncio.sleep(self.settings.metrics_interval_s)
            st = self.stats
            self.metrics.counters = {
                "received": st.received, "valid": st.valid, "rejected": st.rejected,
                "envelopes": st.envelopes, "acked": st.acked,
                **{f"rejected_{k}": v for k, v in st.by_reason.items()},
            }
            self.metrics.counters["pending"] = self.batcher.pending  # gauge, not a counter
            try:
                await asyncio.to_thread(self.write_metrics, self.metrics.rows())
            except Exception as e:  # noqa: BLE001 - metrics must never stop the bridge
                log.warning("writing bridge metrics failed: %s", e)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> BridgeStats:
        assert self.settings.kafka_url is not None
        self._loop = asyncio.get_running_loop()
        await ensure_topics(self.settings.kafka_url, self.topics.all(), self.settings.kafka_partitions)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(self.settings.kafka_url),
            acks="all",
            linger_ms=2,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=15000,
        )
        await self.producer.start()
        self.mqtt.start()
        tasks = [asyncio.create_task(c) for c in (
            self._sender(), self._ticker(), self._registry_refresher(), self._metrics_writer()
        )]
        try:
            while not stop.is_set():
                if self.mqtt.fatal:
                    raise CredentialsRefused(self.mqtt.fatal)
                for t in tasks:  # a dead helper task would stall the bridge silently: fail loudly instead
                    if t.done() and not t.cancelled() and t.exception() is not None:
                        raise IocError(f"bridge task {t.get_name()} died") from t.exception()
                if ready is not None and self.mqtt.subscribed.is_set():
                    ready.set()
                try:
                    await asyncio.wait_for(stop.wait(), 0.2)
                except TimeoutError:
                    pass
            # graceful: flush what we hold, then stop
            if self.settings.bridge_retire_on_exit:
                self.mqtt.unsubscribe()
                await asyncio.sleep(0.5)  # messages already on the wire still arrive and are handled
            for batch in self.batcher.drain():
                self._ready.put_nowait(batch)
            self.dead.extend(self.excess.drain())
            deadline = time.monotonic() + 10
            while (not self._ready.empty() or self.dead) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            for t in tasks:
                t.cancel()
            self.mqtt.stop(retire=self.settings.bridge_retire_on_exit and stop.is_set())
            await self.producer.stop()
            self._register_pool.shutdown(wait=False)
        return self.stats
