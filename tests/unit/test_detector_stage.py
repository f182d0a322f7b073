"""The worker's detector stage without Faust: a dict for the table, a recording ``send``."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ioc.models import FindingBatch, Reading
from ioc.settings import Settings
from ioc.storage.offset_ledger import Position
from ioc.storage.sensors_store import SensorEntry
from ioc.wire import encode_envelope
from streams.detector_stage import CHECKPOINT, FINDINGS_PER_RECORD, DetectorStage
from streams.pipeline_stats import StageStats

T0 = datetime(2025, 11, 18, tzinfo=UTC)
GAUGE = SensorEntry("HYD_DONG_TRANG", "water_level", "Đồng Trăng", ("water_level_m",), 300.0,
                    {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}, {"record_m": 13.42, "max_rise_m_per_h": 1.77})
RAIN = SensorEntry("RAIN_X", "rain", "rain", ("rain_mm",), 300.0, None, {})


class Sent:
    """The findings topic: records each batch and acknowledges it only when told to."""

    def __init__(self, ack_at_once: bool = False) -> None:
        self.batches: list[tuple[int, FindingBatch]] = []
        self.pending: list[asyncio.Future[None]] = []
        self.ack_at_once = ack_at_once

    async def send(self, *, value: bytes, partition: int, force: bool = False) -> asyncio.Future[None]:
        self.batches.append((partition, msgspec.json.decode(value, type=FindingBatch)))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.ack_at_once:
            fut.set_result(None)
        self.pending.append(fut)
        return fut

    def rules(self) -> list[tuple[str, str]]:
        return [(f.sensor_id, f.rule) for _, b in self.batches for f in b.findings]


class CheckpointWatch(dict[str, Any]):
    """A table that notes, when a partition's checkpoint is written, whether every send was acked."""

    def __init__(self, sent: Sent) -> None:
        super().__init__()
        self.sent = sent
        self.acked_at_checkpoint: list[bool] = []

    def __setitem__(self, key: str, value: Any) -> None:
        if key.startswith(CHECKPOINT):
            self.acked_at_checkpoint.append(all(f.done() for f in self.sent.pending))
        super().__setitem__(key, value)


def _stage(table: dict[str, Any], sent: Sent, **settings: Any) -> DetectorStage:
    s = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", kafka_partitions=1,
                 **settings)
    stage = DetectorStage(s, table, sent.send, StageStats("test"), "readings")
    stage.start({GAUGE.sensor_id: GAUGE, RAIN.sensor_id: RAIN})
    return stage


def _gauge(i: int, level: float) -> Reading:
    return Reading(GAUGE.sensor_id, "water_level", T0 + timedelta(minutes=5 * i), i, {"water_level_m": level})


def _rain(i: int) -> Reading:
    return Reading(RAIN.sensor_id, "rain", T0 + timedelta(minutes=5 * i), i, {"rain_mm": 0.0})


async def _feed(stage: DetectorStage, envelopes: list[list[Reading]], ack: bool = True) -> None:
    for offset, readings in enumerate(envelopes):
        committed = readings[-1].ts + timedelta(seconds=1)
        stage.observe(0, readings, committed)
        run = asyncio.ensure_future(stage.run([(Position("g:readings", 0, offset), readings, None)], committed))
        for _ in range(50):
            await asyncio.sleep(0)
            if ack:
                for f in stage_sent(stage).pending:
                    if not f.done():
                        f.set_result(None)
            if run.done():
                break
        await run


def stage_sent(stage: DetectorStage) -> Sent:
    return stage.send.__self__  # type: ignore[attr-defined, no-any-return]


def test_a_gauge_that_stops_is_judged_silent_in_event_time_while_its_partition_moves_on() -> None:
    sent = Sent()
    stage = _stage({}, sent)
    envelopes = [[_gauge(i, 3.0), _rain(i)] for i in range(40)] + [[_rain(i)] for i in range(40, 80)]
    asyncio.run(_feed(stage, envelopes))  # 6 h 40 min of event time in well under a second of wall time
    silent = [(sid, rule) for sid, rule in sent.rules() if rule == "sensor_silent"]
    assert silent == [(GAUGE.sensor_id, "sensor_silent")]


def test_findings_are_acknowledged_by_the_broker_before_the_checkpoint_is_written() -> None:
    sent = Sent()
    table = CheckpointWatch(sent)
    stage = _stage(table, sent, detector_checkpoint_s=0.0)
    rise = [[_gauge(i, round(6.0 + 0.1 * i, 2))] for i in range(80)]  # crosses BĐ I, II and III

    async def late_acks() -> None:
        run = asyncio.ensure_future(_feed(stage, rise, ack=False))
        while not run.done():
            await asyncio.sleep(0.001)
            for f in sent.pending:  # the broker answers a little later, after the run has awaited it
                if not f.done():
                    f.set_result(None)
        await run

    asyncio.run(late_acks())
    assert ("HYD_DONG_TRANG", "flood_alarm_level") in sent.rules()
    assert table.acked_at_checkpoint and all(table.acked_at_checkpoint)
    assert int(table[f"{CHECKPOINT}0"]) == len(rise)  # the next offset the state covers


def test_a_redelivered_envelope_skips_the_sensors_whose_restored_state_holds_it() -> None:
    stage = _stage({}, Sent())
    stage.seen_upto = {GAUGE.sensor_id: 10}
    envelope = [_gauge(9, 3.0), _rain(9)]
    assert [r.sensor_id for r in stage.unseen(envelope, 9)] == [RAIN.sensor_id]
    assert [r.sensor_id for r in stage.unseen(envelope, 10)] == [GAUGE.sensor_id, RAIN.sensor_id]


def test_detectors_off_sends_nothing() -> None:
    sent = Sent()
    stage = _stage({}, sent, detectors_enabled=False)
    asyncio.run(_feed(stage, [[_gauge(i, 12.0)] for i in range(5)]))
    assert sent.batches == []


def test_after_a_restart_the_silence_timer_waits_for_a_partitions_backlog_and_leaves_others_alone() -> None:
    sent = Sent()
    table: dict[str, Any] = {}
    asyncio.run(_feed(_stage(table, sent, detector_checkpoint_s=0.0), [[_gauge(i, 3.0), _rain(i)] for i in range(20)]))
    assert table  # checkpointed: what a restarted worker finds in its table

    def judged(owned: dict[int, bool] | None) -> list[tuple[str, str]]:
        after = Sent(ack_at_once=True)
        stage = _stage(table, after)  # the restarted worker: nothing heard yet on this partition
        stage.owned = lambda: owned
        stage.worker_started -= timedelta(days=1)  # long past any grace from the start
        asyncio.run(stage.silence_timer())
        return sorted(after.rules())

    assert judged({}) == []  # another worker owns partition 0
    assert judged({0: False}) == []  # its backlog is still in Kafka: the sensors spoke, unheard yet
    silent = [(GAUGE.sensor_id, "sensor_silent"), (RAIN.sensor_id, "sensor_silent")]
    assert judged({0: True}) == silent  # drained, and still nothing: silent
    assert judged(None) == silent  # ownership unknown: judged as before


def test_a_findings_send_the_broker_refuses_is_sent_again_after_the_topics_are_checked() -> None:
    from aiokafka.errors import UnknownTopicOrPartitionError

    class Refusing(Sent):
        """The first send fails, as after a broker that came back without the topic."""

        async def send(self, *, value: bytes, partition: int, force: bool = False) -> asyncio.Future[None]:
            fut = await super().send(value=value, partition=partition, force=force)
            if len(self.batches) == 1:
                fut.set_exception(UnknownTopicOrPartitionError())
            else:
                fut.set_result(None)
            return fut

    sent = Refusing()
    checks: list[int] = []

    async def topics_again() -> None:
        checks.append(len(sent.batches))

    stage = _stage({}, sent)
    stage.topics_again = topics_again
    asyncio.run(_feed(stage, [[_gauge(i, round(6.0 + 0.1 * i, 2))] for i in range(30)], ack=False))
    first = sent.batches[0][1]
    assert [b for _, b in sent.batches].count(first) == 2  # the refused batch went again, nothing dropped
    assert checks == [1]  # the topics were checked before the second try


def test_findings_become_alerts_with_their_source_record_before_they_are_sent() -> None:
    """The worker applies its own findings (no second Kafka hop on the alert path), each batch named by
    the envelope that made it, and before the findings topic gets them: a sent batch implies applied
    alerts, which is what lets a redelivered envelope whose findings were sent run silently."""
    sent = Sent(ack_at_once=True)
    applied: list[tuple[int | None, int | None, list[str]]] = []
    sent_when_applied: list[int] = []

    async def apply(batches: list[tuple[int | None, int | None, list[Any]]]) -> None:
        sent_when_applied.append(len(sent.batches))
        applied.extend((p, o, [f.rule for f in fs]) for p, o, fs in batches)

    stage = _stage({}, sent)
    stage.apply_alerts = apply
    rise = [[_gauge(i, round(6.0 + 0.1 * i, 2))] for i in range(80)]
    asyncio.run(_feed(stage, rise))
    assert [(b.source_offset, [f.rule for f in b.findings]) for _, b in sent.batches] == \
        [(o, rules) for _, o, rules in applied]
    assert "flood_alarm_level" in {r for _, _, rules in applied for r in rules}
    assert all(p == 0 for p, _, _ in applied)
    assert sent_when_applied == list(range(len(sent_when_applied)))  # each applied before its batch went out


class CheckpointCount(dict[str, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.checkpoints = 0
        self.state_writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        if key.startswith(CHECKPOINT):
            self.checkpoints += 1
        else:
            self.state_writes += 1
        super().__setitem__(key, value)


def _checkpoints(n_sensors: int, per_envelope: int, envelopes: int) -> CheckpointCount:
    """Envelopes 0.5 s apart (2 s checkpoint interval), sensors round robin, ``per_envelope`` readings each."""
    table = CheckpointCount()
    s = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", kafka_partitions=1,
                 detector_checkpoint_s=2.0)
    gauges = {f"G{i}": SensorEntry(f"G{i}", "water_level", f"G{i}", ("water_level_m",), 10.0, None, {})
              for i in range(n_sensors)}
    stage = DetectorStage(s, table, Sent(ack_at_once=True).send, StageStats("test"), "readings")
    stage.start(gauges)

    async def feed() -> None:
        k = 0
        for offset in range(envelopes):
            committed = T0 + timedelta(seconds=0.5 * offset)
            rs = []
            for _ in range(per_envelope):
                rs.append(Reading(f"G{k % n_sensors}", "water_level", committed - timedelta(milliseconds=100), k,
                                  {"water_level_m": 3.0 + 0.01 * (k % 5)}))
                k += 1
            stage.observe(0, rs, committed)
            await stage.run([(Position("g:readings", 0, offset), rs, None)], committed)

    asyncio.run(feed())
    return table


def test_a_sparse_cadence_is_checkpointed_every_few_readings_per_sensor_not_every_interval() -> None:
    """Many sensors each reporting rarely: a checkpoint every 2 s would write one state per reading.
    It waits for 3 readings per sensor touched (or 15 intervals); a dense partition keeps the interval."""
    sparse = _checkpoints(n_sensors=500, per_envelope=4, envelopes=120)  # 480 readings over 60 s, ~1 per sensor
    dense = _checkpoints(n_sensors=2, per_envelope=4, envelopes=120)  # the same readings from 2 sensors
    assert sparse.checkpoints <= 3, sparse.checkpoints  # at the start, then at most every 30 s
    assert sparse.state_writes <= 2 * 480 / 3, sparse.state_writes  # was ~one state write per reading
    assert dense.checkpoints >= 25, dense.checkpoints  # every 2 s of 60 s


def test_thousands_of_findings_from_one_envelope_go_as_several_records_under_kafkas_size_limit() -> None:
    """After an outage one envelope finds every gauge silent; one record of them all outgrew Kafka's
    1 MB request limit and crashed the worker. They go in records of at most FINDINGS_PER_RECORD."""
    n = 1200
    s = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", kafka_partitions=1)
    gauges = {f"G{i}": SensorEntry(f"G{i}", "water_level", f"G{i}", ("water_level_m",), 300.0, None, {})
              for i in range(n)}
    sent = Sent(ack_at_once=True)
    stage = DetectorStage(s, {}, sent.send, StageStats("test"), "readings")
    stage.start({**gauges, RAIN.sensor_id: RAIN})
    first = [Reading(f"G{i}", "water_level", T0, 1, {"water_level_m": 3.0}) for i in range(n)]
    later = [_rain(72)]  # six hours on, only the rain gauge speaks

    async def feed() -> None:
        for offset, rs in enumerate([first, later]):
            committed = rs[-1].ts + timedelta(seconds=1)
            stage.observe(0, rs, committed)
            await stage.run([(Position("g:readings", 0, offset), rs, None)], committed)

    asyncio.run(feed())
    silent = [b for _, b in sent.batches if any(f.rule == "sensor_silent" for f in b.findings)]
    assert sum(len(b.findings) for b in silent) >= n
    assert len(silent) >= 3 and all(len(b.findings) <= FINDINGS_PER_RECORD for b in silent)
    assert {b.source_offset for b in silent} == {1}
    assert all(len(msgspec.json.encode(b)) < 1_000_000 for _, b in sent.batches)


class StateWrites(dict[str, Any]):
    """A table that counts the sensor states written since ``mark()``."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        if not key.startswith(CHECKPOINT):
            self.writes += 1
        super().__setitem__(key, value)

    def mark(self) -> int:
        n, self.writes = self.writes, 0
        return n


class Reread:
    """The readings partition as a takeover reads it again (``OffsetGuard.read_range``)."""

    def __init__(self, log: list[list[Reading]]) -> None:
        self.log = log

    async def read_range(self, partition: int, start: int, end: int) -> Any:
        for off in range(start, min(end, len(self.log))):
            yield off, encode_envelope(self.log[off])


N_SPREAD = 700
SPREAD = {f"G{i}": SensorEntry(f"G{i}", "water_level", f"G{i}", ("water_level_m",), 10.0, None, {})
          for i in range(N_SPREAD)}


def _spread_log(envelopes: int, per_envelope: int = 50) -> list[list[Reading]]:
    """Sensors round robin, each reading every 14 envelopes (0.1 s apart), values that keep moving."""
    out, k = [], 0
    for offset in range(envelopes):
        ts = T0 + timedelta(seconds=0.1 * offset)
        rs = []
        for _ in range(per_envelope):
            rs.append(Reading(f"G{k % N_SPREAD}", "water_level", ts, k, {"water_level_m": round(3.0 + 0.01 * (k % 13), 2)}))
            k += 1
        out.append(rs)
    return out


def _spread_stage(table: dict[str, Any], log: list[list[Reading]]) -> DetectorStage:
    s = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", kafka_partitions=1,
                 detector_checkpoint_s=2.0)
    stage = DetectorStage(s, table, Sent(ack_at_once=True).send, StageStats("test"), "readings",
                          rereader=Reread(log))  # type: ignore[arg-type]
    stage.start(SPREAD)
    return stage


async def _run_spread(stage: DetectorStage, log: list[list[Reading]], start: int, end: int,
                      after_each: Any = None) -> None:
    for offset in range(start, end):
        rs = log[offset]
        committed = rs[-1].ts + timedelta(milliseconds=50)
        stage.observe(0, rs, committed)
        await stage.run([(Position("g:readings", 0, offset), rs, None)], committed)
        if after_each is not None:
            after_each(offset)


def _live_states(stage: DetectorStage) -> dict[str, dict[str, Any]]:
    from streams.detection import state_of

    assert stage.bank is not None
    return {sid: state_of(stage.bank.detectors(sid, stage.table) or [], stage.bank._holds.get(sid))
            for sid in SPREAD}


def test_a_checkpoint_is_written_over_several_envelopes_and_names_where_it_started() -> None:
    """All 700 dirty states at once held the event loop (250 ms at 10,000 sensors); each call writes at
    most a slice, and the partition's key comes last, naming the offset every written state reached."""
    from streams.detector_stage import FLUSH_SLICE

    log = _spread_log(400)
    table = StateWrites()
    stage = _spread_stage(table, log)
    per_call: list[int] = []
    started: list[int] = []
    keys: list[tuple[int, int]] = []

    def watch(offset: int) -> None:
        per_call.append(table.mark())
        if 0 in stage.flushing and (not started or started[-1] != stage.flushing[0][0]):
            started.append(stage.flushing[0][0])
        raw = table.get(f"{CHECKPOINT}0")
        if raw is not None and (not keys or keys[-1][1] != int(raw)):
            keys.append((offset, int(raw)))

    asyncio.run(_run_spread(stage, log, 0, len(log), watch))
    assert max(per_call) <= max(FLUSH_SLICE, 50), max(per_call)
    spread = [k for k, (offset, mark) in enumerate(keys) if offset > mark]  # finished after it began
    assert spread, keys  # at least one checkpoint needed several envelopes
    # each key names where its checkpoint started: the next offset when it fit in one call
    assert all(mark == offset + 1 or mark in started for offset, mark in keys), (keys, started)
    assert len(keys) >= 8, keys
    # every sensor was dirty in each checkpoint here (each reads every 14 envelopes, a checkpoint
    # waits 42), so each state stands at or after the offset the last key names
    uptos = [msgspec.json.decode(table[sid])["upto"] for sid in SPREAD]
    assert min(uptos) >= keys[-1][1], (min(uptos), keys[-1])


def test_a_worker_killed_in_the_middle_of_a_checkpoint_is_taken_over_with_the_same_detector_state() -> None:
    """Sensors written at different offsets by a checkpoint cut short: the next worker replays each
    from its own offset, so every detector ends as if nothing had happened (none fed a reading twice,
    none missing one)."""
    log = _spread_log(400)
    whole = _spread_stage({}, log)
    asyncio.run(_run_spread(whole, log, 0, len(log)))

    table: dict[str, Any] = {}
    first = _spread_stage(table, log)
    cut: list[int] = []

    async def until_mid_checkpoint() -> None:
        for offset in range(len(log)):
            await _run_spread(first, log, offset, offset + 1)
            if offset > 100 and 0 in first.flushing and len(first.flushing[0][1]) < N_SPREAD // 2:
                cut.append(offset + 1)
                return

    asyncio.run(until_mid_checkpoint())
    assert cut, "no checkpoint was cut in the middle"
    reference_at = [0]
    saved = {k: msgspec.json.decode(v) for k, v in table.items() if not k.startswith(CHECKPOINT)}
    uptos = {st["upto"] for st in saved.values()}
    assert len(uptos) > 1  # the sensors stand at different offsets
    # each saved state is exactly the state after the readings before its own `upto`
    reference = _spread_stage({}, log)
    for upto in sorted(uptos):
        asyncio.run(_run_spread(reference, log, reference_at[0], upto))
        reference_at[0] = upto
        now = _live_states(reference)
        for sid, st in saved.items():
            if st["upto"] == upto:
                assert {k: v for k, v in st.items() if k != "upto"} == msgspec.json.decode(msgspec.json.encode(now[sid])), sid
    second = _spread_stage(dict(table), log)  # the worker that takes the partition over
    asyncio.run(_run_spread(second, log, cut[0], len(log)))
    assert _live_states(second) == _live_states(whole)


def test_a_sensor_that_reaches_the_table_after_the_index_was_built_is_ticked_too() -> None:
    table: dict[str, Any] = {}
    stage = _stage(table, Sent())
    assert stage.partition_sensors(0) == []
    table["HYD_OTHER"] = b"{}"  # restored from the changelog, say, after the index was built
    assert stage.partition_sensors(0) == ["HYD_OTHER"]
    assert stage.bank is not None
    stage.bank.detectors(GAUGE.sensor_id, table)  # a sensor built from its first reading
    assert stage.partition_sensors(0) == [GAUGE.sensor_id, "HYD_OTHER"]
    stage.bank.forget(GAUGE.sensor_id)
    assert stage.partition_sensors(0) == ["HYD_OTHER"]


def test_checkpoint_writes_keep_within_the_room_left_in_the_changelog_buffer() -> None:
    """Faust holds every stream while more than 100 table writes wait to be produced; a checkpoint
    of 10,000 sensors at once held intake for 1-2 s. Each call writes at most the room left (here a
    buffer that drains by 40 between calls), none while the buffer is full, and still finishes."""
    log = _spread_log(400)
    table = StateWrites()
    stage = _spread_stage(table, log)
    waiting = [0]  # table writes not yet produced

    def room() -> int:
        return 100 - waiting[0]

    stage.changelog_room = room
    per_call: list[tuple[int, int]] = []  # (room before the call, states written)
    before = [room()]

    def after_each(offset: int) -> None:
        wrote = table.mark()
        per_call.append((before[0], wrote))
        waiting[0] = max(0, waiting[0] + wrote - 40)  # what Faust produced meanwhile
        if offset == 150:
            waiting[0] = 100  # a full buffer: nothing may be written until it drains
        before[0] = room()

    asyncio.run(_run_spread(stage, log, 0, len(log), after_each))
    assert all(wrote <= max(0, r) for r, wrote in per_call), [x for x in per_call if x[1] > max(0, x[0])]
    assert any(r == 0 and wrote == 0 for r, wrote in per_call)  # the full buffer was waited out
    assert max(w for _, w in per_call) > 0 and len(table.get(f"{CHECKPOINT}0", b"")) > 0
    marks = int(table[f"{CHECKPOINT}0"])
    assert marks > 200, marks  # checkpoints kept completing after the full buffer


def test_the_partition_index_kept_up_to_date_equals_a_full_scan_whatever_happens_in_between() -> None:
    """The index takes sensors as the bank builds them and is rebuilt only for what it cannot follow:
    random builds, readings, checkpoints, takeovers (forget), retirements and keys restored into the
    table behind its back, checked against a scan of the table and the live sensors."""

    parts = 4
    registry = {f"R{i:03d}": SensorEntry(f"R{i:03d}", "rain", "rain", ("rain_mm",), 300.0, None, {}) for i in range(40)}
    for seed in range(8):
        rng = random.Random(seed)
        table: dict[str, Any] = {}
        s = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", kafka_partitions=parts)
        stage = DetectorStage(s, table, Sent(ack_at_once=True).send, StageStats("test"), "readings")
        stage.start(registry)
        bank = stage.bank
        assert bank is not None
        ids = list(registry)
        checks = 0
        for step in range(400):
            sid = rng.choice(ids)
            op = rng.random()
            if op < 0.35:
                r = Reading(sid, "rain", T0 + timedelta(minutes=step), step, {"rain_mm": 0.0})
                if rng.random() < 0.5:
                    bank.process([r], table)
                else:
                    stage.detect([r], stage.part(sid))  # an envelope: its new sensors join the index
            elif op < 0.5:
                bank.detectors(sid, table)
            elif op < 0.6:
                stage.checkpoint(stage.part(sid), step, 1e9 * (step + 1), rng.choice([1, 5, 100]))
            elif op < 0.68:
                bank.forget(sid)
            elif op < 0.72:
                table[f"RESTORED{step}"] = b"{}"  # a changelog restored, a standby's update
            elif op < 0.76:
                table[sid] = b"{}"  # an existing key rewritten, or a new one, from outside the bank
            elif op < 0.8:
                registry_now = {k: v for k, v in registry.items() if rng.random() > 0.1}
                bank.update_registry(registry_now)
            if rng.random() < 0.3:
                scan = sorted({k for k in table if not k.startswith(CHECKPOINT)} | bank.live_sensors())
                for p in range(parts):
                    assert stage.partition_sensors(p) == [k for k in scan if stage.part(k) == p], (seed, step)
                checks += 1
        assert checks > 50
