"""One error hierarchy so the CLI can turn any expected failure into a clear message."""

from __future__ import annotations

from ioc.logging_setup import redact


class IocError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(IocError):
    """A setting is missing or invalid; named at start-up."""


class ServiceUnavailable(IocError):
    """A broker or database could not be reached; the message names it and its URL.

    Callers pass a masked URL; a driver's ``detail`` may still quote connection parameters, so
    both are redacted here too.
    """

    def __init__(self, service: str, url: str, detail: str) -> None:
        url, detail = redact(url), redact(detail)
        super().__init__(f"{service} is unreachable at {url}: {detail}")
        self.service = service
        self.url = url


class StackError(IocError):
    """A local-stack service failed to start; the message carries its log tail."""


class PayloadRejected(IocError):
    r"""A payload failed validation; ``reason`` is a stable machine-readable code.

    ``detail`` often quotes the payload (a decoder message naming a field), so control characters
    are escaped: a NUL cannot be stored in a PostgreSQL text column and would stall the writer.

    >>> PayloadRejected("bad_schema", "unknown field `a\x00b`").detail
    'unknown field `a\\x00b`'
    """

    def __init__(self, reason: str, detail: str) -> None:
        detail = safe_text(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def safe_text(text: str) -> str:
    """Escape control characters (NUL, escapes for terminals) and lone surrogates for logs and text columns."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )
