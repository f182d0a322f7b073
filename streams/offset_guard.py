"""Turns the offset ledger's verdict into action: apply skipped records first, report real loss.

The writers claim each Kafka record's offset in their own transaction
(``ioc/storage/offset_ledger.py``). When a record arrives *ahead* of the next offset its
partition still needs, the records in between were skipped on the way (issue 7; see
``streams/faust_compat.py``). Seeking Faust back does not work reliably (records that are
already in flight move its read offset forward again and it drops the refetch), so the guard
reads the missing range straight from the partition with a small consumer of its own, the
agent applies those records in order, and only then the one in hand. Faust is told the range
is done, so its commits move on. If the broker no longer has some of the records (retention)
the partition jumps, and that loss is logged as an error and counted in ``pipeline_metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from ioc.retry import Backoff
from ioc.storage.offset_ledger import (
    Claim,
    ClaimResult,
    Position,
    first_record,
    forget_partition,
    next_offsets,
    record_digest,
)
from streams.db_worker import DbWorker
from streams.faust_compat import commit_lost_range
from streams.pipeline_stats import StageStats
from streams.topics import bootstrap_servers

log = logging.getLogger(__name__)

#: Apply one record's value at its position; ``allow_jump`` only for the first record after a loss.
Apply = Callable[[bytes, Position, bool], Awaitable[ClaimResult]]


class OffsetGuard:
    """One per agent and topic; ``read_timeout_s``: longest wait for the next record of a missing range."""

    def __init__(self, app: Any, kafka_url: str, group: str, topic: str, db: DbWorker, stats: StageStats, *,
                 read_timeout_s: float = 30.0) -> None:
        self.app = app
        self.kafka_url = kafka_url
        self.topic = topic
        self.stream = f"{group}:{topic}"  # the ledger's key for this consumer group and topic
        self.db = db
        self.stats = stats
        self.read_timeout_s = read_timeout_s
        self._reader: AIOKafkaConsumer | None = None
        self._busy = 0
        self._stalled: dict[Any, tuple[int, int]] = {}  # tp -> (ledger next offset, ticks without progress)
        #: Told the partition when its topic turns out re-created, before its offset 0 is applied again.
        self.on_recreated: Callable[[int], None] | None = None
        #: Partitions whose log must be checked against the ledger before their next record is applied.
        self._unsure: set[int] = set()
        app.on_before_shutdown.connect(self._on_shutdown)
        app.on_partitions_assigned.connect(self._on_assigned)
        stats.add("offset_gaps_filled", 0)
        stats.add("offsets_lost", 0)  # always present, so a dashboard and a test can assert zero

    async def _on_assigned(self, _sender: Any, assigned: Any = (), **_: Any) -> None:
        self.doubt(tp.partition for tp in assigned or () if tp.topic == self.topic)

    def doubt(self, partitions: Iterable[int]) -> None:
        """These partitions may have a new log (an assignment, topics found missing): check before applying."""
        self._unsure.update(partitions)

    async def of_current_log(self, event: Any) -> bool:
        """Whether the record belongs to the partition's current log; False: do not apply it.

        After a broker lost its log, neither the consumer's position nor Faust's read offset says
        which log a record comes from: Faust can commit an old log's offset into the new one, keep a
        read offset past its start (dropping the first records unseen), or deliver records it
        fetched before the crash. The first record applied after an assignment therefore compares
        the broker's offset-0 record with the one the ledger started from; a replaced log resets the
        ledger (the records before the one in hand are then read back from 0). A record in hand that
        the broker's log does not hold at its offset belongs to the lost log and is not applied
        (each following record of that partition is checked too, until one is the broker's).
        """
        at = self.position(event)
        if at.partition not in self._unsure:
            return True
        backoff = Backoff(base_s=0.5, cap_s=10.0)
        while True:
            try:
                bounds = await self._bounds(at.partition)
                if await self._log_replaced(at.partition, bounds):
                    log.error("%s[%s]: the broker's log is not the one this partition's ledger applied (a broker"
                              " that lost its log); the ledger starts this partition afresh", self.topic, at.partition)
                    await self._forget(at)
                current = await self._record_at(at.partition, at.offset, bounds) == bytes(event.value or b"")
                break
            except Exception as e:  # noqa: BLE001 - a broker hiccup: never apply unchecked, retry
                log.warning("%s[%s]: checking the broker's log failed (%s); retrying", self.topic, at.partition, e)
                await self.close()
                await asyncio.sleep(backoff.next())
        if not current:
            self.stats.add("records_of_lost_log")
            log.error("%s[%s]@%s is not on the broker's log at that offset: a record of a log the broker lost,"
                      " not applied", self.topic, at.partition, at.offset)
            return False
        self._unsure.discard(at.partition)
        return True

    async def _bounds(self, partition: int) -> tuple[int, int]:
        """The partition's log start and end (the next offset the broker will write)."""
        reader = await self._open()
        tp = TopicPartition(self.topic, partition)
        return int((await reader.beginning_offsets([tp]))[tp]), int((await reader.end_offsets([tp]))[tp])

    async def _log_replaced(self, partition: int, bounds: tuple[int, int]) -> bool:
        """The ledger started from an offset-0 record the broker's log does not have at 0."""
        known = await self.db.run(partial(first_record, stream=self.stream, partition=partition),
                                  "read the ledger's first record")
        if known is None:  # nothing applied yet, or a ledger older than the digest
            return False
        if bounds[0] > 0:  # retention moved the log's start: the same log, nothing to compare
            return False
        first = await self._record_at(partition, 0, bounds)
        return first is None or record_digest(first) != known

    async def _record_at(self, partition: int, offset: int, bounds: tuple[int, int]) -> bytes | None:
        """The broker's record at this offset, None if its log (``bounds``) does not hold that offset."""
        start, end = bounds
        if not start <= offset < end:
            return None
        async with contextlib.aclosing(self._read(partition, offset, offset + 1)) as records:
            async for at, value in records:
                return value if at == offset else None
        return None

    async def _forget(self, at: Position) -> None:
        self.stats.add("topics_recreated")
        await self.db.run(partial(forget_partition, stream=at.stream, partition=at.partition), "reset ledger")
        if self.on_recreated is not None:
            self.on_recreated(at.partition)

    def position(self, event: Any) -> Position:
        msg = event.message
        return Position.of(self.stream, int(msg.partition), int(msg.offset), event.value)

    async def apply_in_order(self, event: Any, apply: Apply) -> ClaimResult:
        """Apply the event's record; if earlier ones were never applied, apply those first."""
        with self.in_flight():
            return await self._apply_in_order(event, apply)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Records are being applied: the tail check must not seek meanwhile."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    async def check_tail(self) -> None:
        """A timer: records skipped at the *end* of a partition have no later record to
        reveal them. When the broker holds records past the ledger's next offset and the ledger has
        not moved for two ticks while this agent was idle, seek back to it (nothing is in flight
        then, so Faust delivers the refetch)."""
        if self._busy:
            return
        ledger = await self.db.run(partial(next_offsets, stream=self.stream), "read the offset ledger")
        consumer = self.app.consumer
        for tp in list(consumer.assignment()):
            if tp.topic != self.topic:
                continue
            high = consumer.highwater(tp)
            nxt = ledger.get(tp.partition, 0)
            if high is None or high <= nxt or self._busy:
                self._stalled.pop(tp, None)
                continue
            last, ticks = self._stalled.get(tp, (nxt, 0))
            ticks = ticks + 1 if last == nxt else 1
            self._stalled[tp] = (nxt, ticks)
            if ticks >= 2:
                self._stalled.pop(tp, None)
                self.stats.add("offset_tails_refetched")
                log.warning("%s[%s]: the broker has offsets up to %s but %s onwards were never applied;"
                            " fetching again", self.topic, tp.partition, high - 1, nxt)
                await consumer.seek(tp, nxt)

    async def _apply_in_order(self, event: Any, apply: Apply) -> ClaimResult:
        at = self.position(event)
        result = await apply(event.value, at, False)
        if result.claim is Claim.DONE and await self._recreated(at, result.expected):
            log.error("%s[%s]: offset %s is not the record this partition's ledger applied up to %s: the topic was"
                      " re-created (a broker that lost its log); the ledger starts this partition afresh",
                      self.topic, at.partition, at.offset, result.expected)
            await self._forget(at)
            result = await apply(event.value, at, False)
        if result.claim is not Claim.AHEAD:
            return result
        msg = event.message
        log.warning("%s[%s]: got offset %s but %s..%s were never applied; reading them again",
                    msg.topic, msg.partition, at.offset, result.expected, at.offset - 1)
        self.stats.add("offset_gaps_filled")
        expected = result.expected
        backoff = Backoff(base_s=0.5, cap_s=10.0)
        while expected < at.offset:
            try:
                async for offset, value in self._read(at.partition, expected, at.offset):
                    if offset > expected:
                        self._lost(at.partition, expected, offset)
                    await apply(value, Position.of(at.stream, at.partition, offset, value), offset > expected)
                    expected = offset + 1
                if expected < at.offset:  # the broker no longer has the rest of the range
                    self._lost(at.partition, expected, at.offset)
                    break
            except Exception as e:  # noqa: BLE001 - a broker hiccup: retry from what is applied, never skip
                log.warning("%s[%s]: reading back offsets %s..%s failed (%s); retrying",
                            msg.topic, msg.partition, expected, at.offset - 1, e)
                await self.close()
                await asyncio.sleep(backoff.next())
        await commit_lost_range(self.app.consumer, msg.tp, result.expected, at.offset - 1)
        return await apply(event.value, at, expected < at.offset)

    async def _recreated(self, at: Position, expected: int) -> bool:
        """Whether a record below the ledger comes from a topic that started again, not a redelivery.

        A re-created topic is read from offset 0 first (its consumer group's offsets died with it):
        the ledger knows the digest of the offset-0 record it started from. Without one (a ledger
        written before it was kept), a log that ends below the ledger can only be a new one; that
        misses a new topic that has already grown past the old end, hence the digest.
        """
        try:
            if at.first_record is not None:
                known = await self.db.run(partial(first_record, stream=at.stream, partition=at.partition),
                                          "read the ledger's first record")
                if known is not None:
                    return known != at.first_record
            return await self.end_offset(at.partition) < expected
        except Exception:  # noqa: BLE001 - cannot tell: treat it as a redelivery, as before
            return False

    def _lost(self, partition: int, start: int, end: int) -> None:
        self.stats.add("offsets_lost", end - start)
        log.error("%s[%s]: offsets %s..%s are no longer on the broker (retention?): %s records lost",
                  self.topic, partition, start, end - 1, end - start)

    async def end_offset(self, partition: int) -> int:
        """The partition's end (the next offset the broker will write)."""
        reader = await self._open()
        tp = TopicPartition(self.topic, partition)
        return int((await reader.end_offsets([tp]))[tp])

    def read_range(self, partition: int, start: int, end: int) -> AsyncIterator[tuple[int, bytes]]:
        """Records ``start <= offset < end`` straight from the partition (one reader per guard: do
        not interleave two ranges on one guard)."""
        return self._read(partition, start, end)

    async def _read(self, partition: int, start: int, end: int) -> AsyncGenerator[tuple[int, bytes], None]:
        """Records ``start <= offset < end`` of one partition, in order, a batch at a time (fewer if
        the broker lost some); raises if none arrives for ``read_timeout_s``."""
        reader = await self._open()
        tp = TopicPartition(self.topic, partition)
        reader.assign([tp])
        reader.seek(tp, start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        try:
            while await reader.position(tp) < end:
                batch = (await reader.getmany(tp, timeout_ms=500, max_records=500)).get(tp, [])
                if not batch and loop.time() > deadline:
                    raise TimeoutError(f"no record of {self.topic}[{partition}] {start}..{end - 1} for {self.read_timeout_s} s")
                for rec in batch:
                    if rec.offset >= end:
                        return
                    yield rec.offset, bytes(rec.value or b"")
                if batch:
                    deadline = loop.time() + self.read_timeout_s
        finally:
            # Left fetchable, the partition is fetched for ever (aiokafka prefetches): a poll every
            # fetch wait while quiet, live records no one reads while busy. Paused, not unassigned:
            # unsubscribe() also empties the reader's metadata topics, and after a broker lost its
            # topics the bounds it then read let a chaos test lose readings.
            reader.pause(tp)

    async def _open(self) -> AIOKafkaConsumer:
        if self._reader is None:
            self._reader = AIOKafkaConsumer(
                bootstrap_servers=bootstrap_servers(self.kafka_url), group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", fetch_max_wait_ms=100,
            )
            await self._reader.start()
        return self._reader

    async def _on_shutdown(self, app: Any, **_: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
