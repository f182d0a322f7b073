"""Storm systems: a moving centre with a rain field and, for typhoons, a cyclonic wind field.

Rain intensity is a raised-cosine envelope in time times a Gaussian footprint around the track,
with convective cells as correlated multiplicative noise. Totals are then scaled so each gauge's
wettest 24 h lands in the scenario's range (200-400 mm/24h for Damrey), nearer the track wetter.
Wind is a modified Rankine vortex; the central pressure deficit comes from the maximum wind by the
Atkinson-Holliday wind-pressure relation, so only the observed wind (115-135 km/h) is an input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sensors_sim.models.common import Array, bump, distance_km, rolling_sum, smooth_noise

#: Share of the footprint that is broad stratiform rain, so no gauge in the system stays dry.
STRATIFORM_SHARE = 0.15
#: Rankine decay exponent outside the radius of maximum wind (0.5-0.7 is typical).
RANKINE_X = 0.6
#: Inflow angle of surface winds towards the centre (degrees).
INFLOW_DEG = 20.0
#: Holland pressure-profile shape parameter (1-2.5; 1.5 is a common default).
HOLLAND_B = 1.5
#: Atkinson-Holliday: Vmax[kt] = 6.7 * dp[hPa] ** 0.644.
AH_COEF, AH_EXP = 6.7, 0.644


@dataclass(frozen=True)
class StormTrack:
    """Timing and geometry of one storm."""

    start: float
    peak: float
    end: float
    track: tuple[tuple[float, float], ...]
    radius_km: float
    max_wind_ms: float
    rmw_km: float

    def centre(self, t: Array) -> tuple[Array, Array]:
        """Centre position, moving evenly along the track from start to end."""
        pts = np.array(self.track, dtype=np.float64)
        if len(pts) == 1:
            return np.full_like(t, pts[0, 0]), np.full_like(t, pts[0, 1])
        frac = np.clip((t - self.start) / max(self.end - self.start, 1.0), 0.0, 1.0) * (len(pts) - 1)
        knots = np.arange(len(pts), dtype=np.float64)
        return np.interp(frac, knots, pts[:, 0]), np.interp(frac, knots, pts[:, 1])

    def envelope(self, t: Array) -> Array:
        return bump(t, self.start, self.peak, self.end)

    def footprint(self, lat: float, lon: float, t: Array) -> Array:
        clat, clon = self.centre(t)
        r = distance_km(lat, lon, clat, clon)
        return np.asarray(STRATIFORM_SHARE + (1 - STRATIFORM_SHARE) * np.exp(-((r / self.radius_km) ** 2)))

    def rain_shape(self, lat: float, lon: float, t: Array) -> Array:
        """Unscaled smooth rain intensity at a point (basin rain for the river model)."""
        return self.envelope(t) * self.footprint(lat, lon, t)

    def exposure(self, lat: float, lon: float) -> float:
        """0..1: how close the track passes while the storm is strong."""
        t = np.linspace(self.start, self.end, 400)
        return float(np.max(self.envelope(t) * self.footprint(lat, lon, t)))

    def pressure_deficit_hpa(self) -> float:
        """Central pressure deficit from the maximum wind (Atkinson-Holliday)."""
        kt = self.max_wind_ms / 0.514444
        return float((kt / AH_COEF) ** (1.0 / AH_EXP)) if kt > 0 else 0.0

    def wind(self, lat: float, lon: float, t: Array) -> tuple[Array, Array, Array]:
        """(speed m/s, direction the wind blows from in degrees, pressure deficit hPa) at a point."""
        clat, clon = self.centre(t)
        r = np.maximum(distance_km(lat, lon, clat, clon), 0.5)
        env = self.envelope(t)
        v = np.where(r <= self.rmw_km, r / self.rmw_km, (self.rmw_km / r) ** RANKINE_X)
        speed = self.max_wind_ms * env * v
        # Bearing of the site seen from the centre (math angle), then counter-clockwise flow + inflow.
        dx = (lon - clon) * math.cos(math.radians(lat))
        dy = lat - clat
        theta = np.degrees(np.arctan2(dy, dx))
        to_math = theta + 90.0 + INFLOW_DEG
        from_met = (270.0 - to_math) % 360.0
        dp = self.pressure_deficit_hpa() * env * (1.0 - np.exp(-((self.rmw_km / r) ** HOLLAND_B)))
        return np.asarray(speed), np.asarray(from_met), np.asarray(dp)


def scaled_rain_rate(
    storm: StormTrack,
    lat: float,
    lon: float,
    t: Array,
    dt_s: float,
    target_24h_mm: float,
    rng: np.random.Generator | None,
) -> Array:
    """Rain rate (mm/h) whose wettest 24 h sums to ``target_24h_mm`` on this sampling grid."""
    shape = storm.rain_shape(lat, lon, t)
    if rng is not None:
        shape = shape * np.exp(smooth_noise(rng, t, 0.55, 1800.0))
    mm = shape * dt_s / 3600.0
    peak24 = float(np.max(rolling_sum(mm, max(1, int(round(86400 / dt_s)))))) if len(mm) else 0.0
    if peak24 <= 0.0:
        return np.zeros_like(t)
    return np.asarray(shape * (target_24h_mm / peak24))
