"""What a channel receives: one notification about one alert, with a stable id.

The outbox stores notifications as they are created, in the same transaction as the alert
transition; the dispatcher hands each one to its channel until the channel accepts it. A
crash means a second delivery of the same ``notification_id``, never none, so receivers
deduplicate by it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec


class AlertView(msgspec.Struct, frozen=True):
    """A snapshot of one alert (or incident member) at the moment a notification was created."""

    alert_id: int
    alert_key: str
    state: str  # open, acknowledged, resolved
    severity: str  # info, warning, critical
    peak_severity: str
    previous_severity: str | None
    kind: str  # flood, rain, air, noise, traffic, health
    family: str  # warning (hazard), anomaly or health
    sensor_id: str
    rule: str
    metric: str | None
    opened_at: datetime
    updated_at: datetime
    value: float | None = None
    threshold: float | None = None
    message: str = ""  # Vietnamese
    message_en: str = ""
    resolved_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    predicted_crossing_at: datetime | None = None
    crossing_uncertainty_s: float | None = None
    lead_time_s: float | None = None
    incident_key: str | None = None  # e.g. flood:river:Cái; None when ungrouped
    members: list[str] = []  # sensor ids of the incident, this one included
    sensor_name: str | None = None
    district: str | None = None
    lat: float | None = None
    lon: float | None = None


class Notification(msgspec.Struct, frozen=True):
    notification_id: str  # uuid4 hex, created with the outbox row; receivers deduplicate by it
    channel: str  # mqtt, webhook, grafana, cap
    event: str  # opened, escalated, deescalated, acknowledged, resolved, repeat, updated
    created_at: datetime
    alert: AlertView
    attempt: int = 1  # 1 on the first delivery, counted up by the dispatcher


class DeliveryError(Exception):
    """A channel could not deliver. ``retryable`` False means retrying cannot help (4xx, bad config)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    """One delivery channel. ``deliver`` returns once the receiver accepted, or raises DeliveryError.

    It must be idempotent for one ``notification_id``: the dispatcher may call it twice.
    """

    name: str

    async def deliver(self, n: Notification) -> None: ...

    async def close(self) -> None: ...
