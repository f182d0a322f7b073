"""How long a refused Kafka send waits before it is sent again."""

from __future__ import annotations

from aiokafka.errors import UnknownError

from ioc.retry import Backoff


class SendRetry:
    """Capped exponential backoff, except for a broker still catching up with a lost log.

    Tansu with memory storage, restarted, accepts writes to a topic it no longer lists (producers
    still hold its metadata) and keeps them; once the topic is created again, its offsets start
    at 0 under those records, and it refuses each write to an offset they hold with
    ``UnknownError``, moving one offset on per refusal. Backing off there took minutes to pass a
    few dozen records (a stalled bridge, findings held for 20 s), so the first ``at_once`` of
    those refusals in a row are retried at once. Kafka answers ``UnknownError`` (an unexpected
    server error) rarely enough that this bounded burst costs nothing.
    """

    def __init__(self, base_s: float, cap_s: float, at_once: int = 1000) -> None:
        self.backoff = Backoff(base_s=base_s, cap_s=cap_s)
        self.at_once = at_once
        self.quick = 0

    def delay(self, error: BaseException) -> float:
        """The wait before the next attempt after this refusal.

        >>> r = SendRetry(base_s=1.0, cap_s=1.0, at_once=2)
        >>> [r.delay(UnknownError()) for _ in range(2)]
        [0.0, 0.0]
        >>> 0.0 <= r.delay(UnknownError()) <= 1.0
        True
        """
        if isinstance(error, UnknownError) and self.quick < self.at_once:
            self.quick += 1
            return 0.0
        return self.backoff.next()
