"""HMAC-SHA256 signatures for webhook bodies, shared by the sender and by receivers.

The signature covers ``timestamp + "." + body`` so a captured request cannot be replayed later
with a fresh timestamp, and a receiver rejects timestamps outside a tolerance window (stale or
from the future). Receivers then deduplicate by ``X-IOC-Notification-Id``: a replay inside the
window is at worst a duplicate, which they already drop.

>>> from datetime import datetime, timezone
>>> now = datetime(2025, 11, 20, 8, 0, tzinfo=timezone.utc)
>>> h = signed_headers(b'{"a":1}', "s3cret", "n1", now)
>>> h["X-IOC-Signature"].startswith("sha256=") and h["X-IOC-Timestamp"] == "1763625600"
True
>>> verify(b'{"a":1}', h, "s3cret", now)
>>> verify(b'{"a":2}', h, "s3cret", now)
Traceback (most recent call last):
...
ioc.alerting.signing.SignatureRejected: bad_signature: signature does not match the body
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime

from ioc.errors import IocError

SIGNATURE_HEADER = "X-IOC-Signature"
TIMESTAMP_HEADER = "X-IOC-Timestamp"
NOTIFICATION_ID_HEADER = "X-IOC-Notification-Id"
SCHEME = "sha256="
# Five minutes: wide enough for clock skew between hosts, short enough that a captured request
# is useless soon after (receivers deduplicate by notification id inside the window anyway).
DEFAULT_TOLERANCE_S = 300


class SignatureRejected(IocError):
    """A request failed verification; ``reason`` is a stable code a receiver can log or count."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the webhook secret is empty: set IOC_WEBHOOK_SECRET to a long random string")
    return key


def _epoch(now: datetime) -> int:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return int(now.timestamp())


def signature(body: bytes, secret: str | bytes, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"``.

    Same as ``printf '1.{}' | openssl dgst -sha256 -hmac k``:

    >>> signature(b"{}", "k", 1)
    '3dd49b2593d0f9a349e9e71c4bde3e2b862c2be4003fe9b4ba81332029310158'
    """
    msg = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(_key(secret), msg, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret: str | bytes, notification_id: str, now: datetime) -> dict[str, str]:
    """The three headers a sender adds to one request."""
    ts = _epoch(now)
    return {
        SIGNATURE_HEADER: SCHEME + signature(body, secret, ts),
        TIMESTAMP_HEADER: str(ts),
        NOTIFICATION_ID_HEADER: notification_id,
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup: HTTP header names are not case-sensitive."""
    wanted = name.lower()
    for k, v in headers.items():
        if k.lower() == wanted:
            return v
    return None


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str | bytes,
    now: datetime,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Accept a request or raise SignatureRejected (missing header, stale or future, bad signature).

    >>> from datetime import datetime, timedelta, timezone
    >>> t = datetime(2025, 11, 20, 8, 0, tzinfo=timezone.utc)
    >>> h = signed_headers(b"x", "k", "n1", t)
    >>> verify(b"x", h, "k", t + timedelta(seconds=301))
    Traceback (most recent call last):
    ...
    ioc.alerting.signing.SignatureRejected: stale: timestamp is 301 s old (tolerance 300 s)
    """
    if tolerance_s < 0:
        raise ValueError("tolerance_s must be >= 0")
    sig = _header(headers, SIGNATURE_HEADER)
    ts_raw = _header(headers, TIMESTAMP_HEADER)
    if sig is None or ts_raw is None:
        missing = SIGNATURE_HEADER if sig is None else TIMESTAMP_HEADER
        raise SignatureRejected("missing_header", f"{missing} is missing")
    if not sig.startswith(SCHEME):
        raise SignatureRejected("bad_scheme", f"{SIGNATURE_HEADER} must start with {SCHEME!r}")
    ts_raw = ts_raw.strip()
    if not ts_raw.isascii() or not ts_raw.isdigit() or len(ts_raw) > 12:
        raise SignatureRejected("bad_timestamp", f"{TIMESTAMP_HEADER} must be integer Unix seconds")
    ts = int(ts_raw)
    age = _epoch(now) - ts
    if age > tolerance_s:
        raise SignatureRejected("stale", f"timestamp is {age} s old (tolerance {tolerance_s:g} s)")
    if -age > tolerance_s:
        raise SignatureRejected("future", f"timestamp is {-age} s ahead (tolerance {tolerance_s:g} s)")
    expected = signature(body, secret, ts)
    # compare_digest on ASCII bytes: constant time, and no TypeError on non-ASCII input.
    given = sig[len(SCHEME):].strip().encode("utf-8", "replace")
    if not hmac.compare_digest(expected.encode("ascii"), given):
        raise SignatureRejected("bad_signature", "signature does not match the body")
