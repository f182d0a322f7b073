"""River stage: a rainfall-runoff response with lag and recession, limited to observed rise rates.

Basin rain from each storm is routed through a gamma unit hydrograph (a Nash cascade of ``n``
linear reservoirs with time constant ``k``), which gives the lag and the slow recession. Each
storm's response is scaled so the gauge peaks where the scenario says (e.g. 12.24 m then 13.14 m
at Đồng Trăng in Nov 2025). A final pass clips the stage change per step to the gauge's observed
maximum rise and fall rates (Đồng Trăng ≤1.77 m/h flash rises, Ninh Hòa ≤0.12 m/h).

Stage is not linear in discharge. A power-law rating curve ``Q ∝ (h - h0)^β`` gives
``h - h0 ∝ Q^(1/β)``; the registry's ``rating_exp`` is ``1/β`` (1 = linear, the default). A
channel that spills onto a wide flat floodplain has a large β, so the stage climbs quickly to
bankfull and then creeps: Ninh Hòa (flat tidal lowland, ≤0.12 m/h up, ≤0.07 m/h down) uses
``rating_exp = 0.4`` (β = 2.5, between a wide rectangular channel's 5/3 and a triangular one's 8/3)
with a slow Nash cascade (n = 2, k = 24 h). That combination is calibrated so that, in
``flood_2025_11``, the gauge crosses BĐ III near the observed 19/11 04:00, peaks at 6.77 m near
20/11 14:00 and stays above BĐ III for about 80 h (VNDMS hourly data, domain
``observed_rates_nov_dec_2025.ninh_hoa``).
"""

from __future__ import annotations

import numpy as np

from sensors_sim.models.common import Array

#: Re-solves of the multi-peak weights at the moved stage maxima (converges in 2-3 in practice).
PEAK_SOLVE_PASSES = 5


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
    """Weights so that ``base + Σ w_j r_j`` peaks at each storm's target in that storm's own stretch.

    One target for several storms scales them together; one per storm solves a small linear system.
    A slow gauge (Ninh Hòa) still carries the first wave's recession when the second one peaks, so
    the stage maximum is not where a single response peaks: the solve is repeated at the maximum of
    the summed stage within the stretch where each storm's weighted response dominates, until the
    peak positions stop moving (a few passes).

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
    stack = np.asarray(responses)
    target = np.array(peaks_m) - base_m
    idx = [int(np.argmax(r)) for r in responses]
    w = np.linalg.solve(stack[:, idx].T, target)
    for _ in range(PEAK_SOLVE_PASSES):
        weighted = w[:, None] * stack
        total = weighted.sum(axis=0)
        owner = np.argmax(weighted, axis=0)
        new = [int(np.argmax(np.where(owner == j, total, -np.inf))) if (owner == j).any() else idx[j]
               for j in range(len(responses))]
        if new == idx:
            break
        try:
            w = np.linalg.solve(stack[:, new].T, target)
        except np.linalg.LinAlgError:  # two peaks collapsed onto one sample: keep the last solution
            break
        idx = new
    return [float(x) for x in w]


def rating(discharge: Array, exponent: float) -> Array:
    """Stage above the gauge's base for a routed discharge: ``Q^exponent`` (exponent 1: unchanged).

    >>> rating(np.array([0.0, 1.0, 32.0]), 0.4).round(3).tolist()
    [0.0, 1.0, 4.0]
    """
    if exponent == 1.0:
        return discharge
    return np.asarray(np.maximum(discharge, 0.0) ** exponent)


def discharge_targets(base_m: float, peaks_m: list[float], exponent: float) -> list[float]:
    """Peak stages turned into the discharges that :func:`rating` maps back onto them.

    >>> discharge_targets(3.0, [7.0], 0.4)
    [32.0]
    """
    if exponent == 1.0:
        return [p - base_m for p in peaks_m]
    return [max(p - base_m, 0.0) ** (1.0 / exponent) for p in peaks_m]


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
