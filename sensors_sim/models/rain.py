"""Rain gauges: a tipping bucket turns a continuous rain rate into per-interval millimetres.

Quantising the cumulative total (not each interval) keeps the event total exact while giving the
0/0.2/0.4 mm texture of a real gauge.
"""

from __future__ import annotations

import numpy as np

from sensors_sim.models.common import Array


def tipping_bucket(rate_mmph: Array, dt_s: float, bucket_mm: float) -> Array:
    """Millimetres per interval in whole bucket tips.

    >>> tipping_bucket(np.array([1.2, 1.2, 1.2]), 600.0, 0.2).tolist()
    [0.2, 0.2, 0.2]
    >>> tipping_bucket(np.array([3.0, 3.0, 3.0, 3.0]), 300.0, 0.2).tolist()
    [0.2, 0.2, 0.2, 0.4]
    """
    cum = np.cumsum(np.maximum(rate_mmph, 0.0) * dt_s / 3600.0)
    tips = np.floor(cum / bucket_mm + 1e-9)
    per = np.diff(np.concatenate([[0.0], tips])) * bucket_mm
    return np.asarray(np.round(per, 1), dtype=np.float64)
