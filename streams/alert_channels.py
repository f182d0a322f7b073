"""Which notification channels this deployment has, built from settings (named at start-up)."""

from __future__ import annotations

import uuid

from ioc.alerting.cap import CapProfile
from ioc.alerting.notification import Channel
from ioc.settings import Settings
from streams.alert_publisher import AlertPublisher, MqttChannel
from streams.channels.cap_files import CapFileChannel
from streams.channels.fanout import FanOutChannel
from streams.channels.grafana_annotations import GrafanaAnnotationChannel
from streams.channels.webhook import WebhookChannel


def build_channels(settings: Settings) -> dict[str, Channel]:
    """MQTT always (the worker needs a broker anyway); webhooks, Grafana and CAP files when configured."""
    profile = CapProfile(sender=settings.cap_sender, status=settings.cap_status)
    out: dict[str, Channel] = {}
    if settings.mqtt_url:
        out["mqtt"] = MqttChannel(AlertPublisher(settings, f"{settings.app_id}-alerts-{uuid.uuid4().hex[:8]}"))
    if settings.webhook_urls:
        assert settings.webhook_secret is not None  # the settings refuse a URL without a secret
        hooks: list[Channel] = [
            WebhookChannel(u, settings.webhook_secret, timeout_s=settings.webhook_timeout_s,
                           format=settings.webhook_format, cap_profile=profile, name="webhook")
            for u in settings.webhook_urls
        ]
        out["webhook"] = hooks[0] if len(hooks) == 1 else FanOutChannel("webhook", hooks)
    if settings.grafana_url and settings.grafana_token is not None:
        out["grafana"] = GrafanaAnnotationChannel(settings.grafana_url, settings.grafana_token)
    if settings.cap_dir is not None:
        out["cap"] = CapFileChannel(settings.cap_dir, profile=profile)
    return out


def enabled_channels(settings: Settings) -> tuple[str, ...]:
    """The channel names alone, for tools (CLI acknowledgements) that write the outbox but deliver nothing."""
    names = []
    if settings.mqtt_url:
        names.append("mqtt")
    if settings.webhook_urls:
        names.append("webhook")
    if settings.grafana_url and settings.grafana_token is not None:
        names.append("grafana")
    if settings.cap_dir is not None:
        names.append("cap")
    return tuple(names)
