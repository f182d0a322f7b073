"""Alert rules as code: a TOML file that ships with defaults and can be replaced per deployment.

A bad file is named with its line and field at start-up, because a silently ignored rule is an
alert that never reaches emergency staff.

>>> rules = load_rules()
>>> r = rules.match(kind="flood", family="warning", rule="alarm_levels", sensor_id="HYD_DONG_TRANG")
>>> (r.for_s, r.clear_after_s, r.group_by)
(0.0, 1800.0, 'river')
>>> parse_duration("1h30m")
5400.0
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ioc.domain import SEVERITIES
from ioc.errors import IocError

CHANNELS = ("mqtt", "webhook", "grafana", "cap")
FAMILIES = ("health", "anomaly", "warning")
DROP = "drop"
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


class RulesError(IocError):
    """The rule file is wrong; the message names the file, line and field."""


def parse_duration(text: str) -> float:
    """Seconds in "90s", "15m", "2h", "1d" or "1h30m"; "0s" is zero."""
    m = _DURATION.match(text.strip())
    if not text.strip() or m is None:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 15m, 2h, 1d or 1h30m")
    d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


class _Match(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str | None = None
    family: str | None = None
    rule: str | None = None
    sensor: str | None = None  # glob

    @field_validator("family")
    @classmethod
    def _family(cls, v: str | None) -> str | None:
        if v is not None and v not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}")
        return v


def _duration_field(v: Any) -> float:
    if not isinstance(v, str):
        raise ValueError("write a duration as a string, e.g. \"15m\"")
    return parse_duration(v)


def _severity_map(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise ValueError("severity must be a table such as { critical = \"warning\" }")
    for k, to in v.items():
        if k not in SEVERITIES:
            raise ValueError(f"{k!r} is not a severity ({', '.join(SEVERITIES)})")
        if to not in (*SEVERITIES, DROP):
            raise ValueError(f"{to!r} is not a severity or \"drop\"")
    return dict(v)


def _channels(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        raise ValueError("channels must be a list of names")
    bad = [c for c in v if c not in CHANNELS]
    if bad:
        raise ValueError(f"unknown channel {bad[0]!r}; known: {', '.join(CHANNELS)}")
    return tuple(v)


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    for_: str = Field("0s", alias="for")
    clear_after: str = "0s"
    repeat: str = "0s"
    channels: list[str] = list(CHANNELS)

    @field_validator("for_", "clear_after", "repeat")
    @classmethod
    def _dur(cls, v: Any) -> Any:
        _duration_field(v)
        return v

    @field_validator("channels")
    @classmethod
    def _ch(cls, v: Any) -> Any:
        _channels(v)
        return v


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    match: _Match
    for_: str | None = Field(None, alias="for")
    clear_after: str | None = None
    repeat: str | None = None
    severity: dict[str, str] = {}
    group_by: str | None = Field(None, pattern=r"^[a-z_]{1,40}$")
    channels: list[str] | None = None

    @field_validator("for_", "clear_after", "repeat")
    @classmethod
    def _dur(cls, v: Any) -> Any:
        if v is not None:
            _duration_field(v)
        return v

    @field_validator("severity")
    @classmethod
    def _sev(cls, v: Any) -> Any:
        return _severity_map(v)

    @field_validator("channels")
    @classmethod
    def _ch(cls, v: Any) -> Any:
        if v is not None:
            _channels(v)
        return v


class _Inhibit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_families: list[str] = ["health"]
    target_families: list[str] = ["warning", "anomaly"]

    @field_validator("source_families", "target_families")
    @classmethod
    def _fam(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown family {bad[0]!r}; known: {', '.join(FAMILIES)}")
        return v


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: _Defaults = Field(default_factory=lambda: _Defaults.model_validate({}))
    inhibit: _Inhibit = _Inhibit()
    rule: list[_Rule] = []


@dataclass(frozen=True)
class AlertRule:
    """One resolved rule: every field has its value (defaults filled in)."""

    index: int  # position in the file; -1 for the defaults
    kind: str | None
    family: str | None
    rule: str | None
    sensor: str | None
    for_s: float
    clear_after_s: float
    repeat_s: float
    severity_map: Mapping[str, str]
    group_by: str | None
    channels: tuple[str, ...]

    def matches(self, *, kind: str, family: str, rule: str, sensor_id: str) -> bool:
        return ((self.kind is None or self.kind == kind) and (self.family is None or self.family == family)
                and (self.rule is None or self.rule == rule)
                and (self.sensor is None or fnmatch.fnmatchcase(sensor_id, self.sensor)))

    def map_severity(self, severity: str) -> str | None:
        """The alert's severity for a detector's; None when the rule drops it."""
        to = self.severity_map.get(severity, severity)
        return None if to == DROP else to


@dataclass(frozen=True)
class AlertRules:
    rules: tuple[AlertRule, ...]
    default: AlertRule
    inhibit_sources: frozenset[str] = frozenset({"health"})
    inhibit_targets: frozenset[str] = frozenset({"warning", "anomaly"})
    source: str = "<defaults>"
    _cache: dict[tuple[str, str, str, str], AlertRule] = field(default_factory=dict, compare=False, repr=False)

    def match(self, *, kind: str, family: str, rule: str, sensor_id: str) -> AlertRule:
        key = (kind, family, rule, sensor_id)
        hit = self._cache.get(key)
        if hit is None:
            hit = next((r for r in self.rules if r.matches(kind=kind, family=family, rule=rule, sensor_id=sensor_id)),
                       self.default)
            if len(self._cache) < 100_000:
                self._cache[key] = hit
        return hit

    def inhibits(self, source_family: str, target_family: str) -> bool:
        return source_family in self.inhibit_sources and target_family in self.inhibit_targets


def group_value(group_by: str | None, extra: Mapping[str, Any]) -> str | None:
    """The incident a sensor belongs to under ``group_by``: the registry field's value.

    A qualifier after a comma names a reach of the same river ("Dinh (Ninh Hòa), upstream"),
    so it is dropped: an upstream gauge belongs to its river's incident.

    >>> group_value("river", {"river": "Dinh (Ninh Hòa), upstream"})
    'Dinh (Ninh Hòa)'
    >>> group_value("river", {}) is None
    True
    """
    if group_by is None:
        return None
    v = extra.get(group_by)
    if not isinstance(v, str) or not v.strip():
        return None
    return v.split(",", 1)[0].strip()


def _line_of(text: str, loc: Sequence[int | str]) -> int | None:
    """Best-effort line of a validation error: the field inside the n-th [[rule]] block."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    parts = list(loc)
    if parts and parts[0] == "rule" and len(parts) > 1 and isinstance(parts[1], int):
        heads = [i for i, ln in enumerate(lines) if ln.strip() == "[[rule]]"]
        if parts[1] < len(heads):
            start = heads[parts[1]]
            end = heads[parts[1] + 1] if parts[1] + 1 < len(heads) else len(lines)
        parts = parts[2:]
    elif parts and isinstance(parts[0], str) and parts[0] in ("defaults", "inhibit"):
        for i, ln in enumerate(lines):
            if ln.strip() == f"[{parts[0]}]":
                start = i
                break
        parts = parts[1:]
    keys = [p for p in parts if isinstance(p, str)]
    for key in keys[:1]:
        name = "for" if key == "for_" else key
        pat = re.compile(rf"^\s*{re.escape(name)}\s*=|[{{,]\s*{re.escape(name)}\s*=")
        for i in range(start, end):
            if pat.search(lines[i]):
                return i + 1
    return start + 1 if start or end != len(lines) else None


def parse_rules(text: str, source: str = "<rules>") -> AlertRules:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RulesError(f"{source}: not valid TOML: {e}") from e
    try:
        f = _File.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [p for p in err["loc"]]
        line = _line_of(text, loc)
        where = f"{source}, line {line}" if line else source
        fld = ".".join("for" if p == "for_" else str(p) for p in loc)
        raise RulesError(f"{where}: field {fld}: {err['msg']}") from e
    d = f.defaults
    default = AlertRule(-1, None, None, None, None, parse_duration(d.for_), parse_duration(d.clear_after),
                        parse_duration(d.repeat), {}, None, tuple(d.channels))
    rules = tuple(
        AlertRule(
            i, r.match.kind, r.match.family, r.match.rule, r.match.sensor,
            parse_duration(r.for_) if r.for_ is not None else default.for_s,
            parse_duration(r.clear_after) if r.clear_after is not None else default.clear_after_s,
            parse_duration(r.repeat) if r.repeat is not None else default.repeat_s,
            dict(r.severity), r.group_by, tuple(r.channels) if r.channels is not None else default.channels,
        )
        for i, r in enumerate(f.rule)
    )
    return AlertRules(rules, default, frozenset(f.inhibit.source_families), frozenset(f.inhibit.target_families),
                      source)


def load_rules(path: Path | None = None) -> AlertRules:
    """The deployment's rule file, or the shipped defaults when ``path`` is None."""
    if path is None:
        text = resources.files("ioc.alerting").joinpath("default_rules.toml").read_text(encoding="utf-8")
        return parse_rules(text, "default_rules.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(f"alert rules file {path}: {e.strerror or e}") from e
    return parse_rules(text, str(path))
