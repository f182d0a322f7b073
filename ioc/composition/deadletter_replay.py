"""Send pending MQTT dead letters through the bridge again, once the cause is fixed.

A letter that fails again is dead-lettered again and becomes pending once more.
"""

from __future__ import annotations

from ioc.errors import IocError
from ioc.mqtt_client import connect as mqtt_connect
from ioc.mqtt_client import make_client
from ioc.settings import Settings
from ioc.storage.db import connect
from ioc.storage.deadletters import list_deadletters, mark_replayed


def replay_deadletters(settings: Settings, *, reason: str | None, limit: int) -> int:
    """Publish up to ``limit`` pending MQTT letters again, oldest first; returns how many the broker acked.

    The letters are selected in SQL (source and topic before ``LIMIT``), so Kafka-side letters
    never use up the limit. Each acked letter is marked replayed, even when a later one fails.
    """
    settings.require("database_url", "mqtt_url")
    assert settings.database_url is not None and settings.mqtt_url is not None
    with connect(settings.database_url, autocommit=True) as conn:
        letters = list_deadletters(conn, reason=reason, limit=limit, source="mqtt", replayable=True)
        if not letters:
            return 0
        client, target, props = make_client(settings.mqtt_url, ca_file=settings.mqtt_ca_file)
        mqtt_connect(client, target, props)
        client.loop_start()
        done: list[int] = []
        try:
            for d in letters:
                info = client.publish(d.topic or "", d.raw, qos=1)
                info.wait_for_publish(10)
                if not info.is_published():
                    raise IocError(f"MQTT broker did not ack replay of dead letter {d.dl_id}")
                done.append(d.dl_id)
        finally:
            if done:
                mark_replayed(conn, done)
            client.loop_stop()
            client.disconnect()
    return len(done)
