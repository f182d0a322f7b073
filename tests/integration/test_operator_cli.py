"""Operator commands against the running pipeline: dead-letter replay after a fix, alert ack."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ioc.wire import encode_payload
from tests.conftest import mqtt_account_url
from tests.support import publish, register_sensors, scalar, wait_for

pytestmark = pytest.mark.integration


def _ioc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc.composition.cli", *args], env=env, capture_output=True, text=True, timeout=60)


def test_deadletters_of_an_unknown_sensor_are_stored_after_registration_and_replay(pipeline: dict[str, str]) -> None:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    sid = f"LATE_REG_{uuid.uuid4().hex[:6].upper()}"
    t0 = datetime.now(UTC) - timedelta(minutes=20)
    msgs = [(f"khanhhoa/v1/rain/{sid}", encode_payload(sid, t0 + timedelta(minutes=k), k, {"rain_mm": k / 10}))
            for k in range(10)]
    assert publish(mqtt, msgs) == 10
    wait_for(lambda: scalar(db, "SELECT count(*) FROM deadletters WHERE topic = %s AND reason = 'unknown_sensor'"
                               " AND replayed_at IS NULL", (msgs[0][0],)) == 10, 60, "10 dead letters")
    # oldest first, and the session's database holds every other test's letters too
    listing = _ioc(pipeline, "deadletters", "list", "--reason", "unknown_sensor", "--limit", "100000")
    assert listing.returncode == 0 and sid in listing.stdout and "unknown_sensor=" in listing.stdout

    register_sensors(db, [(sid, "rain", None)])  # the fix
    time.sleep(2.5)
    res = _ioc(pipeline, "deadletters", "replay", "--reason", "unknown_sensor")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sid,)) == 10, 60, "10 readings")
    assert scalar(db, "SELECT count(*) FROM deadletters WHERE topic = %s AND replayed_at IS NULL", (msgs[0][0],)) == 0


def test_an_open_alert_can_be_acknowledged_from_the_cli(pipeline: dict[str, str]) -> None:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    gauge = f"ACK_{uuid.uuid4().hex[:6].upper()}"
    register_sensors(db, [(gauge, "water_level", {"bd1": 4.2, "bd2": 5.0, "bd3": 5.7})])  # Ninh Hòa levels
    time.sleep(2.5)
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    msgs = [(f"khanhhoa/v1/water_level/{gauge}", encode_payload(gauge, t0 + timedelta(minutes=k), k, {"water_level_m": v}))
            for k, v in enumerate([4.0, 4.1, 4.25, 4.3])]
    assert publish(mqtt, msgs) == 4
    alert_id = wait_for(lambda: scalar(db, "SELECT alert_id FROM alerts WHERE sensor_id = %s", (gauge,)), 60, "alert")
    listing = _ioc(pipeline, "alerts", "list", "--limit", "100000")  # most severe first; other tests' alerts too
    assert listing.returncode == 0 and gauge in listing.stdout
    res = _ioc(pipeline, "alerts", "ack", str(alert_id), "--by", "trực ban PCTT")
    assert res.returncode == 0, res.stderr
    assert scalar(db, "SELECT state || '/' || acknowledged_by FROM alerts WHERE alert_id = %s", (alert_id,)) == \
        "acknowledged/trực ban PCTT"
    assert scalar(db, "SELECT count(*) FROM alert_events WHERE alert_id = %s AND event = 'acknowledged'", (alert_id,)) == 1
    again = _ioc(pipeline, "alerts", "ack", str(alert_id), "--by", "x")
    assert again.returncode == 2 and "is not open" in again.stderr


def _open_alert(pipeline: dict[str, str], prefix: str) -> tuple[str, int]:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    gauge = f"{prefix}_{uuid.uuid4().hex[:6].upper()}"
    register_sensors(db, [(gauge, "water_level", {"bd1": 4.2, "bd2": 5.0, "bd3": 5.7})])
    time.sleep(2.5)
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    msgs = [(f"khanhhoa/v1/water_level/{gauge}", encode_payload(gauge, t0 + timedelta(minutes=k), k, {"water_level_m": v}))
            for k, v in enumerate([4.0, 4.1, 4.25, 4.3])]
    assert publish(mqtt, msgs) == 4
    return gauge, wait_for(lambda: scalar(db, "SELECT alert_id FROM alerts WHERE sensor_id = %s", (gauge,)), 60, "alert")


def test_alerts_list_json_and_an_acknowledgement_over_mqtt(pipeline: dict[str, str]) -> None:
    import json

    db = pipeline["IOC_DATABASE_URL"]
    gauge, alert_id = _open_alert(pipeline, "MQACK")
    listing = _ioc(pipeline, "alerts", "list", "--open", "--json")
    assert listing.returncode == 0, listing.stderr
    mine = [a for a in json.loads(listing.stdout) if a["alert_id"] == alert_id]
    assert mine and mine[0]["state"] == "open" and mine[0]["sensor_id"] == gauge
    # Malformed acknowledgements are refused and change nothing; a good one acknowledges, with its note.
    # They come from the operators' account, the only one the broker's ACL lets acknowledge.
    operator = mqtt_account_url(pipeline, "operator")
    assert publish(operator, [("khanhhoa/v1/alerts/ack", b'{"alert_id": "x"}'),
                              ("khanhhoa/v1/alerts/ack", b"not json"),
                              ("khanhhoa/v1/alerts/ack",
                               json.dumps({"alert_id": alert_id, "by": "Lan", "note": "đã cử người"}).encode())]) == 3
    wait_for(lambda: scalar(db, "SELECT state FROM alerts WHERE alert_id = %s", (alert_id,)) == "acknowledged", 30,
             "the acknowledgement over MQTT")
    assert scalar(db, "SELECT acknowledged_by || '/' || ack_note FROM alerts WHERE alert_id = %s", (alert_id,)) == \
        "Lan/đã cử người"
    assert scalar(db, "SELECT actor FROM alert_events WHERE alert_id = %s AND event = 'acknowledged'", (alert_id,)) == "Lan"
    # ... and the acknowledgement went out on the channels through the outbox.
    wait_for(lambda: scalar(db, "SELECT count(*) FROM alert_outbox WHERE alert_id = %s AND event = 'acknowledged'"
                                " AND delivered_at IS NOT NULL", (alert_id,)) == 1, 30, "the acknowledgement notified")


def test_a_silence_from_the_cli_mutes_notifications_but_keeps_the_alert(pipeline: dict[str, str]) -> None:
    db = pipeline["IOC_DATABASE_URL"]
    gauge = f"SIL_{uuid.uuid4().hex[:6].upper()}"
    bad = _ioc(pipeline, "alerts", "silence", "--sensor", gauge, "--for", "soon", "--by", "Lan", "--reason", "x")
    assert bad.returncode == 2 and "--for" in bad.stderr
    res = _ioc(pipeline, "alerts", "silence", "--sensor", gauge, "--for", "2h", "--by", "Lan", "--reason", "bảo trì")
    assert res.returncode == 0, res.stderr
    listing = _ioc(pipeline, "alerts", "silences")
    assert gauge in listing.stdout
    register_sensors(db, [(gauge, "water_level", {"bd1": 4.2, "bd2": 5.0, "bd3": 5.7})])
    time.sleep(2.5)
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    assert publish(pipeline["IOC_MQTT_URL"], [(f"khanhhoa/v1/water_level/{gauge}",
                                               encode_payload(gauge, t0 + timedelta(minutes=k), k, {"water_level_m": v}))
                                              for k, v in enumerate([4.0, 4.1, 4.25, 4.3])]) == 4
    alert_id = wait_for(lambda: scalar(db, "SELECT alert_id FROM alerts WHERE sensor_id = %s", (gauge,)), 60, "alert")
    wait_for(lambda: scalar(db, "SELECT muted_by FROM alerts WHERE alert_id = %s", (alert_id,)), 10, "muted_by")
    assert scalar(db, "SELECT count(*) FROM alert_outbox WHERE alert_id = %s", (alert_id,)) == 0
