"""Kafka topic names and the partitioner shared by the bridge and the workers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from aiokafka.partitioner import murmur2

if TYPE_CHECKING:
    from ioc.settings import Settings


@dataclass(frozen=True)
class TopicNames:
    """All ``<prefix>.*`` topics; tests use a unique prefix per test."""

    prefix: str = "ioc"

    @property
    def readings(self) -> str:
        return f"{self.prefix}.readings"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def findings(self) -> str:
        return f"{self.prefix}.findings"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    def all(self) -> list[str]:
        return [self.readings, self.deadletter, self.findings, self.alerts]

    def layout(self, partitions: int, deadletter_partitions: int) -> dict[str, int]:
        """Partitions per topic, for creating them. The dead-letter topic gets its own (small) count:
        every partition a worker is assigned is read by the broker on each fetch, letters or not.

        >>> TopicNames("t").layout(8, 1)
        {'t.readings': 8, 't.deadletter': 1, 't.findings': 8, 't.alerts': 8}
        """
        return {t: deadletter_partitions if t == self.deadletter else partitions for t in self.all()}

    def layout_for(self, settings: Settings) -> dict[str, int]:
        """The layout the settings ask for, said once so the worker, the bridge and the sinks agree."""
        return self.layout(settings.kafka_partitions, settings.deadletter_partitions)


@lru_cache(maxsize=65536)
def partition_for(sensor_id: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, positive) on the sensor id, cached per sensor.

    >>> partition_for("HYD_DONG_TRANG", 8) == partition_for("HYD_DONG_TRANG", 8)
    True
    """
    return (murmur2(sensor_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def bootstrap_servers(kafka_url: str) -> str:
    """``kafka://h1:9092,h2:9092`` -> ``h1:9092,h2:9092``.

    >>> bootstrap_servers("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    """
    return ",".join(part.removeprefix("kafka://") for part in kafka_url.split(","))
