"""A worker that dies is replaced at once, by a supervisor or by a second worker: nothing lost.

Issue 7's black-box failure: with the seeded registry's gauges (so the worker keeps detector
state in its changelogged table) a worker SIGKILLed and restarted within the group session
timeout lost a contiguous band of readings, silently. These tests use the same ingredients:
the seeded registry, several metrics per reading, duplicates, shuffled windows, malformed
payloads, and a replacement that joins while the dead member is still in the group.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ioc.composition.seed import seed_registry
from ioc.domain import KIND_METRICS
from ioc.stack.stack import StackState
from ioc.wire import encode_payload
from streams.topics import partition_for
from tests.conftest import fresh_db
from tests.support import Pipeline, SteadyPublisher, scalar, start_pipeline

pytestmark = pytest.mark.integration

N_MESSAGES = 12_000
SESSION_TIMEOUT_S = 10.0  # the settings' default; "past the session timeout" means longer than this


def _registry() -> list[dict[str, object]]:
    path = Path(__file__).resolve().parents[2] / "sensors_sim" / "data" / "sensors.json"
    return list(json.loads(path.read_text(encoding="utf-8"))["sensors"])


def _stream(seed: int) -> tuple[list[tuple[str, bytes]], set[tuple[str, str, datetime]], list[str]]:
    """Round-robin over every registered sensor; 1-3 metrics each; gauges swing across their
    alarm levels so the detector state changes all the time. Returns messages, expected rows and
    the topics of the malformed payloads."""
    rng = random.Random(seed)
    sensors = _registry()
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    msgs: list[tuple[str, bytes]] = []
    rows: set[tuple[str, str, datetime]] = set()
    for k in range(N_MESSAGES):
        s = sensors[k % len(sensors)]
        sid, kind = str(s["sensor_id"]), str(s["kind"])
        ts = t0 + timedelta(milliseconds=500 * k)
        names = list(KIND_METRICS[kind])
        chosen = rng.sample(names, rng.randint(1, min(3, len(names))))
        levels = s.get("alarm_levels") or {}
        metrics: dict[str, float] = {}
        for m in chosen:
            if isinstance(levels, dict) and levels.get("bd3"):
                metrics[m] = round(float(levels["bd1"] or 0) - 1 + 5 * rng.random(), 2)  # across BĐ I-III
            else:
                metrics[m] = round(rng.uniform(1, 60), 3)
        msgs.append((f"khanhhoa/v1/{kind}/{sid}", encode_payload(sid, ts, k, metrics)))
        rows.update((sid, m, ts) for m in metrics)
    # about 8 % sent twice, some windows of 50 shuffled, 100 malformed payloads mixed in
    for i in rng.sample(range(len(msgs)), len(msgs) * 8 // 100):
        msgs.insert(min(len(msgs), i + rng.randint(1, 200)), msgs[i])
    for start in rng.sample(range(0, len(msgs) - 50, 50), 20):
        window = msgs[start:start + 50]
        rng.shuffle(window)
        msgs[start:start + 50] = window
    bad_topics = []
    for i in rng.sample(range(len(msgs)), 100):
        bad_topics.append(msgs[i][0])
        msgs.insert(i, (msgs[i][0], b'{"sensor_id": broken'))
    return msgs, rows, bad_topics


def _stored(db: str) -> set[tuple[str, str, datetime]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return {(s, m, ts) for s, m, ts in conn.execute(
            "SELECT sensor_id, metric, ts FROM readings WHERE sensor_id NOT LIKE 'WARMUP%%'").fetchall()}


def _assert_exact(p: Pipeline, expected: set[tuple[str, str, datetime]], bad_topics: list[str],
                  timeout_s: float = 240) -> None:
    n = len(expected)
    count = "SELECT count(*) FROM readings WHERE sensor_id NOT LIKE 'WARMUP%%'"
    deadline, last, stalled_at = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        got = int(scalar(p.db, count))
        if got >= n:
            break
        if got != last:
            last, stalled_at = got, time.monotonic()
        elif time.monotonic() - stalled_at > 40:  # nothing new for 40 s: the rest is not coming
            break
        time.sleep(1)
    if int(scalar(p.db, count)) < n:
        stored = _stored(p.db)
        missing = sorted(expected - stored, key=lambda r: r[2])
        raise AssertionError(
            f"{len(missing)} of {n} rows missing; event time {missing[0][2]} .. {missing[-1][2]}\n"
            + "\n".join(f"--- {name}\n{p.procs.log(name, 15)}" for name in p.procs.procs)
        ) from None
    time.sleep(3)
    stored = _stored(p.db)
    assert stored == expected, f"missing {len(expected - stored)}, unexpected {len(stored - expected)}"
    assert scalar(p.db, "SELECT count(*) FROM readings") == scalar(p.db, "SELECT sum(n) FROM readings_1m")
    # one row per distinct (topic, payload), and every arrival counted exactly once. Dead letters
    # are few, so a skip at a partition's end is only found by the ledger timer (two idle ticks).
    occurrences = "SELECT coalesce(sum(occurrences), 0) FROM deadletters WHERE reason = 'bad_json'"
    deadline = time.monotonic() + 60
    while scalar(p.db, occurrences) < len(bad_topics) and time.monotonic() < deadline:
        time.sleep(1)
    assert scalar(p.db, "SELECT count(*) FROM deadletters WHERE reason = 'bad_json'") == len(set(bad_topics))
    assert scalar(p.db, "SELECT sum(occurrences) FROM deadletters WHERE reason = 'bad_json'") == len(bad_topics)


@pytest.fixture
def gauges_pipeline(stack: StackState, tmp_path: Path) -> Iterator[Pipeline]:
    db = fresh_db(stack.urls["IOC_DATABASE_URL"])
    assert seed_registry(db) == len(_registry())
    p = start_pipeline(stack.urls, db, tmp_path, IOC_MQTT_SHARED_SUBSCRIPTION="false")
    try:
        p.warm_up()
        yield p
    finally:
        p.stop()


@pytest.mark.parametrize(("kill_at", "restart_after_s"), [
    (0.33, 0.0), (0.33, 1.0), (0.6, 1.0), (0.33, 5.0), (0.5, SESSION_TIMEOUT_S + 5),
])
def test_worker_sigkilled_and_restarted_loses_nothing(
    gauges_pipeline: Pipeline, kill_at: float, restart_after_s: float
) -> None:
    p = gauges_pipeline
    msgs, expected, bad = _stream(seed=int(kill_at * 100 + restart_after_s))
    pub = SteadyPublisher(p.env["IOC_MQTT_URL"], msgs, duration_s=len(msgs) / 2000).start()
    pub.wait_progress(kill_at)
    p.procs.kill("worker0", signal.SIGKILL)
    time.sleep(restart_after_s)
    p.start_worker(0)
    assert pub.finish() == len(msgs)
    _assert_exact(p, expected, bad)
    time.sleep(2)  # one more metrics flush
    lost = scalar(p.db, "SELECT max(value) FROM pipeline_metrics WHERE stage = 'sink' AND metric = 'offsets_lost_total'")
    assert lost == 0, "the pipeline must report lost offsets, and there must be none"


def test_a_second_worker_takes_over_from_one_that_never_comes_back(stack: StackState, tmp_path: Path) -> None:
    db = fresh_db(stack.urls["IOC_DATABASE_URL"])
    seed_registry(db)
    p = start_pipeline(stack.urls, db, tmp_path, workers=2, IOC_MQTT_SHARED_SUBSCRIPTION="false")
    try:
        p.warm_up()
        msgs, expected, bad = _stream(seed=7)
        pub = SteadyPublisher(p.env["IOC_MQTT_URL"], msgs, duration_s=len(msgs) / 2000).start()
        pub.wait_progress(0.4)
        p.procs.kill("worker1", signal.SIGKILL)
        assert pub.finish() == len(msgs)
        _assert_exact(p, expected, bad)
    finally:
        p.stop()


def _committed(kafka_url: str, group: str, topic: str) -> dict[int, int]:
    """Kafka's committed offsets of ``group`` on ``topic``, per partition, read as a consumer of the
    group does (OffsetFetch through the coordinator; it does not join the group)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.topics import bootstrap_servers

    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(kafka_url), group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()  # loads the cluster's metadata
            parts = sorted(consumer.partitions_for_topic(topic) or ())
            assert parts, f"no partitions known for {topic}"
            return {part: (await consumer.committed(TopicPartition(topic, part))) or 0 for part in parts}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_offsets_committed_past_unwritten_data_are_fetched_again(stack: StackState, tmp_path: Path) -> None:
    """Whatever moves Kafka's committed offset past data the database never got (the Faust gap
    commit of issue 7 or anything else), the ledger notices and the worker fetches it again.

    Simulated the hard way: every envelope is stored and committed, then the database loses all
    of it and its offset ledger is rolled back to zero, as if the commits had run ahead."""
    from tests.support import reading_msgs, register_sensors

    db = fresh_db(stack.urls["IOC_DATABASE_URL"])
    sensors = [f"LEDGER_{i:02d}" for i in range(16)]
    register_sensors(db, [(s, "water_level", {"bd1": 2.0, "bd2": 5.0, "bd3": 8.0}) for s in sensors])
    p = start_pipeline(stack.urls, db, tmp_path, IOC_MQTT_SHARED_SUBSCRIPTION="false")
    try:
        p.warm_up()
        first = reading_msgs(sensors, 100)
        SteadyPublisher(p.env["IOC_MQTT_URL"], first, duration_s=1).start().finish()
        count = "SELECT count(*) FROM readings WHERE sensor_id LIKE 'LEDGER%%'"
        deadline = time.monotonic() + 120
        while scalar(db, count) < len(first) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert scalar(db, count) == len(first)
        time.sleep(3)  # Faust commits every second: Kafka now says everything is done
        p.procs.kill("worker0", signal.SIGTERM)
        p.procs.procs["worker0"].wait(30)
        # The premise, checked: the partitions whose committed offset Kafka moved past data the
        # database is about to lose. (A partition Kafka never committed is simply read again from 0,
        # and one holding only the warm-up reading loses no LEDGER row: its tail timer may notice it
        # after this test has looked.)
        committed = _committed(p.env["IOC_KAFKA_URL"], p.env["IOC_APP_ID"], f"{p.env['IOC_TOPIC_PREFIX']}.readings")
        holding = {partition_for(sid, len(committed)) for sid in sensors}  # not the warm-up sensor's alone
        ahead = {part for part, offset in committed.items() if offset > 0 and part in holding}
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DELETE FROM readings WHERE sensor_id LIKE 'LEDGER%%'")
            conn.execute("DELETE FROM readings_1m WHERE sensor_id LIKE 'LEDGER%%'")
            touched = conn.execute("UPDATE consumed_offsets SET next_offset = 0 WHERE stream LIKE '%%readings'").rowcount
        assert touched >= 4, "the readings spread over several partitions"
        assert len(ahead) >= 4, f"Kafka committed past the data on only {sorted(ahead)}"
        p.start_worker(0)
        later = reading_msgs(sensors, 20, start=datetime.now(UTC) - timedelta(minutes=30))
        SteadyPublisher(p.env["IOC_MQTT_URL"], later, duration_s=1).start().finish()
        deadline = time.monotonic() + 180
        while scalar(db, count) < len(first) + len(later) and time.monotonic() < deadline:
            time.sleep(1)
        assert scalar(db, count) == len(first) + len(later), p.procs.log("worker0")
        assert scalar(db, "SELECT sum(n) FROM readings_1m WHERE sensor_id LIKE 'LEDGER%%'") == len(first) + len(later)
        time.sleep(2)
        # Each rolled-back partition was noticed either by a later record (gap filled) or, when it
        # sat idle at its end, by the ledger timer (tail refetched); both are counted.
        noticed = scalar(db, "SELECT sum(v) FROM (SELECT max(value) AS v FROM pipeline_metrics WHERE stage = 'sink'"
                             " AND metric IN ('offset_gaps_filled_total', 'offset_tails_refetched_total')"
                             " GROUP BY metric) m")
        assert noticed and noticed >= len(ahead)
        assert "were never applied" in p.procs.log("worker0", 400)
        lost = scalar(db, "SELECT max(value) FROM pipeline_metrics WHERE stage = 'sink' AND metric = 'offsets_lost_total'")
        assert lost == 0
    finally:
        p.stop()
