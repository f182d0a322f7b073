"""The alerts stage's muting, in memory: which findings count once the rules' severity mapping
and inhibition (a health fault mutes the same sensor's hazards) are applied.

The database does the same in :mod:`ioc.storage.alerts_store` for the live pipeline; this pure
version lets ``ioc score`` judge exactly what emergency staff would be paged for, and a test
holds the two to the same answers.

>>> from datetime import UTC, datetime
>>> from ioc.alerting.rules import load_rules
>>> from ioc.models import Finding
>>> t = datetime(2025, 11, 19, tzinfo=UTC)
>>> c = CountedConditions(load_rules())
>>> stuck = Finding("G", "sensor_stuck", "health", "water_level_m", t, "warning", 3.0, family="health")
>>> flood = Finding("G", "flood_alarm_level", "flood", "water_level_m", t, "critical", 12.0)
>>> [(f.rule, f.severity) for f in c.apply(stuck) + c.apply(flood)]
[('sensor_stuck', 'warning')]
>>> [(f.rule, f.severity) for f in c.apply(msgspec.structs.replace(stuck, severity=None))]
[('sensor_stuck', None), ('flood_alarm_level', 'critical')]
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from ioc.alerting.rules import AlertRules
from ioc.models import Finding


class CountedConditions:
    """Feed findings in order; get back the transitions of the conditions that count."""

    def __init__(self, rules: AlertRules) -> None:
        self.rules = rules
        self._raw: dict[tuple[str, str], Finding] = {}  # latest finding with a (mapped) severity
        self._counted: dict[tuple[str, str], str] = {}  # severity as counted
        self._faults: dict[str, set[str]] = {}  # sensor -> active health rules

    def _mapped(self, f: Finding) -> Finding:
        if f.severity is None:
            return f
        r = self.rules.match(kind=f.kind, family=f.family, rule=f.rule, sensor_id=f.sensor_id)
        sev = r.map_severity(f.severity)
        return f if sev == f.severity else msgspec.structs.replace(f, severity=sev)

    def _set(self, f: Finding, severity: str | None, out: list[Finding]) -> None:
        key = (f.sensor_id, f.rule)
        if self._counted.get(key) == severity:
            return
        if severity is None:
            self._counted.pop(key, None)
        else:
            self._counted[key] = severity
        out.append(f if f.severity == severity else msgspec.structs.replace(f, severity=severity))

    def apply(self, finding: Finding) -> list[Finding]:
        f = self._mapped(finding)
        key = (f.sensor_id, f.rule)
        out: list[Finding] = []
        if f.severity is None:
            self._raw.pop(key, None)
        else:
            self._raw[key] = f
        if f.family in self.rules.inhibit_sources:
            faults = self._faults.setdefault(f.sensor_id, set())
            was = bool(faults)
            if f.severity is None:
                faults.discard(f.rule)
            else:
                faults.add(f.rule)
            self._set(f, f.severity, out)
            now = bool(faults)
            if was != now:
                for (sid, rule), held in sorted(self._raw.items()):
                    if sid == f.sensor_id and held.family in self.rules.inhibit_targets:
                        moved = msgspec.structs.replace(held, ts=f.ts)
                        self._set(moved, None if now else held.severity, out)
            return out
        muted = f.family in self.rules.inhibit_targets and bool(self._faults.get(f.sensor_id))
        self._set(f, None if muted else f.severity, out)
        return out

    def apply_all(self, findings: Iterable[Finding]) -> list[Finding]:
        return [g for f in findings for g in self.apply(f)]
