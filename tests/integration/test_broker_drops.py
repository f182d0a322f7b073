"""Readings Mosquitto drops for a bridge that fell behind are reported, not lost in silence.

A broker of its own with a tiny queue and a one-second ``$SYS`` interval, the real bridge (role
account, real Kafka): the bridge's event loop is blocked while a burst arrives, so the broker
must drop most of it; the bridge then logs the drop as an error and writes it to its metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ioc.settings import Settings
from ioc.stack.process import stop_pid
from ioc.stack.services import mqtt_role_env, start_mosquitto
from ioc.wire import encode_payload
from streams.bridge import Bridge
from streams.topics import TopicNames
from tests.support import publish

pytestmark = pytest.mark.integration

QUEUE = 10  # messages queued for a subscriber beyond those in flight
IN_FLIGHT = 5000  # the bridge's MQTT v5 Receive Maximum: the broker sends it this many unacked


def _run_bridge(settings: Settings, rows: list[tuple[datetime, str, str, str, float]], block_s: float,
                burst: list[tuple[str, bytes]], observer_url: str) -> Bridge:
    bridge = Bridge(settings, {}, write_metrics=rows.extend)

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        run = asyncio.create_task(bridge.run(stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(2.5)  # the first $SYS value: the baseline
        if block_s:
            # A bridge that has fallen behind: its loop takes nothing while the burst arrives.
            sent = asyncio.get_running_loop().run_in_executor(None, publish, observer_url, burst)
            time.sleep(block_s)
            assert await sent == len(burst)  # the broker acknowledged every publish all the same
        else:
            assert await asyncio.to_thread(publish, observer_url, burst) == len(burst)
        # Behind: until the rise is seen (20 s at most). Keeping up: nothing to wait for but the
        # $SYS values that follow the burst (every second), then, either way, a metrics flush (1 s).
        deadline = time.monotonic() + (20 if block_s else 0)
        while time.monotonic() < deadline and not bridge.drops.dropped:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)
        stop.set()
        await asyncio.wait_for(run, 30)

    asyncio.run(main())
    return bridge


@pytest.mark.parametrize("behind", [True, False], ids=["behind", "keeping-up"])
def test_messages_the_broker_drops_for_a_bridge_that_fell_behind_are_reported(
    behind: bool, kafka_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = start_mosquitto(tmp_path, overrides={
        "max_queued_messages": str(QUEUE), "max_inflight_messages": str(QUEUE), "sys_interval": "1",
    })
    try:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(
            mqtt_url=broker.role_urls[mqtt_role_env("bridge")], kafka_url=kafka_url, bridge_id=f"drops-{tag}",
            topic_prefix=TopicNames(f"drops{tag}").prefix, mqtt_shared_subscription=False, metrics_interval_s=1.0,
        )
        t0 = datetime.now(UTC) - timedelta(minutes=5)
        n = IN_FLIGHT + 1000 if behind else QUEUE
        burst = [(f"khanhhoa/v1/noise/D{tag}", encode_payload(f"D{tag}", t0 + timedelta(seconds=k), k,
                                                              {"laeq_dba": 60.0})) for k in range(n)]
        rows: list[tuple[datetime, str, str, str, float]] = []
        with caplog.at_level(logging.WARNING, logger="streams.bridge"):
            bridge = _run_bridge(settings, rows, 4.0 if behind else 0.0, burst, broker.url)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "dropped" in r.getMessage()]
        dropped = [v for _, stage, worker, metric, v in rows if stage == "mqtt_broker" and metric == "dropped_total"]
        assert bridge.drops.last is not None, "the bridge never read the broker's $SYS counter (ACL?)"
        if behind:
            # IN_FLIGHT sent and QUEUE queued survive the blocked loop: the rest was dropped.
            assert n - IN_FLIGHT - QUEUE - 50 <= bridge.drops.dropped <= n, bridge.drops.dropped
            assert errors and "max_queued_messages" in errors[0]
            assert dropped and dropped[-1] == bridge.drops.dropped
            port = broker.url.rsplit(":", 1)[1]
            assert {worker for _, stage, worker, _, _ in rows if stage == "mqtt_broker"} == {f"127.0.0.1:{port}"}
        else:
            assert bridge.drops.dropped == 0 and not errors
            assert dropped and set(dropped) == {0}
    finally:
        stop_pid(broker.pid)
