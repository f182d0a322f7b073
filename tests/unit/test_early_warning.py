"""Early-warning detectors: exact categories, crossing forecasts, escalations and clears.

The flood targets run the real scenarios in-process (``sensors_sim``) and check that the BĐ III
forecast comes at least 60 minutes before the labelled crossing, on the smooth 5-minute series and
on national-network style copies of it: hourly, rounded to 1 cm, with gaps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from detectors.flood_projection import FloodProjectionDetector, theil_sen
from detectors.noise import NoiseLimitDetector, laeq, period_of
from detectors.rain import RainAccumulationDetector, category_24h
from detectors.traffic import TrafficCongestionDetector
from detectors.vn_aqi import (
    CATEGORIES,
    VnAqiDetector,
    category,
    daily_aqi,
    hourly_aqi,
    nowcast,
    round_half_up,
    sub_index,
)
from ioc.models import Finding, Reading
from sensors_sim.engine import Simulation, simulate

ICT = timezone(timedelta(hours=7))
DONG_TRANG = {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}
T0 = datetime(2025, 11, 16, 12, tzinfo=UTC)  # 19:00 in Nha Trang


def gauge(levels: Iterable[float | None], step_min: int = 60, sensor: str = "HYD_DONG_TRANG") -> list[Reading]:
    """Readings every ``step_min`` from T0; ``None`` leaves a gap."""
    return [Reading(sensor, "water_level", T0 + timedelta(minutes=step_min * i), i, {"water_level_m": v})
            for i, v in enumerate(levels) if v is not None]


def run(det: Any, readings: Iterable[Reading]) -> list[Finding]:
    return [f for r in readings for f in det.update(r)]


# -- flood projection: exact behaviour --------------------------------------------------------


def test_steady_rise_forecasts_each_level_once_then_closes() -> None:
    findings = run(FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG), gauge(6.0 + h / 2 for h in range(12)))
    got = [(f.ts, f.severity, f.predicted_crossing_at, f.lead_time_s, f.crossing_uncertainty_s, f.threshold)
           for f in findings]
    h = timedelta(hours=1)
    assert got == [
        # 15:00 (4 hourly points), 7.5 m rising 0.5 m/h: BĐ II (9.5 m) in 4 h is the highest within the horizon
        (T0 + 3 * h, "warning", T0 + 7 * h, 14400.0, 4320.0, 9.5),
        # 18:00, 9.0 m: BĐ III (11 m) now 4 h away; BĐ II's forecast never moved, so nothing in between
        (T0 + 6 * h, "critical", T0 + 10 * h, 14400.0, 4320.0, 11.0),
        (T0 + 10 * h, None, None, None, None, 11.0),  # reached: the alarm-level detector takes over
    ]
    warn, crit, done = findings
    assert crit.message == "HYD_DONG_TRANG: BĐ III dự kiến lúc 05:00 ± 70 phút (mực nước 9,00 m, đang lên 0,50 m/giờ)"
    assert crit.message_en == "HYD_DONG_TRANG: BĐ III expected at 05:00 ± 70 min (level 9.00 m, rising 0.50 m/h)"
    assert warn.message_en == "HYD_DONG_TRANG: BĐ II expected at 02:00 on 17/11 ± 70 min (level 7.50 m, rising 0.50 m/h)"
    assert done.message_en == "HYD_DONG_TRANG: level 11.00 m has reached BĐ III; forecast closed"
    assert done.detail["reached"] is True
    assert all(f.family == "warning" and f.kind == "flood" and f.rule == "flood_projection" for f in findings)
    assert crit.score == 1.0 and done.score == 0.0


def test_forecast_is_reissued_only_when_it_moves_materially() -> None:
    steady = [7.0 + 0.3 * h for h in range(12)]
    det = FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG, horizon_s=6 * 3600)
    assert [(f.ts, f.severity) for f in run(det, gauge(steady))] == [
        (T0 + timedelta(hours=3), "warning"), (T0 + timedelta(hours=8), "critical")  # no updates at a steady pace
    ]
    # the same river speeding up from 0.3 to 0.6 m/h after 19:00: the BĐ III time is re-issued, earlier
    faster = steady[:8] + [9.1 + 0.6 * k for k in range(1, 5)]
    crit = [f for f in run(FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG, horizon_s=6 * 3600), gauge(faster))
            if f.severity == "critical"]
    assert [f.ts for f in crit] == [T0 + timedelta(hours=h) for h in (8, 9, 10)]
    for before, after in zip(crit, crit[1:], strict=False):
        assert before.predicted_crossing_at is not None and after.predicted_crossing_at is not None
        moved = (before.predicted_crossing_at - after.predicted_crossing_at).total_seconds()
        assert moved > max(600.0, (before.crossing_uncertainty_s or 0) / 2)


def test_warning_clears_when_the_rise_stops() -> None:
    levels = [7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0] + [10.0] * 8
    findings = run(FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG), gauge(levels))
    # 19:00: still "rising" over 6 h but the level stayed at 10 m, so the time moves later; then it clears
    assert [f.severity for f in findings] == ["warning", "critical", "critical", None]
    assert findings[2].message_en == "HYD_DONG_TRANG: BĐ III expected at 04:00 ± 35 min (level 10.00 m, rising 0.50 m/h)"
    cleared = findings[-1]
    assert cleared.detail["reached"] is False
    assert cleared.message_en.endswith("BĐ III warning cleared, level 10.00 m no longer rising fast")
    assert cleared.message.startswith("HYD_DONG_TRANG: hết cảnh báo BĐ III")


def test_steady_quantised_river_with_a_spike_raises_nothing() -> None:
    levels: list[float | None] = [round(5.0 + 0.01 * math.sin(h * 1.3), 2) for h in range(48)]
    levels[20] = 8.2  # one spike past BĐ I
    assert run(FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG), gauge(levels)) == []


def test_a_spike_at_the_newest_point_of_a_sparse_window_does_not_move_the_forecast() -> None:
    rise: list[float | None] = [round(6.0 + 0.45 * h, 2) for h in range(7)]
    rise[1] = rise[2] = None  # a gap: 4 points in the window when the spike arrives
    spiked = list(rise)
    spiked[6] = (rise[6] or 0.0) + 3.0
    clean = run(FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG), gauge(rise))
    got = run(FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG), gauge(spiked))
    assert [(f.ts, f.severity, f.predicted_crossing_at) for f in got] == \
        [(f.ts, f.severity, f.predicted_crossing_at) for f in clean] == \
        [(T0 + timedelta(hours=5), "warning", datetime(2025, 11, 16, 19, 46, 40, tzinfo=UTC))]
    # Siegel's repeated median below 6 points: the spike holds half the pairs but not the slope
    assert theil_sen([0.0, 3.0, 4.0, 5.0], [0.0, 1.35, 1.8, 5.25], 1.0)[0] == pytest.approx(0.45)


def test_the_window_is_time_not_count() -> None:
    det = FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG)
    run(det, gauge([6.0, 6.5, 7.0, 7.5]))
    assert det.ready
    late = Reading("HYD_DONG_TRANG", "water_level", T0 + timedelta(hours=12), 99, {"water_level_m": 9.0})
    assert det.update(late) == [] and not det.ready  # after a 9-hour gap the old points are out
    nxt = [Reading("HYD_DONG_TRANG", "water_level", T0 + timedelta(hours=12 + k), 100 + k,
                   {"water_level_m": 9.0 + 0.5 * k}) for k in range(1, 4)]
    assert [f.severity for f in run(det, nxt)] == ["critical"]


def test_no_warning_beyond_the_horizon() -> None:
    slow = [5.0 + 0.05 * h for h in range(24)]  # BĐ I is 40 h away at the end
    assert run(FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG), gauge(slow)) == []


def test_missing_bd2_is_skipped_like_duc_my() -> None:
    det = FloodProjectionDetector("HYD_DUC_MY", {"bd1": 15.5, "bd2": None, "bd3": 17.5})
    findings = run(det, gauge([15.6 + 0.3 * h for h in range(5)], sensor="HYD_DUC_MY"))
    assert [(f.severity, f.threshold) for f in findings] == [("critical", 17.5)]


def test_bad_input_is_ignored() -> None:
    clean = gauge(6.0 + h / 2 for h in range(12))
    noisy: list[Reading] = []
    for r in clean:
        noisy.append(r)
        for bad in (math.nan, math.inf, -math.inf, 1e300):
            noisy.append(Reading(r.sensor_id, r.kind, r.ts + timedelta(minutes=1), r.seq, {"water_level_m": bad}))
        noisy.append(r)  # duplicate
        noisy.append(clean[0])  # late
    noisy.append(Reading("HYD_DONG_TRANG", "water_level", T0 + timedelta(days=1), 0, {"other": 1.0}))
    a, b = FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG), FloodProjectionDetector("HYD_DONG_TRANG", DONG_TRANG)
    assert run(a, noisy) == run(b, clean)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": {}}, "alarm levels"),
        ({"levels": {"bd1": 9.0, "bd2": 8.0}}, "increase"),
        ({"levels": DONG_TRANG, "min_points": 2}, "min_points"),
        ({"levels": DONG_TRANG, "min_span_s": 7 * 3600}, "min_span_s"),
        ({"levels": DONG_TRANG, "horizon_s": 0}, "horizon_s"),
        ({"levels": DONG_TRANG, "hold_factor": 0.5}, "hold_factor"),
        ({"levels": DONG_TRANG, "confidence_z": 0}, "confidence_z"),
    ],
)
def test_flood_configuration_errors_say_what_to_do(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FloodProjectionDetector("X", **kwargs)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FloodProjectionDetector("X", DONG_TRANG),
        lambda: RainAccumulationDetector("X"),
        lambda: VnAqiDetector("X"),
        lambda: NoiseLimitDetector("X"),
        lambda: TrafficCongestionDetector("X", 40.0),
    ],
)
def test_unsupported_state_version_is_refused(make: Any) -> None:
    det = make()
    state = json.loads(json.dumps(det.to_state()))
    state["state_version"] = 99
    with pytest.raises(ValueError, match="state_version"):
        det.from_state(state)


# -- flood projection: the scenario targets --------------------------------------------------

#: Warning lead needed before the true BĐ III crossing (issue 8 target).
MIN_LEAD_S = 3600.0


@pytest.fixture(scope="module", params=["typhoon_damrey", "flood_2025_11"])
def flood_sim(request: pytest.FixtureRequest) -> Simulation:
    return simulate(request.param)


def bd3_crossings(sim: Simulation) -> list[tuple[str, float]]:
    out = []
    for lab in sim.labels:
        if lab["kind"] == "flood":
            for sid, c in lab["crossings"].items():
                if "bd3" in c:
                    out.append((sid, float(c["bd3"])))
    return sorted(out)


def national_network(sim: Simulation, sid: str, phase: int, drop_every: int = 0) -> list[Reading]:
    """The gauge as a national-network station sends it: hourly, to the centimetre, maybe with gaps."""
    s = sim.by_id(sid)
    step = 3600 // s.spec.interval_s
    out = []
    for k, i in enumerate(range(phase, len(s.t), step)):
        if drop_every and k % drop_every == drop_every - 1:
            continue
        v = round(float(s.values["water_level_m"][i]), 2)
        out.append(Reading(sid, "water_level", datetime.fromtimestamp(int(s.t[i]), UTC), k, {"water_level_m": v}))
    return out


def dense(sim: Simulation, sid: str) -> list[Reading]:
    s = sim.by_id(sid)
    return [Reading(sid, "water_level", datetime.fromtimestamp(int(t), UTC), k, {"water_level_m": float(v)})
            for k, (t, v) in enumerate(zip(s.t, s.values["water_level_m"], strict=True))]


def bd3_lead_s(findings: list[Finding], crossing: float) -> float | None:
    """Lead of the BĐ III warning still open at the true crossing (a 'reached' close counts as open)."""
    start: Finding | None = None
    for f in findings:
        if f.ts.timestamp() >= crossing:
            break
        if f.severity == "critical" and start is None:
            start = f
        if f.severity is None and not f.detail.get("reached"):
            start = None
    return None if start is None else crossing - start.ts.timestamp()


def test_bd3_warning_an_hour_ahead_on_smooth_series(flood_sim: Simulation) -> None:
    crossings = bd3_crossings(flood_sim)
    assert len(crossings) == 4
    for sid, crossing in crossings:
        levels = flood_sim.by_id(sid).spec.alarm_levels or {}
        lead = bd3_lead_s(run(FloodProjectionDetector(sid, levels), dense(flood_sim, sid)), crossing)
        assert lead is not None and lead >= MIN_LEAD_S, (flood_sim.scenario.name, sid, lead)


@pytest.mark.parametrize("drop_every", [0, 5])
def test_bd3_warning_an_hour_ahead_on_hourly_quantised_gauges(flood_sim: Simulation, drop_every: int) -> None:
    """Every hourly phase (the station's minute past the hour), with and without every 5th hour lost."""
    for sid, crossing in bd3_crossings(flood_sim):
        levels = flood_sim.by_id(sid).spec.alarm_levels or {}
        for phase in range(0, 12, 3):
            readings = national_network(flood_sim, sid, phase, drop_every)
            lead = bd3_lead_s(run(FloodProjectionDetector(sid, levels), readings), crossing)
            assert lead is not None and lead >= MIN_LEAD_S, (flood_sim.scenario.name, sid, phase, lead)


def test_forecasts_stay_few(flood_sim: Simulation) -> None:
    """Open, escalate, a few updates and close per wave, not one finding per reading."""
    for sid, _ in bd3_crossings(flood_sim):
        levels = flood_sim.by_id(sid).spec.alarm_levels or {}
        findings = run(FloodProjectionDetector(sid, levels), dense(flood_sim, sid))
        assert len(findings) <= 30, (sid, len(findings))


# -- rain ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mm", "vi"),
    [(0.0, "mưa nhỏ"), (5.9, "mưa nhỏ"), (6.0, "mưa"), (14.9, "mưa"), (15.0, "mưa vừa"), (49.9, "mưa vừa"),
     (50.0, "mưa to"), (99.9, "mưa to"), (100.0, "mưa rất to"), (634.0, "mưa rất to")],
)
def test_rain_categories_24h(mm: float, vi: str) -> None:
    assert category_24h(mm)[0] == vi


def rain(values: Iterable[float], step_min: int = 5, start: datetime = T0) -> list[Reading]:
    return [Reading("RAIN_CHO_GA", "rain", start + timedelta(minutes=step_min * i), i, {"rain_mm": v})
            for i, v in enumerate(values)]


def test_rain_totals_levels_and_clear() -> None:
    # 10 mm every 5 minutes for an hour (120 mm/h), then dry for a day
    readings = rain([10.0] * 12 + [0.0] * 300)
    findings = run(RainAccumulationDetector("RAIN_CHO_GA"), readings)
    got = [((f.ts - T0).total_seconds() / 60, f.severity, f.value, f.threshold, f.detail.get("window_h"))
           for f in findings]
    assert got == [
        (20.0, "info", 50.0, 50.0, 24),  # 50 mm: mưa to
        (35.0, "warning", 80.0, 80.0, 3),  # 80 mm in 3 h: cường suất lớn
        (45.0, "critical", 100.0, 100.0, 3),
        (195.0, "warning", 80.0, 80.0, 3),  # 3 h total under 90 (100 - 10 %) once the first tips leave it
        (1455.0, "info", 80.0, 50.0, 24),  # 24 h total under 90: back to mưa to
        (1475.0, None, 40.0, None, None),  # under 45 (50 - 10 %): cleared
    ]
    assert findings[2].detail == {"mm_1h": 100.0, "mm_3h": 100.0, "mm_24h": 100.0, "category_24h": "mưa rất to",
                                  "category_24h_en": "very heavy rain", "window_h": 3}
    assert findings[2].message == ("RAIN_CHO_GA: mưa cường suất lớn, 100,0 mm trong 3 giờ "
                                   "(24 giờ: 100,0 mm, mưa rất to; ngưỡng 100 mm/3 giờ)")


def test_cumulative_gauge_matches_per_interval_and_survives_a_reset() -> None:
    per = [2.0] * 40
    totals, t = [], 0.0
    for k, mm in enumerate(per):
        t = mm if k == 25 else t + mm  # the logger restarted at reading 25 and counted that interval
        totals.append(t)
    a = run(RainAccumulationDetector("RAIN_CHO_GA"), rain(per))
    b = run(RainAccumulationDetector("RAIN_CHO_GA", cumulative=True), rain([0.0] + totals))
    # the cumulative gauge needs one extra reading as its baseline, so its findings come 5 min later
    assert [(f.severity, f.value) for f in a] == [(f.severity, f.value) for f in b] == [("info", 50.0)]


def test_duplicates_are_not_counted_twice() -> None:
    readings = rain([10.0] * 6)
    doubled = [r for r in readings for _ in (0, 1)]
    det = RainAccumulationDetector("RAIN_CHO_GA")
    run(det, doubled)
    assert det.to_state()["sums"] == [60.0, 60.0, 60.0]


def test_first_heavy_rain_warning_matches_the_labels() -> None:
    sim = simulate("typhoon_damrey")
    labels = {lab["sensors"][0]: lab for lab in sim.labels if lab["kind"] == "heavy_rain"}
    assert labels
    for sid, lab in labels.items():
        s = sim.by_id(sid)
        readings = [Reading(sid, "rain", datetime.fromtimestamp(int(t), UTC), k, {"rain_mm": float(v)})
                    for k, (t, v) in enumerate(zip(s.t, s.values["rain_mm"], strict=True))]
        findings = run(RainAccumulationDetector(sid), readings)
        first = next(f for f in findings if f.severity in ("warning", "critical") and f.detail["window_h"] == 24)
        # the label's own rule (>= 100 mm in 24 h) on a cumulative-sum difference, which can land a
        # 0.2 mm multiple at 99.99999...: the label may then start one reading later than exact 100 mm
        assert lab["start"] - first.ts.timestamp() in (0.0, float(s.spec.interval_s)), sid
        assert max(f.severity == "critical" for f in findings)
        assert findings[-1].severity is None


# -- VN_AQI ----------------------------------------------------------------------------------


def test_vn_aqi_worked_example_hourly() -> None:
    pm25_oldest_first = [26.9, 24.7, 20.5, 23.5, 19.5, 16.5, 19.0, 16.5, 20.3, 22.4, 19.6, 20.6]
    nc = nowcast(pm25_oldest_first[::-1])
    assert nc is not None and round(nc, 1) == 20.3
    assert sub_index("o3_1h", 136.1) == pytest.approx(42.53125)
    assert sub_index("pm25", 20.3) == pytest.approx(40.6)
    assert sub_index("no2", 118.7) == pytest.approx(59.35)
    r = hourly_aqi({"o3": 136.1, "no2": 118.7, "pm25": 20.3})
    assert r is not None
    assert {k: round_half_up(v) for k, v in r.sub_indices.items()} == {"o3": 43, "pm25": 41, "no2": 59}
    assert r.aqi == 59  # the decision prints 60 for NO2 (59.35) but rounds 65.4 to 65 in its daily example
    assert (r.category.vi, r.category.hex) == ("Trung bình", "#FFFF00")


def test_vn_aqi_worked_example_daily() -> None:
    r = daily_aqi(o3_8h_max=89.3, o3_1h_max=114.6, no2_1h_max=130.8, pm25_24h=55.7)
    assert r is not None
    assert {k: round_half_up(v) for k, v in r.sub_indices.items()} == {"o3_8h": 45, "o3_1h": 36, "no2": 65, "pm25": 110}
    assert (r.aqi, r.dominant, r.category.vi, r.category.rgb) == (110, "pm25", "Kém", (255, 126, 0))


@pytest.mark.parametrize(
    ("aqi", "vi", "hex_"),
    [(0, "Tốt", "#00E400"), (50, "Tốt", "#00E400"), (51, "Trung bình", "#FFFF00"), (100, "Trung bình", "#FFFF00"),
     (101, "Kém", "#FF7E00"), (150, "Kém", "#FF7E00"), (151, "Xấu", "#FF0000"), (200, "Xấu", "#FF0000"),
     (201, "Rất xấu", "#8F3F97"), (300, "Rất xấu", "#8F3F97"), (301, "Nguy hại", "#7E0023"),
     (500, "Nguy hại", "#7E0023")],
)
def test_vn_aqi_categories_and_colours(aqi: int, vi: str, hex_: str) -> None:
    assert (category(aqi).vi, category(aqi).hex) == (vi, hex_)


def test_vn_aqi_breakpoint_edges_and_units() -> None:
    assert sub_index("co", 10_000.0) == 50.0  # CO in µg/m³: 10 mg/m³ is the 50 breakpoint
    assert sub_index("pm25", 50.0) == 100.0 and sub_index("pm25", 50.1) == pytest.approx(100.1666, abs=1e-3)
    assert sub_index("pm10", 1000.0) == 500.0  # the last row means ">="
    assert sub_index("o3_8h", 401.0) is None  # 8 h O3 above 400 is scored on the 1 h column
    assert sub_index("no2", -1.0) is None and sub_index("no2", math.nan) is None
    assert hourly_aqi({"no2": 300.0, "o3": 100.0}) is None  # PM2.5 or PM10 is required
    assert [c.rgb for c in CATEGORIES][-1] == (126, 0, 35)


def test_nowcast_weights_and_validity() -> None:
    assert nowcast([100.0, 10.0, 10.0]) == pytest.approx((100 + 5 + 2.5) / 1.75)  # w* = 0.1 -> w = 1/2
    assert nowcast([30.0, None, 30.0, 60.0]) == pytest.approx((30 + 0.25 * 30 + 0.125 * 60) / 1.375)
    assert nowcast([30.0, None, None, 30.0]) is None  # only 1 of the latest 3 hours
    assert nowcast([0.0, 0.0]) == 0.0


def air(hourly_pm25: list[float], per_hour: int = 4) -> list[Reading]:
    out = []
    for h, c in enumerate(hourly_pm25):
        for k in range(per_hour):
            ts = T0 + timedelta(hours=h, minutes=k * 60 // per_hour)
            out.append(Reading("AIR_BINH_TAN", "air", ts, len(out), {"pm25": c, "no2": 40.0}))
    return out


def test_vn_aqi_detector_escalates_and_clears() -> None:
    findings = run(VnAqiDetector("AIR_BINH_TAN"), air([20.0] * 3 + [120.0] * 4 + [20.0] * 12))
    got = [((f.ts - T0).total_seconds() / 3600, f.severity, f.value, f.detail["category"]) for f in findings]
    assert got == [
        # hour 3 closes at 04:00: w* = 20/120 -> w = 1/2, NowCast (120 + 10 + 5 + 2.5) / 1.875 = 73.3 -> 139
        (4.0, "info", 139.0, "Kém"),
        (5.0, "warning", 162.0, "Xấu"),  # (120 + 60 + 5 + 2.5 + 1.25) / 1.9375 = 97.4 -> 162
        (8.0, "info", 128.0, "Kém"),
        (9.0, None, 87.0, "Trung bình"),
    ]
    assert findings[1].detail["colour"] == "#FF0000" and findings[1].detail["dominant"] == "pm25"
    assert findings[1].message == "AIR_BINH_TAN: VN_AQI 162 (Xấu), chất chính PM2.5 (NowCast 97,4 µg/m³)"
    assert findings[-1].message_en == "AIR_BINH_TAN: air quality alert cleared, VN_AQI 87 (Moderate)"


def test_vn_aqi_holds_its_band_inside_the_hysteresis() -> None:
    det = VnAqiDetector("AIR_BINH_TAN")
    # PM2.5 pinned just under the Kém line after being above it: 101 -> 98 stays Kém (5 points hysteresis)
    findings = run(det, air([50.4] * 4 + [49.7] * 6))
    assert [(f.severity, f.value) for f in findings] == [("info", 101.0)]


# -- noise -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "day"),
    [("05:59:59", False), ("06:00:00", True), ("20:59:59", True), ("21:00:00", False), ("00:00:00", False)],
)
def test_noise_periods_are_local_time(local: str, day: bool) -> None:
    ts = datetime.fromisoformat(f"2025-03-12T{local}+07:00").timestamp()
    assert period_of(ts)[0] is day


def noise(levels: list[float], start: datetime, step_min: int = 5) -> list[Reading]:
    return [Reading("NOISE_BV_TINH", "noise", start + timedelta(minutes=step_min * i), i, {"laeq_dba": v})
            for i, v in enumerate(levels)]


def test_noise_day_limit_then_night_limit_from_21h() -> None:
    start = datetime(2025, 3, 12, 19, 0, tzinfo=ICT)
    # a normal-area street at 66 dBA all evening: legal by day (70), 11 dB over the night limit (55)
    findings = run(NoiseLimitDetector("NOISE_CHO_DAM", area="normal"), noise([66.0] * 48, start))
    assert [(f.ts.astimezone(ICT).strftime("%H:%M"), f.severity, f.threshold) for f in findings] == [
        ("21:30", "warning", 55.0)  # the night window starts empty at 21:00 and needs 30 min of data
    ]
    assert findings[0].message == ("NOISE_CHO_DAM: tiếng ồn LAeq 66,0 dBA trong 30 phút vượt giới hạn ban đêm "
                                   "55 dBA (QCVN 26, khu vực thông thường)")


def test_noise_special_area_exceedance_and_clear() -> None:
    start = datetime(2025, 3, 12, 8, 0, tzinfo=ICT)
    levels = [58.0] * 12 + [50.0] * 18
    findings = run(NoiseLimitDetector("NOISE_BV_TINH", area="special"), noise(levels, start))
    assert [(f.ts.astimezone(ICT).strftime("%H:%M"), f.severity, round(f.value, 2)) for f in findings] == [
        ("08:30", "info", 58.0),
        # the hour's energy average only falls to 52 dBA (55 - 3) with one 58 dBA sample left in it
        ("09:50", None, 51.59),
    ]


def test_noise_laeq_is_an_energy_average_and_limits_are_configurable() -> None:
    assert laeq([60.0, 60.0]) == pytest.approx(60.0)
    assert laeq([80.0, 40.0]) == pytest.approx(80.0 - 10 * math.log10(2), abs=1e-3)
    start = datetime(2025, 3, 12, 8, 0, tzinfo=ICT)
    findings = run(NoiseLimitDetector("N", limits=(65.0, 50.0)), noise([66.0] * 8, start))
    assert [(f.severity, f.threshold) for f in findings] == [("info", 65.0)]
    with pytest.raises(ValueError, match="area"):
        NoiseLimitDetector("N", area="industrial")


# -- traffic ---------------------------------------------------------------------------------


def speeds(values: list[float]) -> list[Reading]:
    return [Reading("TRF_2T4_XOM_BONG", "traffic", T0 + timedelta(minutes=i), i, {"speed_kmh": v})
            for i, v in enumerate(values)]


def test_traffic_jam_is_raised_after_it_is_sustained_and_clears() -> None:
    values = [38.0] * 10 + [5.0] * 30 + [37.0] * 20
    findings = run(TrafficCongestionDetector("TRF_2T4_XOM_BONG", free_flow_kmh=40.0), speeds(values))
    assert [(int((f.ts - T0).total_seconds() // 60), f.severity, f.detail["level"]) for f in findings] == [
        (17, "critical", "jam"),  # the 5-minute median turns at minute 12, held for 5 minutes
        (52, None, "free"),  # recovered at minute 42, held for 10 minutes
    ]
    assert findings[0].message == ("TRF_2T4_XOM_BONG: ùn tắc, tốc độ trung vị 5 km/h = 12 % tốc độ tự do "
                                   "(40 km/h) trong 5 phút")


def test_traffic_brief_dips_and_lone_probes_raise_nothing() -> None:
    dip = [38.0] * 10 + [5.0] * 4 + [38.0] * 20  # a 4-minute stop: the median is low for only 3 minutes
    spikes = [38.0 if i % 7 else 2.0 for i in range(60)]  # one slow probe in seven
    det = TrafficCongestionDetector("TRF_2T4_XOM_BONG", free_flow_kmh=40.0)
    assert run(det, speeds(dip)) == []
    assert run(TrafficCongestionDetector("TRF_2T4_XOM_BONG", free_flow_kmh=40.0), speeds(spikes)) == []


def test_traffic_levels_heavy_and_slow() -> None:
    values = [38.0] * 10 + [26.0] * 15 + [16.0] * 15  # slow (0.65), then heavy (0.4)
    quiet = run(TrafficCongestionDetector("T", free_flow_kmh=40.0), speeds(values))
    assert [(f.severity, f.detail["level"]) for f in quiet] == [("warning", "heavy")]
    loud = run(TrafficCongestionDetector("T", free_flow_kmh=40.0, alert_slow=True), speeds(values))
    assert [(f.severity, f.detail["level"]) for f in loud] == [("info", "slow"), ("warning", "heavy")]


@pytest.mark.parametrize("free_flow", [0.0, -5.0, math.nan, math.inf])
def test_traffic_needs_a_free_flow_speed(free_flow: float) -> None:
    with pytest.raises(ValueError, match="free_flow_kmh"):
        TrafficCongestionDetector("T", free_flow_kmh=free_flow)
