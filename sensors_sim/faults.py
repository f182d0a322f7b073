"""Device and delivery faults: how a sensor's true series becomes the messages it actually sends.

Value faults (stuck, spike, drift) change what is measured; delivery faults (dropout, clock skew,
duplicate, out-of-order, malformed) change what arrives and when. Each sensor's faults draw from
their own seeded stream, so runs are reproducible and sensors independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sensors_sim.models.common import Array, sensor_rng
from sensors_sim.registry import SensorSpec
from sensors_sim.reporting import Transmission
from sensors_sim.scenario import Malformed, Scenario, SensorFault

#: Number of distinct malformed-payload variants (see ``encode.malform``).
MALFORMED_VARIANTS = 7


@dataclass
class Delivery:
    """What one sensor sends: reading time, virtual send time, sequence, values, malformed code."""

    spec: SensorSpec
    ts: NDArray[np.int64]
    emit: Array
    seq: NDArray[np.int64]
    values: Array  # (n, m) in spec.metric_names order
    bad: NDArray[np.int8]  # 0 = well-formed, else the malformed variant

    def take(self, idx: NDArray[np.int64]) -> Delivery:
        return Delivery(self.spec, self.ts[idx], self.emit[idx], self.seq[idx], self.values[idx], self.bad[idx])


def _window(ts: NDArray[np.int64], start: float | None, end: float | None, t0: float, t1: float) -> NDArray[np.bool_]:
    lo = t0 if start is None else start
    hi = t1 if end is None else end
    return np.asarray((ts >= lo) & (ts < hi))


def delivery_of(spec: SensorSpec, ts: NDArray[np.int64], values: dict[str, Array]) -> Delivery:
    """Every reading sent once, on time, in order, with ``seq`` 1..n."""
    names = spec.metric_names
    n = len(ts)
    vals = np.column_stack([values[m] for m in names]) if n else np.zeros((0, len(names)))
    return Delivery(
        spec,
        ts.copy(),
        ts.astype(np.float64),
        np.arange(1, n + 1, dtype=np.int64),
        vals.astype(np.float64, copy=True),
        np.zeros(n, dtype=np.int8),
    )


def transmit(d: Delivery, tr: Transmission) -> Delivery:
    """Apply a reporting profile's spikes and lost reports to a fresh delivery (row i is report i)."""
    idx = np.flatnonzero(tr.spiked)
    d.values[idx, tr.spike_col[idx]] = tr.spike_value[idx]
    return d.take(np.flatnonzero(~tr.lost))


def apply_events(d: Delivery, scenario: Scenario, seed: int) -> Delivery:
    """Apply the scenario's fault and malformed events that name ``d``'s sensor, in file order."""
    spec = d.spec
    for ev in scenario.events:
        if isinstance(ev, SensorFault) and spec.sensor_id in ev.sensors:
            d = _fault(d, ev, scenario, seed)
        elif isinstance(ev, Malformed) and (not ev.sensors or spec.sensor_id in ev.sensors):
            rng = sensor_rng(seed, spec.sensor_id, f"malformed/{ev.id}")
            u = rng.random(len(d.ts))
            code = rng.integers(1, MALFORMED_VARIANTS + 1, len(d.ts)).astype(np.int8)
            win = _window(
                d.ts,
                ev.start.timestamp() if ev.start else None,
                ev.end.timestamp() if ev.end else None,
                scenario.t0,
                scenario.t1,
            )
            hit = win & (u < ev.rate) & (d.bad == 0)
            d.bad = np.where(hit, code, d.bad).astype(np.int8)
    return d


def _fault(d: Delivery, ev: SensorFault, scenario: Scenario, seed: int) -> Delivery:
    rng = sensor_rng(seed, d.spec.sensor_id, f"fault/{ev.id}")
    start, end = ev.start.timestamp(), ev.end.timestamp()
    win = _window(d.ts, start, end, scenario.t0, scenario.t1)
    col = d.spec.metric_names.index(ev.metric) if ev.metric else 0
    idx = np.flatnonzero(win)
    if ev.fault == "stuck" and len(idx):
        d.values[idx] = d.values[idx[0]]
    elif ev.fault == "spike":
        hit = idx[rng.random(len(idx)) < (ev.rate or 0.05)]
        d.values[hit, col] += ev.magnitude
    elif ev.fault == "drift":
        d.values[idx, col] += ev.magnitude * (d.ts[idx] - start) / 3600.0
    elif ev.fault == "clock_skew":
        d.ts[idx] += int(round(ev.delay_s))
    elif ev.fault == "dropout":
        d = d.take(np.flatnonzero(~win))
    elif ev.fault == "out_of_order":
        hit = idx[rng.random(len(idx)) < (ev.rate or 0.05)]
        d.emit[hit] += ev.delay_s or 3.0 * d.spec.interval_s
    elif ev.fault == "duplicate":
        hit = idx[rng.random(len(idx)) < (ev.rate or 0.05)]
        dup = d.take(hit)
        dup.emit = dup.emit + (ev.delay_s or 1.0)
        order = np.argsort(np.concatenate([d.emit, dup.emit]), kind="stable")
        d = Delivery(
            d.spec,
            np.concatenate([d.ts, dup.ts])[order],
            np.concatenate([d.emit, dup.emit])[order],
            np.concatenate([d.seq, dup.seq])[order],
            np.concatenate([d.values, dup.values])[order],
            np.concatenate([d.bad, dup.bad])[order],
        )
    return d
