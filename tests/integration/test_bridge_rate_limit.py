"""One sensor flooding through the real bridge: the excess is dead-lettered as rate_limited, counted
to the message, and the other sensors are not affected (MQTT → bridge → Kafka → worker → PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ioc.settings import Settings
from ioc.wire import encode_payload
from tests.support import publish, register_sensors, scalar, wait_for

pytestmark = pytest.mark.integration

DEFAULTS = Settings()


def test_a_flooding_sensor_is_limited_and_nothing_is_dropped(pipeline: dict[str, str]) -> None:
    db, mqtt = pipeline["IOC_DATABASE_URL"], pipeline["IOC_MQTT_URL"]
    tag = uuid.uuid4().hex[:6].upper()
    flood, calm = f"FLOOD_{tag}", f"CALM_{tag}"
    register_sensors(db, [(flood, "noise", None), (calm, "noise", None)])
    time.sleep(2.5)  # the session bridge reloads its registry every second
    burst, rate = DEFAULTS.sensor_rate_burst, DEFAULTS.sensor_max_rate_hz
    n = burst * 2  # far beyond what the bucket allows in the few seconds publishing takes
    t0 = datetime.now(UTC) - timedelta(hours=2)
    msgs = [(f"khanhhoa/v1/noise/{flood}", encode_payload(flood, t0 + timedelta(milliseconds=k), k, {"laeq_dba": 60.0}))
            for k in range(n)]
    calm_msgs = [(f"khanhhoa/v1/noise/{calm}", encode_payload(calm, t0 + timedelta(seconds=k), k, {"laeq_dba": 55.0}))
                 for k in range(20)]
    calm_acked: list[int] = []
    calm_pub = threading.Thread(target=lambda: calm_acked.append(publish(mqtt, calm_msgs)))
    started = time.monotonic()
    calm_pub.start()
    assert publish(mqtt, msgs, timeout_s=120) == n
    elapsed = time.monotonic() - started
    calm_pub.join(60)
    assert calm_acked == [len(calm_msgs)]

    def limited() -> int:
        return int(scalar(db, "SELECT coalesce(sum(occurrences), 0) FROM deadletters WHERE reason = 'rate_limited'"
                              " AND topic = %s", (f"khanhhoa/v1/noise/{flood}",)))

    def stored() -> int:
        return int(scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (flood,)))

    # Every message is accounted for: stored, or counted in a rate_limited letter. Nothing else.
    wait_for(lambda: stored() + limited() >= n, 120, f"{n} flood messages stored or dead-lettered")
    time.sleep(2)
    s, lim = stored(), limited()
    assert s + lim == n, (s, lim)
    assert burst <= s <= burst + rate * (elapsed + 3)  # the bucket, not more (3 s: ack and clock slack)
    assert lim >= n - burst - rate * (elapsed + 3)
    # aggregated: about one letter per second of flooding, not one per message
    letters = scalar(db, "SELECT count(*) FROM deadletters WHERE reason = 'rate_limited' AND topic = %s",
                     (f"khanhhoa/v1/noise/{flood}",))
    assert 1 <= letters <= elapsed + 3 + lim / 1000
    detail = scalar(db, "SELECT detail FROM deadletters WHERE reason = 'rate_limited' AND topic = %s LIMIT 1",
                    (f"khanhhoa/v1/noise/{flood}",))
    assert flood in detail and "over the limit" in detail
    print(f"flood of {n} in {elapsed:.1f} s: {s} stored, {lim} rate_limited in {letters} letters")
    # the calm sensor, publishing at the same time, lost nothing
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (calm,)) == len(calm_msgs), 60,
             "the calm sensor's readings")
    # and the bridge reports the rejects in pipeline_metrics
    wait_for(lambda: (scalar(db, "SELECT max(value) FROM pipeline_metrics WHERE stage = 'bridge'"
                                 " AND metric = 'rejected_rate_limited_total'") or 0) >= lim, 30,
             "the bridge's rate_limited counter")
