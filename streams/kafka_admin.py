"""Create the pipeline's topics up front, so the bridge can send to explicit partitions."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from ioc.errors import ServiceUnavailable
from streams.topics import bootstrap_servers

log = logging.getLogger(__name__)


async def ensure_topics(kafka_url: str, layout: Mapping[str, int], timeout_s: float = 15.0) -> list[str]:
    """Create the missing topics of ``layout`` (topic -> partitions) and name them; a broker that does
    not answer in time is named with its URL. An existing topic keeps the partitions it has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(kafka_url), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaConnectionError, OSError) as e:
        await admin.close()
        raise ServiceUnavailable("Kafka", kafka_url, str(e) or type(e).__name__) from e
    try:
        topics = set(layout)
        existing = set(await admin.list_topics())
        missing = [t for t in layout if t not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(t, layout[t], 1) for t in missing])
            except TopicAlreadyExistsError:
                pass
            except KafkaError as e:
                log.warning("create_topics %s: %s (another process may have created them)", missing, e)
            log.info("created topics %s", {t: layout[t] for t in missing})
        for _ in range(50):  # wait until metadata shows every topic
            if topics <= set(await admin.list_topics()):
                return missing
            await asyncio.sleep(0.1)
        raise ServiceUnavailable("Kafka", kafka_url, f"topics {sorted(topics)} did not appear")
    finally:
        await admin.close()


class TopicKeeper:
    """Creates the pipeline's topics again when the broker comes back without them.

    A broker that lost its log (Kafka's disk, Tansu's memory storage) answers sends to the lost
    topics with errors; retrying alone would go on forever. Checks at most every ``every_s``.
    """

    def __init__(self, kafka_url: str, layout: Mapping[str, int], every_s: float = 5.0,
                 on_missing: Callable[[list[str]], None] | None = None) -> None:
        self.kafka_url = kafka_url
        self.on_missing = on_missing  # told the topics it found missing (their consumers' positions mean nothing now)
        self.layout = dict(layout)
        self.every_s = every_s
        self._checked = -math.inf  # monotonic time of the last check

    async def check(self) -> None:
        if time.monotonic() - self._checked < self.every_s:
            return
        self._checked = time.monotonic()
        try:
            missing = await ensure_topics(self.kafka_url, self.layout, timeout_s=self.every_s)
        except Exception as e:  # noqa: BLE001 - the broker is still away: the caller retries anyway
            log.warning("checking the Kafka topics failed: %s", e)
            return
        if missing and self.on_missing is not None:
            self.on_missing(missing)
