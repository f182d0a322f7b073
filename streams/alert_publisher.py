"""Alerts to emergency staff over MQTT: retained while active, cleared when resolved.

A client that connects late therefore sees every active alert at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import msgspec

from ioc.alerting.notification import DeliveryError, Notification
from ioc.domain import alert_topic
from ioc.mqtt_client import make_client, start_background, stop_background
from ioc.settings import Settings, mask_url

log = logging.getLogger(__name__)
_enc = msgspec.json.Encoder()


class AlertPublisher:
    def __init__(self, settings: Settings, client_id: str) -> None:
        assert settings.mqtt_url is not None
        self.url = settings.mqtt_url
        self.client, self.target, self.props = make_client(
            settings.mqtt_url, client_id=client_id, ca_file=settings.mqtt_ca_file
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=15)
        self._connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p: self._connected.clear()

    def start(self) -> None:
        start_background(self.client, self.target, self.props)

    def stop(self) -> None:
        stop_background(self.client)

    def _publish(self, topic: str, payload: bytes, timeout_s: float = 10.0, retain: bool = True) -> bool:
        if not self._connected.wait(timeout_s):
            log.warning("MQTT %s not connected; alert on %s not sent yet", mask_url(self.url), topic)
            return False
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout_s)
            return info.is_published()
        except (RuntimeError, ValueError):  # disconnected meanwhile; the caller retries
            return False

    def publish(self, n: Notification) -> bool:
        """Blocking: True once the broker acked every message (QoS 1). Call from a worker thread.

        Active: the alert's JSON, retained on its severity's topic (a moved severity clears the
        old one). Resolved: the final JSON is published once, not retained, then the retained
        message is cleared, so a late subscriber sees only active alerts.
        """
        a = n.alert
        topic = alert_topic(a.severity, a.kind, str(a.alert_id))
        body = _enc.encode(mqtt_payload(n))
        ok = True
        if a.previous_severity and a.previous_severity != a.severity:
            ok &= self._publish(alert_topic(a.previous_severity, a.kind, str(a.alert_id)), b"")
        if a.state == "resolved":
            return ok and self._publish(topic, body, retain=False) and self._publish(topic, b"")
        return self._publish(topic, body) and ok


def mqtt_payload(n: Notification) -> dict[str, object]:
    """What MQTT subscribers get: the notification id to deduplicate by, and the alert in both languages."""
    return {"notification_id": n.notification_id, "event": n.event, "created_at": n.created_at,
            "alert": msgspec.to_builtins(n.alert)}


class MqttChannel:
    """The outbox's MQTT channel: ``khanhhoa/v1/alerts/<severity>/<kind>/<alert_id>``."""

    name = "mqtt"

    def __init__(self, publisher: AlertPublisher) -> None:
        self.publisher = publisher
        self._started = False

    async def deliver(self, n: Notification) -> None:
        if not self._started:
            self.publisher.start()
            self._started = True
        if not await asyncio.to_thread(self.publisher.publish, n):
            raise DeliveryError(f"MQTT broker {mask_url(self.publisher.url)} did not ack the alert")

    async def close(self) -> None:
        if self._started:
            await asyncio.to_thread(self.publisher.stop)
