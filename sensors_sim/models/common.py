"""Shared helpers for the physical models: local time, smooth noise, envelopes, distances, seeding.

Every model works on numpy arrays of epoch seconds (UTC) so a whole sensor series is computed in a
few vector operations instead of one Python call per reading.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Khánh Hòa is on Asia/Ho_Chi_Minh time, UTC+7 all year (no daylight saving).
LOCAL_UTC_OFFSET_S = 7 * 3600


def local_hour(t: Array) -> Array:
    """Hour of day (0..24) in local time for epoch seconds.

    >>> float(local_hour(np.array([17 * 3600.0]))[0])  # 17:00 UTC is midnight in Nha Trang
    0.0
    """
    return np.asarray(((t + LOCAL_UTC_OFFSET_S) % 86400.0) / 3600.0, dtype=np.float64)


def is_weekend(t: Array) -> NDArray[np.bool_]:
    """True on local Saturdays and Sundays (1970-01-01 was a Thursday).

    >>> bool(is_weekend(np.array([2 * 86400.0]))[0])  # 1970-01-03 was a Saturday
    True
    """
    day = np.floor((t + LOCAL_UTC_OFFSET_S) / 86400.0).astype(np.int64)
    return np.asarray((day + 3) % 7 >= 5)


def sensor_rng(seed: int, sensor_id: str, purpose: str) -> np.random.Generator:
    """An RNG per (seed, sensor, purpose): adding a sensor or a model never shifts another's noise."""
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(f"{sensor_id}/{purpose}".encode())])


def smooth_noise(rng: np.random.Generator, t: Array, sigma: float, corr_s: float) -> Array:
    """Gaussian noise correlated over about ``corr_s``: random knots, linearly interpolated.

    Cheaper than an AR(1) loop and just as good for sensor wander and demand fluctuation.
    """
    if len(t) == 0:
        return np.zeros(0)
    t0 = float(t[0])
    n_knots = int((float(t[-1]) - t0) // corr_s) + 2
    knots = rng.normal(0.0, sigma, n_knots)
    return np.interp(t, t0 + corr_s * np.arange(n_knots), knots)


def bump(t: Array, start: float, peak: float, end: float) -> Array:
    """Raised-cosine envelope: 0 before ``start``, 1 at ``peak``, 0 after ``end``.

    >>> [round(float(v), 2) for v in bump(np.array([0.0, 5.0, 10.0, 15.0, 20.0]), 0, 10, 20)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    out = np.zeros_like(t, dtype=np.float64)
    rise = (t >= start) & (t <= peak)
    fall = (t > peak) & (t <= end)
    if peak > start:
        out[rise] = 0.5 - 0.5 * np.cos(math.pi * (t[rise] - start) / (peak - start))
    else:
        out[rise] = 1.0
    if end > peak:
        out[fall] = 0.5 + 0.5 * np.cos(math.pi * (t[fall] - peak) / (end - peak))
    return out


def distance_km(lat1: float | Array, lon1: float | Array, lat2: float | Array, lon2: float | Array) -> Array:
    """Equirectangular distance; accurate to well under 1 % over a province.

    >>> round(float(distance_km(12.0, 109.0, 13.0, 109.0)), 1)
    111.2
    """
    k = math.pi / 180.0
    x = (np.asarray(lon2) - np.asarray(lon1)) * k * np.cos(0.5 * (np.asarray(lat1) + np.asarray(lat2)) * k)
    y = (np.asarray(lat2) - np.asarray(lat1)) * k
    return np.asarray(6371.0 * np.hypot(x, y), dtype=np.float64)


def rolling_sum(x: Array, window: int) -> Array:
    """Trailing sum over ``window`` samples (shorter at the start).

    >>> rolling_sum(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist()
    [1.0, 3.0, 5.0, 7.0]
    """
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    return np.asarray(c[idx] - c[np.maximum(idx - window, 0)], dtype=np.float64)
