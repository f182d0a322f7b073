"""Per-partition micro-batching for the bridge: flush at N readings or T seconds, in arrival order.

Pure bookkeeping with an injected monotonic clock; the bridge does the I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
A = TypeVar("A")


@dataclass
class Batch(Generic[T, A]):
    partition: int
    items: list[T] = field(default_factory=list)
    acks: list[A] = field(default_factory=list)
    started: float = 0.0


class EnvelopeBatcher(Generic[T, A]):
    """Collects items per partition and hands out batches that are full, urgent or old enough.

    >>> clock = [0.0]
    >>> b = EnvelopeBatcher(max_items=2, max_age_s=0.05, now=lambda: clock[0])
    >>> b.add(3, "r1", 1), [x.items for x in b.add(3, "r2", 2)]
    ([], [['r1', 'r2']])
    >>> b.add(1, "r3", 3); clock[0] = 0.06; [(x.partition, x.items) for x in b.due()]
    []
    [(1, ['r3'])]
    """

    def __init__(self, max_items: int, max_age_s: float, now: Callable[[], float]) -> None:
        if max_items < 1 or max_age_s <= 0:
            raise ValueError("max_items must be >= 1 and max_age_s > 0")
        self.max_items = max_items
        self.max_age_s = max_age_s
        self._now = now
        self._open: dict[int, Batch[T, A]] = {}

    def add(self, partition: int, item: T, ack: A, urgent: bool = False) -> list[Batch[T, A]]:
        """An urgent item closes its partition's batch at once (the readings before it go with it, in
        order): an early warning should not wait out the batching meant for routine readings.

        >>> b = EnvelopeBatcher(max_items=10, max_age_s=0.05, now=lambda: 0.0)
        >>> b.add(0, "routine", 1), [x.items for x in b.add(0, "above BĐ I", 2, urgent=True)]
        ([], [['routine', 'above BĐ I']])
        """
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = Batch(partition, started=self._now())
        batch.items.append(item)
        batch.acks.append(ack)
        if urgent or len(batch.items) >= self.max_items:
            del self._open[partition]
            return [batch]
        return []

    def due(self) -> list[Batch[T, A]]:
        """Once any batch is old enough, every open batch goes with it.

        Flushed one partition at a time, eight partitions' batches came due at eight moments of each
        age period: eight produce requests, eight fetch wake-ups and eight worker transactions where
        one would do. Going together, they share one produce request, one fetch and one group
        commit; no batch is held longer than before, and the partitions stay in step. Measured at
        1,000 readings/s: the pipeline's CPU per reading fell by a fifth (README, "Measured figures").

        >>> clock = [0.0]
        >>> b = EnvelopeBatcher(max_items=10, max_age_s=0.05, now=lambda: clock[0])
        >>> b.add(0, "old", 1); clock[0] = 0.04; b.add(1, "young", 2); b.due()
        []
        []
        []
        >>> clock[0] = 0.05; [(x.partition, x.items) for x in b.due()], b.pending
        ([(0, ['old']), (1, ['young'])], 0)
        """
        now = self._now()
        if not any(now - b.started >= self.max_age_s for b in self._open.values()):
            return []
        return self.drain()

    def drain(self) -> list[Batch[T, A]]:
        out = list(self._open.values())
        self._open.clear()
        return out

    @property
    def pending(self) -> int:
        return sum(len(b.items) for b in self._open.values())


def take_merged(lane: deque[Batch[T, A]], max_items: int) -> Batch[T, A]:
    """The next envelope to send from a partition's lane: its oldest batch, with the batches queued
    behind it merged in (in order) while they fit in ``max_items``.

    >>> lane = deque([Batch(1, [1, 2]), Batch(1, [3]), Batch(1, [4, 5])])
    >>> take_merged(lane, max_items=3).items, [b.items for b in lane]
    ([1, 2, 3], [[4, 5]])
    """
    first = lane.popleft()
    items, acks = list(first.items), list(first.acks)
    while lane and len(items) + len(lane[0].items) <= max_items:
        nxt = lane.popleft()
        items += nxt.items
        acks += nxt.acks
    return Batch(first.partition, items, acks, first.started)
