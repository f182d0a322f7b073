"""The MQTT→Kafka bridge: validate at the edge, micro-batch per partition, ack MQTT after Kafka.

The parts live in their own modules: the paho loop in :mod:`streams.mqtt_loop`, the per-sensor
rate limit in :mod:`streams.sensor_rate_limit`, envelope batching in :mod:`streams.envelope_batcher`,
topic creation in :mod:`streams.kafka_admin`; this one composes them. Everything, paho's network
I/O included, runs on one asyncio loop (the database calls of auto-registration aside). A QoS 1 message is PUBACKed only
after the envelope that carries it (or its dead letter) has been acked by Kafka, so a bridge
that dies loses nothing: the broker redelivers to the persistent session.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ioc.errors import ConfigError, IocError, PayloadRejected
from ioc.settings import Settings, mask_url
from ioc.storage.deadletters import DeadLetter, encode_batch
from ioc.wire import Reading, SensorInfo, ValidationPolicy, encode_envelope, parse_topic, validate
from streams.broker_drops import SYS_DROPPED, BrokerDrops
from streams.envelope_batcher import Batch, EnvelopeBatcher, take_merged
from streams.kafka_admin import TopicKeeper, ensure_topics
from streams.kafka_retry import SendRetry
from streams.mqtt_loop import AckToken, CredentialsRefused, MqttLoop
from streams.pipeline_stats import StageStats
from streams.sensor_rate_limit import RATE_WINDOW_MAX, RATE_WINDOW_S, ExcessAggregator, SensorRateLimiter
from streams.topics import TopicNames, bootstrap_servers, partition_for

log = logging.getLogger(__name__)

#: With nothing open, the ticker still looks in this often (rate-limiter eviction, dead letters).
IDLE_WAKE_S = 1.0
# Leaving the session: drained once subscribed no more, all handled and acknowledged, and nothing has
# come for this long. The broker sends what it queued as fast as our acknowledgements allow, so a
# pause this long means the queue is empty; a broker busy saving a deep queue pauses < 1 s.
LEAVE_QUIET_S = 2.0


@dataclass
class BridgeStats:
    received: int = 0
    valid: int = 0
    rejected: int = 0
    envelopes: int = 0
    acked: int = 0
    urgent: int = 0  # readings sent at once (a gauge at or above its first alarm level)
    retired: bool = False  # the session was drained and ended (retiring only)
    by_reason: Counter[str] = field(default_factory=Counter)


def topic_sensor_id(topic: str) -> str | None:
    """The sensor id a readings topic names, or None when the topic is not one (validation says why).

    >>> topic_sensor_id("khanhhoa/v1/rain/R1"), topic_sensor_id("khanhhoa/v1/rain/R1/x")
    ('R1', None)
    """
    try:
        return parse_topic(topic)[1]
    except PayloadRejected:
        return None


class Bridge:
    """Owns validation, batching and the Kafka producer; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        sensors: dict[str, SensorInfo],
        *,
        on_unknown_sensor: Callable[[str, str], None] | None = None,
        reload_sensors: Callable[[], dict[str, SensorInfo] | None] | None = None,
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
        self.drops = BrokerDrops()
        # on this loop's thread: no hand-over between threads
        self.mqtt = MqttLoop(settings, self.handle, on_broker_stat=self._broker_stat)
        self.broker_metrics = StageStats("mqtt_broker", worker=f"{self.mqtt.target.host}:{self.mqtt.target.port}")
        self.producer: AIOKafkaProducer | None = None
        assert settings.kafka_url is not None
        self.layout = self.topics.layout_for(settings)
        self.keeper = TopicKeeper(settings.kafka_url, self.layout)
        self._ready: asyncio.Queue[Batch[Reading, AckToken]] = asyncio.Queue()
        # One lane per partition: a partition has at most one envelope in flight (its order), and
        # never waits for another partition's acknowledgement.
        self._lanes: dict[int, collections.deque[Batch[Reading, AckToken]]] = {}
        self._lane_tasks: dict[int, asyncio.Task[None]] = {}
        # The ticker sleeps while nothing is open; the next message wakes it (see ``_ticker``).
        self._wake = asyncio.Event()
        self._idle = False

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
        if self._idle:
            self._idle = False
            self._wake.set()
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
        info = self.sensors.get(reading.sensor_id)
        if info is None:
            info = self.sensors[reading.sensor_id] = SensorInfo(reading.kind)
            if self.on_unknown_sensor is not None:
                self._register_pool.submit(self._register, reading.sensor_id, reading.kind)
        self.stats.valid += 1
        part = partition_for(reading.sensor_id, self.settings.kafka_partitions)
        urgent = info.is_urgent(reading)
        if urgent:
            self.stats.urgent += 1
        for batch in self.batcher.add(part, reading, token, urgent):
            self._ready.put_nowait(batch)

    def _broker_stat(self, topic: str, payload: bytes) -> None:
        """The broker's dropped-message counter: a rise is readings lost before they reached us."""
        if topic != SYS_DROPPED:
            return
        first = self.drops.last is None
        rise = self.drops.observe(payload)
        broker = mask_url(self.settings.mqtt_url or "")
        if first and self.drops.at_start:
            log.warning("MQTT broker %s has dropped %d messages since it started (before this bridge looked): "
                        "a subscriber, this bridge's session perhaps, was more than max_queued_messages behind",
                        broker, self.drops.at_start)
        elif rise:
            log.error("MQTT broker %s dropped %d messages (%d seen by this bridge): a subscriber was more than "
                      "max_queued_messages behind. If it is the bridges, readings were lost before Kafka: add "
                      "bridges (shared subscription) or raise max_queued_messages", broker, rise, self.drops.dropped)

    # -- Kafka side
    async def _send(self, topic: str, value: bytes, partition: int | None, what: str) -> None:
        """Send until Kafka acks; transient errors back off and retry, never drop."""
        assert self.producer is not None
        retry = SendRetry(base_s=0.1, cap_s=10.0)
        while True:
            try:
                await self.producer.send_and_wait(topic, value, partition=partition)
                return
            except KafkaError as e:
                delay = retry.delay(e)
                log.warning("Kafka send of %s failed (%s); retrying in %.2f s", what, e, delay)
                await self.keeper.check()
                await asyncio.sleep(delay)

    async def _flush_batch(self, batch: Batch[Reading, AckToken]) -> None:
        # Called only by the partition's lane, one envelope at a time: in order.
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
        """Hands ready envelopes to their partition's lane. Lanes send on their own: an envelope whose
        partition has nothing in flight goes at once (an early warning does not wait for the other
        partitions' acknowledgements), and aiokafka still puts what the lanes send within its linger
        into one produce request per broker."""
        while True:
            batch = await self._ready.get()
            lane = self._lanes.setdefault(batch.partition, collections.deque())
            lane.append(batch)
            if batch.partition not in self._lane_tasks:
                self._lane_tasks[batch.partition] = asyncio.create_task(
                    self._drain_lane(batch.partition), name=f"bridge lane {batch.partition}")

    async def _drain_lane(self, partition: int) -> None:
        """Sends a partition's envelopes one at a time; batches that queued up behind an envelope in
        flight go together in the next one (up to 4 envelopes' worth)."""
        lane = self._lanes[partition]
        cap = 4 * self.settings.envelope_max_readings
        while lane:
            await self._flush_batch(take_merged(lane, cap))
        del self._lane_tasks[partition]  # no await since the lane was seen empty: the sender starts the next

    def _holding(self) -> bool:
        return bool(self.batcher.pending or self.excess.pending or self.dead)

    async def _ticker(self) -> None:
        """Flushes batches that are old enough, every ``tick`` while any is open. With nothing open
        it sleeps until the next message (or a second passes): ticking 100 times a second cost an
        idle bridge more CPU than everything else it does at city rates."""
        tick = min(0.01, self.batcher.max_age_s / 2)
        last_evict = time.monotonic()
        while True:
            if self._holding():
                await asyncio.sleep(tick)
            else:
                self._wake.clear()
                self._idle = True
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_WAKE_S)
                except TimeoutError:
                    pass
                self._idle = False
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
            if fresh is not None:  # None: unchanged since the last load
                self.apply_registry(fresh)

    def apply_registry(self, fresh: dict[str, SensorInfo]) -> None:
        """The registry as loaded: new and changed sensors are taken, and retired or deleted ones are
        dropped, so their readings are refused as unknown again (or registered again when
        auto-registration is on) instead of being accepted for as long as the bridge runs."""
        for gone in self.sensors.keys() - fresh.keys():
            del self.sensors[gone]
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
                "envelopes": st.envelopes, "acked": st.acked, "urgent": st.urgent,
                **{f"rejected_{k}": v for k, v in st.by_reason.items()},
            }
            self.metrics.counters["pending"] = self.batcher.pending  # gauge, not a counter
            rows = self.metrics.rows()
            if self.drops.last is not None:  # the broker's figure: every bridge writes it, the board averages
                self.broker_metrics.counters["dropped"] = self.drops.dropped
                rows += self.broker_metrics.rows()
            try:
                await asyncio.to_thread(self.write_metrics, rows)
            except Exception as e:  # noqa: BLE001 - metrics must never stop the bridge
                log.warning("writing bridge metrics failed: %s", e)

    async def _check_partitions(self) -> None:
        """The bridge picks each reading's partition from ``IOC_KAFKA_PARTITIONS``. A readings topic made
        with another count (the setting changed after the topic was created) would get sends to
        partitions it does not have, or sensors moved to other partitions, and so to other workers,
        mid-stream: refuse to start, naming both counts."""
        assert self.producer is not None
        have = len(await self.producer.partitions_for(self.topics.readings))
        want = self.settings.kafka_partitions
        if have != want:
            raise ConfigError(f"topic {self.topics.readings} has {have} partitions but IOC_KAFKA_PARTITIONS is"
                              f" {want}: set it to {have}, or use a new IOC_TOPIC_PREFIX for {want} partitions")

    def _check(self, tasks: list[asyncio.Task[None]]) -> None:
        if self.mqtt.fatal:
            raise CredentialsRefused(self.mqtt.fatal)
        if self.mqtt.leave_failed:
            raise IocError(self.mqtt.leave_failed)
        for t in [*tasks, *self._lane_tasks.values()]:  # a dead task would stall silently: fail loudly
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise IocError(f"bridge task {t.get_name()} died") from t.exception()

    def _busy(self) -> bool:
        return bool(self._holding() or not self._ready.empty() or self._lane_tasks)

    async def _leave_session(self, tasks: list[asyncio.Task[None]]) -> bool:
        """Leave the subscription and forward everything the session still holds.

        Ending the session with messages still queued in it would lose them, so this returns True
        only once it is drained (see ``LEAVE_QUIET_S``); False after ``bridge_retire_drain_s``.
        """
        self.mqtt.leave()
        limit_s = self.settings.bridge_retire_drain_s
        deadline = time.monotonic() + limit_s
        seen, quiet_since = -1, time.monotonic()
        while (now := time.monotonic()) < deadline:
            self._check(tasks)
            if not (self.mqtt.connected.is_set() and self.mqtt.left.is_set()) or self.mqtt.received != seen \
                    or self._busy():
                seen, quiet_since = self.mqtt.received, now
            elif now - quiet_since >= LEAVE_QUIET_S:
                log.info("bridge %s: session drained (%d messages received)", self.settings.bridge_id, seen)
                return True
            await asyncio.sleep(0.1)
        log.error("bridge %s: the session was not drained within IOC_BRIDGE_RETIRE_DRAIN_S=%g s (%d messages"
                  " forwarded); it is kept, so nothing queued in it is lost: run `ioc bridge --retire` with"
                  " IOC_BRIDGE_ID=%s again", self.settings.bridge_id, limit_s, self.mqtt.received,
                  self.settings.bridge_id)
        return False

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None, *,
                  retire_now: bool = False) -> BridgeStats:
        """Forward until ``stop``; with ``retire_now``, only drain this bridge's session and end it
        (a bridge gone for good: its session still holds its share of the readings)."""
        assert self.settings.kafka_url is not None
        await ensure_topics(self.settings.kafka_url, self.layout)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(self.settings.kafka_url),
            acks="all",
            linger_ms=2,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=15000,
        )
        await self.producer.start()
        try:
            await self._check_partitions()
        except BaseException:
            await self.producer.stop()
            raise
        mqtt_task = asyncio.create_task(self.mqtt.run(), name="mqtt")
        tasks = [mqtt_task, *(asyncio.create_task(c) for c in (
            self._sender(), self._ticker(), self._registry_refresher(), self._metrics_writer()
        ))]
        retiring = retire_now or self.settings.bridge_retire_on_exit
        retire = False  # end the session: only after a clean, complete drain
        try:
            while not stop.is_set() and not retire_now:
                self._check(tasks)
                if ready is not None and self.mqtt.subscribed.is_set():
                    ready.set()
                try:
                    await asyncio.wait_for(stop.wait(), 0.2)
                except TimeoutError:
                    pass
            # graceful: flush what we hold, then stop
            drained = await self._leave_session(tasks) if retiring else False
            for batch in self.batcher.drain():
                self._ready.put_nowait(batch)
            self.dead.extend(self.excess.drain())
            deadline = time.monotonic() + 10
            while self._busy() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            retire = drained and not self._busy()
        finally:
            for t in [*tasks, *self._lane_tasks.values()]:
                if t is not mqtt_task:
                    t.cancel()
            self.stats.retired = await self.mqtt.stop(retire=retire)
            mqtt_task.cancel()
            await self.producer.stop()
            self._register_pool.shutdown(wait=False)
        return self.stats
