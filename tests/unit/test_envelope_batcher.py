"""The bridge's envelope batcher under a simulated clock: order, bounded age, and partitions flushed in step.

Flushed one partition at a time, eight partitions came due at eight moments of each age period, and
each moment cost a produce request, a fetch wake-up and a worker transaction. These tests pin that
open batches leave together, and that going together neither loses, reorders nor holds back a reading.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from streams.envelope_batcher import Batch, EnvelopeBatcher

MAX_AGE_S = 0.05
TICK_S = 0.01  # the bridge's ticker calls due() every 10 ms while anything is open


def _run(rate: float, partitions: int, seconds: float, max_items: int, seed: int) -> tuple[
        list[tuple[float, Batch[tuple[int, float], int]]], list[tuple[int, float]]]:
    """Poisson arrivals over ``partitions``, the ticker's due() every tick; returns (flush time, batch) and the items."""
    rng = random.Random(seed)
    clock = [0.0]
    b: EnvelopeBatcher[tuple[int, float], int] = EnvelopeBatcher(max_items, MAX_AGE_S, now=lambda: clock[0])
    flushed: list[tuple[float, Batch[tuple[int, float], int]]] = []
    sent: list[tuple[int, float]] = []
    t, next_tick, seq = 0.0, TICK_S, 0
    while t < seconds:
        t += rng.expovariate(rate)
        while next_tick <= t:
            clock[0] = next_tick
            flushed += [(next_tick, x) for x in b.due()]
            next_tick += TICK_S
        clock[0] = t
        part = rng.randrange(partitions)
        item = (seq, t)
        seq += 1
        sent.append(item)
        flushed += [(t, x) for x in b.add(part, item, seq)]
    while b.pending:
        clock[0] = next_tick
        flushed += [(next_tick, x) for x in b.due()]
        next_tick += TICK_S
    return flushed, sent


@pytest.mark.parametrize(("rate", "partitions", "max_items"), [(1000.0, 8, 500), (40.0, 8, 500), (5000.0, 8, 50)])
def test_every_reading_leaves_once_in_order_and_no_later_than_its_age_bound(
        rate: float, partitions: int, max_items: int) -> None:
    flushed, sent = _run(rate, partitions, seconds=5.0, max_items=max_items, seed=7)
    out = [item for _, batch in flushed for item in batch.items]
    assert sorted(out) == sorted(sent), "a reading was lost or sent twice"
    by_part: dict[int, list[int]] = defaultdict(list)
    for when, batch in flushed:
        assert len(batch.items) <= max_items
        assert len(batch.items) == len(batch.acks)
        by_part[batch.partition] += [seq for seq, _ in batch.items]
        # An open batch is looked at every tick: none waits past its age bound plus one tick.
        assert when - batch.items[0][1] <= MAX_AGE_S + TICK_S + 1e-9
    for part, seqs in by_part.items():
        assert seqs == sorted(seqs), f"partition {part} reordered"


def test_partitions_leave_together_so_a_period_costs_one_flush_not_one_per_partition() -> None:
    """At 1,000/s over 8 partitions every partition has a reading in each 50 ms: flushed on their own
    schedules they would leave at about 8 moments per period; in step, at one."""
    flushed, _ = _run(1000.0, 8, seconds=5.0, max_items=500, seed=11)
    moments = {round(when, 6) for when, _ in flushed}
    periods = 5.0 / MAX_AGE_S
    assert len(moments) <= 1.1 * periods, f"{len(moments)} flush moments in {periods:.0f} periods"
    per_moment = len(flushed) / len(moments)
    assert per_moment >= 7.0, f"only {per_moment:.1f} partitions per flush"


def test_an_urgent_or_full_batch_leaves_alone_at_once() -> None:
    clock = [0.0]
    b: EnvelopeBatcher[str, int] = EnvelopeBatcher(max_items=2, max_age_s=MAX_AGE_S, now=lambda: clock[0])
    assert b.add(0, "routine", 1) == []
    assert b.add(1, "other", 2) == []
    urgent = b.add(1, "above BĐ I", 3, urgent=True)
    assert [(x.partition, x.items) for x in urgent] == [(1, ["other", "above BĐ I"])]
    assert [(x.partition, x.items) for x in b.add(0, "second", 4)] == [(0, ["routine", "second"])]
    assert b.pending == 0
