"""Acknowledgements over MQTT: an operator's console publishes ``{"alert_id": 42, "by": "Lan"}``.

Who may publish there is the broker's business (its ACL allows operators only); this side
validates the payload, acknowledges in the database (which writes the notifications) and
never dies on a bad message. Workers share one subscription, so each ack is handled once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import paho.mqtt.client as mqtt

from ioc.mqtt_client import make_client, start_background, stop_background
from ioc.settings import Settings

log = logging.getLogger(__name__)


class AckRequest(msgspec.Struct, forbid_unknown_fields=True):
    alert_id: int
    by: str
    note: str | None = None


def parse_ack(payload: bytes) -> AckRequest:
    """A valid acknowledgement, or ValueError naming what is wrong.

    >>> parse_ack(b'{"alert_id": 7, "by": "Lan"}').by
    'Lan'
    >>> parse_ack(b'{"alert_id": "x", "by": "Lan"}')
    Traceback (most recent call last):
    ...
    ValueError: bad acknowledgement: Expected `int`, got `str` - at `$.alert_id`
    """
    if len(payload) > 4096:
        raise ValueError("bad acknowledgement: larger than 4 KiB")
    try:
        req = msgspec.json.decode(payload, type=AckRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ValueError(f"bad acknowledgement: {e}") from e
    if not 0 < req.alert_id < 2**63 or not req.by.strip() or len(req.by) > 100 or len(req.note or "") > 1000:
        raise ValueError("bad acknowledgement: alert_id must be positive, by 1-100 characters, note ≤ 1000")
    return req


class AckListener:
    def __init__(self, settings: Settings, handle: Callable[[AckRequest], Awaitable[Any]],
                 loop: asyncio.AbstractEventLoop) -> None:
        assert settings.mqtt_url is not None
        self.topic = settings.ack_topic
        self.subscription = f"$share/{settings.share_group}-ack/{self.topic}"
        self.handle = handle
        self.loop = loop
        self.rejected = 0
        self.client, self.target, self.props = make_client(
            settings.mqtt_url, client_id=f"{settings.app_id}-ack-{uuid.uuid4().hex[:8]}", ca_file=settings.mqtt_ca_file
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=15)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self.subscription, qos=1)  # again on every reconnect

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            req = parse_ack(bytes(msg.payload))
        except ValueError as e:
            self.rejected += 1
            log.warning("acknowledgement on %s rejected: %s (payload %r)", msg.topic, e, msg.payload[:200])
            return
        asyncio.run_coroutine_threadsafe(self._handle(req), self.loop)

    async def _handle(self, req: AckRequest) -> None:
        try:
            await self.handle(req)
        except Exception:
            log.exception("acknowledgement of alert %s by %s failed", req.alert_id, req.by)

    def start(self) -> None:
        start_background(self.client, self.target, self.props)

    def stop(self) -> None:
        stop_background(self.client)
