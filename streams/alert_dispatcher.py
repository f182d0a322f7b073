"""Delivers the outbox: one loop per channel, so a channel that is down blocks no other.

New notifications are handed over at once by the alerts agent (``wake``), which keeps the
reading → alert path short; a poll picks up retries, other workers' leases that ran out and
anything left by a crash. Each notification is marked delivered only after its channel
accepted it, so a crash in between means a second delivery with the same id, never none.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import partial

from ioc.alerting.notification import Channel, DeliveryError, Notification
from ioc.storage.outbox import backlog, claim_due, mark_delivered, mark_failed_attempt
from streams.db_worker import DbWorker
from streams.pipeline_stats import StageStats

log = logging.getLogger(__name__)


def retry_delay(attempt: int, cap_s: float, base_s: float = 1.0) -> float:
    """Full-jitter exponential backoff: many alerts retrying at once do not hammer a channel together.

    >>> 0 <= retry_delay(1, 30.0) <= 1.0 and 0 <= retry_delay(20, 30.0) <= 30.0
    True
    """
    return random.uniform(0, min(cap_s, base_s * 2 ** max(0, attempt - 1)))


class Dispatcher:
    def __init__(self, db: DbWorker, channels: Mapping[str, Channel], stats: StageStats, *, poll_s: float = 1.0,
                 give_up_s: float = 86400.0, retry_cap_s: float = 30.0, lease_s: float = 30.0,
                 concurrency: int = 16) -> None:
        self.db = db
        self.channels = dict(channels)
        self.stats = stats
        self.poll_s = poll_s
        self.give_up_s = give_up_s
        self.retry_cap_s = retry_cap_s
        self.lease_s = lease_s
        self._wake = {name: asyncio.Event() for name in self.channels}
        # Deliveries in flight per channel: a dead webhook holding its slots must not take the MQTT channel's.
        self._slots = {name: asyncio.Semaphore(concurrency) for name in self.channels}

    def wake(self, notifications: Iterable[Notification]) -> None:
        for n in notifications:
            ev = self._wake.get(n.channel)
            if ev is not None:
                ev.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(name) for name in self.channels))

    async def _loop(self, name: str) -> None:
        channel, wake = self.channels[name], self._wake[name]
        while True:
            wake.clear()
            try:
                busy = await self.drain_once(name, channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher %s: unexpected error; retrying", name)
                busy = False
            if busy:
                continue
            try:
                await asyncio.wait_for(wake.wait(), self.poll_s)
            except TimeoutError:
                pass

    async def drain_once(self, name: str, channel: Channel) -> bool:
        """Deliver what is due on one channel, concurrently; True if anything was claimed.

        A claim holds at most one notification per alert (the oldest), so delivering them together
        keeps each alert's order. One at a time, a storm's backlog (hundreds of alerts, each a
        broker or HTTP round trip) held every new alert behind it for seconds.
        """
        due = await self.db.run(partial(claim_due, channel=name, lease_s=self.lease_s), f"claim {name} outbox")
        await asyncio.gather(*(self._deliver_limited(name, channel, n) for n in due))
        return bool(due)

    async def _deliver_limited(self, name: str, channel: Channel, n: Notification) -> None:
        async with self._slots[name]:
            await self._deliver(channel, n)

    async def _deliver(self, channel: Channel, n: Notification) -> None:
        try:
            await asyncio.wait_for(channel.deliver(n), self.lease_s * 0.8)
        except (DeliveryError, TimeoutError, OSError) as e:
            retryable = not isinstance(e, DeliveryError) or e.retryable
            age = (datetime.now(UTC) - n.created_at).total_seconds()
            give_up = not retryable or age >= self.give_up_s
            delay = None if give_up else retry_delay(n.attempt, self.retry_cap_s)
            msg = f"{type(e).__name__}: {e}"[:500]
            await self.db.run(partial(mark_failed_attempt, n=n, error=msg, retry_in_s=delay), "record failed attempt")
            self.stats.add(f"notify_failed_{n.channel}" if give_up else f"notify_retry_{n.channel}")
            if give_up:
                log.error("notification %s (%s, alert %s) failed for good on %s: %s", n.notification_id, n.event,
                          n.alert.alert_id, n.channel, msg)
            else:
                log.warning("notification %s on %s failed (attempt %d): %s; retry in %.1f s", n.notification_id,
                            n.channel, n.attempt, msg, delay or 0.0)
            return
        await self.db.run(partial(mark_delivered, n=n), "mark delivered")
        self.stats.add(f"notified_{n.channel}")
        self.stats.latency((datetime.now(UTC) - n.created_at).total_seconds() * 1000)  # outbox → accepted

    async def backlog_gauges(self) -> None:
        """Pending and failed notifications per channel, for the pipeline-health dashboard."""
        for b in await self.db.run(backlog, "outbox backlog"):
            self.stats.gauges[f"outbox_pending_{b.channel}"] = float(b.pending)
            self.stats.gauges[f"outbox_failed_{b.channel}"] = float(b.failed)
            self.stats.gauges[f"outbox_oldest_s_{b.channel}"] = float(b.oldest_pending_s or 0.0)

    async def close(self) -> None:
        for ch in self.channels.values():
            try:
                await ch.close()
            except Exception:
                log.warning("closing channel %s failed", ch.name, exc_info=True)
