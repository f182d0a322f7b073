"""One outbox channel backed by several endpoints of the same kind (e.g. several webhook URLs).

The outbox holds one row per channel name, so several URLs share one notification. Endpoints
are called in parallel; one that is down does not hold up the others. The notification counts
as delivered once every endpoint accepted it. Which endpoints already accepted a notification is
remembered in memory, so a retry only goes to the ones that failed; after a restart that memory
is gone and every endpoint gets it again, which receivers absorb by deduplicating on the id.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from ioc.alerting.notification import Channel, DeliveryError, Notification

# Enough to cover every notification still being retried; older entries only save a duplicate.
_REMEMBER = 10_000


class FanOutChannel:
    def __init__(self, name: str, channels: Sequence[Channel]) -> None:
        if not channels:
            raise ValueError(f"channel {name!r} needs at least one endpoint")
        self.name = name
        self._channels = list(channels)
        self._done: OrderedDict[str, set[int]] = OrderedDict()

    async def deliver(self, n: Notification) -> None:
        done = self._done.setdefault(n.notification_id, set())
        self._done.move_to_end(n.notification_id)
        while len(self._done) > _REMEMBER:
            self._done.popitem(last=False)
        todo = [i for i in range(len(self._channels)) if i not in done]
        results = await asyncio.gather(*(self._channels[i].deliver(n) for i in todo), return_exceptions=True)
        errors: list[DeliveryError] = []
        for i, r in zip(todo, results, strict=True):
            if r is None:
                done.add(i)
            elif isinstance(r, DeliveryError):
                errors.append(r)
            elif isinstance(r, Exception):
                errors.append(DeliveryError(f"{type(r).__name__}: {r}", retryable=True))
            else:  # CancelledError and friends are not ours to swallow
                raise r
        if errors:
            raise DeliveryError(
                f"{len(errors)} of {len(self._channels)} endpoints failed: " + "; ".join(str(e) for e in errors),
                retryable=any(e.retryable for e in errors),
            )
        self._done.pop(n.notification_id, None)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels), return_exceptions=True)
