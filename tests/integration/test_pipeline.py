"""The skeleton path end to end: MQTT → bridge → Kafka → Faust → PostgreSQL → alert (all real)."""

from __future__ import annotations

import hashlib
import json
import queue
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ioc.mqtt_client import connect, make_client
from ioc.wire import encode_payload
from tests.support import publish, register_sensors, scalar, wait_for

pytestmark = pytest.mark.integration


def _ids(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"{prefix}_{tag}_{i:03d}" for i in range(n)]


def test_n_readings_through_the_pipeline_give_exactly_n_rows(pipeline: dict[str, str]) -> None:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    sensors = _ids("PIPE", 20)
    register_sensors(db, [(s, "water_level", None) for s in sensors])
    time.sleep(2.5)  # the bridge reloads the registry every second in this session
    t0 = datetime.now(UTC) - timedelta(hours=1)
    msgs = [
        (f"khanhhoa/v1/water_level/{s}", encode_payload(s, t0 + timedelta(seconds=10 * k), k, {"water_level_m": 1.0 + k / 100}))
        for k in range(150)
        for s in sensors
    ]
    n = len(msgs)
    assert publish(mqtt, msgs + msgs[:300]) == n + 300  # 300 duplicated deliveries
    like = sensors[0][:-3] + "%"
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", (like,)) >= n, 120,
             f"{n} rows")
    time.sleep(2)  # anything extra (a duplicate that slipped through) would show up now
    assert scalar(db, "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", (like,)) == n
    assert scalar(db, "SELECT count(DISTINCT (sensor_id, ts)) FROM readings WHERE sensor_id LIKE %s", (like,)) == n
    # roll-ups agree with the raw rows
    assert scalar(db, "SELECT sum(n) FROM readings_1m WHERE sensor_id LIKE %s", (like,)) == n
    # per-sensor order survived: values rise with ts for every sensor
    assert scalar(
        db,
        "SELECT count(*) FROM (SELECT value - lag(value) OVER (PARTITION BY sensor_id ORDER BY ts) d"
        " FROM readings WHERE sensor_id LIKE %s) x WHERE d <= 0",
        (like,),
    ) == 0


def test_threshold_crossing_gives_exactly_one_open_alert_and_a_retained_message(pipeline: dict[str, str]) -> None:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    (gauge,) = _ids("GAUGE", 1)
    register_sensors(db, [(gauge, "water_level", {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0})])
    time.sleep(2.5)
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    levels = [7.0 + 0.05 * k for k in range(29)]  # 7.0 .. 8.4: crosses BĐ I only
    msgs = [
        (f"khanhhoa/v1/water_level/{gauge}", encode_payload(gauge, t0 + timedelta(minutes=k), k, {"water_level_m": v}))
        for k, v in enumerate(levels)
    ]
    assert publish(mqtt, msgs + msgs) == 2 * len(msgs)  # every reading delivered twice
    key = f"{gauge}:flood_alarm_level"
    wait_for(lambda: scalar(db, "SELECT count(*) FROM alerts WHERE alert_key = %s", (key,)) == 1, 60, "the alert")
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (gauge,)) == len(msgs), 60,
             "all gauge readings")
    time.sleep(2)
    assert scalar(db, "SELECT count(*) FROM alerts WHERE alert_key = %s", (key,)) == 1
    assert scalar(db, "SELECT state || '/' || severity FROM alerts WHERE alert_key = %s", (key,)) == "open/info"
    assert scalar(db, "SELECT threshold FROM alerts WHERE alert_key = %s", (key,)) == 8.0
    alert_id = scalar(db, "SELECT alert_id FROM alerts WHERE alert_key = %s", (key,))
    assert scalar(db, "SELECT count(*) FROM alert_events WHERE alert_id = %s AND event = 'opened'", (alert_id,)) == 1

    # A client that connects late still sees the active alert (retained).
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client, target, props = make_client(mqtt)
    client.on_message = lambda c, u, m: got.put((m.topic, m.payload))
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("khanhhoa/v1/alerts/#", qos=1)
    connect(client, target, props)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            topic, payload = got.get(timeout=max(0.1, deadline - time.monotonic()))
            if topic == f"khanhhoa/v1/alerts/info/flood/{alert_id}":
                body = json.loads(payload)
                alert = body["alert"]
                assert alert["sensor_id"] == gauge and alert["state"] == "open" and alert["message"]
                assert body["event"] == "opened" and len(body["notification_id"]) == 32
                # The outbox row it came from is marked delivered, and the delivery is audited.
                nid = body["notification_id"]
                assert wait_for(lambda nid=nid: scalar(db, "SELECT delivered_at IS NOT NULL FROM alert_outbox"
                                                           " WHERE notification_id = %s", (nid,)),
                                10, "the outbox row marked delivered")
                assert scalar(db, "SELECT count(*) FROM alert_events WHERE alert_id = %s"
                                  " AND event = 'notified:mqtt'", (alert_id,)) == 1
                break
        else:
            pytest.fail("no retained alert message")
    finally:
        client.loop_stop()
        client.disconnect()


def test_malformed_payloads_are_dead_lettered_with_their_reason(pipeline: dict[str, str]) -> None:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    (sid,) = _ids("DL", 1)
    register_sensors(db, [(sid, "rain", None)])
    time.sleep(2.5)
    now = datetime.now(UTC)
    cases = {
        "bad_json": (f"khanhhoa/v1/rain/{sid}", b'{"sensor_id": "' + sid.encode() + b'", '),
        "unknown_metric": (f"khanhhoa/v1/rain/{sid}", encode_payload(sid, now, 1, {"pm25": 3.0})),
        "sensor_mismatch": (f"khanhhoa/v1/rain/{sid}", encode_payload(sid + "X", now, 2, {"rain_mm": 1.0})),
        "future_ts": (f"khanhhoa/v1/rain/{sid}", encode_payload(sid, now + timedelta(hours=1), 3, {"rain_mm": 1.0})),
        "too_large": (f"khanhhoa/v1/rain/{sid}", b"{" + b" " * 5000 + b"}"),
    }
    assert publish(mqtt, list(cases.values())) == len(cases)
    for reason, (topic, raw) in cases.items():
        if reason == "too_large":  # stored as a sample of the first max_payload_bytes; its size is in detail
            raw = raw[:4096]
        wait_for(
            lambda raw=raw: scalar(db, "SELECT reason FROM deadletters WHERE raw = %s", (raw,)), 60,
            f"dead letter {reason}",
        )
        assert scalar(db, "SELECT reason FROM deadletters WHERE raw = %s", (raw,)) == reason
        assert scalar(db, "SELECT topic FROM deadletters WHERE raw = %s", (raw,)) == topic
    assert scalar(db, "SELECT detail FROM deadletters WHERE reason = 'too_large' AND topic = %s",
                  (cases["too_large"][0],)) == f"5002 bytes > 4096; sha256 {hashlib.sha256(cases['too_large'][1]).hexdigest()}"
    assert scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sid,)) == 0
