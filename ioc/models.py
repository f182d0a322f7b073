"""Domain messages beyond the wire payload: findings from detectors and alert transitions."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ioc.wire import Reading

__all__ = ["AlertChange", "Finding", "Reading"]


class Finding(msgspec.Struct, frozen=True):
    """What a detector concluded about one sensor at one moment.

    ``severity`` None means the condition has cleared (the alert may resolve).
    """

    sensor_id: str
    rule: str  # the detector's name; one alert key per sensor and rule
    kind: str  # alert kind: flood, rain, air, noise, traffic, health
    metric: str
    ts: datetime
    severity: str | None
    value: float
    threshold: float | None = None
    message: str = ""  # Vietnamese, for emergency staff
    predicted_crossing_at: datetime | None = None
    lead_time_s: float | None = None
    detail: dict[str, object] = {}
    family: str = "warning"  # health, anomaly or warning (hazard)
    score: float = 1.0  # in [0, 1]: how sure / how far past the threshold
    message_en: str = ""
    crossing_uncertainty_s: float | None = None  # +/- on predicted_crossing_at

    @property
    def alert_key(self) -> str:
        return f"{self.sensor_id}:{self.rule}"

    @property
    def detector(self) -> str:
        return self.rule


class FindingBatch(msgspec.Struct):
    v: int
    findings: list[Finding]
    #: the readings offset (same partition number) whose envelope produced these findings; None
    #: for the silence timer's. A worker taking a partition over reads it back to know which
    #: envelopes already had their findings sent, so a redelivery does not send them twice.
    source_offset: int | None = None


class AlertChange(msgspec.Struct, frozen=True):
    """One alert transition, as fanned out to MQTT, webhooks and Grafana."""

    alert_id: int
    alert_key: str
    event: str  # opened, escalated, deescalated, acknowledged, resolved
    state: str
    severity: str
    previous_severity: str | None
    kind: str
    sensor_id: str
    rule: str
    at: datetime
    value: float | None
    threshold: float | None
    message: str
