"""Exact behaviour of the sensor-health detectors: when a fault is raised, and that it clears."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from detectors.clock_skew import CADENCE_STEPS, ClockSkewDetector
from detectors.families import METRICS, water_level_overrides
from detectors.flatline import FlatSpec, StuckDetector
from detectors.physical_range import PhysicalRangeDetector
from detectors.rate_of_change import RateLimit, RateOfChangeDetector
from detectors.sensor_set import health_detectors, sensor_detectors, silence_of, update_all
from detectors.silence import SilenceDetector, check_silence
from ioc.models import Finding, Reading
from sensors_sim.registry import load_registry

T0 = datetime(2025, 10, 10, tzinfo=UTC)


def rd(i: int, metrics: dict[str, float], *, sid: str = "S", kind: str = "air", step_s: int = 300,
       seq: int | None = None, skew_s: int = 0) -> Reading:
    return Reading(sid, kind, T0 + timedelta(seconds=step_s * i + skew_s), i + 1 if seq is None else seq, metrics)


def run(det: object, readings: list[Reading]) -> list[tuple[int, str | None]]:
    return [(i, f.severity) for i, r in enumerate(readings) for f in det.update(r)]  # type: ignore[attr-defined]


def all_findings(det: object, readings: list[Reading]) -> list[Finding]:
    return [f for r in readings for f in det.update(r)]  # type: ignore[attr-defined]


# ---------------------------------------------------------------- physical range
def test_range_raises_once_and_clears_after_two_good_readings() -> None:
    det = PhysicalRangeDetector("WX", {"humidity_pct": (0.0, 100.0)})
    vals = [80, 81, 130, 140, 82, 135, 83, 84, 85]
    assert run(det, [rd(i, {"humidity_pct": v}) for i, v in enumerate(vals)]) == [(2, "warning"), (7, None)]


def test_range_finding_names_metric_limit_and_health_family() -> None:
    f = all_findings(PhysicalRangeDetector("WX", {"pressure_hpa": (870.0, 1085.0)}),
                     [rd(0, {"pressure_hpa": 1010.0}), rd(1, {"pressure_hpa": 9999.0})])[0]
    assert (f.rule, f.kind, f.family, f.metric, f.threshold) == ("sensor_range", "health", "health", "pressure_hpa", 1085.0)
    assert 0 < f.score < 1 and f.message and f.message_en


def test_range_ignores_nan_and_late_readings() -> None:
    det = PhysicalRangeDetector("WX", {"humidity_pct": (0.0, 100.0)})
    assert run(det, [rd(1, {"humidity_pct": 50}), rd(0, {"humidity_pct": 500}), rd(2, {"humidity_pct": math.nan})]) == []


def test_range_validates_its_configuration() -> None:
    with pytest.raises(ValueError, match="low < high"):
        PhysicalRangeDetector("WX", {"humidity_pct": (100.0, 0.0)})
    with pytest.raises(ValueError, match="at least one"):
        PhysicalRangeDetector("WX", {})


# ---------------------------------------------------------------- rate of change
NINH_HOA = RateLimit(0.15, 0.36, 0.21)  # 3 x its observed 0.12 / 0.07 m/h


def test_spike_raises_at_the_spike_and_clears_after_plausible_readings() -> None:
    det = RateOfChangeDetector("HYD", {"water_level_m": NINH_HOA}, clear_after=3)
    vals = [3.0, 3.01, 3.0, 6.0, 3.01, 3.0, 3.01, 3.0]
    assert run(det, [rd(i, {"water_level_m": v}, kind="water_level") for i, v in enumerate(vals)]) == [
        (3, "warning"), (6, None)
    ]


def test_a_step_that_holds_is_adopted_so_the_fault_clears() -> None:
    det = RateOfChangeDetector("HYD", {"water_level_m": NINH_HOA}, clear_after=2, adopt_after=3)
    vals = [3.0] * 3 + [4.0] * 8
    assert run(det, [rd(i, {"water_level_m": v}, kind="water_level") for i, v in enumerate(vals)]) == [
        (3, "warning"), (7, None)
    ]


def test_flood_rise_at_the_observed_maximum_is_plausible() -> None:
    det = RateOfChangeDetector("HYD_DONG_TRANG", {"water_level_m": RateLimit(0.15, 3 * 1.77, 3 * 0.76)})
    rising = [3.0 + 1.77 * i / 12 for i in range(60)]  # 1.77 m/h for 5 h, 5-min readings
    assert run(det, [rd(i, {"water_level_m": v}, kind="water_level") for i, v in enumerate(rising)]) == []


def test_a_long_gap_allows_a_proportionally_larger_change() -> None:
    det = RateOfChangeDetector("HYD", {"water_level_m": NINH_HOA})
    assert run(det, [rd(0, {"water_level_m": 3.0}), rd(24, {"water_level_m": 3.6})]) == []  # 2 h: 0.15 + 0.72


def test_registry_overrides_give_each_gauge_its_own_rates_and_ceiling() -> None:
    spec = water_level_overrides(METRICS["water_level_m"], {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0},
                                 {"record_m": 13.42, "max_rise_m_per_h": 1.77, "max_fall_m_per_h": 0.76})
    assert spec.high == pytest.approx(23.42)
    assert spec.rate == RateLimit(0.15, pytest.approx(5.31), pytest.approx(2.28), 0.5)  # keeps the family min_jump


def _hourly_gauge(levels: list[float]) -> list[Reading]:
    return [rd(i, {"water_level_m": v}, kind="water_level", step_s=3600) for i, v in enumerate(levels)]


DONG_TRANG_HOURLY = RateLimit(0.15, 3 * 1.77, 3 * 0.76, min_jump=0.5)  # what families + the registry give


def test_an_hourly_gauge_spike_inside_the_physical_limit_is_raised_at_once() -> None:
    """VNDMS-style 1 cm hourly data with a single 1.3 m outlier: well inside 5.3 m/h, but not this river."""
    quiet = [round(3.0 + 0.004 * math.sin(i * 1.7), 2) for i in range(20)]
    det = RateOfChangeDetector("HYD", {"water_level_m": DONG_TRANG_HOURLY}, interval_s=3600, clear_after=2)
    assert run(det, _hourly_gauge(quiet + [4.3] + quiet[:4])) == [(20, "warning"), (22, None)]


def test_a_flood_rising_after_a_quiet_spell_is_not_a_spike() -> None:
    """The first hours of a flood accelerate from centimetres to decimetres an hour: no spike."""
    quiet = [round(3.0 + 0.004 * math.sin(i * 1.7), 2) for i in range(20)]
    rise = [round(3.0 + 0.03 * k * k, 2) for k in range(1, 12)]  # 3 cm/h -> 0.66 m/h in 11 h
    fall = [round(rise[-1] - 0.35 * k, 2) for k in range(1, 10)]
    det = RateOfChangeDetector("HYD", {"water_level_m": DONG_TRANG_HOURLY}, interval_s=3600)
    assert run(det, _hourly_gauge(quiet + rise + fall)) == []


def test_a_spike_on_the_falling_limb_of_a_flood_is_raised() -> None:
    falling = [round(8.0 - 0.3 * i, 2) for i in range(15)]
    levels = falling[:10] + [falling[10] - 1.2] + falling[11:]
    det = RateOfChangeDetector("HYD", {"water_level_m": DONG_TRANG_HOURLY}, interval_s=3600, clear_after=2)
    assert run(det, _hourly_gauge(levels)) == [(10, "warning"), (12, None)]


def test_without_min_jump_only_physics_judges() -> None:
    quiet = [round(3.0 + 0.004 * math.sin(i * 1.7), 2) for i in range(20)]
    det = RateOfChangeDetector("HYD", {"water_level_m": DONG_TRANG_HOURLY._replace(min_jump=0.0)}, interval_s=3600)
    assert run(det, _hourly_gauge(quiet + [4.3] + quiet[:4])) == []


def test_a_confirm_only_metric_calls_a_blip_when_it_comes_back_and_never_an_episode() -> None:
    """Hourly PM2.5: a one-hour blip is a spike (raised at the return, with the blip's value); a plume
    that arrives abruptly and stays is an event, not a sensor fault."""
    base = [20.0 + (i * 7919 % 5) for i in range(40)]
    vals = base[:20] + [100.0] + base[21:30] + [v + 70.0 for v in base[30:40]]
    det = RateOfChangeDetector("AQ", {"pm25": RateLimit(400.0, 400.0, 400.0, 30.0, immediate=False)},
                               interval_s=3600, clear_after=2)
    found = all_findings(det, [rd(i, {"pm25": v}, step_s=3600) for i, v in enumerate(vals)])
    assert [(f.ts, f.severity, f.value) for f in found] == [
        (T0 + timedelta(hours=21), "warning", 100.0), (T0 + timedelta(hours=23), None, base[23])]


def test_rate_state_of_the_previous_layout_is_rejected() -> None:
    det = RateOfChangeDetector("HYD", {"water_level_m": NINH_HOA})
    old = {"state_version": 1, "refs": {"water_level_m": [3.0, 0.0, 0.0, 0.0, 0.0]}, "active": False,
           "ok_run": 0, "last_t": None}
    with pytest.raises(ValueError, match="state_version"):
        det.from_state(old)
    with pytest.raises(ValueError, match="wrong length"):
        det.from_state(old | {"state_version": 2})
    det.update(rd(0, {"water_level_m": 3.0}))
    fresh = RateOfChangeDetector("HYD", {"water_level_m": NINH_HOA})
    fresh.from_state(json.loads(json.dumps(det.to_state())))
    assert fresh.to_state() == det.to_state()


# ---------------------------------------------------------------- flat line
def _flickering(i: int) -> float:
    """A value that changes on most readings (run length ~1.2)."""
    return 10.0 + ((i * 7) % 5)


def test_all_channels_frozen_is_caught_fast_and_clears_when_values_move() -> None:
    det = StuckDetector("AQ", {"pm25": FlatSpec(prior_run=1.5), "no2": FlatSpec(prior_run=1.5)}, min_flat_s=1800)
    readings = [rd(i, {"pm25": _flickering(i), "no2": _flickering(i + 2)}) for i in range(40)]
    readings += [rd(i, {"pm25": 12.0, "no2": 11.0}) for i in range(40, 60)]
    readings += [rd(60, {"pm25": 13.0, "no2": 11.0}), rd(61, {"pm25": 12.0, "no2": 14.0})]
    # frozen from reading 40; raised once the run has lasted min_flat_s (30 min = 6 readings later);
    # held while one channel is still frozen, cleared when both move
    assert run(det, readings) == [(46, "warning"), (61, None)]


def test_a_quantised_slow_gauge_that_repeats_for_hours_is_not_stuck() -> None:
    """An hourly gauge at 1 cm on a quiet river: long legitimate runs are learned, not flagged."""
    det = StuckDetector("HYD", {"water_level_m": FlatSpec(prior_run=8.0)}, min_flat_s=4 * 3600)
    levels = [round(3.0 + 0.006 * math.sin(i / 9.0) + 0.004 * math.sin(i / 2.3), 2) for i in range(24 * 30)]
    assert run(det, [rd(i, {"water_level_m": v}, kind="water_level", step_s=3600) for i, v in enumerate(levels)]) == []


def test_runs_learned_during_a_flood_do_not_make_base_flow_look_stuck() -> None:
    """Hourly 1 cm gauge: days of flood (a new value every hour) then a recession that settles at
    base flow, repeating 2.20 for half a day. ``min_run`` keeps the flat spell legitimate."""
    flood = [round(6.0 + 3.0 * math.sin(i / 8.0), 2) for i in range(120)]
    settle = [round(2.2 + 0.02 * math.exp(-k / 2.0), 2) for k in range(6)] + [2.2] * 14
    readings = _hourly_gauge(flood + settle)
    floor = StuckDetector("HYD", {"water_level_m": FlatSpec(prior_run=8.0, min_run=4.0)}, min_flat_s=5 * 3600)
    assert run(floor, readings) == []
    learned_only = StuckDetector("HYD", {"water_level_m": FlatSpec(prior_run=8.0)}, min_flat_s=5 * 3600)
    assert [sev for _i, sev in run(learned_only, readings)] == ["warning"]  # what min_run prevents


def test_exempt_values_never_count_as_stuck() -> None:
    det = StuckDetector("R", {"rain_mm": FlatSpec(exempt_below=0.0)}, min_flat_s=0, min_runs=0)
    assert run(det, [rd(i, {"rain_mm": 0.0}, kind="rain") for i in range(2000)]) == []


def test_a_stuck_spell_is_not_learned_as_normal() -> None:
    det = StuckDetector("AQ", {"pm25": FlatSpec(prior_run=1.5)}, min_flat_s=1800)
    before = [rd(i, {"pm25": _flickering(i)}) for i in range(40)]
    stuck = [rd(i, {"pm25": 12.0}) for i in range(40, 80)]
    run(det, before + stuck + [rd(80, {"pm25": 13.0})])
    mean_run = det.runs["pm25"][3]
    assert mean_run < 2.0  # the 40-reading frozen run ended while the fault was raised


# ---------------------------------------------------------------- clock skew
def test_clock_step_from_the_cadence_is_raised_and_cleared() -> None:
    det = ClockSkewDetector("WX", interval_s=300)
    skews = [0] * 5 + [240] * 6 + [0] * 4
    readings = [rd(i, {"t": 1.0}, skew_s=s) for i, s in enumerate(skews)]
    assert run(det, readings) == [(6, "warning"), (12, None)]


def test_clock_ahead_of_ingest_time_is_raised_within_a_window() -> None:
    det = ClockSkewDetector("WX", interval_s=300)
    out = []
    for i in range(12):
        skew = 240 if 3 <= i < 8 else 0
        r = rd(i, {"t": 1.0}, skew_s=skew)
        received = T0 + timedelta(seconds=300 * i + 2)
        out += [(i, f.severity, round(f.value)) for f in det.update(r, received)]
    assert out == [(5, "warning", 238), (9, None, 0)]


def test_delivery_backlogs_and_missed_intervals_are_not_clock_skew() -> None:
    det = ClockSkewDetector("WX", interval_s=300)
    # a 2 h power cut without sequence advance, then the backlog delivered 10 min late
    readings = [rd(i, {"t": 1.0}, seq=i + 1) for i in range(5)] + [rd(i, {"t": 1.0}, seq=i - 18) for i in range(24, 30)]
    assert run(det, readings) == []
    late = ClockSkewDetector("WX", interval_s=300)
    out = [f for i in range(10) for f in late.update(rd(i, {"t": 1.0}), T0 + timedelta(seconds=300 * i + 600))]
    assert out == []


def _at(i: int, step_s: float, skew_s: float = 0.0, jitter_s: float = 0.0) -> Reading:
    """Reading i of a sensor reporting every ``step_s`` (fractions allowed), its clock off by ``skew_s``."""
    wobble = jitter_s * (1 if i % 3 == 0 else -1 if i % 3 == 1 else 0)
    return Reading("S", "air", T0 + timedelta(seconds=step_s * i + skew_s + wobble), i + 1, {"t": 1.0})


@pytest.mark.parametrize(("step_s", "registered_s"), [(0.1, 60), (10, 60), (1, 300), (600, 60)],
                         ids=["10Hz-as-60s", "10s-as-60s", "1s-as-300s", "600s-as-60s"])
def test_a_wrong_registry_interval_is_not_clock_skew_and_a_real_step_still_is(step_s: float, registered_s: int) -> None:
    """A sensor registered with the wrong interval (the registry takes 60 s when none is given, and
    cannot hold 0.1 s) raised a clock fault on its third reading: every step looked like a clock step."""
    det = ClockSkewDetector("S", interval_s=registered_s)
    n = 400
    quiet = [f for i in range(n) for f in det.update(_at(i, step_s, jitter_s=0.05 * step_s))]
    assert quiet == []
    # Then the clock really jumps about 600 s ahead and stays there: raised, and cleared when it is
    # set back. (Not a whole number of intervals: a sensor whose sequence does not advance through a
    # power cut makes such a jump look like missed readings.)
    jump = 600.0 + 0.5 * step_s
    found = [(i, f.severity) for i in range(n, n + 20)
             for f in det.update(_at(i, step_s, skew_s=jump if i < n + 10 else 0.0))]
    assert [sev for _, sev in found] == ["warning", None], found
    assert len(det.to_state()["steps"]) == CADENCE_STEPS  # the checkpoint does not grow with the stream


def test_a_clock_state_saved_before_the_cadence_was_learned_goes_on_judging() -> None:
    """States in the changelog from the previous release have no learned steps: they must load and
    keep judging steps against the registry's interval, not go quiet while the cadence is learned."""
    det = ClockSkewDetector("WX", interval_s=300)
    run(det, [rd(i, {"t": 1.0}) for i in range(5)])
    old = {k: v for k, v in det.to_state().items() if k not in ("steps", "learned")}
    again = ClockSkewDetector("WX", interval_s=300)
    again.from_state(old)
    readings = [rd(i, {"t": 1.0}, skew_s=240 if i >= 5 else 0) for i in range(5, 9)]
    assert run(again, readings) == [(1, "warning")]


def test_sequence_restart_re_anchors() -> None:
    det = ClockSkewDetector("WX", interval_s=300)
    readings = [rd(i, {"t": 1.0}) for i in range(5)] + [rd(i, {"t": 1.0}, seq=i - 4) for i in range(5, 10)]
    assert run(det, readings) == []


# ---------------------------------------------------------------- silence
def test_silence_is_raised_by_the_timer_within_three_intervals_and_cleared_by_data() -> None:
    det = SilenceDetector("AIR_CHO_DAM", interval_s=300)
    assert det.update(rd(0, {"pm25": 10.0})) == []
    ticks = [T0 + timedelta(seconds=30 * k) for k in range(1, 40)]
    raised = [(t, f) for t in ticks for f in det.check(t)]
    assert len(raised) == 1
    at, f = raised[0]
    assert (at - T0).total_seconds() == 750.0 < 3 * 300
    assert (f.rule, f.severity, f.family, f.kind, f.ts) == ("sensor_silent", "warning", "health", "health", at)
    back = det.update(rd(10, {"pm25": 10.0}))
    assert [x.severity for x in back] == [None]


def test_silence_is_still_raised_after_a_worker_restart() -> None:
    before = SilenceDetector("AIR_CHO_DAM", interval_s=300)
    before.update(rd(0, {"pm25": 10.0}))
    state = json.loads(json.dumps(before.to_state()))  # the changelogged table value
    restarted = SilenceDetector("AIR_CHO_DAM", interval_s=300)
    restarted.from_state(state)
    resumed_at = T0 + timedelta(seconds=600)  # the worker came back 10 min later
    ids, found = check_silence([restarted], T0 + timedelta(seconds=700), resumed_at=resumed_at)
    assert (ids, found) == ([], [])  # grace: the Kafka backlog may still hold its readings
    ids, found = check_silence([restarted], T0 + timedelta(seconds=1350), resumed_at=resumed_at)
    assert ids == ["AIR_CHO_DAM"] and [f.severity for f in found] == ["warning"]
    assert check_silence([restarted], T0 + timedelta(seconds=1500), resumed_at=resumed_at)[1] == []


def test_silence_raised_before_a_restart_is_not_raised_again() -> None:
    det = SilenceDetector("S", interval_s=60)
    det.update(rd(0, {"x": 1.0}, step_s=60))
    assert len(det.check(T0 + timedelta(seconds=200))) == 1
    again = SilenceDetector("S", interval_s=60)
    again.from_state(json.loads(json.dumps(det.to_state())))
    assert again.check(T0 + timedelta(seconds=400)) == []
    assert [f.severity for f in again.update(rd(7, {"x": 1.0}, step_s=60))] == [None]


def test_without_a_timer_the_next_reading_backfills_the_missed_silence() -> None:
    det = SilenceDetector("S", interval_s=300)
    det.update(rd(0, {"x": 1.0}))
    found = det.update(rd(12, {"x": 1.0}))
    assert [(f.severity, f.ts) for f in found] == [("warning", T0 + timedelta(seconds=750)),
                                                   (None, T0 + timedelta(seconds=3600))]


def test_late_and_duplicate_readings_do_not_touch_silence() -> None:
    det = SilenceDetector("S", interval_s=300)
    det.update(rd(5, {"x": 1.0}))
    assert det.update(rd(1, {"x": 1.0})) == [] and det.update(rd(5, {"x": 1.0})) == []
    assert det.last_seen == T0 + timedelta(seconds=1500)


def test_out_of_order_readings_widen_the_silence_threshold_without_ingest_times() -> None:
    """TRF_2310_CHO_GA in sensor_faults without ``received``: 1-min readings, some delivered 150 s
    late. A reading older than the newest one proves the delay, so two readings in flight at once
    are not silence; a real outage still is."""
    det = SilenceDetector("TRF", interval_s=60)
    for i in range(5):
        det.update(rd(i, {"x": 1.0}, step_s=60))
    assert det.after == timedelta(seconds=150)
    det.update(rd(2, {"x": 1.0}, step_s=60))  # reading 2 arrives after reading 4: >= 120 s late
    assert det.after == timedelta(seconds=270)
    assert check_silence([det], T0 + timedelta(seconds=240 + 200))[1] == []  # 200 s: readings in flight
    assert [f.severity for f in det.check(T0 + timedelta(seconds=240 + 271))] == ["warning"]
    on_time = SilenceDetector("TRF", interval_s=60)
    for i in range(5):
        on_time.update(rd(i, {"x": 1.0}, step_s=60))
    assert [f.severity for f in on_time.check(T0 + timedelta(seconds=240 + 200))] == ["warning"]


def test_learned_delivery_slack_decays_once_readings_arrive_in_order() -> None:
    det = SilenceDetector("TRF", interval_s=60)
    det.update(rd(4, {"x": 1.0}, step_s=60))
    det.update(rd(2, {"x": 1.0}, step_s=60))
    for i in range(5, 5 + 180):  # three hours in order
        det.update(rd(i, {"x": 1.0}, step_s=60))
    assert det.slack_s == pytest.approx(120.0 * math.exp(-3.0), rel=0.02)


# ---------------------------------------------------------------- the per-sensor set
def test_every_registry_sensor_gets_a_health_set_with_a_silence_detector() -> None:
    for spec in load_registry():
        dets = sensor_detectors(spec.sensor_id, spec.kind, spec.metric_names, spec.interval_s,
                                alarm_levels=spec.alarm_levels, extra=spec.extra)
        assert silence_of(dets) is not None
        assert {d.rule for d in dets} >= {"sensor_range", "sensor_stuck", "clock_skew", "sensor_silent"}


def test_update_all_passes_ingest_time_to_clock_skew() -> None:
    dets = health_detectors("WX_CXR", "weather", ["pressure_hpa"], 300)
    found = []
    for i in range(8):
        r = rd(i, {"pressure_hpa": 1010.0 + (i % 3) * 0.1}, sid="WX_CXR", kind="weather", skew_s=400)
        found += update_all(dets, r, received=T0 + timedelta(seconds=300 * i + 1))
    assert [(f.rule, f.severity) for f in found] == [("clock_skew", "warning")]


def test_late_deliveries_widen_the_silence_threshold_so_delay_is_not_silence() -> None:
    """TRF_2310_CHO_GA in sensor_faults: 1-min readings, some delivered 150 s late."""
    det = SilenceDetector("TRF", interval_s=60)
    for i in range(5):
        det.update(rd(i, {"x": 1.0}, step_s=60), received=T0 + timedelta(seconds=60 * i + 1))
    assert det.after == timedelta(seconds=151)  # 2.5 intervals + 1 s of ordinary latency
    det.update(rd(3, {"x": 1.0}, step_s=60), received=T0 + timedelta(seconds=60 * 3 + 150))  # late reading
    assert det.after.total_seconds() == pytest.approx(300.0, abs=1.0)
    last = T0 + timedelta(seconds=60 * 3 + 150)  # the late reading is the last one heard
    assert det.check(last + timedelta(seconds=200)) == []  # two readings in flight is not silence
    assert [f.severity for f in det.check(last + timedelta(seconds=310))] == ["warning"]
