"""Capped exponential backoff with full jitter, shared by every retry loop in the project."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Shared: seeding a new ``random.Random`` reads 2.5 KB from the OS, and a Backoff is made on every
# database call and Kafka send (it is only drawn from when one fails). Jitter needs no own stream.
_JITTER = random.Random()


@dataclass
class Backoff:
    """Delay sequence base·2^n capped at ``cap_s``, each drawn uniformly in [0, delay] (full jitter).

    Full jitter keeps many clients that failed together from retrying together.

    >>> b = Backoff(base_s=0.1, cap_s=1.0, rng=random.Random(1))
    >>> all(0 <= b.next() <= 1.0 for _ in range(20))
    True
    """

    base_s: float = 0.2
    cap_s: float = 10.0
    rng: random.Random = field(default_factory=lambda: _JITTER)
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(0, delay)

    def reset(self) -> None:
        self.attempt = 0
