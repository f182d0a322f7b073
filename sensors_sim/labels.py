"""Ground-truth labels, computed from the simulated series themselves.

Crossing times are the first sample at or above each alarm level in the values actually sent, so a
detector scored against them is judged on what it could have seen. Under a reporting profile that
means the reported series (its cadence, noise and quantisation), and hazard labels (flood
crossings, heavy rain, storm wind) skip reports that were lost or carry a spike. Those reporting
faults get labels of their own: every spike, and every run of ``SILENT_MIN_MISSED`` or more lost
reports (see :mod:`sensors_sim.reporting`). Labels never travel in payloads: they are written
next to the output as ``<run>.labels.json``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sensors_sim.models.common import rolling_sum
from sensors_sim.reporting import SILENT_MIN_MISSED, lost_runs
from sensors_sim.scenario import Flood, Malformed, PollutionEpisode, SensorFault, TrafficIncident

if TYPE_CHECKING:
    from sensors_sim.engine import SensorSeries, Simulation
    from sensors_sim.world import World

#: Heavy rain, QĐ 18/2021 Điều 44 level 1 starts at 100 mm/24h; 200 mm/24h is the next band.
HEAVY_RAIN_24H_MM = (100.0, 200.0)
#: Storm-force wind (Beaufort 8, where Vietnam names a tropical storm "bão") and hurricane force (12).
STORM_WIND_MS = (17.2, 32.7)
FAULT_ALERT = {
    "stuck": "sensor_stuck",
    "dropout": "sensor_silent",
    "spike": "sensor_spike",
    "drift": "sensor_drift",
    "clock_skew": "clock_skew",
    "duplicate": "none",
    "out_of_order": "none",
}


def iso(ts: float) -> str:
    """RFC 3339 UTC with a Z, whole seconds.

    >>> iso(0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def first_crossing(t: np.ndarray, v: np.ndarray, level: float) -> float | None:
    """Time of the first sample at or above ``level``.

    >>> first_crossing(np.array([0, 10, 20]), np.array([1.0, 2.0, 3.0]), 2.0)
    10.0
    """
    hit = np.flatnonzero(v >= level)
    return float(t[hit[0]]) if len(hit) else None


def _runs(mask: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """Index ranges [a, b] of True values; runs separated by at most ``max_gap`` False samples merge.

    >>> _runs(np.array([1, 1, 0, 1, 0, 0, 0, 1], dtype=bool), max_gap=1)
    [(0, 3), (7, 7)]
    """
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    runs = list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] - 1 <= max_gap:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def build(sim: Simulation, world: World) -> list[dict[str, Any]]:
    """Labels for every event of the scenario (times as epoch seconds; see :func:`render`)."""
    sc = sim.scenario
    out: list[dict[str, Any]] = []
    series = {s.spec.sensor_id: s for s in sim.series}
    storm_ids = ",".join(world.storms)
    for s in sim.series:
        valid = s.transmission.valid if s.transmission is not None else None
        if s.spec.kind == "rain" and world.storms:
            per = max(1, 86400 // s.spec.interval_s)
            rain = s.values["rain_mm"] if valid is None else np.where(valid, s.values["rain_mm"], 0.0)
            total = rolling_sum(rain, per)
            for k, (a, b) in enumerate(_runs(total >= HEAVY_RAIN_24H_MM[0])):
                peak = float(total[a : b + 1].max())
                out.append(
                    _label(f"{storm_ids}/heavy_rain/{s.spec.sensor_id}/{k}", "heavy_rain", [s.spec.sensor_id],
                           float(s.t[a]), float(s.t[b]), "heavy_rain",
                           "critical" if peak >= HEAVY_RAIN_24H_MM[1] else "warning", max_24h_mm=round(peak, 1))
                )
        if s.spec.kind == "weather" and any(tr.max_wind_ms > 0 for _e, tr in world.storms.values()):
            w = s.values["wind_speed_ms"] if valid is None else np.where(valid, s.values["wind_speed_ms"], -np.inf)
            for k, (a, b) in enumerate(_runs(w >= STORM_WIND_MS[0], max_gap=3600 // s.spec.interval_s)):
                peak = float(w[a : b + 1].max())
                out.append(
                    _label(f"{storm_ids}/wind/{s.spec.sensor_id}/{k}", "storm_wind", [s.spec.sensor_id],
                           float(s.t[a]), float(s.t[b]), "wind",
                           "critical" if peak >= STORM_WIND_MS[1] else "warning", max_wind_ms=peak)
                )
        out.extend(_reporting_labels(s, sc.t1))
    for ev in sc.events:
        if isinstance(ev, Flood):
            for sid in ev.gauges:
                if sid in series:
                    lab = _flood_label(ev.id, series[sid], sc.t1)
                    if lab:
                        out.append(lab)
        elif isinstance(ev, TrafficIncident):
            sensors = [sid for sid, _d in world.affected(ev) if sid in series]
            out.append(_label(ev.id, "traffic_incident", sensors, ev.start.timestamp(),
                              ev.end.timestamp() + ev.recovery_min * 60, "traffic_congestion", ev.min_severity))
        elif isinstance(ev, PollutionEpisode):
            sensors = [sid for sid in ev.sensors if sid in series]
            out.append(_label(ev.id, "pollution_episode", sensors, ev.start.timestamp(), ev.end.timestamp(),
                              "air_quality", ev.min_severity, pm25_peak_extra=ev.pm25_peak))
        elif isinstance(ev, SensorFault):
            sensors = [sid for sid in ev.sensors if sid in series]
            alert = FAULT_ALERT[ev.fault]
            out.append(_label(ev.id, "sensor_fault", sensors, ev.start.timestamp(), ev.end.timestamp(), alert,
                              "info" if alert == "none" else "warning", fault=ev.fault))
        elif isinstance(ev, Malformed):
            count = sum(int(np.count_nonzero(d.bad)) for d in sim.deliveries
                        if not ev.sensors or d.spec.sensor_id in ev.sensors)
            start = ev.start.timestamp() if ev.start else sc.t0
            end = ev.end.timestamp() if ev.end else sc.t1
            out.append(_label(ev.id, "malformed", sorted(ev.sensors) or ["*"], start, end, "deadletter", "info",
                              rate=ev.rate, count=count))
    out.sort(key=lambda lab: (lab["start"], lab["event_id"]))
    return out


def _label(event_id: str, kind: str, sensors: list[str], start: float, end: float, alert: str, severity: str,
           **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "kind": kind, "sensors": sensors, "start": start, "end": end,
            "expected_alert": alert, "min_severity": severity, **extra}


def _reporting_labels(s: SensorSeries, t_end: float) -> list[dict[str, Any]]:
    """A ``sensor_silent`` fault per run of >= SILENT_MIN_MISSED lost reports, and one per spike."""
    tr = s.transmission
    if tr is None:
        return []
    sid = s.spec.sensor_id
    out = []
    runs = [(a, b) for a, b in lost_runs(tr.lost) if b - a + 1 >= SILENT_MIN_MISSED]
    for k, (a, b) in enumerate(runs):
        end = float(s.t[b + 1]) if b + 1 < len(s.t) else t_end
        out.append(_label(f"reporting/silent/{sid}/{k}", "sensor_fault", [sid], float(s.t[a]), end,
                          "sensor_silent", "warning", fault="dropout", missed=b - a + 1,
                          interval_s=s.spec.interval_s))
    names = s.spec.metric_names
    for k, i in enumerate(np.flatnonzero(tr.spiked).tolist()):
        metric = names[int(tr.spike_col[i])]
        out.append(_label(f"reporting/spike/{sid}/{k}", "sensor_fault", [sid], float(s.t[i]), float(s.t[i]),
                          "sensor_spike", "warning", fault="spike", metric=metric,
                          value=float(tr.spike_value[i]), true_value=float(s.values[metric][i])))
    return out


def _flood_label(event_id: str, s: SensorSeries, t_end: float) -> dict[str, Any] | None:
    levels = s.spec.alarm_levels or {}
    v = s.values["water_level_m"]
    if s.transmission is not None:  # only what arrived without a reporting fault
        v = np.where(s.transmission.valid, v, -np.inf)
    crossings = {k: first_crossing(s.t, v, lvl) for k, lvl in levels.items() if lvl is not None}
    bd1 = levels.get("bd1")
    if bd1 is None or crossings.get("bd1") is None:
        return None
    above = np.flatnonzero(v >= bd1)
    end = float(s.t[above[-1]]) if above[-1] + 1 < len(v) else t_end
    severity = "critical" if crossings.get("bd3") else "warning" if crossings.get("bd2") else "info"
    return _label(f"{event_id}/{s.spec.sensor_id}", "flood", [s.spec.sensor_id], crossings["bd1"] or 0.0, end,
                  "flood_level", severity,
                  crossings={s.spec.sensor_id: {k: v for k, v in crossings.items() if v is not None}},
                  peak_m=float(v.max()))


def render(labels: list[dict[str, Any]], offset_s: float = 0.0) -> list[dict[str, Any]]:
    """Labels with times as RFC 3339 strings, shifted by ``offset_s`` (live rebasing)."""
    out = []
    for lab in labels:
        d = dict(lab)
        d["start"] = iso(lab["start"] + offset_s)
        d["end"] = iso(lab["end"] + offset_s)
        if "crossings" in lab:
            d["crossings"] = {sid: {k: iso(ts + offset_s) for k, ts in c.items()} for sid, c in lab["crossings"].items()}
        out.append(d)
    return out


def labels_path(out: Path) -> Path:
    """``run.jsonl.gz`` -> ``run.labels.json`` (next to the output).

    >>> labels_path(Path("/tmp/run.jsonl.gz")).name
    'run.labels.json'
    """
    name = out.name
    for suffix in (".jsonl.gz", ".jsonl", ".gz", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(name + ".labels.json")


def write(path: Path, labels: list[dict[str, Any]], offset_s: float = 0.0) -> None:
    path.write_text(json.dumps(render(labels, offset_s), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
