"""The detector protocol every algorithm follows (one algorithm per module)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ioc.models import Finding, Reading


@runtime_checkable
class Detector(Protocol):
    """A per-sensor, per-metric detector that scores then learns in one call.

    State is versioned JSON (never pickle) so a restarted worker resumes from its changelog.
    """

    @property
    def ready(self) -> bool: ...

    def update(self, reading: Reading) -> list[Finding]: ...

    def to_state(self) -> dict[str, Any]: ...

    def from_state(self, state: dict[str, Any]) -> None: ...

    def reset(self) -> None: ...
