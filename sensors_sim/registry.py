"""The sensor registry: Khánh Hòa sites as data (``data/sensors.json``), validated on load.

Coordinates, alarm levels (BĐ I/II/III), records and observed rise rates come from the domain
tables; sites marked ``approximate`` are placeholders to check on OpenStreetMap before operators
see them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ioc.domain import KIND_METRICS
from sensors_sim.errors import RegistryError

DEFAULT_REGISTRY = Path(__file__).parent / "data" / "sensors.json"
_ID = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
_ALARM_KEYS = ("bd1", "bd2", "bd3")


@dataclass(frozen=True)
class SensorSpec:
    """One sensor as the simulator and the ``sensors`` table see it."""

    sensor_id: str
    kind: str
    name: str
    district: str
    lat: float
    lon: float
    approximate: bool
    metrics: dict[str, str]
    alarm_levels: dict[str, float | None] | None
    interval_s: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Metrics in the canonical order of ``KIND_METRICS`` (stable payload layout)."""
        return tuple(m for m in KIND_METRICS[self.kind] if m in self.metrics)


def _fail(path: Path, sid: str, msg: str) -> RegistryError:
    return RegistryError(f"{path}: sensor {sid!r}: {msg}")


def _spec_from(raw: Any, path: Path, index: int) -> SensorSpec:
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: sensors[{index}] must be an object, got {type(raw).__name__}")
    sid = raw.get("sensor_id")
    if not isinstance(sid, str) or not _ID.match(sid):
        raise RegistryError(f"{path}: sensors[{index}]: sensor_id {sid!r} must be upper-case ASCII like HYD_DONG_TRANG")
    missing = [k for k in ("kind", "name", "district", "lat", "lon", "metrics", "interval_s") if k not in raw]
    if missing:
        raise _fail(path, sid, f"missing field(s) {', '.join(missing)}")
    kind = raw["kind"]
    if kind not in KIND_METRICS:
        raise _fail(path, sid, f"kind {kind!r} is not one of {sorted(KIND_METRICS)}")
    for key in ("name", "district"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise _fail(path, sid, f"{key} must be a non-empty string")
    lat, lon = raw["lat"], raw["lon"]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (lat, lon)):
        raise _fail(path, sid, f"lat/lon must be numbers, got {lat!r}, {lon!r}")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise _fail(path, sid, f"lat/lon out of range: {lat}, {lon}")
    metrics = raw["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise _fail(path, sid, "metrics must be a non-empty object metric -> unit")
    for metric, unit in metrics.items():
        want = KIND_METRICS[kind].get(metric)
        if want is None:
            raise _fail(path, sid, f"metric {metric!r} is not a {kind} metric ({sorted(KIND_METRICS[kind])})")
        if unit != want:
            raise _fail(path, sid, f"metric {metric!r} has unit {unit!r}, expected {want!r}")
    interval = raw["interval_s"]
    if not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 86400:
        raise _fail(path, sid, f"interval_s must be an integer number of seconds in 1..86400, got {interval!r}")
    alarm = raw.get("alarm_levels")
    if alarm is not None:
        if not isinstance(alarm, dict) or set(alarm) != set(_ALARM_KEYS):
            raise _fail(path, sid, f"alarm_levels must have exactly the keys {_ALARM_KEYS}")
        levels = [alarm[k] for k in _ALARM_KEYS if alarm[k] is not None]
        if any(not isinstance(v, int | float) for v in levels) or levels != sorted(levels):
            raise _fail(path, sid, f"alarm_levels must be numbers rising from bd1 to bd3, got {alarm}")
        alarm = {k: (None if alarm[k] is None else float(alarm[k])) for k in _ALARM_KEYS}
    extra = raw.get("extra", {})
    if not isinstance(extra, dict):
        raise _fail(path, sid, "extra must be an object")
    return SensorSpec(
        sensor_id=sid,
        kind=kind,
        name=raw["name"],
        district=raw["district"],
        lat=float(lat),
        lon=float(lon),
        approximate=bool(raw.get("approximate", False)),
        metrics=dict(metrics),
        alarm_levels=alarm,
        interval_s=interval,
        extra=dict(extra),
    )


def load_registry(path: Path | None = None) -> list[SensorSpec]:
    """Load and validate the registry; errors name the file and the offending sensor."""
    path = path or DEFAULT_REGISTRY
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise RegistryError(f"{path}: registry file not found") from e
    except json.JSONDecodeError as e:
        raise RegistryError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    sensors = doc.get("sensors") if isinstance(doc, dict) else None
    if not isinstance(sensors, list):
        raise RegistryError(f"{path}: expected an object with a 'sensors' list")
    specs = [_spec_from(raw, path, i) for i, raw in enumerate(sensors)]
    seen: set[str] = set()
    for s in specs:
        if s.sensor_id in seen:
            raise _fail(path, s.sensor_id, "duplicate sensor_id")
        seen.add(s.sensor_id)
    for s in specs:
        for up in s.extra.get("upstream", []):
            if up not in seen:
                raise _fail(path, s.sensor_id, f"upstream segment {up!r} is not in the registry")
    return specs


def registry_by_id(specs: list[SensorSpec]) -> dict[str, SensorSpec]:
    """Index a loaded registry by sensor id."""
    return {s.sensor_id: s for s in specs}
