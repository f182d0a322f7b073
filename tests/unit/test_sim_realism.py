"""Realism against the domain figures: weekday rush-hour slowdowns and the Nov 2025 Ninh Hòa flood."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from sensors_sim.engine import Simulation, simulate
from sensors_sim.models.common import local_hour

ICT = timezone(timedelta(hours=7))
#: Central Nha Trang segments (the busiest streets in the registry).
CENTRAL = ("TRF_TRAN_PHU_24", "TRF_2T4_XOM_BONG", "TRF_YERSIN_CHO_DAM", "TRF_THAI_NGUYEN_NGA_SAU", "TRF_2310_CHO_GA")
#: Operator level "heavy" ends below 0.3 of free flow; a jam lasts >= 30 min (domain traffic levels).
JAM_RATIO, JAM_MIN = 0.3, 30


@pytest.fixture(scope="module")
def normal_day() -> Simulation:
    return simulate("normal_day")


def _ratio(sim: Simulation, sid: str) -> tuple[np.ndarray, np.ndarray]:
    s = sim.by_id(sid)
    return local_hour(s.t.astype(np.float64)), s.values["speed_kmh"] / float(s.spec.extra["free_flow_kmh"])


def _longest_run(mask: np.ndarray) -> int:
    best = cur = 0
    for x in mask.tolist():
        cur = cur + 1 if x else 0
        best = max(best, cur)
    return best


@pytest.mark.parametrize("sid", CENTRAL)
def test_weekday_rush_hours_slow_central_segments(normal_day: Simulation, sid: str) -> None:
    h, r = _ratio(normal_day, sid)
    assert normal_day.scenario.start.weekday() == 3  # a Thursday
    night = r[(h >= 1.0) & (h < 4.0)].mean()
    am = r[(h >= 7.0) & (h < 7.5)].mean()  # 06:30-08:00 peak
    pm = r[(h >= 17.25) & (h < 17.75)].mean()  # 16:30-18:30 peak
    assert night >= 0.85, night
    assert 0.45 <= pm <= 0.8, pm
    assert 0.45 <= am <= 0.8, am
    assert (r < 0.5).mean() < 0.02  # rarely below "slow" without an incident


def test_tran_phu_has_its_evening_peak(normal_day: Simulation) -> None:
    h, r = _ratio(normal_day, "TRF_TRAN_PHU_24")
    _, other = _ratio(normal_day, "TRF_2T4_XOM_BONG")
    evening = (h >= 19.5) & (h < 20.5)
    assert r[evening].mean() <= 0.8 < other[evening].mean()


def test_highways_stay_near_free_flow(normal_day: Simulation) -> None:
    h, r = _ratio(normal_day, "TRF_QL1A_CAM_THINH")
    assert r[(h >= 17.25) & (h < 17.75)].mean() >= 0.85


def test_normal_day_has_no_sustained_jam(normal_day: Simulation) -> None:
    for s in normal_day.series:
        if s.spec.kind != "traffic":
            continue
        r = s.values["speed_kmh"] / float(s.spec.extra["free_flow_kmh"])
        run_min = _longest_run((r < JAM_RATIO) | (s.values["speed_kmh"] < 10)) * s.spec.interval_s / 60
        assert run_min < JAM_MIN, s.spec.sensor_id


def test_incident_jam_still_spills_upstream() -> None:
    sim = simulate("rush_hour_incident")
    lab = next(lab for lab in sim.labels if lab["event_id"] == "xom_bong_crash")
    jammed = []
    for sid in lab["sensors"]:
        s = sim.by_id(sid)
        inside = (s.t >= lab["start"]) & (s.t <= lab["end"])
        r = s.values["speed_kmh"][inside] / float(s.spec.extra["free_flow_kmh"])
        jammed.append(_longest_run(r < JAM_RATIO) * s.spec.interval_s / 60 >= JAM_MIN)
    assert all(jammed), dict(zip(lab["sensors"], jammed, strict=True))


def test_ninh_hoa_nov_2025_crosses_bd3_on_time_and_stays_about_80h() -> None:
    """Domain ``observed_rates_nov_dec_2025.ninh_hoa``: above BĐ III 19/11 04:00-22/11 11:00, peak 6.77 m 20/11 14:00."""
    sim = simulate("flood_2025_11")
    s = sim.by_id("HYD_NINH_HOA")
    v, t = s.values["water_level_m"], s.t
    lab = next(lab for lab in sim.labels if lab["event_id"] == "nov_2025_flood/HYD_NINH_HOA")
    bd3 = lab["crossings"]["HYD_NINH_HOA"]["bd3"]
    target = datetime(2025, 11, 19, 4, tzinfo=ICT).timestamp()
    assert abs(bd3 - target) <= 6 * 3600, (bd3 - target) / 3600
    above = v >= 5.7
    hours = above.sum() * s.spec.interval_s / 3600
    assert 60 <= hours <= 100, hours
    assert _longest_run(above) == above.sum()  # one spell, not two waves
    assert not above[-1]  # the spell ends inside the scenario
    peak_at = float(t[int(np.argmax(v))])
    assert abs(peak_at - datetime(2025, 11, 20, 14, tzinfo=ICT).timestamp()) <= 6 * 3600
    assert v.max() == pytest.approx(6.77, abs=0.05)


def test_dong_trang_nov_2025_peaks_on_the_observed_days_and_hour() -> None:
    """Domain ``flood_events`` 16-22/11/2025: 12.24 m on 17/11 (no hour known), 13.14 m on 20/11.

    The hour of the second peak, 20/11 05:00, is ``observed_rates_nov_dec_2025.dong_trang.peak``.
    """
    sim = simulate("flood_2025_11")
    s = sim.by_id("HYD_DONG_TRANG")
    v, t = s.values["water_level_m"], s.t.astype(np.float64)
    first_wave = t < datetime(2025, 11, 18, 12, tzinfo=ICT).timestamp()  # the trough between the waves
    i1 = int(np.argmax(np.where(first_wave, v, -np.inf)))
    i2 = int(np.argmax(np.where(first_wave, -np.inf, v)))
    assert v[i1] == pytest.approx(12.24, abs=0.05)
    assert datetime.fromtimestamp(float(t[i1]), ICT).date() == datetime(2025, 11, 17).date()
    assert v[i2] == pytest.approx(13.14, abs=0.05)
    real = datetime(2025, 11, 20, 5, tzinfo=ICT).timestamp()
    assert abs(float(t[i2]) - real) <= 4 * 3600, (float(t[i2]) - real) / 3600
    assert v[i1:i2].min() < 11.0  # two distinct waves: the stage falls below BĐ III in between
