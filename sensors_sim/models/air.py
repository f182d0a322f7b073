"""Air quality: traffic-driven NO2 and CO, photochemical O3, and PM with episodes and rain washout.

A boundary-layer stability factor (high at night, low mid-afternoon) multiplies local emissions, so
concentrations peak at the morning rush and at night even though traffic peaks in the evening.
PM2.5 stays in the clean coastal range of the domain notes (10-35 µg/m³) unless an episode is on.
"""

from __future__ import annotations

import math

import numpy as np

from sensors_sim.models.common import Array, local_hour, smooth_noise

#: Clean coastal PM2.5 range (µg/m³), from the domain notes (unverified there).
PM25_CLEAN = (10.0, 35.0)
#: PM10/PM2.5 ratio for urban traffic and for dust hotspots (assumption).
PM10_RATIO = {"traffic": 1.7, "background": 1.5, "dust_hotspot": 2.3}


def stability(t: Array) -> Array:
    """Boundary-layer trapping factor: about 1.8 before dawn, 0.8 mid-afternoon.

    >>> s = stability(np.array([20 * 3600.0, 8 * 3600.0]))  # 03:00 and 15:00 local
    >>> bool(s[0] > 1.7 and s[1] < 0.9)
    True
    """
    h = local_hour(t)
    return np.asarray(1.3 + 0.5 * np.cos(2 * math.pi * (h - 3.0) / 24.0))


def simulate(
    t: Array,
    *,
    metrics: tuple[str, ...],
    traffic: Array,
    site_class: str,
    episode_pm25: Array,
    episode_pm10_ratio: float,
    rain_rate: Array,
    rng: np.random.Generator,
) -> dict[str, Array]:
    """Concentrations in µg/m³ (CO too, as VN_AQI uses), for the metrics this station measures."""
    h = local_hour(t)
    st = stability(t)
    washout = np.exp(-rain_rate / 6.0)
    wander = np.exp(smooth_noise(rng, t, 0.15, 3 * 3600.0))
    out: dict[str, Array] = {}
    lo, hi = PM25_CLEAN
    pm25 = lo + (hi - lo) * 0.45 * st * (0.35 + 0.65 * traffic) * wander
    if site_class == "dust_hotspot":
        pm25 = pm25 + 6.0 * np.clip(np.sin(math.pi * (h - 7.0) / 11.0), 0.0, None)
    pm25 = np.maximum(pm25 * washout, 2.0) + episode_pm25
    pm10 = pm25 * PM10_RATIO.get(site_class, 1.7) + episode_pm25 * max(episode_pm10_ratio - 1.0, 0.0)
    out["pm25"] = pm25 * np.exp(rng.normal(0, 0.06, len(t)))
    out["pm10"] = pm10 * np.exp(rng.normal(0, 0.06, len(t)))
    out["no2"] = (6.0 + 48.0 * traffic * st) * wander * np.exp(rng.normal(0, 0.08, len(t)))
    out["co"] = (350.0 + 1400.0 * traffic * st) * wander * np.exp(rng.normal(0, 0.06, len(t)))
    sun = np.clip(np.sin(math.pi * (h - 7.0) / 11.0), 0.0, None) ** 1.5
    o3 = (18.0 + 75.0 * sun * (1.0 - 0.3 * traffic)) * (0.6 + 0.4 * washout)
    out["o3"] = o3 * np.exp(smooth_noise(rng, t, 0.08, 3600.0) + rng.normal(0, 0.05, len(t)))
    out["so2"] = (3.0 + 7.0 * traffic * st) * np.exp(rng.normal(0, 0.1, len(t)))
    return {m: np.round(np.clip(out[m], 0.0, None), 1).astype(np.float64) for m in metrics}
