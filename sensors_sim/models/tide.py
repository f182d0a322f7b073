"""Sea level at Cầu Đá: a mostly diurnal tide plus storm surge.

The coast between Quy Nhơn and Nha Trang has an irregular diurnal tide (18-22 diurnal days a
month), so K1 and O1 dominate and M2/S2 are small. Amplitudes are chosen so the largest range is
about 1.8 m, inside the assumed 1.5-2 m spring range of the domain notes. Surge is the inverse
barometer effect (1 cm per hPa) plus a quadratic wind set-up.
"""

from __future__ import annotations

import math

import numpy as np

from sensors_sim.models.common import Array

#: (period h, amplitude m, phase rad) of the main constituents; phases are arbitrary but fixed.
CONSTITUENTS = (
    (23.93447, 0.45, 0.3),  # K1
    (25.81934, 0.35, 1.1),  # O1
    (12.42060, 0.20, 2.0),  # M2
    (12.00000, 0.08, 0.7),  # S2
)
#: Inverse-barometer response (m per hPa) and wind set-up coefficient (m per (m/s)²).
INVERSE_BAROMETER_M_PER_HPA = 0.01
WIND_SETUP_M_PER_MS2 = 0.0006


def astronomical(t: Array) -> Array:
    """Tide anomaly (m) around mean sea level for epoch seconds; deterministic in absolute time.

    >>> y = astronomical(np.arange(0, 30 * 86400, 600.0))
    >>> 1.5 <= float(y.max() - y.min()) <= 2.0
    True
    """
    hours = t / 3600.0
    out = np.zeros_like(t, dtype=np.float64)
    for period, amp, phase in CONSTITUENTS:
        out += amp * np.cos(2 * math.pi * hours / period + phase)
    return out


def surge(pressure_deficit_hpa: Array, wind_ms: Array) -> Array:
    """Storm surge (m) from the pressure deficit and the wind speed at the coast."""
    return np.asarray(INVERSE_BAROMETER_M_PER_HPA * pressure_deficit_hpa + WIND_SETUP_M_PER_MS2 * wind_ms**2)
