"""Road traffic: a motorbike-heavy diurnal demand and a speed-flow-occupancy relation.

Demand peaks follow the local pattern in the domain notes (06:30-08:00, 11:00-11:45, 13:00-13:45,
16:30-18:30, plus 18:00-22:00 on the Trần Phú beachfront). Each segment's weekday peak demand is
``peak_vc`` times its capacity (registry ``extra``; a simulator assumption: about 0.9 on busy central
Nha Trang streets, 0.55-0.8 on suburban roads and highways).

Speed follows the BPR volume-delay curve ``v = v_free / (1 + α (q/c)^β)`` against the (possibly
incident-reduced) capacity ``c``. The textbook α = 0.15 is a freeway calibration: speed at capacity
is still 0.87 of free flow, so signalised city streets would barely slow in rush hours. Here
α = 0.8, β = 4 (a simulator calibration): at q/c = 1 speed is 0.56 of free flow, at the typical
central peak q/c ≈ 0.9 it is about 0.66 (the operator level "slow" is ≥ 0.5 and "free" ≥ 0.7), and
it falls below 0.3 ("heavy" ends) only when demand exceeds capacity by ~30 %, which takes an
incident. Ho Chi Minh City's centre averages 19-21 km/h all day (domain ``traffic``); Nha Trang is
milder. Occupancy comes from density against jam density.
"""

from __future__ import annotations

import numpy as np

from sensors_sim.models.common import Array, is_weekend, local_hour, smooth_noise

#: (centre hour, sigma hours, weight) of the weekday peaks; windows from the domain notes.
WEEKDAY_PEAKS = ((7.25, 0.45, 0.55), (11.4, 0.3, 0.3), (13.4, 0.3, 0.25), (17.5, 0.6, 0.6))
#: Weekends: later, flatter mornings and a busier evening (assumption, domain pattern is unverified).
WEEKEND_PEAKS = ((9.0, 1.2, 0.3), (17.8, 1.0, 0.45))
BEACH_EVENING = (20.0, 1.3, 0.55)
#: BPR curve parameters (alpha, beta), calibrated for signalised urban streets (see the module notes).
BPR_ALPHA, BPR_BETA = 0.8, 4.0
#: Weekday peak demand over capacity when a segment does not set ``peak_vc`` (assumption).
DEFAULT_PEAK_VC = 0.75
#: Jam density per lane for a mixed stream that is 80-90 % motorbikes (veh/km/lane, assumption).
JAM_DENSITY_PER_LANE = 220.0
#: Floor speed in a stopped queue; detectors still report creeping traffic.
CRAWL_KMH = 3.0


def _peaks(h: Array, peaks: tuple[tuple[float, float, float], ...]) -> Array:
    out = np.zeros_like(h)
    for centre, sigma, weight in peaks:
        d = (h - centre + 12.0) % 24.0 - 12.0
        out += weight * np.exp(-0.5 * (d / sigma) ** 2)
    return out


def demand_profile(t: Array, *, beachfront: bool = False) -> Array:
    """Demand as a share of capacity, about 0.05 at night and 0.9-1.0 at the evening peak.

    >>> t = np.array([20 * 3600.0, 10 * 3600.0])  # 03:00 and 17:00 local on a Thursday
    >>> night, peak = demand_profile(t)
    >>> bool(night < 0.1 < 0.8 < peak)
    True
    """
    h = local_hour(t)
    day = 1.0 / (1.0 + np.exp(-(h - 5.8) * 2.5)) * 1.0 / (1.0 + np.exp((h - 22.5) * 1.5))
    base = 0.05 + 0.35 * day
    weekday = base + _peaks(h, WEEKDAY_PEAKS)
    weekend = 0.9 * base + _peaks(h, WEEKEND_PEAKS)
    out = np.where(is_weekend(t), weekend, weekday)
    if beachfront:
        out = out + _peaks(h, (BEACH_EVENING,))
    return np.asarray(np.clip(out, 0.02, 1.0), dtype=np.float64)


def simulate(
    t: Array,
    *,
    free_flow_kmh: float,
    capacity_vph: float,
    lanes: int,
    peak_vc: float = DEFAULT_PEAK_VC,
    beachfront: bool,
    capacity_factor: Array,
    demand_scale: float,
    rng: np.random.Generator,
) -> tuple[Array, Array, Array]:
    """(speed_kmh, flow_vph, occupancy_pct) for one segment; flow is never negative.

    ``capacity_factor`` (1 = normal) carries incidents and queue spill-back from downstream;
    ``peak_vc`` is the weekday peak demand as a share of the normal capacity.

    >>> t = np.arange(0.0, 86400.0, 60.0) - 7 * 3600.0  # Thursday 1970-01-01, 00:00-24:00 local
    >>> speed, flow, occ = simulate(t, free_flow_kmh=40.0, capacity_vph=2600.0, lanes=2, peak_vc=0.9,
    ...     beachfront=False, capacity_factor=np.ones_like(t), demand_scale=1.0, rng=np.random.default_rng(1))
    >>> night, rush = speed[2 * 60 : 4 * 60].mean() / 40.0, speed[17 * 60 : 18 * 60].mean() / 40.0
    >>> bool(night > 0.9 and 0.5 < rush < 0.75)
    True
    """
    demand = capacity_vph * peak_vc * demand_scale * demand_profile(t, beachfront=beachfront)
    demand = demand * np.exp(smooth_noise(rng, t, 0.08, 600.0))
    capacity = capacity_vph * np.clip(capacity_factor, 0.01, 1.5)
    x = demand / capacity
    speed = free_flow_kmh / (1.0 + BPR_ALPHA * x**BPR_BETA)
    speed = np.maximum(speed + smooth_noise(rng, t, 1.2, 300.0), CRAWL_KMH)
    flow = np.minimum(demand, capacity) * np.exp(rng.normal(0.0, 0.05, len(t)))
    free_density = flow / speed
    jam_density = lanes * JAM_DENSITY_PER_LANE * (1.0 - speed / free_flow_kmh)
    density = np.where(x > 1.0, np.maximum(free_density, jam_density), free_density)
    occupancy = 100.0 * density / (lanes * JAM_DENSITY_PER_LANE) + rng.normal(0.0, 0.6, len(t))
    return (
        np.round(np.clip(speed, CRAWL_KMH, free_flow_kmh * 1.2), 1).astype(np.float64),
        np.round(np.maximum(flow, 0.0), 0).astype(np.float64),
        np.round(np.clip(occupancy, 0.0, 100.0), 1).astype(np.float64),
    )
