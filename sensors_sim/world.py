"""The shared state of one simulated world: storms, incidents and episodes, queried per sensor.

Models stay pure functions of arrays; this module turns scenario events into the arrays they need
(rain rate, storm wind, capacity factor, PM episode) at one sensor's location and times.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sensors_sim.models.common import Array, bump, sensor_rng
from sensors_sim.models.storm import StormTrack, scaled_rain_rate
from sensors_sim.models.traffic import demand_profile
from sensors_sim.registry import SensorSpec
from sensors_sim.scenario import PollutionEpisode, Scenario, Storm, TrafficIncident


class World:
    """Event fields for one scenario run."""

    def __init__(self, scenario: Scenario, registry: dict[str, SensorSpec], seed: int) -> None:
        self.scenario = scenario
        self.registry = registry
        self.seed = seed
        self.storms: dict[str, tuple[Storm, StormTrack]] = {}
        for ev in scenario.events:
            if isinstance(ev, Storm):
                track = StormTrack(
                    start=ev.start.timestamp(),
                    peak=ev.peak.timestamp(),
                    end=ev.end.timestamp(),
                    track=tuple((float(a), float(b)) for a, b in ev.track),
                    radius_km=ev.radius_km,
                    max_wind_ms=ev.max_wind_ms,
                    rmw_km=ev.rmw_km,
                )
                self.storms[ev.id] = (ev, track)
        self.incident_factors = self._incidents()

    # -- rain and wind -------------------------------------------------------------------------
    def rain_target(self, storm_id: str, spec: SensorSpec) -> float:
        """Wettest-24h total (mm) for this storm at this place: nearer the track, nearer the top."""
        ev, track = self.storms[storm_id]
        lo, hi = ev.rain_24h_mm
        return lo + (hi - lo) * track.exposure(spec.lat, spec.lon)

    def rain_rate(self, spec: SensorSpec, t: Array, *, cells: bool) -> Array:
        """Rain rate (mm/h) at the sensor; ``cells`` adds its own convective bursts (rain gauges)."""
        dt = float(spec.interval_s)
        out = np.zeros_like(t)
        for sid, (_ev, track) in self.storms.items():
            rng = sensor_rng(self.seed, spec.sensor_id, f"cells/{sid}") if cells else None
            out += scaled_rain_rate(track, spec.lat, spec.lon, t, dt, self.rain_target(sid, spec), rng)
        return out

    def basin_rain(self, spec: SensorSpec, t: Array) -> Iterator[tuple[str, Array]]:
        """Smooth rain shape per storm at a gauge (the river model rescales it)."""
        for sid, (_ev, track) in self.storms.items():
            yield sid, track.rain_shape(spec.lat, spec.lon, t)

    def wind(self, spec: SensorSpec, t: Array) -> tuple[Array, Array, Array]:
        """Storm wind speed (m/s), direction from (deg) and pressure deficit (hPa), summed over storms."""
        u = np.zeros_like(t)
        v = np.zeros_like(t)
        dp = np.zeros_like(t)
        for _ev, track in self.storms.values():
            if track.max_wind_ms <= 0:
                continue
            s, d, p = track.wind(spec.lat, spec.lon, t)
            u -= s * np.sin(np.radians(d))
            v -= s * np.cos(np.radians(d))
            dp += p
        speed = np.hypot(u, v)
        direction = (np.degrees(np.arctan2(-u, -v)) + 360.0) % 360.0
        return np.asarray(speed), np.asarray(direction), dp

    # -- traffic -------------------------------------------------------------------------------
    def _incidents(self) -> dict[str, list[tuple[float, float, float, float]]]:
        """Segment -> [(start, end, recovery_s, capacity factor)] including upstream spill-back."""
        out: dict[str, list[tuple[float, float, float, float]]] = {}
        for ev in self.scenario.events:
            if not isinstance(ev, TrafficIncident):
                continue
            for sid, depth in self.affected(ev):
                delay = depth * ev.spread_min * 60.0
                factor = min(1.0, ev.capacity_factor + 0.2 * depth)
                out.setdefault(sid, []).append(
                    (ev.start.timestamp() + delay, ev.end.timestamp() + 0.5 * delay, ev.recovery_min * 60.0, factor)
                )
        return out

    def affected(self, ev: TrafficIncident) -> list[tuple[str, int]]:
        """The closed segment (depth 0) and the segments upstream of it, breadth first."""
        seen = {ev.sensor: 0}
        frontier = [ev.sensor]
        for depth in range(1, ev.depth + 1):
            nxt = []
            for sid in frontier:
                for up in self.registry[sid].extra.get("upstream", []):
                    if up not in seen:
                        seen[up] = depth
                        nxt.append(up)
            frontier = nxt
        return list(seen.items())

    def capacity_factor(self, spec: SensorSpec, t: Array) -> Array:
        out = np.ones_like(t)
        for start, end, recovery, factor in self.incident_factors.get(spec.sensor_id, []):
            ramp = np.clip((end + recovery - t) / max(recovery, 1.0), 0.0, 1.0)
            ramp = np.where(t < start, 0.0, np.where(t <= end, 1.0, ramp))
            out = np.minimum(out, 1.0 - (1.0 - factor) * ramp)
        return out

    def traffic_index(self, spec: SensorSpec, t: Array) -> Array:
        """Local traffic activity near a non-traffic sensor (air, noise): 0..~1.3."""
        weight = float(spec.extra.get("traffic_weight", 1.0))
        return demand_profile(t) * weight * self.scenario.demand_scale

    # -- air -----------------------------------------------------------------------------------
    def episode(self, spec: SensorSpec, t: Array) -> tuple[Array, float]:
        """Extra PM2.5 (µg/m³) from pollution episodes at this station, and the PM10/PM2.5 ratio."""
        extra = np.zeros_like(t)
        ratio = 1.0
        for ev in self.scenario.events:
            if isinstance(ev, PollutionEpisode) and spec.sensor_id in ev.sensors:
                extra += ev.pm25_peak * bump(t, ev.start.timestamp(), ev.peak.timestamp(), ev.end.timestamp())
                ratio = ev.pm10_ratio
        return extra, ratio
