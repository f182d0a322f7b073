"""Grafana annotation channel: one region annotation per alert, from open to resolve.

The annotation is found again by its ``alert:<id>`` tag, so the channel keeps no local state
and a retry after a crash updates the region instead of creating a second one. Tags:
``ioc``, ``kind:<kind>``, ``severity:<severity>``, ``sensor:<sensor_id>``, ``alert:<alert_id>``
and ``state:<state>``; dashboards show them with an annotation query filtered on ``ioc``.

The region runs from ``opened_at`` to the alert's last change (``updated_at``), or to
``resolved_at`` once resolved. A notification older than what Grafana already shows (its
change time is before the region's end, or the region is resolved and this one is not) is
skipped, so a late retry cannot reopen a closed region.

grafana-client is synchronous, so each delivery runs in a worker thread; deliveries for one
alert are serialised, so two of them cannot both find no annotation and both create one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
)
from pydantic import SecretStr

from ioc.alerting import cap
from ioc.alerting.notification import AlertView, DeliveryError, Notification
from streams.channels.http_status import is_retryable, safe_url

log = logging.getLogger(__name__)

Annotation = dict[str, Any]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def annotation_tags(a: AlertView) -> list[str]:
    return ["ioc", f"kind:{a.kind}", f"severity:{a.severity}", f"sensor:{a.sensor_id}",
            f"alert:{a.alert_id}", f"state:{a.state}"]


def annotation_text(n: Notification) -> str:
    """Both languages: headline and description in Vietnamese, then in English."""
    parts = []
    for lang in cap.LANGUAGES:
        parts.append(cap.headline(n.alert, n.event, lang))
        parts.append(cap.description(n.alert, lang))
    return "\n".join(p for p in parts if p)


def region(a: AlertView) -> tuple[int, int]:
    """(time, timeEnd) in epoch milliseconds."""
    end = a.resolved_at if a.state == "resolved" and a.resolved_at is not None else a.updated_at
    start = _ms(a.opened_at)
    return start, max(start, _ms(end))


@dataclass
class _Slot:
    """A per-alert lock and how many deliveries hold or await it (dropped at zero)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class GrafanaAnnotationChannel:
    def __init__(
        self,
        url: str,
        token: str | SecretStr,
        *,
        timeout_s: float = 10.0,
        name: str = "grafana",
        api: GrafanaApi | None = None,
    ) -> None:
        raw = token.get_secret_value() if isinstance(token, SecretStr) else token
        if not raw:
            raise ValueError("the Grafana channel needs a service-account token: set IOC_GRAFANA_TOKEN")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self.name = name
        self._where = safe_url(url)
        self._api = api or GrafanaApi.from_url(url, credential=raw, timeout=timeout_s)
        self._locks: dict[int, _Slot] = {}

    async def deliver(self, n: Notification) -> None:
        aid = n.alert.alert_id
        slot = self._locks.setdefault(aid, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                await asyncio.to_thread(self._deliver_sync, n)
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._locks.pop(aid, None)

    def _deliver_sync(self, n: Notification) -> None:
        a = n.alert
        try:
            start, end = region(a)
            tags = annotation_tags(a)
            text = annotation_text(n)
        except (ValueError, TypeError) as e:  # cannot render: retrying will not help
            raise DeliveryError(f"cannot render notification {n.notification_id}: {e}", retryable=False) from e
        try:
            self._apply(n, start, end, tags, text)
        except GrafanaClientError as e:  # 4xx: 401 bad token, 403 missing permission, 400 bad data
            hint = " (check IOC_GRAFANA_TOKEN and its annotation permissions)" if e.status_code in (401, 403) else ""
            raise DeliveryError(
                f"Grafana {self._where} refused ({e.status_code}): {e.message}{hint}",
                retryable=is_retryable(e.status_code),
            ) from e
        except (GrafanaServerError, GrafanaTimeoutError, GrafanaException) as e:
            raise DeliveryError(f"Grafana {self._where}: {e.message}", retryable=True) from e
        except (OSError, ValueError) as e:  # connection refused/reset, unreadable response
            raise DeliveryError(f"Grafana {self._where}: {type(e).__name__}: {e}", retryable=True) from e

    def _find(self, alert_id: int) -> list[Annotation]:
        found = self._api.annotations.find_annotations(tags=[f"alert:{alert_id}"], ann_type="annotation", limit=100)
        if not isinstance(found, list):
            raise ValueError(f"unexpected annotation search answer: {str(found)[:100]}")
        want = f"alert:{alert_id}"
        return sorted((a for a in found if want in (a.get("tags") or [])), key=lambda a: int(a["id"]))

    def _apply(self, n: Notification, start: int, end: int, tags: list[str], text: str) -> None:
        a = n.alert
        found = self._find(a.alert_id)
        if not found:
            self._create(n, start, end, tags, text)
            return
        keep, extra = found[0], found[1:]
        for dup in extra:  # left over by an older version or a manual copy: one region per alert
            log.warning("Grafana: removing duplicate annotation %s of alert %s", dup["id"], a.alert_id)
            self._api.annotations.delete_annotations_by_id(annotations_id=dup["id"])
        if self._is_stale(keep, a, end):
            log.info("Grafana: notification %s for alert %s is older than annotation %s; skipped",
                     n.notification_id, a.alert_id, keep["id"])
            return
        try:
            self._api.annotations.partial_update_annotation(
                keep["id"], time_from=start, time_to=end, tags=tags, text=text
            )
        except GrafanaClientError as e:
            if e.status_code != 404:
                raise
            self._create(n, start, end, tags, text)  # deleted meanwhile: recreate
        log.debug("Grafana: annotation %s of alert %s updated (%s)", keep["id"], a.alert_id, n.event)

    def _create(self, n: Notification, start: int, end: int, tags: list[str], text: str) -> None:
        res = self._api.annotations.add_annotation(time_from=start, time_to=end, tags=tags, text=text)
        log.debug("Grafana: annotation %s created for alert %s", (res or {}).get("id"), n.alert.alert_id)

    @staticmethod
    def _is_stale(existing: Annotation, a: AlertView, end: int) -> bool:
        tags = existing.get("tags") or []
        if "state:resolved" in tags and a.state != "resolved":
            return True
        return int(existing.get("timeEnd") or 0) > end

    async def close(self) -> None:
        await asyncio.to_thread(self._api.client.s.close)
