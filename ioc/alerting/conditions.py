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
        return self.apply_group([finding])

    def apply_group(self, group: list[Finding]) -> list[Finding]:
        """The findings of one reading of one sensor: every raw condition first, then what counts
        (as the alerts stage does), so a spike that raises and clears a health fault and a hazard
        together never lets the hazard count for an instant."""
        out: list[Finding] = []
        sensor = group[0].sensor_id
        was_faulty = bool(self._faults.get(sensor))
        mapped = [self._mapped(f) for f in group]
        for f in mapped:
            key = (f.sensor_id, f.rule)
            if f.severity is None:
                self._raw.pop(key, None)
            else:
                self._raw[key] = f
            if f.family in self.rules.inhibit_sources:
                faults = self._faults.setdefault(f.sensor_id, set())
                if f.severity is None:
                    faults.discard(f.rule)
                else:
                    faults.add(f.rule)
        faulty = bool(self._faults.get(sensor))
        touched = {(f.sensor_id, f.rule) for f in mapped}
        for f in mapped:  # in the group's order: health first, as the detectors emit them
            muted = f.family in self.rules.inhibit_targets and faulty
            self._set(f, None if muted or f.severity is None else f.severity, out)
        if was_faulty != faulty:
            for (sid, rule), held in sorted(self._raw.items()):
                if sid == sensor and (sid, rule) not in touched and held.family in self.rules.inhibit_targets:
                    self._set(msgspec.structs.replace(held, ts=group[-1].ts), None if faulty else held.severity, out)
        return out

    def apply_all(self, findings: Iterable[Finding]) -> list[Finding]:
        out: list[Finding] = []
        group: list[Finding] = []
        for f in findings:
            if group and (group[0].sensor_id != f.sensor_id or group[0].ts != f.ts):
                out += self.apply_group(group)
                group = []
            group.append(f)
        if group:
            out += self.apply_group(group)
        return out
