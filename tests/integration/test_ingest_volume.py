"""100k readings with duplicates, disorder and malformed payloads: exactly the distinct valid ones
are stored, every malformed one is dead-lettered with its reason, and the roll-ups are exact."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioc.wire import encode_payload
from tests.support import publish, register_sensors, scalar, wait_for

pytestmark = pytest.mark.integration


def _malformed(i: int, sid: str, now: datetime) -> tuple[str, bytes, str]:
    topic = f"khanhhoa/v1/water_level/{sid}"
    kind = i % 6
    if kind == 0:
        return topic, b'{"sensor_id": "%s", "seq": %d, ' % (sid.encode(), i), "bad_json"
    if kind == 1:
        return topic, encode_payload(sid, now - timedelta(seconds=i), i, {"pm25": 1.0}), "unknown_metric"
    if kind == 2:
        return topic, encode_payload(f"{sid}_X{i}", now, i, {"water_level_m": 1.0}), "sensor_mismatch"
    if kind == 3:
        return topic, b'{"sensor_id":"%s","ts":"2026-01-01T00:00:00Z","seq":%d,"metrics":{"water_level_m":NaN}}' % (
            sid.encode(), i), "bad_json"
    if kind == 4:
        return topic, b'{"pad": "%s", "seq": %d}' % (b"x" * 4200, i), "too_large"
    return topic, encode_payload(sid, now + timedelta(hours=1, seconds=i), i, {"water_level_m": 1.0}), "future_ts"


def test_100k_with_duplicates_disorder_and_malformed_is_exact(pipeline: dict[str, str]) -> None:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    rng = random.Random(20171104)
    tag = uuid.uuid4().hex[:6].upper()
    sensors = [f"VOL{tag}_{i:03d}" for i in range(100)]
    like = f"VOL{tag}_%"
    register_sensors(db, [(s, "water_level", None) for s in sensors])
    time.sleep(2.5)
    now = datetime.now(UTC)
    t0 = now - timedelta(days=2)
    valid = [
        (f"khanhhoa/v1/water_level/{s}",
         encode_payload(s, t0 + timedelta(seconds=30 * k + rng.random()), k, {"water_level_m": round(rng.uniform(0, 12), 3)}))
        for k in range(990)
        for s in sensors
    ]  # 99,000 distinct valid readings
    malformed = [_malformed(i, sensors[i % len(sensors)], now) for i in range(1000)]  # 1%
    stream: list[tuple[str, bytes]] = valid + [(t, p) for t, p, _ in malformed]
    stream += rng.sample(valid, 5000)  # 5% duplicated deliveries
    rng.shuffle(stream[:0])  # keep mostly time order ...
    for _ in range(2500):  # ... but move 5% of the messages out of order (pairwise swaps)
        i = rng.randrange(len(stream))
        j = min(len(stream) - 1, i + rng.randrange(1, 3000))
        stream[i], stream[j] = stream[j], stream[i]
    assert publish(mqtt, stream, timeout_s=300) == len(stream)

    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", (like,)) >= len(valid),
             300, f"{len(valid)} rows", interval_s=1)
    dl_topic = f"khanhhoa/v1/water_level/VOL{tag}_%"
    wait_for(lambda: scalar(db, "SELECT count(*) FROM deadletters WHERE topic LIKE %s", (dl_topic,)) >= 1000,
             120, "1000 dead letters", interval_s=1)
    time.sleep(3)
    assert scalar(db, "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", (like,)) == len(valid)
    with psycopg.connect(db) as conn:
        letters = conn.execute("SELECT raw, reason FROM deadletters WHERE topic LIKE %s", (dl_topic,)).fetchall()
        assert len(letters) == 1000  # one per malformed payload, oversize ones included
        stored = dict(letters)
        # an oversize payload is kept as a sample of its first 4096 bytes (its digest is in detail)
        assert {bytes(raw): reason for raw, reason in stored.items()} == {p[:4096]: r for _, p, r in malformed}
        # readings_1m equals a GROUP BY over readings, every column
        diff = conn.execute(
            """
            WITH g AS (
              SELECT date_trunc('minute', ts) AS bucket, sensor_id, metric, count(*)::int AS n, avg(value) AS mean,
                     min(value) AS min, max(value) AS max, (array_agg(value ORDER BY ts DESC))[1] AS last
              FROM readings WHERE sensor_id LIKE %(like)s GROUP BY 1, 2, 3)
            SELECT count(*) FROM g FULL JOIN (SELECT * FROM readings_1m WHERE sensor_id LIKE %(like)s) r
              USING (bucket, sensor_id, metric)
            WHERE g.n IS DISTINCT FROM r.n OR abs(g.mean - r.mean) > 1e-9 OR g.min IS DISTINCT FROM r.min
               OR g.max IS DISTINCT FROM r.max OR g.last IS DISTINCT FROM r.last
            """,
            {"like": like},
        ).fetchone()
        assert diff == (0,)
        assert conn.execute("SELECT count(*) FROM readings_1m WHERE sensor_id LIKE %s", (like,)).fetchone()[0] > 0  # type: ignore[index]


@pytest.fixture(scope="module")
def probe_sensor(pipeline: dict[str, str]) -> str:
    """Registered once, before the fuzzing, so the bridge's registry already knows it."""
    sid = "FUZZ_PROBE"
    register_sensors(pipeline["IOC_DATABASE_URL"], [(sid, "rain", None)])
    time.sleep(2.5)
    return sid


TOPIC_CHARS = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="#+\x00")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    batch=st.lists(
        st.tuples(
            st.one_of(  # topics the broker accepts (Mosquitto drops clients sending control characters)
                st.text(TOPIC_CHARS, min_size=1, max_size=60),
                st.builds(lambda k, s: f"khanhhoa/v1/{k}/{s}", st.sampled_from(["rain", "air", "x", ""]),
                          st.text(TOPIC_CHARS, min_size=0, max_size=20)),
            ),
            st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
        ),
        min_size=1, max_size=20,
    )
)
def test_fuzzed_topics_and_payloads_never_stop_the_bridge(
    pipeline: dict[str, str], probe_sensor: str, batch: list[tuple[str, bytes]]
) -> None:
    """Arbitrary topics and bytes: each valid MQTT publish is dead-lettered, and the pipeline keeps going."""
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    assert publish(mqtt, batch, timeout_s=20) == len(batch)
    # a valid reading published after the fuzz still arrives
    sid = probe_sensor
    seq = int(time.time() * 1000)
    ts = datetime.now(UTC) - timedelta(microseconds=seq % 1000)
    assert publish(mqtt, [(f"khanhhoa/v1/rain/{sid}", encode_payload(sid, ts, seq, {"rain_mm": 0.5}))]) == 1
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s AND ts = %s", (sid, ts)) == 1,
             60, "the probe reading after fuzzing")
