"""One error hierarchy so the CLI can turn any expected failure into a clear message."""

from __future__ import annotations


class IocError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(IocError):
    """A setting is missing or invalid; named at start-up."""


class ServiceUnavailable(IocError):
    """A broker or database could not be reached; the message names it and its URL."""

    def __init__(self, service: str, url: str, detail: str) -> None:
        super().__init__(f"{service} is unreachable at {url}: {detail}")
        self.service = service
        self.url = url


class StackError(IocError):
    """A local-stack service failed to start; the message carries its log tail."""


class PayloadRejected(IocError):
    """A payload failed validation; ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
