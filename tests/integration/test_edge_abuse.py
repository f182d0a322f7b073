"""Abuse at the edge through the real pieces.

- In-process bridge against real Mosquitto, Kafka and PostgreSQL: auto-registration never blocks
  the event loop.
- The session pipeline (bridge + Kafka + worker + PostgreSQL as processes): hostile payloads are
  dead-lettered with a reason, SQL metacharacters are stored as data, the processes live on.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioc.settings import Settings
from ioc.storage.sensors_store import auto_register
from ioc.wire import encode_payload
from streams.bridge import Bridge
from tests.support import publish, register_sensors, scalar, wait_for

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- auto-registration off the loop
def test_auto_registration_never_blocks_the_event_loop(mqtt_url: str, kafka_url: str, db_url: str) -> None:
    """Registering unknown sensors is a DB round trip; a slow database must not stall the bridge."""
    tag = uuid.uuid4().hex[:8]
    sensors = [f"AUTO_{tag}_{i}" for i in range(6)]
    settings = Settings(
        mqtt_url=mqtt_url, kafka_url=kafka_url, topic_prefix=f"ioc-auto-{tag}", bridge_id=f"auto-{tag}", bridge_retire_on_exit=True,
        share_group=f"auto{tag}", auto_register=True, kafka_partitions=2,
    )
    calls: list[tuple[str, int]] = []

    def register(sensor_id: str, kind: str) -> None:
        if tag not in sensor_id:
            return  # other tests' traffic on the shared broker
        calls.append((sensor_id, threading.get_ident()))
        time.sleep(0.5)  # a slow database: connection set-up, a lock, a failover
        with psycopg.connect(db_url, autocommit=True) as conn:
            auto_register(conn, sensor_id, kind)

    async def scenario() -> tuple[float, int, int]:
        loop_thread = threading.get_ident()
        bridge = Bridge(settings, {}, on_unknown_sensor=register)
        stop, ready = asyncio.Event(), asyncio.Event()
        run = asyncio.create_task(bridge.run(stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        lag = 0.0

        async def heartbeat() -> None:
            nonlocal lag
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.005)
                lag = max(lag, time.monotonic() - t - 0.005)

        beat = asyncio.create_task(heartbeat())
        t0 = datetime.now(UTC) - timedelta(minutes=5)
        msgs = [(f"khanhhoa/v1/rain/{s}", encode_payload(s, t0, 1, {"rain_mm": 0.2})) for s in sensors]
        assert await asyncio.to_thread(publish, mqtt_url, msgs) == len(msgs)
        deadline = time.monotonic() + 30
        while (len(calls) < len(sensors) or bridge.stats.acked < len(sensors)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)  # the last registration finishes
        beat.cancel()
        stop.set()
        await asyncio.wait_for(run, 30)
        return lag, loop_thread, bridge.stats.valid

    lag, loop_thread, valid = asyncio.run(scenario())
    assert sorted(s for s, _ in calls) == sorted(sensors)
    assert all(thread != loop_thread for _, thread in calls), "registration ran on the event loop"
    assert lag < 0.25, f"the event loop stalled for {lag:.3f} s"
    assert valid >= len(sensors)
    assert scalar(db_url, "SELECT count(*) FROM sensors WHERE auto_registered AND sensor_id LIKE %s",
                  (f"AUTO_{tag}_%",)) == len(sensors)


# ---------------------------------------------------------------- hostile payloads, whole pipeline
@pytest.fixture(scope="module")
def abuse_sensor(pipeline: dict[str, str]) -> str:
    sid = f"ABUSE_{uuid.uuid4().hex[:6].upper()}"
    register_sensors(pipeline["IOC_DATABASE_URL"], [(sid, "water_level", None)])
    time.sleep(2.5)
    return sid


SQL_META = ["'; DROP TABLE readings; --", "\"; DELETE FROM sensors; --", "1' OR '1'='1", "$$; TRUNCATE deadletters; $$",
            "\\x00", "%s %(x)s {}", "\u202e\u0000"]


def _hostile(sid: str, now: datetime, k: int) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected reason) for each kind of abuse; k makes every payload unique."""
    topic = f"khanhhoa/v1/water_level/{sid}"
    ts = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def raw(**over: object) -> bytes:
        body: dict[str, object] = {"sensor_id": sid, "ts": ts, "seq": k, "metrics": {"water_level_m": 1.0}}
        body.update(over)
        return json.dumps(body, allow_nan=True).encode()

    deep = b"[" * 5000 + b"]" * 5000
    out = [
        (topic, b"x" * 5000 + str(k).encode(), "too_large"),
        (topic, b'{"sensor_id":' + deep[:3000] + str(k).encode(), "bad_schema"),  # typed decoding stops early
        (topic, b'{"sensor_id":"x","z":' + deep[:3000] + str(k).encode(), "bad_schema"),
        (topic, raw(metrics={"water_level_m": float("nan")}), "bad_json"),
        (topic, raw(metrics={"water_level_m": float("inf")}), "bad_json"),
        (topic, raw(metrics={"water_level_m": "1.0"}), "bad_schema"),
        (topic, raw(seq=10**40 + k), "bad_schema"),
        (topic, raw(seq="x"), "bad_schema"),
        (topic, raw(seq=-1 - k), "bad_schema"),
        (topic, raw().replace(b'"water_level_m": 1.0', b'"water_level_m": 1e400'), "bad_schema"),
        (topic, raw(**{f"x\u0000{k}": 1}), "bad_schema"),  # a NUL quoted in the reason's detail
        (topic, raw(metrics={"water_level_m": True}), "bad_schema"),
        (topic, b"\xef\xbb\xbf" + raw(), "bad_json"),
        (topic, raw()[:-1], "bad_json"),
        (topic, raw(ts="2026-01-01T00:00:00"), "bad_ts"),
        (topic, raw(ts="0001-01-01T00:00:00Z"), "too_late"),
        (topic, raw(ts="9999-12-31T23:59:59Z"), "future_ts"),
        (topic, raw(sensor_id=SQL_META[k % len(SQL_META)]), "sensor_mismatch"),
        (topic, raw(metrics={SQL_META[k % len(SQL_META)]: 1.0}), "unknown_metric"),
        # (a deeper topic such as .../<sid>/extra never reaches the bridge: it is not subscribed)
        (f"khanhhoa/v1/{SQL_META[k % len(SQL_META)].replace('/', '')}/{sid}", raw(), "unknown_kind"),
        (f"khanhhoa/v1/water_level/{sid}'--", raw(), "sensor_mismatch"),
    ]
    return out


def test_hostile_payloads_are_dead_lettered_with_their_reason(pipeline: dict[str, str], abuse_sensor: str) -> None:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    sid = abuse_sensor
    now = datetime.now(UTC)
    cases = [c for k in range(3) for c in _hostile(sid, now, k)]
    cases = [(t.replace("\x00", ""), p, r) for t, p, r in cases]  # MQTT forbids NUL in topics
    before_sensors = scalar(db, "SELECT count(*) FROM sensors")
    assert publish(mqtt, [(t, p) for t, p, _ in cases]) == len(cases)
    # a valid reading after the abuse still arrives
    ok_ts = now - timedelta(seconds=30)
    assert publish(mqtt, [(f"khanhhoa/v1/water_level/{sid}", encode_payload(sid, ok_ts, 1, {"water_level_m": 2.5}))]) == 1
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sid,)) == 1, 60,
             "the valid reading after the abuse")
    expected = {}
    for t, p, r in cases:
        if r == "too_large":
            p = p[:4096]
        expected[(t, p)] = r
    topics = sorted({t for t, _ in expected})

    def letters() -> dict[tuple[str, bytes], str]:
        with psycopg.connect(db) as conn:
            rows = conn.execute("SELECT topic, raw, reason FROM deadletters WHERE topic = ANY(%s)", (topics,)).fetchall()
        return {(r[0], bytes(r[1])): r[2] for r in rows}

    deadline = time.monotonic() + 60
    while len(letters()) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    got = letters()
    missing = {k: v for k, v in expected.items() if got.get(k) != v}
    assert missing == {}, {"missing or wrong": missing, "unexpected": {k: v for k, v in got.items() if k not in expected}}
    with psycopg.connect(db) as conn:
        # nothing leaked into the data tables, and no table was dropped or emptied by the metacharacters
        assert conn.execute("SELECT count(*) FROM readings WHERE sensor_id = %s", (sid,)).fetchone() == (1,)
        assert conn.execute("SELECT value FROM readings WHERE sensor_id = %s", (sid,)).fetchone() == (2.5,)
        assert conn.execute("SELECT count(*) FROM sensors").fetchone() == (before_sensors,)
        nul = conn.execute("SELECT count(*) FROM deadletters WHERE topic = %s AND strpos(detail, %s) > 0",
                           (f"khanhhoa/v1/water_level/{sid}", "x\\x00")).fetchone()
        assert nul == (3,)  # the NUL in a field name is escaped in the stored reason, not a stalled writer


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    # what MQTT allows in a topic level: no wildcards, separators, controls or non-characters
    sid=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn"), blacklist_characters="/+#"), min_size=1,
                max_size=40),
    value=st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-(10**6), 10**6)),
)
def test_any_registered_unicode_sensor_id_round_trips_exactly(
    pipeline: dict[str, str], sid: str, value: float
) -> None:
    """Unicode and SQL metacharacters in a registered sensor id are data: stored exactly, once."""
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    sid = f"U{uuid.uuid4().hex[:4]}{sid}"
    register_sensors(db, [(sid, "rain", None)])
    ts = datetime.now(UTC) - timedelta(minutes=2)
    deadline = time.monotonic() + 30
    while True:  # the bridge learns new sensors from the registry within a second or two
        assert publish(mqtt, [(f"khanhhoa/v1/rain/{sid}", encode_payload(sid, ts, 1, {"rain_mm": float(value)}))]) == 1
        try:
            wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sid,)) == 1, 4,
                     "the reading")
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the reading never arrived"
    assert scalar(db, "SELECT value FROM readings WHERE sensor_id = %s", (sid,)) == float(value)
