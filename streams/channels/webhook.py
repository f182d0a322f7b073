"""Webhook channel: POST each notification, signed with HMAC-SHA256, to one URL.

The body is the notification as JSON (``format="json"``, the default) or its CAP 1.2 document
(``format="cap"``, ``Content-Type: application/cap+xml``), so public-warning systems that take
CAP over HTTP are served by the same channel. Either way it is signed as described in
``ioc.alerting.signing`` and carries the notification id for deduplication.

Status handling: 2xx means delivered; 5xx, 408/425/429, connection errors and timeouts are
retryable; any other status (redirects included: a POST must not silently turn into a GET)
is not, because retrying a 404 or 401 cannot help.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec
from pydantic import SecretStr

from ioc.alerting import cap
from ioc.alerting.notification import DeliveryError, Notification
from ioc.alerting.signing import signed_headers
from streams.channels.http_status import is_retryable, safe_url

log = logging.getLogger(__name__)

SCHEMA = "ioc.notification/1"
_enc = msgspec.json.Encoder()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def notification_json(n: Notification) -> bytes:
    """The JSON body: the notification (alert snapshot included) plus headline and text per language.

    ``attempt`` is left out so every retry of one notification sends the same bytes.
    """
    doc: dict[str, Any] = {"schema": SCHEMA}
    doc.update(msgspec.to_builtins(n))
    doc.pop("attempt", None)
    doc["text"] = {
        lang: {"headline": cap.headline(n.alert, n.event, lang), "description": cap.description(n.alert, lang)}
        for lang in cap.LANGUAGES
    }
    try:
        return _enc.encode(doc)
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: send "?" for it rather than nothing
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


class WebhookChannel:
    """POST to one URL; construct one per configured URL (see ``FanOutChannel`` for several)."""

    def __init__(
        self,
        url: str,
        secret: str | SecretStr,
        *,
        timeout_s: float = 10.0,
        format: Literal["json", "cap"] = "json",
        cap_profile: cap.CapProfile | None = None,
        name: str = "webhook",
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http(s)://host/path, got {safe_url(url)!r}")
        raw_secret = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not raw_secret:
            raise ValueError("a webhook needs a signing secret: set IOC_WEBHOOK_SECRET")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if format not in ("json", "cap"):
            raise ValueError(f"format must be 'json' or 'cap', got {format!r}")
        self.name = name
        self.url = url
        self.format = format
        self._secret = raw_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._profile = cap_profile or cap.CapProfile()
        self._now = now
        self._session: aiohttp.ClientSession | None = None

    def render(self, n: Notification) -> tuple[bytes, str]:
        """Body and content type for one notification."""
        if self.format == "cap":
            return cap.render_notification(n, self._profile), cap.CONTENT_TYPE
        return notification_json(n), "application/json"

    async def deliver(self, n: Notification) -> None:
        try:
            body, content_type = self.render(n)
        except (ValueError, TypeError) as e:  # e.g. an unknown event: it will never render, so say so once
            raise DeliveryError(f"cannot render notification {n.notification_id}: {e}", retryable=False) from e
        headers = {"Content-Type": content_type, **signed_headers(body, self._secret, n.notification_id, self._now())}
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        where = safe_url(self.url)
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                detail = (await resp.content.read(300)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DeliveryError(f"webhook {where}: {type(e).__name__}: {e}", retryable=True) from e
        if 200 <= status < 300:
            log.debug("webhook %s accepted notification %s (%s)", where, n.notification_id, status)
            return
        retryable = is_retryable(status)
        raise DeliveryError(f"webhook {where} answered {status}: {detail[:200]}", retryable=retryable)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
