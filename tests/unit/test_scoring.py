"""The scorer itself: episodes as the alerts table keeps them, matching, delays, lead times, targets.

Synthetic episodes and truths with hand-computed numbers, so a scorer bug fails here rather than
silently flattering the detectors; then one small real scenario end to end through ``ioc score``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ioc.composition.cli import cli
from ioc.composition.scoring import (
    SPEC,
    Alert,
    KindScore,
    KindSpec,
    ScenarioScore,
    ScoreReport,
    Tolerance,
    Truth,
    _aqi_spans,
    _noise_spans,
    alerts_of,
    crossing_lead,
    episodes,
    match_kind,
    overall_of,
    quantile,
    scenario_names,
    targets_of,
)
from ioc.models import Finding

T0 = datetime(2025, 11, 16, tzinfo=UTC)
E0 = T0.timestamp()
H = 3600.0


def finding(minute: float, severity: str | None, rule: str = "flood_alarm_level", sensor: str = "G",
            band: int | None = None, family: str = "warning") -> Finding:
    return Finding(sensor, rule, "flood", "water_level_m", T0 + timedelta(minutes=minute), severity, 1.0,
                   detail={} if band is None else {"band": band}, family=family)


# -- episodes: the alerts table's open / escalate / de-escalate / resolve --------------------------


def test_episodes_open_change_and_resolve_like_the_alerts_table() -> None:
    eps = episodes([
        finding(0, None),  # a clear with nothing open: ignored
        finding(10, "info"), finding(20, "info"),  # same severity again: no change
        finding(30, "critical"), finding(40, "warning"), finding(50, None),
        finding(60, "warning", rule="flood_projection"),  # another rule: its own episode
        finding(70, "info"),  # reopens, still open at the end
    ])
    got = [(e.rule, (e.start - E0) / 60, None if e.end is None else (e.end - E0) / 60, [s[1] for s in e.steps])
           for e in eps]
    assert got == [
        ("flood_alarm_level", 10.0, 50.0, [0, 2, 1]),
        ("flood_projection", 60.0, None, [1]),
        ("flood_alarm_level", 70.0, None, [0]),
    ]


def test_flood_episodes_split_per_level_and_skip_levels_the_gauge_lacks() -> None:
    eps = episodes([finding(0, "info", band=1), finding(60, "critical", band=3), finding(120, "warning", band=2),
                    finding(180, None)])
    spans = {(a.kind, (a.start - E0) / 60, (a.end - E0) / 60) for a in alerts_of(eps, E0 + 10 * H, {"G": [1, 2, 3]})}
    assert spans == {("flood_bd1", 0.0, 180.0), ("flood_bd2", 60.0, 180.0), ("flood_bd3", 60.0, 120.0)}
    no_bd2 = alerts_of(eps, E0 + 10 * H, {"G": [1, 3]})  # e.g. HYD_DUC_MY has no BĐ II
    assert sorted(a.kind for a in no_bd2) == ["flood_bd1", "flood_bd3"]
    open_end = alerts_of(episodes([finding(0, "warning", rule="sensor_silent", family="health")]), E0 + H, {})
    assert [(a.kind, a.end - E0) for a in open_end] == [("fault_silent", H)]  # still open: ends with the run


# -- matching ----------------------------------------------------------------------------------------


def test_precision_recall_delays_and_false_alerts_are_exact() -> None:
    spec = KindSpec("x", "x", Tolerance(600.0, 300.0, 1.0), ("x",), "hazard")
    truths = [
        Truth("x", "S", E0, E0 + H, "a", True, interval_s=60.0),  # window [start - 10 min, end + 5 min + 1 interval]
        Truth("x", "S", E0 + 5 * H, E0 + 6 * H, "b", True, interval_s=60.0),
        Truth("x", "S", E0 + 10 * H, E0 + 11 * H, "c", False, interval_s=60.0),  # computed truth, missed
        Truth("x", "T", E0, E0 + H, "d", True, interval_s=60.0),  # another sensor, missed
    ]
    alerts = [
        Alert("x", "S", "r", E0 - 300.0, E0 + 600.0),  # opened 5 min early (inside the tolerance): delay 0
        Alert("x", "S", "r", E0 + H + 330.0, E0 + 2 * H),  # 5.5 min after a's end: within 6 min, TP
        Alert("x", "S", "r", E0 + 5 * H + 1800.0, E0 + 5 * H + 2000.0),  # b: delay 30 min
        Alert("x", "S", "r", E0 + 8 * H, E0 + 9 * H),  # nothing there: false
        Alert("x", "T", "r", E0 + 2 * H, E0 + 3 * H),  # an hour after d's window: false, d missed
        Alert("y", "S", "r", E0 + 10 * H, E0 + 11 * H),  # another kind: not scored here
    ]
    s = match_kind(spec, alerts, truths, sensor_days=4.0)
    assert (s.alerts, s.tp, s.fp, s.truths, s.labelled, s.detected) == (5, 3, 2, 4, 3, 2)
    assert s.precision == pytest.approx(0.6)
    assert s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(2 * 0.6 * 0.5 / 1.1)
    assert s.fa_per_sensor_day == pytest.approx(0.5)
    assert s.delays_s == [0.0, 1800.0]
    assert s.missed == ["S c", "T d"]
    assert quantile(s.delays_s, 0.5) == pytest.approx(900.0)
    assert quantile(s.delays_s, 0.9) == pytest.approx(1620.0)


def test_a_label_needs_its_minimum_severity_and_the_delay_counts_from_the_first_alert() -> None:
    spec = KindSpec("x", "x", Tolerance(0.0, 0.0), ("x",), "hazard")
    label = Truth("x", "S", E0, E0 + 4 * H, "rain", True, min_rank=2)  # expects critical
    info_only = Alert("x", "S", "r", E0 - H, E0 + 5 * H, ((E0 - H, 0), (E0 + H, 1)))
    s = match_kind(spec, [info_only], [label], 1.0)
    assert (s.tp, s.detected, s.missed) == (1, 0, ["S rain"])  # right event, never critical: TP but missed
    escalating = Alert("x", "S", "r", E0 - H, E0 + 5 * H, ((E0 - H, 0), (E0 + 2 * H, 2)))
    s = match_kind(spec, [escalating], [label], 1.0)
    assert (s.detected, s.delays_s) == (1, [0.0])  # alert already open when the event began
    late = Alert("x", "S", "r", E0 + 30 * 60, E0 + 5 * H, ((E0 + 30 * 60, 2),))
    assert match_kind(spec, [late], [label], 1.0).delays_s == [1800.0]


def test_levels_and_metrics_must_agree_and_a_crossing_allows_no_early_alarm() -> None:
    spec = SPEC["flood_bd3"]  # no slack before, one reporting interval after
    bd3 = Truth("flood_bd3", "G", E0, E0 + H, "x", True, level=3, interval_s=3600.0)
    early = Alert("flood_bd3", "G", "flood_alarm_level", E0 - 7200.0, E0 - 1.0, level=3)  # a spike before it
    wrong_level = Alert("flood_bd3", "G", "flood_alarm_level", E0, E0 + H, level=2)
    s = match_kind(spec, [early, wrong_level], [bd3], 1.0)
    assert (s.tp, s.fp, s.detected) == (0, 2, 0)
    drift = SPEC["fault_drift"]  # detected by an anomaly on the drifting metric only
    label = Truth("fault_drift", "A", E0, E0 + 10 * H, "no2_drift", True, metric="no2", interval_s=300.0)
    other_metric = Alert("anomaly", "A", "anomaly_level_shift", E0 + H, E0 + 2 * H, metric="pm25")
    same_metric = Alert("anomaly", "A", "anomaly_level_shift", E0 + 3 * H, E0 + 4 * H, metric="no2")
    assert match_kind(drift, [other_metric], [label], 1.0).detected == 0
    s = match_kind(drift, [other_metric, same_metric], [label], 1.0)
    assert (s.detected, s.delays_s, s.alerts) == (1, [3 * H], 0)  # the anomaly alerts are scored elsewhere


def test_anomalies_are_correct_on_any_event_of_their_sensor_or_in_a_storm() -> None:
    spec = SPEC["anomaly"]  # 1 h before, 6 h after
    flood = Truth("flood_bd1", "G", E0, E0 + H, "f", True, level=1)
    alerts = [Alert("anomaly", "G", "anomaly_zscore", E0 + 6.5 * H, E0 + 7 * H),  # 5.5 h after the flood: ok
              Alert("anomaly", "G", "anomaly_zscore", E0 + 8 * H, E0 + 9 * H),  # 7 h after: false
              Alert("anomaly", "N", "anomaly_seasonal", E0 + 20 * H, E0 + 21 * H)]  # in the storm: ok
    s = match_kind(spec, alerts, [], 2.0, explain=[flood], storms=[(E0 + 19 * H, E0 + 30 * H)])
    assert (s.tp, s.fp, s.recall) == (2, 1, None)


def test_false_hazard_alerts_during_a_health_fault_are_counted_as_muted() -> None:
    spec = SPEC["flood_bd1"]
    spike_alarm = Alert("flood_bd1", "G", "flood_alarm_level", E0, E0 + H, level=1)
    spike_health = Alert("fault_spike", "G", "sensor_spike", E0, E0 + H)
    s = match_kind(spec, [spike_alarm], [], 1.0, health=[spike_health])
    assert (s.fp, s.fp_muted) == (1, 1)


# -- lead time -----------------------------------------------------------------------------------------


def test_lead_time_is_the_crossing_minus_the_first_warning_in_force() -> None:
    t = Truth("flood_bd3", "G", E0, E0 + 5 * H, "x", True, level=3, interval_s=3600.0)
    alarm = Alert("flood_bd3", "G", "flood_alarm_level", E0, E0 + 5 * H, level=3)
    forecast = Alert("flood_forecast", "G", "flood_projection", E0 - 5400.0, E0 + 60.0, level=3)
    forecast_bd2 = Alert("flood_forecast", "G", "flood_projection", E0 - 3 * H, E0, level=2)  # another level
    stale = Alert("flood_forecast", "G", "flood_projection", E0 - 9 * H, E0 - 6.5 * H, level=3)  # over 6 h before
    assert crossing_lead(t, [alarm, forecast, forecast_bd2, stale]) == (5400.0, "flood_projection")
    assert crossing_lead(t, [alarm, stale, forecast_bd2]) == (0.0, "flood_alarm_level")
    late = Alert("flood_bd3", "G", "flood_alarm_level", E0 + 1800.0, E0 + 5 * H, level=3)
    assert crossing_lead(t, [late]) == (-1800.0, "flood_alarm_level")
    assert crossing_lead(t, [Alert("flood_bd3", "OTHER", "flood_alarm_level", E0, E0 + H, level=3)]) == (None, None)
    # a forecast opened 8 h ahead and still in force 6 h before counts from when it opened
    long = Alert("flood_forecast", "G", "flood_projection", E0 - 8 * H, E0 + 60.0, level=3)
    assert crossing_lead(t, [alarm, long]) == (8 * H, "flood_projection")


# -- aggregation and targets -------------------------------------------------------------------------


def test_overall_counts_every_alert_but_not_forecasts_or_wind_in_recall() -> None:
    kinds = [KindScore("flood_bd3", truths=4, detected=4, alerts=5, tp=4, fp=1, sensor_days=10.0),
             KindScore("flood_forecast", truths=4, detected=2, alerts=6, tp=3, fp=3, sensor_days=10.0),
             KindScore("storm_wind", truths=7, detected=0, sensor_days=10.0),
             KindScore("fault_stuck", truths=2, detected=1, alerts=1, tp=1, sensor_days=10.0)]
    o = overall_of(kinds)
    assert (o.alerts, o.tp, o.fp, o.truths, o.detected) == (12, 8, 4, 6, 5)
    assert o.fa_per_sensor_day == pytest.approx(0.4)


def _scenario(name: str, kinds: dict[str, KindScore], sensors: int = 10) -> ScenarioScore:
    return ScenarioScore(name, 24.0, sensors, 0, 0, 0, 0.0, kinds, [])


def test_targets_judge_recall_precision_false_alerts_and_leads() -> None:
    normal = _scenario("normal_day", {"noise": KindScore("noise", alerts=3, tp=1, fp=2, sensor_days=10.0)})
    faults = _scenario("sensor_faults", {
        "flood_bd1": KindScore("flood_bd1", truths=20, detected=19, alerts=20, tp=19, fp=1, sensor_days=10.0),
        "fault_stuck": KindScore("fault_stuck", truths=10, detected=9, alerts=9, tp=9, sensor_days=10.0,
                                 delays_s=[60.0, 400.0]),
    })
    got = {t.name: (t.value, t.met) for t in targets_of(ScoreReport([normal, faults]))}
    assert got["recall, alarm-level crossings"] == ("0.950 (19/20)", True)
    assert got["precision, alarm-level crossings"] == ("0.950 (19/20)", True)
    assert got["recall, sensor faults"] == ("0.900 (9/10)", False)
    assert got["false alerts per sensor-day, normal_day"] == ("0.200 (2 in 10 sensor-days)", False)
    assert got["other faults raised within 5 min"] == ("worst 7 min (stuck 7 min)", False)


def test_all_includes_the_realistic_national_variants() -> None:
    names = scenario_names("all")
    assert {"normal_day", "sensor_faults", "typhoon_damrey", "flood_2025_11",
            "flood_2025_11_national", "typhoon_damrey_national"} <= set(names)
    assert len(names) == len(set(names))
    assert scenario_names("flood_2025_11@national") == ["flood_2025_11@national"]


# -- computed truths -------------------------------------------------------------------------------


def test_noise_truth_uses_the_qcvn26_limit_of_each_local_hour() -> None:
    start = datetime(2025, 3, 12, 12, tzinfo=UTC).timestamp()  # 19:00 in Nha Trang
    t = start + np.arange(0, 4 * 3600, 300, dtype=np.float64)  # 19:00-23:00 local, 5-minute LAeq
    spans = _noise_spans(t, np.full(len(t), 60.0), (70.0, 55.0))  # 60 dBA: under the day limit, over the night's
    assert spans == [(start + 2 * H, start + 4 * H)]  # 21:00-23:00 local


def test_air_truth_is_the_hourly_vn_aqi_with_nowcast() -> None:
    t = E0 + np.arange(0, 6 * 3600, 600, dtype=np.float64)
    pm25 = np.where(t >= E0 + 3 * H, 120.0, 10.0)  # three clean hours, then 120 µg/m³
    spans = _aqi_spans(t, {"pm25": pm25})
    # NowCast: hour 3 weights (10/120 -> w = 0.5): (120 + 0.5*10 + 0.25*10 + 0.125*10) / 1.875 = 68.7 -> AQI 158
    assert spans == [(E0 + 3 * H, E0 + 6 * H)]


# -- end to end: one small real scenario through the CLI --------------------------------------------------


def test_score_demo_through_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["score", "--scenario", "demo", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["version"] == 1 and set(doc) == {"version", "method", "scenarios", "total", "targets"}
    (sc,) = doc["scenarios"]
    assert sc["scenario"] == "demo" and sc["readings"] > 7000 and sc["sensors"] == 19
    assert {"flood_bd1", "flood_bd2", "flood_bd3", "flood_forecast", "heavy_rain", "congestion",
            "fault_stuck"} <= set(sc["kinds"])
    for k in sc["kinds"].values():
        assert k["tp"] + k["fp"] == k["alerts"] and 0 <= k["detected"] <= k["truths"]
        for key in ("precision", "recall", "f1", "false_alerts_per_sensor_day", "delay_median_s", "delay_p90_s"):
            assert key in k
            assert k[key] is None or k[key] >= 0 or key.startswith("lead")
    assert sc["kinds"]["flood_bd3"]["truths"] == 2  # Đồng Trăng and Diên Phú pass BĐ III in demo
    assert {c["sensor_id"] for c in sc["crossings"] if c["level"] == 3} == {"HYD_DONG_TRANG", "HYD_DIEN_PHU"}
    assert all(set(c) == {"sensor_id", "level", "crossing", "labelled", "lead_s", "warned_by"} for c in sc["crossings"])
    assert all({"target", "value", "goal", "met"} == set(t) for t in doc["targets"])

    plots = tmp_path / "plots"
    res = runner.invoke(cli, ["score", "--scenario", "demo", "--plot", str(plots)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for title in ("ioc score --scenario demo", "BĐ III crossing", "overall", "BĐ crossings and warning lead",
                  "targets"):
        assert title in res.stdout
    pngs = sorted((plots / "demo").glob("*.png"))
    assert len(pngs) == 9  # every labelled event of demo except the malformed payloads
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
