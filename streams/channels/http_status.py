"""Which HTTP failures are worth retrying, decided once for every HTTP channel."""

from __future__ import annotations

from urllib.parse import urlsplit

# 408 Request Timeout, 425 Too Early and 429 Too Many Requests say "later", not "never".
RETRYABLE_4XX = frozenset({408, 425, 429})


def is_retryable(status: int) -> bool:
    """5xx and the 'try later' 4xx codes are retryable; other 3xx/4xx are configuration errors.

    >>> [is_retryable(s) for s in (500, 503, 429, 408, 404, 401, 301)]
    [True, True, True, True, False, False, False]
    """
    return status >= 500 or status in RETRYABLE_4XX


def safe_url(url: str) -> str:
    """Scheme, host and port only: webhook paths and queries often embed tokens.

    >>> safe_url("https://user:pw@hooks.example.org:8443/T0/B1/secret?x=1")
    'https://hooks.example.org:8443/…'
    """
    p = urlsplit(url)
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{p.hostname}{port}/…"
