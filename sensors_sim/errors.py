"""Errors the simulator raises on purpose; the ``ioc`` CLI prints them and exits with code 2."""

from __future__ import annotations

from ioc.errors import IocError


class RegistryError(IocError):
    """The sensor registry file is invalid; the message names the file and the sensor."""


class ScenarioError(IocError):
    """A scenario is unknown or malformed; the message names the file, line and field."""


class RecordingError(IocError):
    """A recording file cannot be read; the message names the file and line."""


class PublishIncomplete(IocError):
    """The broker did not acknowledge every message in time: a publish that returns must mean the
    broker owns every message, so the command fails instead of reporting a partial run as done."""
