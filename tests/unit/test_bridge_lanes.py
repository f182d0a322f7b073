"""The bridge's send lanes and registry refresh. Lanes: per-partition order, one envelope in flight per partition, and no
partition held up by another partition's acknowledgement (an early warning must not wait for them).

The Kafka send is replaced by a gate the test opens by hand: what is tested is the bridge's own
scheduling, which decides when each envelope is handed to the producer. The producer and broker are
covered by the integration and chaos tests.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from ioc.settings import Settings
from ioc.wire import Reading, SensorInfo
from streams.bridge import Bridge
from streams.envelope_batcher import Batch
from streams.mqtt_loop import AckToken

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
SETTINGS = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", envelope_max_readings=2)


class GatedSends:
    """Stands in for the Kafka send in ``Bridge._flush_batch``: each call waits until the test acknowledges it."""

    def __init__(self) -> None:
        self.in_flight: dict[int, asyncio.Future[None]] = {}

    async def send(self, partition: int) -> None:
        assert partition not in self.in_flight, f"two envelopes of partition {partition} in flight"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.in_flight[partition] = fut
        try:
            await fut
        finally:
            del self.in_flight[partition]

    def ack(self, partition: int) -> None:
        self.in_flight[partition].set_result(None)


def _batch(partition: int, *seqs: int) -> Batch[Reading, AckToken]:
    return Batch(partition, [f"r{s}" for s in seqs], [AckToken(0, s) for s in seqs])  # type: ignore[misc]


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_partition_is_not_held_by_another_partitions_send_and_keeps_its_order() -> None:
    async def scenario() -> None:
        bridge = Bridge(SETTINGS, {})
        gate = GatedSends()
        sent: dict[int, list[list[str]]] = defaultdict(list)
        acked: list[int] = []

        async def flush(batch: Batch[Reading, AckToken]) -> None:
            await gate.send(batch.partition)
            sent[batch.partition].append([str(x) for x in batch.items])
            acked.extend(t.mid for t in batch.acks)

        bridge._flush_batch = flush  # type: ignore[method-assign]
        sender = asyncio.create_task(bridge._sender())
        try:
            bridge._ready.put_nowait(_batch(0, 1))
            await _settle()
            assert set(gate.in_flight) == {0}
            # Partition 0 waits for its acknowledgement; partition 5's envelope (say, a gauge at
            # BĐ I) goes at once instead of waiting for it.
            bridge._ready.put_nowait(_batch(5, 2))
            await _settle()
            assert set(gate.in_flight) == {0, 5}
            # More for partition 0 queue behind its envelope in flight, never beside it.
            for s in (3, 4, 5, 6, 7):
                bridge._ready.put_nowait(_batch(0, s))
            await _settle()
            assert set(gate.in_flight) == {0, 5}
            gate.ack(5)
            await _settle()
            assert sent[5] == [["r2"]] and 5 not in bridge._lane_tasks
            gate.ack(0)
            await _settle()
            # The queued batches go merged, up to 4 envelopes' worth (8 readings here): 3..7 fit in one.
            assert sent[0] == [["r1"]] and set(gate.in_flight) == {0}
            gate.ack(0)
            await _settle()
            assert sent[0] == [["r1"], ["r3", "r4", "r5", "r6", "r7"]]
            assert acked == [2, 1, 3, 4, 5, 6, 7] and not bridge._lane_tasks and not gate.in_flight
            # An idle lane starts again for the partition's next envelope.
            bridge._ready.put_nowait(_batch(0, 8))
            await _settle()
            assert set(gate.in_flight) == {0}
            gate.ack(0)
            await _settle()
            assert sent[0][-1] == ["r8"] and not bridge._lane_tasks
        finally:
            sender.cancel()

    asyncio.run(scenario())


def test_a_failed_lane_is_left_for_the_bridge_to_report_not_restarted_behind_its_back() -> None:
    """A lane that died on a bug keeps its place, so the partition's later envelopes cannot overtake
    the one that failed, and ``Bridge.run`` sees the dead task and stops loudly."""
    async def scenario() -> None:
        bridge = Bridge(SETTINGS, {})
        calls: list[int] = []

        async def flush(batch: Batch[Reading, AckToken]) -> None:
            calls.append(batch.partition)
            raise RuntimeError("a bug")

        bridge._flush_batch = flush  # type: ignore[method-assign]
        sender = asyncio.create_task(bridge._sender())
        try:
            bridge._ready.put_nowait(_batch(3, 1))
            await _settle()
            lane = bridge._lane_tasks[3]
            assert lane.done() and isinstance(lane.exception(), RuntimeError)
            bridge._ready.put_nowait(_batch(3, 2))
            await _settle()
            assert calls == [3] and bridge._lane_tasks[3] is lane
        finally:
            sender.cancel()

    asyncio.run(scenario())


def test_a_sensor_retired_from_the_registry_is_refused_after_the_next_refresh() -> None:
    """A refresh used to add and change entries but never drop one: a retired gauge stayed accepted
    for as long as the bridge ran."""
    bridge = Bridge(SETTINGS.model_copy(update={"auto_register": False}), {
        "N1": SensorInfo("noise"), "N2": SensorInfo("noise")}, clock=lambda: NOW)

    def send(sid: str, seq: int) -> None:
        raw = json.dumps({"sensor_id": sid, "ts": (NOW - timedelta(seconds=5)).isoformat(), "seq": seq,
                          "metrics": {"laeq_dba": 55.0}}).encode()
        bridge.handle(f"khanhhoa/v1/noise/{sid}", raw, AckToken(0, seq))

    send("N1", 1)
    assert bridge.stats.valid == 1
    bridge.apply_registry({"N2": SensorInfo("noise"), "N3": SensorInfo("noise")})  # N1 retired, N3 new
    send("N1", 2)
    send("N3", 3)
    send("N2", 4)
    assert bridge.stats.valid == 3 and bridge.stats.by_reason == {"unknown_sensor": 1}
    assert [d.reason for d, _ in bridge.dead] == ["unknown_sensor"] and b'"N1"' in bridge.dead[0][0].raw
