"""The detector stage of the worker: stored envelopes through the detectors, findings out, checkpoints.

Detector state is checkpointed, not written per envelope: every ``detector_checkpoint_s`` a
partition's changed sensors go to the table with the next offset they cover. A worker that takes
a partition over (after a crash or a rebalance) replays the readings after the checkpoint through
the detectors, silently: their findings went out before those offsets were committed. Writing
~10 KB per sensor per envelope cost more than the detectors.

Silence is judged in event time (:class:`streams.event_clock.EventClock`), so a replay is judged
as the live stream was. The stage knows nothing of Faust: it gets the table, a ``send`` for the
findings topic and readers for re-reading partitions, so a unit test can drive it with a dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka.errors import KafkaError

from ioc.models import Finding, FindingBatch
from ioc.settings import Settings
from ioc.storage.offset_ledger import Position
from ioc.storage.sensors_store import SensorEntry
from ioc.wire import Reading, decode_envelope
from streams.detection import DetectorBank, decode_state
from streams.event_clock import EventClock
from streams.faust_compat import as_current_event
from streams.kafka_retry import SendRetry
from streams.long_lived_heap import LongLivedHeap
from streams.offset_guard import OffsetGuard
from streams.pipeline_stats import StageStats
from streams.topics import partition_for

log = logging.getLogger(__name__)
_enc = msgspec.json.Encoder()
CHECKPOINT = "__offset__:"  # table key of a partition's detector checkpoint (never a sensor id)
#: Findings per Kafka record: an envelope after a network outage can find thousands of sensors silent
#: at once, and one record of them all outgrew Kafka's 1 MB request limit (the worker crashed).
FINDINGS_PER_RECORD = 500
SPARSE_READINGS = 3  # readings per touched sensor before a checkpoint (see DetectorStage.checkpoint)
SPARSE_WAIT = 15  # ... or this many checkpoint intervals, whichever comes first
#: Sensor states a call of :meth:`DetectorStage.run` may write towards a checkpoint under way: this
#: many, or one per reading it ran if more, and never more than the room left in Faust's producer
#: buffer (in the worker at most 100, so checkpoints move at the pace Faust produces the writes).
FLUSH_SLICE = 128
#: Sends one findings batch to a partition of the findings topic; returns the broker's ack future.
Send = Callable[..., Awaitable[Any]]
#: A stored envelope for :meth:`DetectorStage.run`: where it came from, its readings, and the event
#: whose changelog partition the checkpoint goes to (None keeps the current one).
Stored = tuple[Position, list[Reading], Any]
#: Findings with the partition and offset of the record that made them (None, None: the silence timer's).
Sourced = tuple[int | None, int | None, list[Finding]]
#: Applies findings as alerts; see :class:`streams.agents_alerts.AlertApplier`.
ApplyAlerts = Callable[[list[Sourced]], Awaitable[None]]


class DetectorStage:
    """Per-partition detector context of one worker; see the module docstring."""

    def __init__(self, settings: Settings, table: MutableMapping[str, Any], send: Send, stats: StageStats,
                 topic: str, rereader: OffsetGuard | None = None, sent_reader: OffsetGuard | None = None,
                 owned: Callable[[], Mapping[int, bool] | None] | None = None,
                 topics_again: Callable[[], Awaitable[None]] | None = None,
                 apply_alerts: ApplyAlerts | None = None,
                 changelog_room: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.table = table
        self.send = send
        self.stats = stats
        self.topic = topic
        self.rereader = rereader  # reads a partition's readings again for a takeover's replay
        self.sent_reader = sent_reader  # reads the findings topic back: what was already sent
        #: This worker's partitions, each with whether Kafka holds nothing more for it (None: unknown).
        self.owned = owned
        #: Creates lost topics again (a broker that lost its log) before a failed send is retried.
        self.topics_again = topics_again
        #: Turns findings into alerts before they are sent to the findings topic: an envelope whose
        #: findings the topic has is thereby one whose alerts were applied (see :meth:`run`).
        self.apply_alerts = apply_alerts
        #: How many more table writes the changelog's producer buffer takes before Faust stops the
        #: stream to drain it (None: no limit). See :meth:`run`.
        self.changelog_room = changelog_room
        self.bank: DetectorBank | None = None
        self.clock = EventClock()
        self.worker_started = datetime.now(UTC)
        self.tick_s = settings.silence_check_s
        self.ticked: dict[int, float] = {}  # partition -> last silence tick (event time) checked in-stream
        self.busy_at: dict[int, float] = {}  # partition -> wall time of its latest envelope
        self.findings_sent_upto: dict[int, int] = {}  # envelopes below this already sent their findings
        self.caught_up: set[int] = set()
        self.seen_upto: dict[str, int] = {}  # sensor -> first offset its restored state has not seen
        self.flushed_at: dict[int, float] = {}
        self.touched: dict[int, set[str]] = defaultdict(set)  # partition -> sensors read since its checkpoint
        self.readings_since: dict[int, int] = defaultdict(int)  # partition -> readings since its checkpoint
        #: partition -> (the offset its checkpoint under way will name, the sensors still to write)
        self.flushing: dict[int, tuple[int, set[str]]] = {}
        self.heap = LongLivedHeap()
        self._part_of: dict[str, int] = {}
        self._index_key: tuple[int, int] | None = None
        self._index: dict[int, list[str]] = {}
        self._indexed: set[str] = set()
        self._unsorted: set[int] = set()  # partitions whose index list has unsorted joiners at its end
        self._index_built = 0  # the bank's ``built`` when the index last took its ``joined``
        self.checkpoint_keys_added = 0  # table keys the checkpoints created (not sensors)

    def start(self, sensors: dict[str, SensorEntry]) -> None:
        if self.bank is None:
            self.bank = DetectorBank(sensors, defer_writes=True)
            self.heap.freeze()  # the registry, Faust and the imports: all of it lives as long as the worker

    def part(self, sensor_id: str) -> int:
        got = self._part_of.get(sensor_id)
        if got is None:
            got = self._part_of[sensor_id] = partition_for(sensor_id, self.settings.kafka_partitions)
        return got

    def _sensor_keys(self) -> set[str]:
        """Sensors in the table, and those live here and not yet checkpointed."""
        keys = {k for k in self.table.keys() if not k.startswith(CHECKPOINT)}
        return keys | self.bank.live_sensors() if self.bank is not None else keys

    def partition_sensors(self, partition: int) -> list[str]:
        """The partition's sensors (in the table or live here), sorted.

        Indexed: each partition's silence tick asks for it, and a scan of every sensor for each
        cost as much as the tick itself (20-35 ms at 10,000 sensors). Sensors the bank builds join
        the index after each envelope (:meth:`_take_joined`); it is rebuilt only when the bank drops
        a live sensor, or the table's size moves by keys neither the bank nor the checkpoints
        created (a changelog restored, a standby's updates). Rebuilt at every change, as it was, a
        city's first readings cost a rebuild per partition per tick, and the first of them hashed
        every sensor: 190 ms at 70,000 sensors.
        """
        b = self.bank
        key = (len(self.table) - self.checkpoint_keys_added - (b.keys_added if b is not None else 0),
               b.left if b is not None else -1)
        if key != self._index_key or b is None or b.built - self._index_built != len(b.joined):
            index: dict[int, list[str]] = defaultdict(list)
            keys = sorted(self._sensor_keys())
            for k in keys:
                index[self.part(k)].append(k)
            self._index, self._index_key, self._indexed = dict(index), key, set(keys)
            self._unsorted.clear()
            if b is not None:
                b.joined.clear()
                self._index_built = b.built
        else:
            self._take_joined()
        if partition in self._unsorted:
            self._unsorted.discard(partition)
            self._index[partition].sort()  # sorted runs plus a tail: linear
        return list(self._index.get(partition, ()))

    def _take_joined(self) -> None:
        """Add the sensors the bank built since the last call to the index (their partition hashed
        now, spread over the envelopes, not all at the next tick). Past the bank's cap, the index
        is marked for a rebuild instead."""
        b = self.bank
        if b is None:
            return
        if b.built - self._index_built != len(b.joined):
            self._index_key = None
        else:
            for sid in b.joined:
                if sid not in self._indexed:
                    self._indexed.add(sid)
                    p = self.part(sid)
                    self._index.setdefault(p, []).append(sid)
                    self._unsorted.add(p)
        b.joined.clear()
        self._index_built = b.built

    def observe(self, partition: int, readings: Iterable[Reading], committed: datetime) -> None:
        """An envelope of ``partition`` was stored at ``committed``: it moves that partition's event clock."""
        self.clock.observe(partition, [r.ts for r in readings], committed)
        self.busy_at[partition] = committed.timestamp()

    def detect(self, readings: list[Reading], partition: int) -> list[Finding]:
        """The detectors over an envelope, with the silence timer run in event time between readings:
        every tick the partition's readings step over is checked before the reading after it."""
        assert self.bank is not None
        b, tick_s = self.bank, self.tick_s
        out: list[Finding] = []
        start = 0
        for i, r in enumerate(readings):
            upto = math.ceil(r.ts.timestamp() / tick_s) * tick_s - tick_s  # the last tick before this reading
            if upto > self.ticked.get(partition, -math.inf):
                out += b.process(readings[start:i], self.table)
                start = i
                self.ticked[partition] = upto
                out += b.silence_ticks(self.partition_sensors(partition), self.table,
                                       datetime.fromtimestamp(upto, UTC), tick_s, self.clock.started)
        out += b.process(readings[start:], self.table)
        if b.joined:
            self._take_joined()
        return out

    def unseen(self, readings: list[Reading], offset: int) -> list[Reading]:
        """The readings of an envelope whose sensors' restored state does not already hold it."""
        if not self.seen_upto:
            return readings
        return [r for r in readings if self.seen_upto.get(r.sensor_id, -1) <= offset]

    async def catch_up(self, partition: int, offset: int) -> None:
        """Restore the partition's detectors from the table, then replay what they have not seen.

        Each sensor's state records the first offset it has not seen (``upto``); a flush cut short
        by a crash leaves sensors at different offsets, so the replay starts at the oldest and
        feeds each envelope only to the sensors that have not seen it yet.
        """
        assert self.bank is not None
        sensors = self.partition_sensors(partition)
        for sid in sensors:
            self.bank.forget(sid)  # reload from the table: the checkpoint, maybe another worker's
        self.flushing.pop(partition, None)  # its sensors are reloaded: a checkpoint starts afresh
        raw = self.table.get(f"{CHECKPOINT}{partition}")
        ckpt = int(raw) if raw else None
        self.caught_up.add(partition)
        for sid in sensors:
            st = decode_state(self.table.get(sid))
            if st is not None and isinstance(st.get("upto"), int):
                self.seen_upto[sid] = st["upto"]
            else:
                self.seen_upto.pop(sid, None)
        self.findings_sent_upto[partition] = await self.last_findings_source(partition) + 1
        if ckpt is None or self.rereader is None:
            return  # never checkpointed: a fresh partition, or state written before checkpoints
        start = min([ckpt, *(self.seen_upto[sid] for sid in sensors if sid in self.seen_upto)])
        if start >= offset:
            return
        replayed = 0
        async for off, value in self.rereader.read_range(partition, start, offset):
            try:
                env = decode_envelope(value)
            except (msgspec.DecodeError, TypeError):
                continue  # stored as poison when it came; nothing for the detectors
            todo = self.unseen(env.readings, off)
            self.detect(todo, partition)  # findings discarded: sent before these offsets were committed
            replayed += len(todo)
        self.stats.add("detector_replayed_readings", replayed)
        log.info("%s[%s]: detector state restored (checkpoint %s, oldest sensor %s); %s readings up to %s replayed",
                 self.topic, partition, ckpt, start, replayed, offset)

    async def last_findings_source(self, partition: int, look_back: int = 64) -> int:
        """The newest readings offset whose findings reached ``ioc.findings`` (-1 if none): envelopes
        up to it that come again after a crash are run through the detectors silently."""
        if self.sent_reader is None:
            return -1
        end = await self.sent_reader.end_offset(partition)
        newest = -1
        floor = max(0, end - 16 * look_back)  # only silence batches that far back: nothing recent to match
        while end > floor and newest < 0:
            start = max(floor, end - look_back)
            async for _off, value in self.sent_reader.read_range(partition, start, end):
                try:
                    src = msgspec.json.decode(value, type=FindingBatch).source_offset
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if src is not None:
                    newest = max(newest, src)
            end = start
        return newest

    def revoked(self, partitions: Iterable[int]) -> None:
        """Partitions taken away: if they come back, their state is restored from the table again."""
        for p in partitions:
            self.caught_up.discard(p)
            self.flushing.pop(p, None)

    def topic_recreated(self, partition: int) -> None:
        """The broker lost the partition and it starts again at offset 0: offsets recorded against the
        old log (each sensor's ``upto``, what the findings topic had sent) would silence the new one.
        The detectors keep their live state: they saw those readings, and the new log continues them."""
        for sid in self.partition_sensors(partition):
            self.seen_upto.pop(sid, None)
        self.findings_sent_upto[partition] = 0
        self.caught_up.add(partition)
        self.flushing.pop(partition, None)  # its offsets were the old log's
        self.flushed_at.pop(partition, None)  # checkpoint at the next envelope, against the new offsets

    def checkpoint(self, partition: int, next_offset: int, now: float, budget: int) -> int:
        """Every ``detector_checkpoint_s``, once the partition's readings since the last checkpoint are
        at least ``SPARSE_READINGS`` per sensor they touched (or ``SPARSE_WAIT`` intervals passed).

        At a sparse cadence (10,000 sensors each reporting every 10 s) nearly every reading since a
        checkpoint is a sensor of its own, so a checkpoint every interval costs one state write per
        reading, and those writes bounded the rate (4,000/s fell behind; with a 30 s interval it held
        at 0.33 instead of 0.56 CPU-s per 1k readings). Waiting for a few readings per sensor bounds
        both the writes per reading and a takeover's replay (a few readings per sensor).

        A checkpoint is written over several calls, at most ``budget`` sensor states each (returns
        the budget left): all 1,250 sensors of a partition at once held the event loop for 250 ms.
        Each state names the first offset it has not seen, so sensors written at different offsets
        replay correctly, and the partition's key, written when the last of them is, names the
        offset the checkpoint started at, which every sensor dirty then has reached.
        """
        assert self.bank is not None
        pending = self.flushing.get(partition)
        if pending is None:
            every = self.settings.detector_checkpoint_s
            since = now - self.flushed_at.get(partition, 0.0)
            if since < every:
                return budget
            touched = self.touched.get(partition, set())
            if every > 0 and since < SPARSE_WAIT * every and self.readings_since.get(partition, 0) < SPARSE_READINGS * len(touched):
                return budget
            self.touched.pop(partition, None)
            self.readings_since.pop(partition, None)
            self.flushed_at[partition] = now
            pending = self.flushing[partition] = (next_offset, {sid for sid in self.bank.dirty if self.part(sid) == partition})
        mark, todo = pending
        take = [todo.pop() for _ in range(min(budget, len(todo)))]
        self.bank.flush(take, self.table, next_offset)
        if not todo:
            # written last: if a crash cuts the checkpoint short, the key still names an offset every
            # sensor's state had reached, and each sensor's own `upto` says where it stands
            ckpt_key = f"{CHECKPOINT}{partition}"
            if ckpt_key not in self.table:
                self.checkpoint_keys_added += 1
            self.table[ckpt_key] = str(mark).encode()
            del self.flushing[partition]
            self.stats.add("detector_checkpoints")
        return budget - len(take)

    def _safe_checkpoint(self, partition: int, next_offset: int, now: float, budget: int) -> int:
        try:
            return self.checkpoint(partition, next_offset, now, budget)
        except Exception:
            log.exception("detector checkpoint failed on %s[%s]", self.topic, partition)
            self.stats.add("detector_errors")
            self.flushing.pop(partition, None)
            return budget

    async def detect_envelope(self, readings: list[Reading], at: Position) -> list[Finding]:
        """The findings of one stored envelope; a detector bug is logged, never stops storage."""
        try:
            if at.partition not in self.caught_up:
                await self.catch_up(at.partition, at.offset)
            # A redelivery after a crash: sensors whose restored state already holds it are skipped,
            # and an envelope whose findings were already sent runs silently.
            findings = self.detect(self.unseen(readings, at.offset), at.partition)
            return [] if at.offset < self.findings_sent_upto.get(at.partition, -1) else findings
        except Exception:
            log.exception("detectors failed on %s[%s]@%s", self.topic, at.partition, at.offset)
            self.stats.add("detector_errors")
            return []

    async def _send(self, batch: FindingBatch, partition: int) -> Any:
        """Send now; the caller awaits the broker's acknowledgement before the envelope is acked or
        checkpointed. Faust would otherwise attach the send to the next offset commit (up to a second
        later on the alert path), and a checkpoint could get ahead of findings that never left."""
        fut = await self.send(value=_enc.encode(batch), partition=partition, force=True)
        self.stats.add("findings", len(batch.findings))
        return fut

    async def _acked(self, fut: Any, batch: FindingBatch, partition: int) -> None:
        """Wait for the broker's ack; a failed send is sent again (never dropped, never a crash of the
        worker), after the lost topics are created again if the broker came back without them."""
        retry = SendRetry(base_s=0.2, cap_s=5.0)
        while True:
            try:
                await fut
                return
            except KafkaError as e:
                delay = retry.delay(e)
                log.warning("sending %s finding(s) of %s[%s] to the findings topic failed (%s); again in %.1f s",
                            len(batch.findings), self.topic, partition, e, delay)
                self.stats.add("findings_send_retries")
                if self.topics_again is not None:
                    await self.topics_again()
                await asyncio.sleep(delay)
                fut = await self.send(value=_enc.encode(batch), partition=partition, force=True)

    async def run(self, items: list[Stored], committed: datetime) -> None:
        """The detectors over stored envelopes in partition order. Their findings become alerts (one
        transaction, claimed per envelope), then go to the findings topic, acknowledged by Kafka
        before any partition is checkpointed and before the caller acks the envelopes.

        Alerts first: a crash in between leaves findings the topic lacks, so the redelivered envelope
        is detected aloud again; its alerts are skipped by their claim and the topic gets the batch.
        The other order would leave a sent batch whose alerts never came (the redelivery runs silent).
        """
        if not self.settings.detectors_enabled or self.bank is None:
            return
        found: list[tuple[Position, list[Finding]]] = []
        for at, rs, _ in items:
            self.touched[at.partition].update(r.sensor_id for r in rs)
            self.readings_since[at.partition] += len(rs)
            findings = await self.detect_envelope(rs, at)
            if findings:
                found.append((at, findings))
            await asyncio.sleep(0)  # a large group is CPU work: let the dispatcher deliver meanwhile
        if found and self.apply_alerts is not None:
            await self.apply_alerts([(at.partition, at.offset, f) for at, f in found])
        sent = []
        for at, findings in found:
            for i in range(0, len(findings), FINDINGS_PER_RECORD):
                batch = FindingBatch(1, findings[i:i + FINDINGS_PER_RECORD], at.offset)
                sent.append((await self._send(batch, at.partition), batch, at.partition))
        for fut, batch, partition in sent:
            await self._acked(fut, batch, partition)
        last = {at.partition: (at.offset, ev) for at, _, ev in items}
        budget = max(FLUSH_SLICE, sum(len(rs) for _, rs, _ in items))
        if self.changelog_room is not None:
            # Faust holds the stream while more than 100 table writes wait to be produced: a whole
            # checkpoint of 10,000 sensors at once stopped every partition's intake for 1-2 s. The
            # slice is kept to the room left, the writes drain while the next group is stored, and
            # the checkpoint goes on at the next call.
            budget = min(budget, max(0, self.changelog_room()))
        for partition, (offset, ev) in last.items():
            with as_current_event(ev) if ev is not None else contextlib.nullcontext():
                budget = self._safe_checkpoint(partition, offset + 1, committed.timestamp(), budget)
        self.heap.note(self.bank.built)

    def update_registry(self, sensors: dict[str, SensorEntry]) -> None:
        if self.bank is not None:
            self.bank.update_registry(sensors)

    async def silence_timer(self) -> None:
        """Absence is a timer: for partitions that receive nothing at all (the in-stream ticks of
        :meth:`detect` cover the others, in event time), on the event clock."""
        if self.bank is None:
            return
        wall = datetime.now(UTC)
        owned = self.owned() if self.owned is not None else None
        idle: dict[int, list[str]] = defaultdict(list)
        for k in self._sensor_keys():
            part = self.part(k)
            if owned is not None and part not in owned:
                continue  # another worker's partition (its state may sit here as a standby): its owner judges it
            if wall.timestamp() - self.busy_at.get(part, 0.0) > 2 * self.tick_s:
                idle[part].append(k)
        found: list[Finding] = []
        try:
            for partition, keys in idle.items():
                if self.clock.observed(partition):
                    found += self.bank.check_silence(keys, self.table, self.clock.now(partition, wall),
                                                     self.clock.started)
                elif owned is None or owned[partition]:
                    # Nothing from it since this worker started, and Kafka holds nothing more for it: its
                    # clock is unknown, so give it the grace of k intervals from the start. A partition
                    # whose backlog is still waiting (a restart, a rebalance) is not judged before that
                    # backlog is read: its sensors spoke, the worker has not heard them yet.
                    found += self.bank.check_silence(keys, self.table, wall, self.worker_started)
        except Exception:  # a detector bug must not stop the timer
            log.exception("silence check failed")
            return
        if found and self.apply_alerts is not None:
            await self.apply_alerts([(None, None, [f]) for f in found])
        for f in found:
            batch = FindingBatch(1, [f])
            await self._acked(await self._send(batch, self.part(f.sensor_id)), batch, self.part(f.sensor_id))
