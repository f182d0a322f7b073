"""Reporting profiles: how a station sends what it measures, on top of the physical models.

The models produce every sensor's series at its registry cadence. A reporting profile then makes
it look like what a real network delivers, per kind and per sensor:

1. **Cadence.** ``interval_s`` must be a whole multiple of the registry interval. Report *j* is
   sent at native sample ``j·k`` (so hourly gauges report just after the hour) and covers the native
   samples since the previous report. Rain is summed, concentrations and traffic are averaged, LAeq
   is energy-averaged, gusts take the maximum, and levels and the rest take the instantaneous
   sample. The physics is the same as in the ideal run, and only the reporting differs.
2. **Sensor noise** (``noise_sd``, additive Gaussian), clipped to the metric's physical range, then
   **quantisation** (``quantum``: 1 cm, 0.1 mm, 1 µg/m³, 0.1 dB, ...).
3. **Lost reports.** ``miss_rate`` loses single transmissions. Two lost reports are never adjacent,
   so a single loss leaves 2 intervals between delivered readings. ``outages_per_day`` are
   multi-hour bursts (duration uniform in ``outage_h``, at least ``SILENT_MIN_MISSED`` reports).
   Every sensor's first report is delivered.
4. **Spikes.** ``spike_rate`` is the chance per delivered report that one metric listed in
   ``spike`` jumps by ``spike·(1 + U(0, 1))``. Metrics that cannot be negative only jump up.

What counts as a fault (and is labelled ``sensor_fault``; see :mod:`sensors_sim.labels`):
- a run of ``SILENT_MIN_MISSED`` (3) or more consecutive lost reports is ``fault = "dropout"``,
  ``expected_alert = "sensor_silent"``. That leaves at least 4 intervals between delivered
  readings, so a silence timer at 3 intervals fires before the next reading arrives. The label
  runs from the first missing report to the next one due after the run.
- every spike is ``fault = "spike"``, ``expected_alert = "sensor_spike"``, labelled at its own
  timestamp.
- single lost reports are not faults. By construction no gap lies between the two (2 intervals
  versus ≥ 4), so a silence timer anywhere in 2 < k < 4 intervals is scored unambiguously.

A scenario picks a profile in a ``[reporting]`` table and may override it per kind and per sensor;
``NAME@PROFILE`` runs any scenario under another profile (see ``sensors_sim/README.md``). The
``ideal`` profile changes nothing, so scenarios without a ``[reporting]`` table give exactly the
same output as before profiles existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import msgspec
import numpy as np
from numpy.typing import NDArray

from ioc.domain import KIND_METRICS
from sensors_sim.models.common import Array, sensor_rng
from sensors_sim.registry import SensorSpec

#: Consecutive lost reports that make a ``sensor_silent`` fault (>= 4 intervals between readings).
SILENT_MIN_MISSED = 3

#: How a report aggregates the native samples it covers; metrics not listed send the last sample.
AGGREGATE: dict[str, str] = {
    "rain_mm": "sum",
    "pm25": "mean",
    "pm10": "mean",
    "no2": "mean",
    "o3": "mean",
    "co": "mean",
    "so2": "mean",
    "laeq_dba": "energy",
    "wind_speed_ms": "mean",
    "wind_gust_ms": "max",
    "speed_kmh": "mean",
    "flow_vph": "mean",
    "occupancy_pct": "mean",
}
#: Metrics that cannot go negative (noise is clipped at 0; spikes only go up).
NON_NEGATIVE = frozenset(
    {"rain_mm", "pm25", "pm10", "no2", "o3", "co", "so2", "laeq_dba", "humidity_pct", "wind_speed_ms",
     "wind_gust_ms", "speed_kmh", "flow_vph", "occupancy_pct", "pressure_hpa"}
)
UPPER = {"humidity_pct": 100.0, "occupancy_pct": 100.0}
WRAP = {"wind_dir_deg": 360.0}


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ReportingRule(_Strict):
    """Reporting settings for a kind or a sensor; unset fields inherit from the layer below."""

    interval_s: int | None = None
    quantum: dict[str, float] = {}
    noise_sd: dict[str, float] = {}
    spike: dict[str, float] = {}
    spike_rate: float | None = None
    miss_rate: float | None = None
    outages_per_day: float | None = None
    outage_h: tuple[float, float] | None = None


class Reporting(_Strict):
    """A profile, or a scenario's ``[reporting]`` table: a base ``profile`` plus overrides."""

    profile: str = "ideal"
    description: str = ""
    kinds: dict[str, ReportingRule] = {}
    sensors: dict[str, ReportingRule] = {}


_R = ReportingRule

#: Built-in profiles. [D] derived from the domain data, [U] simulator assumptions.
PROFILES: dict[str, Reporting] = {
    "ideal": Reporting(description="Registry cadence and model rounding: no extra noise, gaps or spikes (default)."),
    "national": Reporting(
        description=(
            "National-network style: hourly river, tide and rain gauges and hourly air-quality means, "
            "10-minute weather; 1 cm, 0.1 mm, 1 µg/m³, 0.1 dB; lost reports, outages of hours, spikes."
        ),
        kinds={
            # VNDMS publishes hourly levels to the centimetre [D]. The 4 mm of noise on top of the model's
            # 3 mm keeps quiet hours mostly repeating at 1 cm [U]. Spikes jump 1-2 m: a real gauge fault,
            # larger than any hourly change except a flash rise [U].
            "water_level": _R(interval_s=3600, quantum={"water_level_m": 0.01}, noise_sd={"water_level_m": 0.004},
                              spike={"water_level_m": 1.0}, spike_rate=0.003, miss_rate=0.01,
                              outages_per_day=0.05, outage_h=(2.0, 8.0)),
            "tide": _R(interval_s=3600, quantum={"sea_level_m": 0.01}, noise_sd={"sea_level_m": 0.005},
                       spike={"sea_level_m": 0.8}, spike_rate=0.003, miss_rate=0.01,
                       outages_per_day=0.05, outage_h=(2.0, 8.0)),
            # Hourly totals of whole bucket tips, reported to 0.1 mm; a tipping bucket has no additive
            # noise and fails by clogging, not by spiking, so no spikes [U].
            "rain": _R(interval_s=3600, quantum={"rain_mm": 0.1}, miss_rate=0.01,
                       outages_per_day=0.05, outage_h=(2.0, 8.0)),
            # Hourly means: the 1-hour mean is what VN_AQI is computed from (QĐ 1459) [D]; whole µg/m³ and
            # the noise levels are assumptions [U].
            "air": _R(interval_s=3600,
                      quantum={"pm25": 1.0, "pm10": 1.0, "no2": 1.0, "o3": 1.0, "co": 1.0, "so2": 1.0},
                      noise_sd={"pm25": 1.0, "pm10": 1.5, "no2": 1.5, "o3": 2.0, "co": 30.0, "so2": 1.0},
                      spike={"pm25": 50.0, "pm10": 80.0}, spike_rate=0.003, miss_rate=0.01,
                      outages_per_day=0.05, outage_h=(2.0, 8.0)),
            "noise": _R(quantum={"laeq_dba": 0.1}, noise_sd={"laeq_dba": 0.3}, spike={"laeq_dba": 12.0},
                        spike_rate=0.001, miss_rate=0.01, outages_per_day=0.05, outage_h=(1.0, 6.0)),
            # 10-minute automatic weather stations [U].
            "weather": _R(interval_s=600,
                          quantum={"temperature_c": 0.1, "humidity_pct": 1.0, "wind_speed_ms": 0.1,
                                   "wind_gust_ms": 0.1, "wind_dir_deg": 1.0, "pressure_hpa": 0.1},
                          noise_sd={"temperature_c": 0.1, "pressure_hpa": 0.1}, spike={"temperature_c": 8.0},
                          spike_rate=0.002, miss_rate=0.01, outages_per_day=0.05, outage_h=(1.0, 6.0)),
            # City loop detectors keep their 1-minute cadence; whole km/h and veh/h; no spikes [U].
            "traffic": _R(quantum={"speed_kmh": 1.0, "flow_vph": 1.0, "occupancy_pct": 0.1}, miss_rate=0.005,
                          outages_per_day=0.05, outage_h=(0.5, 4.0)),
        },
        # A virtual city gauge, not a national station: 10-minute reports [U].
        sensors={"URB_XOM_BONG": _R(interval_s=600)},
    ),
    "national_10min": Reporting(
        profile="national",
        description="As `national`, but river, tide and rain gauges report every 10 minutes.",
        kinds={k: _R(interval_s=600) for k in ("water_level", "tide", "rain")},
    ),
}


@dataclass(frozen=True)
class SensorReporting:
    """The resolved reporting settings of one sensor."""

    interval_s: int
    quantum: dict[str, float]
    noise_sd: dict[str, float]
    spike: dict[str, float]
    spike_rate: float
    miss_rate: float
    outages_per_day: float
    outage_h: tuple[float, float]

    def is_identity(self, spec: SensorSpec) -> bool:
        """True if reporting changes nothing for ``spec`` (the ideal profile)."""
        return (self.interval_s == spec.interval_s and not self.quantum and not any(self.noise_sd.values())
                and not (self.spike and self.spike_rate > 0) and self.miss_rate == 0 and self.outages_per_day == 0)


def _layers(rep: Reporting, seen: tuple[str, ...] = ()) -> list[Reporting]:
    if rep.profile == "ideal":
        return [rep]
    if rep.profile in seen:
        raise ValueError(f"reporting profiles form a cycle: {' -> '.join((*seen, rep.profile))}")
    return [*_layers(PROFILES[rep.profile], (*seen, rep.profile)), rep]


def settings_for(spec: SensorSpec, rep: Reporting) -> SensorReporting:
    """Merge the profile chain for one sensor: base profiles first, then kind, then sensor rules.

    >>> from sensors_sim.registry import load_registry
    >>> dt = next(s for s in load_registry() if s.sensor_id == "HYD_DONG_TRANG")
    >>> settings_for(dt, Reporting(profile="national")).interval_s
    3600
    >>> settings_for(dt, Reporting(profile="national_10min", sensors={"HYD_DONG_TRANG": ReportingRule(miss_rate=0.0)})).miss_rate
    0.0
    """
    out = SensorReporting(spec.interval_s, {}, {}, {}, 0.0, 0.0, 0.0, (2.0, 8.0))
    for layer in _layers(rep):
        for rule in (layer.kinds.get(spec.kind), layer.sensors.get(spec.sensor_id)):
            if rule is not None:
                out = SensorReporting(
                    interval_s=out.interval_s if rule.interval_s is None else rule.interval_s,
                    quantum={**out.quantum, **rule.quantum},
                    noise_sd={**out.noise_sd, **rule.noise_sd},
                    spike={**out.spike, **rule.spike},
                    spike_rate=out.spike_rate if rule.spike_rate is None else rule.spike_rate,
                    miss_rate=out.miss_rate if rule.miss_rate is None else rule.miss_rate,
                    outages_per_day=out.outages_per_day if rule.outages_per_day is None else rule.outages_per_day,
                    outage_h=out.outage_h if rule.outage_h is None else rule.outage_h,
                )
    return out


def check(rep: Reporting, registry: dict[str, SensorSpec], selected: list[SensorSpec]) -> tuple[str, str] | None:
    """The first problem in a ``[reporting]`` table as (field path, message), or None."""
    if rep.profile not in PROFILES:
        return "reporting.profile", f"unknown profile {rep.profile!r}; profiles: {', '.join(PROFILES)}"
    for group, rules in (("kinds", rep.kinds), ("sensors", rep.sensors)):
        for key, rule in rules.items():
            where = f"reporting.{group}.{key}"
            if group == "kinds" and key not in KIND_METRICS:
                return where, f"unknown kind {key!r}; kinds: {', '.join(KIND_METRICS)}"
            if group == "sensors" and key not in registry:
                return where, f"unknown sensor {key!r}"
            kind = key if group == "kinds" else registry[key].kind
            problem = _check_rule(rule, kind)
            if problem:
                return f"{where}.{problem[0]}", problem[1]
    for spec in selected:
        interval = settings_for(spec, rep).interval_s
        if interval % spec.interval_s:
            return "reporting", (f"{spec.sensor_id}: interval_s {interval} must be a whole multiple of the "
                                 f"registry interval {spec.interval_s} s")
    return None


def _check_rule(rule: ReportingRule, kind: str) -> tuple[str, str] | None:
    metrics = KIND_METRICS[kind]
    for name, table, ok, want in (("quantum", rule.quantum, lambda v: v > 0, "> 0"),
                                  ("noise_sd", rule.noise_sd, lambda v: v >= 0, ">= 0"),
                                  ("spike", rule.spike, lambda v: v > 0, "> 0")):
        for metric, value in table.items():
            if metric not in metrics:
                return name, f"{metric!r} is not a {kind} metric ({', '.join(metrics)})"
            if not (math.isfinite(value) and ok(value)):
                return f"{name}.{metric}", f"must be {want}, got {value}"
    if rule.interval_s is not None and not 1 <= rule.interval_s <= 86400:
        return "interval_s", f"must be in 1..86400 seconds, got {rule.interval_s}"
    for name in ("spike_rate", "miss_rate"):
        value = getattr(rule, name)
        if value is not None and not 0 <= value <= 1:
            return name, f"must be in [0, 1], got {value}"
    if rule.outages_per_day is not None and not 0 <= rule.outages_per_day <= 24:
        return "outages_per_day", f"must be in [0, 24], got {rule.outages_per_day}"
    if rule.outage_h is not None and not 0 < rule.outage_h[0] <= rule.outage_h[1]:
        return "outage_h", f"must be [shortest, longest] hours with 0 < shortest <= longest, got {list(rule.outage_h)}"
    return None


# -- values ------------------------------------------------------------------------------------


def report_rows(n: int, k: int) -> NDArray[np.int64]:
    """Native sample index of each report: every ``k``-th sample from the first.

    >>> report_rows(7, 3).tolist()
    [0, 3, 6]
    """
    return np.arange(0, n, k, dtype=np.int64)


def aggregate(v: Array, rows: NDArray[np.int64], k: int, how: str) -> Array:
    """Aggregate native samples ``(row - k, row]`` (the first report covers only sample 0).

    >>> x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    >>> [aggregate(x, report_rows(5, 2), 2, how).tolist() for how in ("sample", "sum", "mean", "max")]
    [[1.0, 3.0, 5.0], [1.0, 5.0, 9.0], [1.0, 2.5, 4.5], [1.0, 3.0, 5.0]]
    """
    if k == 1 or how == "sample" or len(rows) == 0:
        return np.asarray(v[rows], dtype=np.float64)
    starts = np.maximum(rows - k + 1, 0)
    count = (rows - starts + 1).astype(np.float64)
    if how == "max":
        return np.asarray(np.maximum.reduceat(v[: rows[-1] + 1], starts), dtype=np.float64)
    x = 10.0 ** (v / 10.0) if how == "energy" else v
    c = np.concatenate([[0.0], np.cumsum(x)])
    total = c[rows + 1] - c[starts]
    if how == "sum":
        return np.asarray(total, dtype=np.float64)
    mean = total / count
    return np.asarray(10.0 * np.log10(mean) if how == "energy" else mean, dtype=np.float64)


def quantise(v: Array, q: float) -> Array:
    """Round to whole multiples of ``q`` with no binary-fraction residue.

    >>> quantise(np.array([0.30000000000000004, 1.234, -0.006]), 0.01).tolist()
    [0.3, 1.23, -0.01]
    >>> quantise(np.array([12.4, 12.6]), 1.0).tolist()
    [12.0, 13.0]
    """
    decimals = len(f"{q:.9f}".rstrip("0").split(".")[1])
    return np.asarray(np.round(np.round(v / q) * q, decimals), dtype=np.float64)


def _bound(metric: str, v: Array) -> Array:
    if metric in WRAP:
        return np.asarray(np.mod(v, WRAP[metric]), dtype=np.float64)
    lo = 0.0 if metric in NON_NEGATIVE else -np.inf
    return np.asarray(np.clip(v, lo, UPPER.get(metric, np.inf)), dtype=np.float64)


def _finish(metric: str, v: Array, rule: SensorReporting) -> Array:
    v = _bound(metric, v)
    if metric in rule.quantum:
        v = _bound(metric, quantise(v, rule.quantum[metric]))
    return v


@dataclass
class Transmission:
    """What happens to each report on its way: lost, or sent with a spike in one metric."""

    lost: NDArray[np.bool_]
    spike_col: NDArray[np.int64]  # metric column of the spike, -1 for none
    spike_value: Array  # the value sent instead, where spike_col >= 0
    interval_s: int

    @property
    def spiked(self) -> NDArray[np.bool_]:
        return np.asarray(self.spike_col >= 0)

    @property
    def valid(self) -> NDArray[np.bool_]:
        """Reports delivered without a reporting fault: what hazard labels are computed from."""
        return np.asarray(~self.lost & (self.spike_col < 0))


def report(
    spec: SensorSpec, t: NDArray[np.int64], values: dict[str, Array], rule: SensorReporting, seed: int, t1: float
) -> tuple[SensorSpec, NDArray[np.int64], dict[str, Array], Transmission]:
    """The reported series (spec with its reporting interval, times, clean values) and its transmission."""
    k = rule.interval_s // spec.interval_s
    rows = report_rows(len(t), k)
    ts = t[rows]
    rng = sensor_rng(seed, spec.sensor_id, "reporting/noise")
    out: dict[str, Array] = {}
    for metric in spec.metric_names:
        v = aggregate(values[metric], rows, k, AGGREGATE.get(metric, "sample"))
        sd = rule.noise_sd.get(metric, 0.0)
        if sd > 0:
            v = v + rng.normal(0.0, sd, len(v))
        out[metric] = _finish(metric, v, rule)
    lost = _lost(sensor_rng(seed, spec.sensor_id, "reporting/gaps"), ts, rule, t1)
    col, sent = _spikes(sensor_rng(seed, spec.sensor_id, "reporting/spikes"), spec, out, lost, rule)
    return replace(spec, interval_s=rule.interval_s), ts, out, Transmission(lost, col, sent, rule.interval_s)


def _lost(rng: np.random.Generator, ts: NDArray[np.int64], rule: SensorReporting, t1: float) -> NDArray[np.bool_]:
    n = len(ts)
    miss = rng.random(n) < rule.miss_rate
    miss[1:] &= ~miss[:-1]  # single losses are never adjacent: 1 lost report, or an outage
    lost = miss.copy()
    if n > 1 and rule.outages_per_day > 0:
        span = t1 - float(ts[1])
        count = int(rng.poisson(rule.outages_per_day * span / 86400.0))
        starts = float(ts[1]) + rng.random(count) * span
        hours = rng.uniform(rule.outage_h[0], rule.outage_h[1], count)
        for start, h in zip(starts.tolist(), hours.tolist(), strict=True):
            a = int(np.searchsorted(ts, start))
            b = max(a + SILENT_MIN_MISSED, int(np.searchsorted(ts, start + h * 3600.0)))
            if b <= n:  # an outage in the last 2 reports would be too short to be a fault: skip it
                lost[a:b] = True
    lost[0] = False
    return np.asarray(lost)


def _spikes(
    rng: np.random.Generator, spec: SensorSpec, values: dict[str, Array], lost: NDArray[np.bool_],
    rule: SensorReporting,
) -> tuple[NDArray[np.int64], Array]:
    n = len(lost)
    names = spec.metric_names
    candidates = [m for m in names if m in rule.spike]
    col = np.full(n, -1, dtype=np.int64)
    sent = np.zeros(n)
    if not candidates or rule.spike_rate <= 0 or n == 0:
        return col, sent
    hit = (rng.random(n) < rule.spike_rate) & ~lost
    size = 1.0 + rng.random(n)
    down = rng.random(n) < 0.5
    which = rng.integers(0, len(candidates), n)
    for j, metric in enumerate(candidates):
        idx = np.flatnonzero(hit & (which == j))
        if not len(idx):
            continue
        sign = np.where(down[idx] & (metric not in NON_NEGATIVE), -1.0, 1.0)
        clean = values[metric][idx]
        spiked = _finish(metric, clean + sign * rule.spike[metric] * size[idx], rule)
        real = spiked != clean  # a spike clipped back onto the true value is no spike
        col[idx[real]] = names.index(metric)
        sent[idx[real]] = spiked[real]
    return col, sent


def lost_runs(lost: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Index ranges [a, b] of consecutive lost reports.

    >>> lost_runs(np.array([False, True, False, True, True, True]))
    [(1, 1), (3, 5)]
    """
    edges = np.diff(np.concatenate([[0], lost.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))
