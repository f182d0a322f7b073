"""Surface weather: diurnal temperature, humidity and sea breeze, plus storm wind and pressure.

Baselines are assumptions for the Nha Trang coast in the wet season (no series in the domain data);
storms come from :mod:`sensors_sim.models.storm`.
"""

from __future__ import annotations

import math

import numpy as np

from sensors_sim.models.common import Array, local_hour, smooth_noise

#: Mean wet-season air temperature and its diurnal half-range (°C, assumption).
T_MEAN_C, T_HALF_RANGE_C = 26.5, 3.0
#: Mean sea-level pressure and the semidiurnal atmospheric tide amplitude (hPa).
P_MEAN_HPA, P_SEMIDIURNAL_HPA = 1010.0, 1.2
#: Gust factor for open exposure.
GUST_FACTOR = 1.4


def simulate(
    t: Array,
    *,
    coastal: bool,
    storm_speed: Array,
    storm_dir: Array,
    storm_dp: Array,
    rain_rate: Array,
    rng: np.random.Generator,
) -> dict[str, Array]:
    """All weather metrics for one station, given the storm fields at its location."""
    h = local_hour(t)
    wet = 1.0 - np.exp(-rain_rate / 4.0)
    temp = T_MEAN_C + T_HALF_RANGE_C * np.sin(2 * math.pi * (h - 9.0) / 24.0) * (1 - 0.7 * wet) - 2.5 * wet
    temp = temp + smooth_noise(rng, t, 0.4, 3600.0) + rng.normal(0, 0.1, len(t))
    hum = 78.0 - 12.0 * np.sin(2 * math.pi * (h - 9.0) / 24.0) * (1 - wet) + 18.0 * wet
    hum = np.clip(hum + smooth_noise(rng, t, 2.0, 3600.0), 35.0, 100.0)
    breeze_amp = 4.0 if coastal else 2.0
    breeze = 1.5 + breeze_amp * np.clip(np.sin(math.pi * (h - 9.0) / 10.0), 0.0, None)
    bx = np.where((h > 9) & (h < 19), -1.0, 0.4) * breeze  # sea breeze from the east by day
    sx = -storm_speed * np.sin(np.radians(storm_dir))
    sy = -storm_speed * np.cos(np.radians(storm_dir))
    u = bx + sx + smooth_noise(rng, t, 0.8, 900.0)
    v = sy + smooth_noise(rng, t, 0.8, 900.0)
    speed = np.hypot(u, v)
    direction = (np.degrees(np.arctan2(-u, -v)) + 360.0) % 360.0
    gust = speed * (GUST_FACTOR + np.abs(rng.normal(0, 0.1, len(t)))) + 0.5
    pressure = P_MEAN_HPA + P_SEMIDIURNAL_HPA * np.cos(4 * math.pi * (h - 10.0) / 24.0) - storm_dp
    pressure = pressure + smooth_noise(rng, t, 0.3, 7200.0) + rng.normal(0, 0.05, len(t))
    return {
        "temperature_c": np.round(temp, 1),
        "humidity_pct": np.round(hum, 0),
        "wind_speed_ms": np.round(speed, 1).astype(np.float64),
        "wind_gust_ms": np.round(np.maximum(gust, speed), 1).astype(np.float64),
        "wind_dir_deg": np.round(direction, 0) % 360.0,
        "pressure_hpa": np.round(pressure, 1),
    }
