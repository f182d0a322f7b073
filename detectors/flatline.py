"""Sensor health: a stuck or flat-lined sensor, judged against the sensor's own habits.

A fixed "N identical readings" rule either misses stuck fast sensors or fires on slow quantised
series: an hourly river gauge at 1 cm legitimately repeats for hours. So each metric learns how
long its runs of identical (within ``tolerance``) readings last. The plain mean run length is
misleading for a quantised series that sits on one value and flickers off it for single readings,
so the detector uses the length-biased mean ``E[L²]/E[L]`` (the run a random reading belongs to),
which for geometric runs of mean ``m`` is ``2m − 1``, and turns it back into an effective ``m``.
A run of ``L`` readings then has tail probability ``(1 − 1/m)^(L−1)``; the runs of all metrics that are
flat *at the same time* multiply, so a device whose every channel freezes is caught quickly while
one slow channel needs a long run. The fault is raised when that joint probability falls below
``alpha`` and the longest run has lasted ``min_flat_s``; it clears as soon as the values move.
Values where repetition is normal (no rain, zero flow, calm wind, saturated humidity) are exempt.
Runs that ended while the fault was raised are not learned, so a stuck spell does not teach the
detector that stuck is normal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from math import isfinite
from typing import Any, NamedTuple

from detectors.common import check_version, finite, make_finding, require
from ioc.models import Finding, Reading

STATE_VERSION = 1


class FlatSpec(NamedTuple):
    """Per metric: values within ``tolerance`` count as identical; exempt values never form runs."""

    tolerance: float = 0.0
    exempt_below: float | None = None
    exempt_above: float | None = None
    prior_run: float = 3.0  # mean run length assumed before any is seen (readings)
    min_run: float = 1.0  # the learned mean run never counts as shorter: runs learned while the value
    # trended (a flood) say nothing about how long a flat, quantised, noisy value legitimately repeats


class StuckDetector:
    """Raises ``sensor_stuck`` when a sensor's readings stop changing for improbably long.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = StuckDetector("AQ", {"pm25": FlatSpec(prior_run=1.5)}, min_flat_s=1800, min_runs=3)
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> r = lambda i, v: Reading("AQ", "air", t0 + timedelta(minutes=5 * i), i, {"pm25": v})
    >>> vals = [10.0 + (i % 7) for i in range(30)] + [12.0] * 30 + [15.0]
    >>> [(i, f.severity) for i, v in enumerate(vals) for f in d.update(r(i, v))]
    [(36, 'warning'), (60, None)]
    """

    rule = "sensor_stuck"

    def __init__(
        self,
        sensor_id: str,
        metrics: Mapping[str, FlatSpec],
        *,
        alpha: float = 3e-4,  # joint tail probability to call a run stuck; lower = fewer false alarms, later
        min_flat_s: float = 3600.0,  # never call stuck before the run lasts this long
        min_count: int = 4,  # nor before this many identical readings
        min_runs: int = 5,  # completed runs learned before the metric is judged
        prior_weight: float = 5.0,  # the prior mean run counts as this many runs
        memory_runs: int = 30,  # EWMA horizon of the run statistics, in runs; short follows regime changes (a flood receding)
        severity: str = "warning",
    ) -> None:
        require(bool(metrics), f"{sensor_id}: give at least one metric to watch")
        require(0.0 < alpha < 1.0, f"alpha must be in (0, 1), got {alpha}")
        require(min_flat_s >= 0 and min_count >= 2 and min_runs >= 0,
                "min_flat_s >= 0, min_count >= 2 and min_runs >= 0 are required")
        require(prior_weight >= 1 and memory_runs >= 1, "prior_weight and memory_runs must be >= 1")
        for m, spec in metrics.items():
            require(spec.tolerance >= 0 and spec.prior_run >= 1 and spec.min_run >= 1,
                    f"{sensor_id}: {m}: tolerance >= 0, prior_run >= 1 and min_run >= 1")
        self.sensor_id = sensor_id
        self.specs = {m: FlatSpec(*spec) for m, spec in metrics.items()}
        self._items = [(m, s.tolerance, s.exempt_below, s.exempt_above) for m, s in self.specs.items()]
        self.log_alpha = math.log(alpha)
        self.min_flat_s = float(min_flat_s)
        self.min_count = min_count
        self.min_runs = min_runs
        self.prior_weight = float(prior_weight)
        self.memory_runs = float(memory_runs)
        self.severity = severity
        self.reset()

    def reset(self) -> None:
        # metric -> [run_value, run_start_t, run_n, E[L], E[L²], n_runs]; run_n 0 = no run (exempt value)
        self.runs: dict[str, list[float]] = {
            m: [0.0, 0.0, 0.0, s.prior_run, 2.0 * s.prior_run**2 - s.prior_run, 0.0] for m, s in self.specs.items()
        }
        self.stay: dict[str, float] = {}  # log P(repeat) per metric, derived from runs (not state)
        self.active = False
        self.last_t: float | None = None

    @property
    def ready(self) -> bool:
        return any(st[5] >= self.min_runs for st in self.runs.values())

    def _learn(self, st: list[float]) -> None:
        st[5] += 1.0
        a = 1.0 / min(st[5] + self.prior_weight, self.memory_runs)
        st[3] += a * (st[2] - st[3])
        st[4] += a * (st[2] * st[2] - st[4])

    @staticmethod
    def _stay_log(st: list[float], min_run: float = 1.0) -> float:
        """log P(the next reading repeats) from the length-biased mean run (at least ``min_run``)."""
        m = 0.5 * (st[4] / st[3] + 1.0) if st[3] > 0 else 1.0
        return math.log1p(-min(0.95, 1.0 / max(m, min_run, 1.0)))

    def update(self, reading: Reading) -> list[Finding]:
        t = reading.ts.timestamp()
        if self.last_t is not None and t <= self.last_t:
            return []
        log_tail = 0.0
        longest: tuple[float, str, float, float] | None = None  # run_n, metric, value, start
        seen = False
        metrics = reading.metrics
        stay, active, runs = self.stay, self.active, self.runs
        for metric, tol, below, above in self._items:
            v = metrics.get(metric)
            if v is None or not isfinite(v):
                continue
            seen = True
            st = runs[metric]
            if st[2] > 0 and abs(v - st[0]) <= tol:
                st[2] += 1.0
            else:
                if st[2] >= 1 and not active:
                    self._learn(st)
                    stay.pop(metric, None)
                if (below is not None and v <= below) or (above is not None and v >= above):
                    st[2] = 0.0
                    continue
                st[0], st[1], st[2] = v, t, 1.0
                continue  # a fresh run of one reading carries no evidence
            if st[5] >= self.min_runs:
                sl = stay.get(metric)
                if sl is None:
                    sl = stay[metric] = self._stay_log(st, self.specs[metric].min_run)
                log_tail += (st[2] - 1.0) * sl
                if longest is None or st[2] > longest[0]:
                    longest = (st[2], metric, v, st[1])
        if not seen:
            return []
        self.last_t = t
        if not self.active:
            if longest is None or log_tail > self.log_alpha:
                return []
            run_n, metric, v, start = longest
            if run_n < self.min_count or t - start < self.min_flat_s:
                return []
            self.active = True
            minutes = (t - start) / 60.0
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric=metric,
                ts=reading.ts, severity=self.severity, value=v, threshold=None, score=-math.expm1(log_tail),
                message=f"{self.sensor_id}: {metric} đứng yên ở {v:g} suốt {minutes:.0f} phút, cảm biến có thể bị kẹt",
                message_en=f"{self.sensor_id}: {metric} flat at {v:g} for {minutes:.0f} min; the sensor may be stuck",
                detail={"run_readings": int(run_n)},
            )]
        if log_tail <= 0.5 * self.log_alpha:
            return []  # still flat enough: hold the fault (hysteresis)
        self.active = False
        metric = next(m for m in self.specs if finite(metrics.get(m)) is not None)
        return [make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric=metric,
            ts=reading.ts, severity=None, value=float(metrics[metric]), threshold=None, score=0.0,
            message=f"{self.sensor_id}: giá trị đo đã thay đổi trở lại",
            message_en=f"{self.sensor_id}: readings are changing again",
        )]

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "runs": {m: list(v) for m, v in self.runs.items()},
                "active": self.active, "last_t": self.last_t}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "StuckDetector")
        for m, v in state["runs"].items():
            if m in self.runs and len(v) == 6:
                self.runs[m] = [float(x) for x in v]
        self.stay = {}
        self.active = bool(state["active"])
        self.last_t = None if state.get("last_t") is None else float(state["last_t"])
