"""River stage: a rainfall-runoff response with lag and recession, limited to observed rise rates.

Basin rain from each storm is routed through a gamma unit hydrograph (a Nash cascade of ``n``
linear reservoirs with time constant ``k``), which gives the lag and the slow recession. Each
storm's response is scaled so the gauge peaks where the scenario says (e.g. 12.24 m then 13.14 m
at Đồng Trăng in Nov 2025). A final pass clips the stage change per step to the gauge's observed
maximum rise and fall rates (Đồng Trăng ≤1.77 m/h flash rises, Ninh Hòa ≤0.12 m/h).
"""

from __future__ import annotations

import numpy as np

from sensors_sim.models.common import Array


def unit_hydrograph(dt_s: float, n: float, k_h: float) -> Array:
    """Gamma unit hydrograph on a ``dt_s`` grid, normalised to sum 1; peaks at (n-1)·k hours.

    >>> u = unit_hydrograph(3600.0, 3, 2.0)
    >>> round(float(u.sum()), 6), int(np.argmax(u))
    (1.0, 4)
    """
    k_steps = k_h * 3600.0 / dt_s
    tau = np.arange(0, int(np.ceil(12 * n * k_steps)) + 1, dtype=np.float64)
    u = tau ** (n - 1) * np.exp(-tau / k_steps)
    return np.asarray(u / u.sum())


def response(basin_rain: Array, dt_s: float, n: float, k_h: float) -> Array:
    """Routed runoff for one storm, normalised so its maximum is 1 (0 if there is no rain)."""
    routed = np.convolve(basin_rain, unit_hydrograph(dt_s, n, k_h))[: len(basin_rain)]
    m = float(routed.max()) if len(routed) else 0.0
    return np.asarray(routed / m) if m > 0 else np.zeros_like(basin_rain)


def peak_weights(responses: list[Array], base_m: float, peaks_m: list[float]) -> list[float]:
    """Weights so that ``base + Σ w_j r_j`` equals each storm's target at that storm's own peak.

    One target for several storms scales them together; one per storm solves a small linear system.

    >>> r1 = np.array([0.0, 1.0, 0.5, 0.0]); r2 = np.array([0.0, 0.0, 0.5, 1.0])
    >>> [round(w, 3) for w in peak_weights([r1, r2], 1.0, [3.0, 4.0])]
    [2.0, 3.0]
    """
    if not responses:
        return []
    if len(peaks_m) == 1:
        total = np.sum(responses, axis=0)
        m = float(total.max())
        return [(peaks_m[0] - base_m) / m if m > 0 else 0.0] * len(responses)
    idx = [int(np.argmax(r)) for r in responses]
    a = np.array([[r[i] for r in responses] for i in idx])
    w = np.linalg.solve(a, np.array(peaks_m) - base_m)
    return [float(x) for x in w]


def rate_limit(stage: Array, dt_s: float, max_rise_m_per_h: float, max_fall_m_per_h: float) -> Array:
    """Clip each step's change to the gauge's physical rise and fall limits (causal pass).

    >>> rate_limit(np.array([0.0, 5.0, 5.0, 0.0]), 3600.0, 1.0, 2.0).tolist()
    [0.0, 1.0, 2.0, 0.0]
    """
    up = max_rise_m_per_h * dt_s / 3600.0
    down = max_fall_m_per_h * dt_s / 3600.0
    out = np.empty_like(stage)
    h = float(stage[0]) if len(stage) else 0.0
    for i, target in enumerate(stage.tolist()):
        h = min(max(target, h - down), h + up)
        out[i] = h
    return out
