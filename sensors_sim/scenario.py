"""Scenario files: TOML with a start, a duration, a seed, a sensor selection and timed events.

Parsing is strict (unknown fields are errors) and every error names the file, the line and the
field, because a scenario typo otherwise surfaces as a silently different simulation.

A scenario may pick a reporting profile in a ``[reporting]`` table (see :mod:`sensors_sim.reporting`).
A variant file names its base with ``extends = "flood_2025_11"`` and overrides top-level keys
(typically ``name``, ``description`` and ``[reporting]``). ``NAME@PROFILE`` loads any scenario
under another profile without a file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec

from sensors_sim.errors import ScenarioError
from sensors_sim.registry import SensorSpec, registry_by_id
from sensors_sim.reporting import PROFILES, Reporting
from sensors_sim.reporting import check as check_reporting

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SEVERITY = Literal["info", "warning", "critical"]
FAULTS = Literal["stuck", "dropout", "spike", "drift", "clock_skew", "duplicate", "out_of_order"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class SensorSelection(_Strict):
    """Union of the listed kinds, ids and districts (all sensors if all are empty), minus ``exclude``."""

    kinds: list[str] = []
    ids: list[str] = []
    districts: list[str] = []
    exclude: list[str] = []


class Storm(_Strict, tag="storm", tag_field="type"):
    """Rain (and, with ``max_wind_ms``, typhoon wind) moving along ``track`` from start to end."""

    id: str
    start: datetime
    peak: datetime
    end: datetime
    track: list[tuple[float, float]]
    radius_km: float = 80.0
    rain_24h_mm: tuple[float, float] = (0.0, 0.0)
    max_wind_ms: float = 0.0
    rmw_km: float = 30.0


class GaugeTarget(_Strict):
    peaks_m: list[float]
    base_m: float | None = None


class Flood(_Strict, tag="flood", tag_field="type"):
    """River response to the listed storms' rain, scaled to reach ``peaks_m`` at each gauge."""

    id: str
    storms: list[str]
    gauges: dict[str, GaugeTarget]


class TrafficIncident(_Strict, tag="traffic_incident", tag_field="type"):
    """A crash or a flooded street cuts a segment's capacity; queues spill back upstream."""

    id: str
    sensor: str
    start: datetime
    end: datetime
    capacity_factor: float = 0.08
    spread_min: float = 12.0
    depth: int = 2
    recovery_min: float = 20.0
    min_severity: SEVERITY = "warning"


class PollutionEpisode(_Strict, tag="pollution_episode", tag_field="type"):
    """Extra PM2.5 (and PM10) rising to ``pm25_peak`` µg/m³ above background at the listed stations."""

    id: str
    sensors: list[str]
    start: datetime
    peak: datetime
    end: datetime
    pm25_peak: float
    pm10_ratio: float = 1.6
    min_severity: SEVERITY = "warning"


class SensorFault(_Strict, tag="sensor_fault", tag_field="type"):
    """A device or delivery fault on the listed sensors between start and end."""

    id: str
    fault: FAULTS
    sensors: list[str]
    start: datetime
    end: datetime
    metric: str | None = None
    magnitude: float = 0.0
    rate: float = 0.0
    delay_s: float = 0.0


class Malformed(_Strict, tag="malformed", tag_field="type"):
    """Corrupt payloads at ``rate`` (0..1) on the listed sensors (all selected sensors if empty)."""

    id: str
    rate: float
    sensors: list[str] = []
    start: datetime | None = None
    end: datetime | None = None


Event = Storm | Flood | TrafficIncident | PollutionEpisode | SensorFault | Malformed


class Scenario(_Strict):
    """A validated scenario; ``path`` is where it was read from (for error messages)."""

    name: str
    description: str
    start: datetime
    duration_h: float
    seed: int
    sensors: SensorSelection = msgspec.field(default_factory=SensorSelection)
    demand_scale: float = 1.0
    events: list[Event] = []
    reporting: Reporting = msgspec.field(default_factory=Reporting)
    extends: str = ""
    path: str = ""

    @property
    def t0(self) -> float:
        return self.start.timestamp()

    @property
    def t1(self) -> float:
        return self.t0 + self.duration_h * 3600.0

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.duration_h)


def available() -> dict[str, Path]:
    """Scenario name -> file, for every TOML in the scenarios directory."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.toml"))}


def resolve(name_or_path: str) -> Path:
    """A scenario name (``typhoon_damrey``) or a path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    names = available()
    if name_or_path not in names:
        raise ScenarioError(
            f"unknown scenario {name_or_path!r}; valid names: {', '.join(names)} "
            f"(any of them as NAME@PROFILE, profiles: {', '.join(PROFILES)})"
        )
    return names[name_or_path]


def split_variant(name_or_path: str) -> tuple[str, str | None]:
    """``typhoon_damrey@national`` -> (``typhoon_damrey``, ``national``); no ``@`` -> (name, None).

    >>> split_variant("typhoon_damrey@national"), split_variant("demo")
    (('typhoon_damrey', 'national'), ('demo', None))
    """
    if "@" not in name_or_path or Path(name_or_path).exists():
        return name_or_path, None
    base, _, profile = name_or_path.rpartition("@")
    return base, profile


def variant(name_or_path: str, profile: str | None) -> str:
    """The name that runs ``name_or_path`` under reporting ``profile`` (None keeps it as it is).

    >>> variant("flood_2025_11", "national"), variant("flood_2025_11@national", "ideal"), variant("demo", None)
    ('flood_2025_11@national', 'flood_2025_11@ideal', 'demo')
    """
    if profile is None:
        return name_or_path
    return f"{split_variant(name_or_path)[0]}@{profile}"


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: invalid TOML: {e}") from e


@dataclass(frozen=True)
class _Source:
    """The raw (merged) TOML of a scenario and where each top-level key was written."""

    raw: dict[str, Any]
    path: Path
    text: str
    base: dict[str, tuple[Path, str]]  # top-level keys inherited through ``extends`` -> (file, text)

    def error(self, field: str, msg: str) -> ScenarioError:
        """An error located in the file that wrote the field's top-level key."""
        top = re.match(r"[A-Za-z_][A-Za-z0-9_]*", field)
        path, text = self.base.get(top.group(0) if top else "", (self.path, self.text))
        return _error(path, text, field, msg)


def source(name_or_path: str) -> _Source:
    """The raw TOML of a scenario, with ``extends`` and ``@PROFILE`` applied (not validated)."""
    base, profile = split_variant(name_or_path)
    path = resolve(base)
    text, raw = _read(path)
    inherited: dict[str, tuple[Path, str]] = {}
    parent = raw.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise _error(path, text, "extends", "must be a scenario name or a path to a TOML file")
        sibling = path.parent / parent
        ppath = resolve(str(sibling) if sibling.suffix == ".toml" and sibling.exists() else parent)
        ptext, praw = _read(ppath)
        if "extends" in praw:
            raise _error(path, text, "extends", f"{parent!r} extends another scenario; extend its base instead")
        inherited = {key: (ppath, ptext) for key in praw if key not in raw}
        raw = {**praw, **raw}
    if profile is not None:
        if profile not in PROFILES:
            raise ScenarioError(f"unknown reporting profile {profile!r} in {name_or_path!r}; "
                                f"profiles: {', '.join(PROFILES)}")
        raw["reporting"] = {"profile": profile}
        raw["name"] = f"{raw.get('name', base)}@{profile}"
    return _Source(raw, path, text, inherited)


_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def locate(text: str, path: str) -> int:
    """Best-effort 1-based line of a field given as ``events[2].sensor`` in TOML text.

    >>> locate('name = "x"\\n[[events]]\\nid = "a"\\n[[events]]\\nid = "b"\\nrate = 2\\n', "events[1].rate")
    6
    """
    lines = text.splitlines()
    pos, line = 0, 0
    parts = [(m.group(1), m.group(2)) for m in _PATH_PART.finditer(path)]
    table = ""
    for i, (key, index) in enumerate(parts):
        if key is not None:
            nxt = parts[i + 1][1] if i + 1 < len(parts) else None
            if nxt is not None:
                table = key
                continue
            pat = re.compile(rf"^\s*(\[+\s*)?([\w.]*\.)?{re.escape(key)}\b|[{{,]\s*{re.escape(key)}\s*=")
            for j in range(pos, len(lines)):
                if pat.search(lines[j]):
                    pos, line = j, j + 1
                    break
        else:
            header = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
            count = -1
            for j, text_line in enumerate(lines):
                if header.match(text_line):
                    count += 1
                    if count == int(index):
                        pos, line = j, j + 1
                        break
    return line or 1


def _error(path: Path, text: str, field: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{path}:{locate(text, field)}: field `{field}`: {msg}")


def load(name_or_path: str, registry: list[SensorSpec]) -> Scenario:
    """Parse, type-check and cross-check a scenario against the registry.

    ``name_or_path`` is a scenario name, a TOML path, or either with ``@PROFILE`` appended.
    """
    src = source(name_or_path)
    raw = dict(src.raw)
    raw["path"] = str(src.path)
    try:
        sc = msgspec.convert(raw, Scenario, from_attributes=False)
    except msgspec.ValidationError as e:
        msg = str(e)
        m = re.search(r"- at `\$\.?(.*)`$", msg)
        field = m.group(1) if m else ""
        unknown = re.search(r"unknown field `(\w+)`", msg)
        if unknown:
            field = f"{field}.{unknown.group(1)}" if field else unknown.group(1)
        missing = re.search(r"missing required field `(\w+)`", msg)
        if missing:
            field = f"{field}.{missing.group(1)}" if field else missing.group(1)
        raise src.error(field or "?", msg.split(" - at ")[0]) from e
    _check(sc, src.error, registry)
    return sc


def _check(sc: Scenario, err: Callable[[str, str], ScenarioError], registry: list[SensorSpec]) -> None:
    by_id = registry_by_id(registry)
    if sc.start.tzinfo is None:
        raise err("start", "needs a UTC offset, e.g. 2017-11-03T00:00:00+07:00")
    if not 0 < sc.duration_h <= 24 * 31:
        raise err("duration_h", f"must be in (0, 744] hours, got {sc.duration_h}")
    for field in ("ids", "exclude"):
        for sid in getattr(sc.sensors, field):
            if sid not in by_id:
                raise err(f"sensors.{field}", f"unknown sensor {sid!r}")
    storm_ids = {e.id for e in sc.events if isinstance(e, Storm)}
    seen: set[str] = set()
    for i, ev in enumerate(sc.events):
        where = f"events[{i}]"
        if ev.id in seen:
            raise err(f"{where}.id", f"duplicate event id {ev.id!r}")
        seen.add(ev.id)
        for attr in ("start", "peak", "end"):
            ts = getattr(ev, attr, None)
            if isinstance(ts, datetime) and ts.tzinfo is None:
                raise err(f"{where}.{attr}", "needs a UTC offset")
        start, end = getattr(ev, "start", None), getattr(ev, "end", None)
        if isinstance(start, datetime) and isinstance(end, datetime) and end <= start:
            raise err(f"{where}.end", "must be after start")
        peak = getattr(ev, "peak", None)
        if isinstance(peak, datetime) and start is not None and end is not None and not start <= peak <= end:
            raise err(f"{where}.peak", "must lie between start and end")
        sensors: list[str] = []
        field = f"{where}.sensors"
        if isinstance(ev, TrafficIncident):
            field = f"{where}.sensor"
            sensors = [ev.sensor]
            if not 0 < ev.capacity_factor <= 1:
                raise err(f"{where}.capacity_factor", "must be in (0, 1]")
        elif isinstance(ev, PollutionEpisode | SensorFault | Malformed):
            sensors = list(ev.sensors)
        elif isinstance(ev, Flood):
            sensors = list(ev.gauges)
            field = f"{where}.gauges"
            for s in ev.storms:
                if s not in storm_ids:
                    raise err(f"{where}.storms", f"unknown storm {s!r}; storms: {sorted(storm_ids)}")
        elif isinstance(ev, Storm):
            if not ev.track:
                raise err(f"{where}.track", "needs at least one [lat, lon] point")
            lo, hi = ev.rain_24h_mm
            if not 0 <= lo <= hi:
                raise err(f"{where}.rain_24h_mm", "must be [low, high] with 0 <= low <= high")
        if isinstance(ev, SensorFault | Malformed) and not 0 <= ev.rate <= 1:
            raise err(f"{where}.rate", f"must be in [0, 1], got {ev.rate}")
        for sid in sensors:
            if sid not in by_id:
                raise err(field, f"unknown sensor {sid!r}")
            if isinstance(ev, Flood) and by_id[sid].kind != "water_level":
                raise err(f"{where}.gauges", f"{sid} is a {by_id[sid].kind} sensor, not a gauge")
            if isinstance(ev, TrafficIncident) and by_id[sid].kind != "traffic":
                raise err(f"{where}.sensor", f"{sid} is not a traffic segment")
            if isinstance(ev, PollutionEpisode) and by_id[sid].kind != "air":
                raise err(f"{where}.sensors", f"{sid} is not an air station")
    problem = check_reporting(sc.reporting, by_id, select(sc, registry))
    if problem is not None:
        raise err(*problem)


def select(sc: Scenario, registry: list[SensorSpec]) -> list[SensorSpec]:
    """The scenario's sensors in registry order."""
    sel = sc.sensors
    everything = not (sel.kinds or sel.ids or sel.districts)
    out = [
        s
        for s in registry
        if (everything or s.kind in sel.kinds or s.sensor_id in sel.ids or s.district in sel.districts)
        and s.sensor_id not in sel.exclude
    ]
    return out
