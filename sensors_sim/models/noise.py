"""Road noise: LAeq follows traffic volume logarithmically, plus wind and rain noise in storms.

Doubling the flow adds about 3 dB, so LAeq = peak level + 10·log10(traffic share).
"""

from __future__ import annotations

import numpy as np

from sensors_sim.models.common import Array, smooth_noise

#: Ambient floor without traffic (dBA): quiet residential night, assumption.
AMBIENT_DBA = 40.0


def simulate(
    t: Array, *, peak_laeq_dba: float, traffic: Array, wind_ms: Array, rain_rate: Array, rng: np.random.Generator
) -> Array:
    """LAeq in dBA for each interval.

    >>> rng = np.random.default_rng(0)
    >>> z = np.zeros(2)
    >>> v = simulate(np.array([0.0, 300.0]), peak_laeq_dba=75.0, traffic=np.array([1.0, 0.1]),
    ...              wind_ms=z, rain_rate=z, rng=rng)
    >>> bool(abs(v[0] - v[1] - 10.0) < 3.0)
    True
    """
    level = peak_laeq_dba + 10.0 * np.log10(np.maximum(traffic, 0.02))
    weather = 10.0 * np.log10(1.0 + (wind_ms / 8.0) ** 2 + rain_rate / 10.0)
    ambient = AMBIENT_DBA + 3.0 * weather
    level = 10.0 * np.log10(10 ** (level / 10) + 10 ** (ambient / 10))  # energetic sum
    level = level + smooth_noise(rng, t, 0.8, 900.0) + rng.normal(0.0, 0.5, len(t))
    return np.asarray(np.round(np.clip(level, 30.0, 110.0), 1))
