"""Run a scenario: every selected sensor's series (vectorised per sensor), faults and labels.

The result is a pure function of (scenario, registry, seed): no clock reads, no I/O. Publishing,
file output and plotting all consume the same :class:`Simulation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sensors_sim import labels as labelling
from sensors_sim import reporting
from sensors_sim.faults import Delivery, apply_events, delivery_of, transmit
from sensors_sim.models import air, noise, rain, river, tide, traffic, weather
from sensors_sim.models.common import Array, sensor_rng
from sensors_sim.registry import SensorSpec, load_registry, registry_by_id
from sensors_sim.scenario import Flood, Scenario, load, select, variant
from sensors_sim.world import World

#: Gauge noise (m) before rounding to whole centimetres, as real gauges report.
GAUGE_NOISE_M = 0.003


@dataclass
class SensorSeries:
    """One sensor's series as measured (sensor noise included, delivery faults not).

    Under a reporting profile this is the reported series: ``spec.interval_s`` is the reporting
    cadence, values are aggregated, noisy and quantised, and ``transmission`` says which reports
    were lost and which carry a spike.
    """

    spec: SensorSpec
    t: NDArray[np.int64]
    values: dict[str, Array]
    transmission: reporting.Transmission | None = None


@dataclass
class Simulation:
    """Everything one run produced, on the scenario's own (virtual) clock."""

    scenario: Scenario
    seed: int
    series: list[SensorSeries]
    deliveries: list[Delivery]
    labels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_messages(self) -> int:
        return sum(len(d.ts) for d in self.deliveries)

    def by_id(self, sensor_id: str) -> SensorSeries:
        for s in self.series:
            if s.spec.sensor_id == sensor_id:
                return s
        raise KeyError(sensor_id)


def sample_times(spec: SensorSpec, t0: float, t1: float) -> NDArray[np.int64]:
    """Reading times of one sensor: every ``interval_s`` from a fixed per-sensor phase.

    Phases differ between sensors (as real devices are not synchronised) but never between runs.
    """
    phase = sum(spec.sensor_id.encode()) % spec.interval_s
    first = int(np.ceil(t0)) + phase
    return np.arange(first, int(t1), spec.interval_s, dtype=np.int64)


def _water_level(world: World, spec: SensorSpec, t: Array, rng: np.random.Generator) -> Array:
    ex = spec.extra
    base = float(ex.get("base_m", 0.0))
    dt = float(spec.interval_s)
    stage = np.full_like(t, base)
    for ev in world.scenario.events:
        if isinstance(ev, Flood) and spec.sensor_id in ev.gauges:
            target = ev.gauges[spec.sensor_id]
            base = target.base_m if target.base_m is not None else base
            rains = dict(world.basin_rain(spec, t))
            responses = [
                river.response(rains[s], dt, float(ex.get("uh_n", 3)), float(ex.get("uh_k_h", 3.0)))
                for s in ev.storms
            ]
            exponent = float(ex.get("rating_exp", 1.0))
            weights = river.peak_weights(responses, 0.0, river.discharge_targets(base, target.peaks_m, exponent))
            discharge = sum((w * r for w, r in zip(weights, responses, strict=True)), np.zeros_like(t))
            stage = base + river.rating(discharge, exponent)
    if ex.get("tidal"):
        stage = stage + 0.3 * tide.astronomical(t)
    stage = river.rate_limit(
        stage, dt, float(ex.get("max_rise_m_per_h", 0.84)), float(ex.get("max_fall_m_per_h", 0.76))
    )
    stage = stage + rng.normal(0.0, GAUGE_NOISE_M, len(t))
    return np.asarray(np.round(stage, 2))



def simulate_sensor(world: World, spec: SensorSpec, t: Array) -> dict[str, Array]:
    """Metric arrays for one sensor, dispatched on its kind."""
    rng = sensor_rng(world.seed, spec.sensor_id, "model")
    ex = spec.extra
    if spec.kind == "traffic":
        speed, flow, occ = traffic.simulate(
            t,
            free_flow_kmh=float(ex["free_flow_kmh"]),
            capacity_vph=float(ex["capacity_vph"]),
            lanes=int(ex["lanes"]),
            peak_vc=float(ex.get("peak_vc", traffic.DEFAULT_PEAK_VC)),
            beachfront=bool(ex.get("beachfront", False)),
            capacity_factor=world.capacity_factor(spec, t),
            demand_scale=world.scenario.demand_scale,
            rng=rng,
        )
        return {"speed_kmh": speed, "flow_vph": flow, "occupancy_pct": occ}
    if spec.kind == "air":
        episode, ratio = world.episode(spec, t)
        return air.simulate(
            t,
            metrics=spec.metric_names,
            traffic=world.traffic_index(spec, t),
            site_class=str(ex.get("site_class", "traffic")),
            episode_pm25=episode,
            episode_pm10_ratio=ratio,
            rain_rate=world.rain_rate(spec, t, cells=False),
            rng=rng,
        )
    if spec.kind == "noise":
        wind, _, _ = world.wind(spec, t)
        return {
            "laeq_dba": noise.simulate(
                t,
                peak_laeq_dba=float(ex.get("peak_laeq_dba", 72.0)),
                traffic=world.traffic_index(spec, t),
                wind_ms=wind,
                rain_rate=world.rain_rate(spec, t, cells=False),
                rng=rng,
            )
        }
    if spec.kind == "weather":
        speed, direction, dp = world.wind(spec, t)
        out = weather.simulate(
            t,
            coastal=bool(ex.get("coastal", False)),
            storm_speed=speed,
            storm_dir=direction,
            storm_dp=dp,
            rain_rate=world.rain_rate(spec, t, cells=False),
            rng=rng,
        )
        return {m: out[m] for m in spec.metric_names}
    if spec.kind == "rain":
        rate = world.rain_rate(spec, t, cells=True)
        return {"rain_mm": rain.tipping_bucket(rate, float(spec.interval_s), float(ex.get("bucket_mm", 0.2)))}
    if spec.kind == "water_level":
        return {"water_level_m": _water_level(world, spec, t, rng)}
    if spec.kind == "tide":
        speed, _, dp = world.wind(spec, t)
        level = float(ex.get("msl_m", 1.2)) + tide.astronomical(t) + tide.surge(dp, speed)
        level = level + rng.normal(0.0, 0.01, len(t))
        return {"sea_level_m": np.round(level, 2)}
    raise ValueError(f"no model for kind {spec.kind!r}")


def run(scenario: Scenario, registry: list[SensorSpec], seed: int | None = None) -> Simulation:
    """Simulate a loaded scenario; ``seed`` overrides the scenario's own."""
    seed = scenario.seed if seed is None else seed
    by_id = registry_by_id(registry)
    world = World(scenario, by_id, seed)
    series: list[SensorSeries] = []
    for spec in select(scenario, registry):
        t = sample_times(spec, scenario.t0, scenario.t1)
        values = simulate_sensor(world, spec, t.astype(np.float64))
        rule = reporting.settings_for(spec, scenario.reporting)
        if rule.is_identity(spec):
            series.append(SensorSeries(spec, t, values))
        else:
            series.append(SensorSeries(*reporting.report(spec, t, values, rule, seed, scenario.t1)))
    deliveries = []
    for s in series:
        d = delivery_of(s.spec, s.t, s.values)
        if s.transmission is not None:
            d = transmit(d, s.transmission)
        deliveries.append(apply_events(d, scenario, seed))
    sim = Simulation(scenario, seed, series, deliveries)
    sim.labels = labelling.build(sim, world)
    return sim


def simulate(
    name: str, seed: int | None = None, registry: list[SensorSpec] | None = None, reporting: str | None = None
) -> Simulation:
    """Load a scenario by name (or TOML path, either optionally ``@PROFILE``) and run it.

    ``reporting`` runs it under that reporting profile instead (the same as ``NAME@PROFILE``).
    """
    reg = registry if registry is not None else load_registry()
    return run(load(variant(name, reporting), reg), reg, seed)
