"""Notifications are never lost: a worker SIGKILLed after the commit and before the delivery, and a
channel down for 60 s, end with every notification delivered at least once, with its id (all real:
MQTT, Kafka, PostgreSQL, the worker processes; the webhook receiver is a local HTTP server)."""

from __future__ import annotations

import json
import queue
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ioc.mqtt_client import connect, make_client
from ioc.wire import encode_payload
from tests.conftest import fresh_db, stack_env
from tests.support import publish, register_sensors, start_pipeline, wait_for
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration
SECRET = "s3cret-for-tests-only-0123456789"


def _rows(db: str, q: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db, autocommit=True) as c:
        return c.execute(q, params).fetchall()


def test_a_killed_worker_and_a_channel_down_for_60_s_lose_no_notification(stack: Any, pg_url: str,
                                                                           tmp_path: Path) -> None:
    receiver = WebhookReceiver(SECRET).up()
    receiver.down()  # refused connections from the start: every webhook attempt fails and is retried
    down_at = time.monotonic()
    db = fresh_db(pg_url)
    p = start_pipeline(stack_env(stack), db, tmp_path, IOC_WEBHOOK_URLS=receiver.url, IOC_WEBHOOK_SECRET=SECRET,
                       IOC_NOTIFY_RETRY_CAP_S="2", IOC_DISPATCH_POLL_S="0.5")
    mqtt_seen: queue.Queue[dict[str, Any]] = queue.Queue()
    client, target, props = make_client(stack_env(stack)["IOC_MQTT_URL"])
    client.on_connect = lambda c, u, f, rc, pr: c.subscribe("khanhhoa/v1/alerts/#", qos=1)
    client.on_message = lambda c, u, m: mqtt_seen.put(json.loads(m.payload)) if m.payload else None
    connect(client, target, props)
    client.loop_start()
    try:
        p.warm_up()
        gauge = f"G_{uuid.uuid4().hex[:6]}"
        register_sensors(db, [(gauge, "water_level", {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0})])
        time.sleep(2.5)
        t0 = datetime.now(UTC) - timedelta(minutes=30)
        levels = [7.0, 8.2, 9.7, 11.3]  # BĐ I, II, III
        publish(p.env["IOC_MQTT_URL"], [
            (f"khanhhoa/v1/water_level/{gauge}", encode_payload(gauge, t0 + timedelta(minutes=i), i + 1,
                                                                {"water_level_m": v}))
            for i, v in enumerate(levels)])
        # MQTT is not held up by the dead webhook: its notifications arrive while webhooks keep failing.
        wait_for(lambda: _rows(db, "SELECT count(*) FROM alert_outbox WHERE channel = 'mqtt' AND delivered_at"
                                   " IS NOT NULL")[0][0] >= 3, 90, "MQTT deliveries")
        wait_for(lambda: _rows(db, "SELECT count(*) FROM alert_outbox WHERE channel = 'webhook' AND attempts >= 1"
                                   " AND delivered_at IS NULL")[0][0] >= 1, 60, "failing webhook attempts")
        # Committed, not delivered: kill the worker now.
        p.procs.kill("worker0", signal.SIGKILL)
        pending = _rows(db, "SELECT notification_id FROM alert_outbox WHERE channel = 'webhook'"
                            " AND delivered_at IS NULL")
        assert pending, "the kill must come before the webhook deliveries"
        p.start_worker(0)
        time.sleep(max(0.0, 60 - (time.monotonic() - down_at)))  # the channel is down for 60 s in all
        assert receiver.ids() == []
        receiver.up()
        wait_for(lambda: _rows(db, "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL")[0][0] == 0, 120,
                 "the backlog delivered")
        webhook_ids = {r[0] for r in _rows(db, "SELECT notification_id FROM alert_outbox WHERE channel = 'webhook'")}
        assert webhook_ids == set(receiver.ids())  # every one, each with its id (duplicates are deduplicated)
        assert {r[0] for r in pending} <= set(receiver.ids())
        assert receiver.rejected == []  # every signature verified
        events = [json.loads(r.body)["event"] for r in receiver.notifications.values()]
        assert events.count("opened") == 1 and events.count("escalated") == 2
        # Failed attempts are visible in the audit trail, then the delivery.
        retries = _rows(db, "SELECT count(*) FROM alert_events WHERE event = 'notify_retry:webhook'")[0][0]
        assert retries >= 1
        assert _rows(db, "SELECT count(DISTINCT detail->>'notification_id') FROM alert_events"
                         " WHERE event = 'notified:webhook'")[0][0] == len(webhook_ids)
        mqtt_ids = set()
        while not mqtt_seen.empty():
            mqtt_ids.add(mqtt_seen.get()["notification_id"])
        assert {r[0] for r in _rows(db, "SELECT notification_id FROM alert_outbox WHERE channel = 'mqtt'")} <= mqtt_ids
        assert _rows(db, "SELECT count(*), max(severity), max(state) FROM alerts") == [(1, "critical", "open")]
    finally:
        client.loop_stop()
        client.disconnect()
        p.stop()
        receiver.down()
