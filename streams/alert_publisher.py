"""Alerts to emergency staff over MQTT: retained while active, cleared when resolved.

A client that connects late therefore sees every active alert at once.
"""

from __future__ import annotations

import logging
import threading

import msgspec

from ioc.domain import alert_topic
from ioc.models import AlertChange
from ioc.mqtt_client import make_client
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
        """Connect in the background: a broker that is down now must not crash the alerts agent."""
        t = self.target
        self.client.connect_async(t.host, t.port, keepalive=30, properties=self.props)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _publish(self, topic: str, payload: bytes, timeout_s: float = 10.0) -> bool:
        if not self._connected.wait(timeout_s):
            log.warning("MQTT %s not connected; alert on %s not sent yet", mask_url(self.url), topic)
            return False
        info = self.client.publish(topic, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout_s)
            return info.is_published()
        except (RuntimeError, ValueError):  # disconnected meanwhile; the caller retries
            return False

    def publish(self, change: AlertChange) -> bool:
        """Blocking: returns True once the broker acked (QoS 1). Call from a worker thread."""
        topic = alert_topic(change.severity, change.kind, str(change.alert_id))
        ok = True
        if change.previous_severity and change.previous_severity != change.severity:
            ok &= self._publish(alert_topic(change.previous_severity, change.kind, str(change.alert_id)), b"")
        if change.state == "resolved":
            return self._publish(topic, b"") and ok
        return self._publish(topic, _enc.encode(change)) and ok
