"""The bridge's batch ticker: it sleeps while nothing is open, and the next message wakes it.

Ticking every 10 ms with nothing to flush cost an idle bridge more CPU than everything else it does
at city rates. What must not change: a routine reading still goes out once its envelope is old
enough, and a refused payload still reaches the dead letters, however long the bridge was idle.
The Kafka sends are replaced by recorders; the producer and broker are covered by the integration
and chaos tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

from ioc.settings import Settings
from ioc.wire import SensorInfo
from streams.bridge import Bridge
from streams.mqtt_loop import AckToken
from streams.topics import TopicNames

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
SETTINGS = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", envelope_max_ms=50,
                    auto_register=False)


def _reading(sid: str, seq: int) -> bytes:
    return json.dumps({"sensor_id": sid, "ts": (NOW - timedelta(seconds=5)).isoformat(), "seq": seq,
                       "metrics": {"laeq_dba": 55.0}}).encode()


def test_an_idle_bridge_does_not_tick_and_the_next_reading_still_leaves_on_time() -> None:
    async def scenario() -> tuple[int, int, float, list[str]]:
        bridge = Bridge(SETTINGS, {"N1": SensorInfo("noise")}, clock=lambda: NOW)
        looks = [0]
        due = bridge.batcher.due

        def counted_due() -> list:  # type: ignore[type-arg]
            looks[0] += 1
            return due()

        bridge.batcher.due = counted_due  # type: ignore[method-assign]
        ticker = asyncio.create_task(bridge._ticker())
        try:
            await asyncio.sleep(0.6)
            idle_looks = looks[0]
            t0 = time.monotonic()
            bridge.handle("khanhhoa/v1/noise/N1", _reading("N1", 1), AckToken(0, 1))
            batch = await asyncio.wait_for(bridge._ready.get(), 1.0)
            waited = time.monotonic() - t0
            await asyncio.sleep(0.3)
            return idle_looks, looks[0], waited, [r.sensor_id for r in batch.items]
        finally:
            ticker.cancel()

    idle_looks, all_looks, waited, items = asyncio.run(scenario())
    assert idle_looks <= 2  # ticking every 10 ms would have looked ~60 times
    assert items == ["N1"]
    assert 0.045 <= waited <= 0.2  # batched for its envelope age (50 ms), not sent at once, not stuck
    assert all_looks - idle_looks <= 12  # ticks while the envelope was open, then asleep again


def test_a_payload_refused_while_idle_still_reaches_the_dead_letters() -> None:
    async def scenario() -> tuple[list[str], float]:
        bridge = Bridge(SETTINGS, {"N1": SensorInfo("noise")}, clock=lambda: NOW)
        sent: list[str] = []
        arrived = asyncio.Event()

        async def record(topic: str, value: bytes, partition: int | None, what: str) -> None:
            sent.append(topic)
            arrived.set()

        bridge._send = record  # type: ignore[method-assign]
        ticker = asyncio.create_task(bridge._ticker())
        try:
            await asyncio.sleep(0.3)  # asleep by now
            t0 = time.monotonic()
            bridge.handle("khanhhoa/v1/noise/N1", b"{not json", AckToken(0, 1))
            await asyncio.wait_for(arrived.wait(), 0.5)
            return sent, time.monotonic() - t0
        finally:
            ticker.cancel()

    sent, waited = asyncio.run(scenario())
    assert sent == [TopicNames(SETTINGS.topic_prefix).deadletter]
    assert waited < 0.2
