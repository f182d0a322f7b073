"""Exact behaviour of the anomaly detectors, the model file and `ioc train`."""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner

from detectors.common import hour_of_week
from detectors.isolation_forest import IsolationForestDetector, average_path_length
from detectors.level_shift import LevelShiftDetector
from detectors.robust_zscore import RobustZScoreDetector
from detectors.seasonal import SeasonalBaselineDetector
from detectors.sensor_set import anomaly_detectors, sensor_detectors, silence_of, update_all
from detectors.silence import check_silence
from ioc.anomaly_model import (
    FORMAT,
    FORMAT_VERSION,
    AnomalyModelError,
    feature_row,
    load_model,
    save_model,
    train,
)
from ioc.composition.cli import cli
from ioc.models import Reading
from ioc.wire import encode_payload
from tests.unit.detector_cases_anomaly import T0, _traffic_rows, traffic_model


def noise(i: int) -> float:
    return ((i * 2654435761) % 1000) / 1000.0 - 0.5


def rd(i: int, metrics: dict[str, float], *, step_s: int = 300, sid: str = "S", kind: str = "noise") -> Reading:
    return Reading(sid, kind, T0 + timedelta(seconds=step_s * i), i + 1, metrics)


def run(det: object, readings: list[Reading]) -> list[tuple[int, str | None]]:
    return [(i, f.severity) for i, r in enumerate(readings) for f in det.update(r)]  # type: ignore[attr-defined]


# ---------------------------------------------------------------- robust z-score
def test_zscore_is_quiet_while_warming_and_on_one_stray_reading() -> None:
    det = RobustZScoreDetector("N", {"laeq_dba": 0.5}, warmup=50, persist=3)
    vals = [60 + noise(i) for i in range(120)]
    vals[10] = 120.0  # during warm-up
    vals[80] = 120.0  # a single spike is the health detectors' business
    assert run(det, [rd(i, {"laeq_dba": v}) for i, v in enumerate(vals)]) == []
    assert det.ready


def test_zscore_raises_on_a_persistent_excursion_and_clears() -> None:
    det = RobustZScoreDetector("N", {"laeq_dba": 0.5}, warmup=50, persist=3, clear_after=3)
    vals = [60 + noise(i) for i in range(100)] + [85.0] * 6 + [60 + noise(i) for i in range(10)]
    found = [(i, f.severity, round(f.score, 2)) for i, r in enumerate(rd(i, {"laeq_dba": v}) for i, v in enumerate(vals))
             for f in det.update(r)]
    assert [(i, s) for i, s, _ in found] == [(102, "info"), (108, None)]
    assert 0.5 < found[0][2] < 1.0


def test_zscore_scale_floor_keeps_a_quantised_gauge_quiet() -> None:
    det = RobustZScoreDetector("G", {"water_level_m": 0.01}, warmup=30, persist=2)
    vals = [3.0] * 200
    for i in range(0, 200, 17):
        vals[i] = 3.01
    assert run(det, [rd(i, {"water_level_m": v}, kind="water_level") for i, v in enumerate(vals)]) == []


# ---------------------------------------------------------------- level shift (CUSUM)
def test_level_shift_raises_on_a_step_and_clears_once_the_baseline_catches_up() -> None:
    det = LevelShiftDetector("A", {"no2": 1.0}, alpha=0.02, k=0.5, h=10.0, warmup=60)
    vals = [20 + 2 * noise(i) for i in range(100)] + [30 + 2 * noise(i) for i in range(400)]
    found = run(det, [rd(i, {"no2": v}, kind="air") for i, v in enumerate(vals)])
    assert found[0] == (101, "info")  # two readings of a 10-unit shift accumulate past h
    assert found[1][1] is None and found[1][0] < 400
    assert len(found) == 2


def test_level_shift_catches_a_slow_drift_that_the_zscore_tracks() -> None:
    vals = [18 + 3 * noise(i) for i in range(300)] + [18 + 3 * noise(i) + 8 * i / 12 for i in range(60)]
    readings = [rd(i, {"no2": v}, kind="air") for i, v in enumerate(vals)]
    shift = LevelShiftDetector("A", {"no2": 1.0}, k=1.0, h=20.0, warmup=100)
    found = run(shift, readings)
    assert found and found[0][1] == "info" and 300 < found[0][0] < 330  # within 2.5 h of 8 µg/m³/h


# ---------------------------------------------------------------- seasonal baseline
def test_hour_of_week_is_local_time() -> None:
    assert hour_of_week(datetime(2025, 10, 5, 17, 0, tzinfo=UTC).timestamp()) == 0  # Mon 00:00 in Nha Trang
    assert hour_of_week(datetime(2025, 10, 5, 16, 59, tzinfo=UTC).timestamp()) == 167  # Sun 23:59


def _flow(local_h: int) -> float:
    return 300 + 900 * math.exp(-((local_h - 7.5) / 1.2) ** 2) + 800 * math.exp(-((local_h - 17.5) / 1.5) ** 2)


def test_seasonal_flags_rush_hour_traffic_at_night_not_at_rush_hour() -> None:
    det = SeasonalBaselineDetector("T", {"flow_vph": 20.0}, interval_s=3600, min_visits=3, persist=2, clear_after=2)
    readings = []
    for k in range(24 * 6):
        h = (k + 7) % 24
        flow = _flow(h) * (1 + 0.04 * noise(k))
        if k >= 24 * 5 and h in (2, 3, 4):
            flow = _flow(8)  # morning-rush volume at 02:00-04:00
        readings.append(rd(k, {"flow_vph": flow}, step_s=3600, kind="traffic"))
    found = [(k, f.severity, f.detail.get("hour_of_week")) for k, r in enumerate(readings) for f in det.update(r)]
    night = 24 * 5 + (2 - 7) % 24
    assert [(k, s) for k, s, _ in found] == [(night + 1, "info"), (night + 4, None)]
    assert not det.weekly or found[0][2] == hour_of_week(readings[night + 1].ts.timestamp())


def test_seasonal_needs_min_visits_before_judging() -> None:
    det = SeasonalBaselineDetector("T", {"flow_vph": 20.0}, interval_s=3600, min_visits=3, persist=1)
    readings = [rd(k, {"flow_vph": 1000.0 if k == 30 else _flow((k + 7) % 24)}, step_s=3600) for k in range(48)]
    assert run(det, readings) == []  # each hour seen at most twice: not warm


# ---------------------------------------------------------------- isolation forest
def test_compiled_forest_scores_exactly_like_sklearn() -> None:
    am = traffic_model()
    det = IsolationForestDetector.from_model(am)
    rows = [feature_row(r.ts.timestamp(), r.metrics, am.metadata.features) for r in _traffic_rows(200)]
    probe = [row for row in rows if row is not None] + [[3.0, 150.0, 90.0, 0.0, 1.0], [80.0, 5000.0, 0.0, -1.0, 0.0]]
    expected = -am.model.score_samples(np.array(probe))
    assert [det.score(row) for row in probe] == pytest.approx(expected.tolist(), abs=1e-12)
    assert average_path_length(256) == pytest.approx(10.2448, abs=1e-4)


def test_iforest_raises_on_a_jam_and_clears() -> None:
    det = IsolationForestDetector.from_model(traffic_model(), persist=2, clear_after=3)
    found = run(det, _traffic_rows(300, jam_from=200))
    assert found == [(201, "info"), (214, None)]


def test_iforest_skips_readings_without_all_its_metrics() -> None:
    det = IsolationForestDetector.from_model(traffic_model(), persist=1)
    assert det.update(rd(0, {"speed_kmh": 3.0}, kind="traffic")) == []


# ---------------------------------------------------------------- model file
def test_model_round_trips_with_metadata(tmp_path: Path) -> None:
    am = traffic_model()
    path = save_model(am, tmp_path / "m.joblib")
    back = load_model(path, sensor_id="TRF_TRAN_PHU_24")
    assert back.metadata == am.metadata
    assert back.metadata.features == ("speed_kmh", "flow_vph", "occupancy_pct", "hour_sin", "hour_cos")
    assert 0.5 < back.metadata.threshold < 1.0
    row = [30.0, 900.0, 15.0, 0.0, 1.0]
    assert IsolationForestDetector.from_model(back).score(row) == IsolationForestDetector.from_model(am).score(row)


def test_missing_model_is_named_with_the_command_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(AnomalyModelError, match=r"not found; retrain it: ioc train"):
        load_model(tmp_path / "nope.joblib")


def test_garbage_and_foreign_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(AnomalyModelError, match="not a readable anomaly model"):
        load_model(junk)
    other = tmp_path / "other.joblib"
    joblib.dump({"some": "dict"}, other)
    with pytest.raises(AnomalyModelError, match="not an IOC anomaly model"):
        load_model(other)


def _rewrite(path: Path, **changes: object) -> None:
    payload = joblib.load(path)
    for k, v in changes.items():
        if k in payload:
            payload[k] = v
        else:
            payload["metadata"][k] = v
    joblib.dump(payload, path)


def test_incompatible_models_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = save_model(traffic_model(), tmp_path / "m.joblib")
    with pytest.raises(AnomalyModelError, match="trained for sensor TRF_TRAN_PHU_24, not TRF_OTHER"):
        load_model(path, sensor_id="TRF_OTHER")
    _rewrite(path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(AnomalyModelError, match=f"model format v{FORMAT_VERSION + 1}, this build reads v{FORMAT_VERSION}"):
        load_model(path)
    path = save_model(traffic_model(), tmp_path / "m2.joblib")
    _rewrite(path, sklearn_version="0.24.2")
    with pytest.raises(AnomalyModelError, match="trained with scikit-learn 0.24.2"):
        load_model(path)
    path = save_model(traffic_model(), tmp_path / "m3.joblib")
    _rewrite(path, features=["speed_kmh"])
    with pytest.raises(AnomalyModelError, match="takes 5 features but the metadata lists 1"):
        load_model(path)
    assert joblib.load(path)["format"] == FORMAT


def test_training_needs_enough_complete_rows() -> None:
    rows = [(T0 + timedelta(minutes=i), {"pm25": 10.0}) for i in range(10)]
    with pytest.raises(AnomalyModelError, match="need at least 50"):
        train(rows, sensor_id="AIR_X", kind="air", trained_at=T0)


# ---------------------------------------------------------------- ioc train
def _wide_csv(path: Path) -> Path:
    lines = ["ts,sensor_id,speed_kmh,flow_vph,occupancy_pct"]
    for r in _traffic_rows(400):
        m = r.metrics
        lines.append(f"{r.ts.isoformat()},TRF_TRAN_PHU_24,{m['speed_kmh']},{m['flow_vph']},{m['occupancy_pct']}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ioc_train_from_csv_writes_a_loadable_model(tmp_path: Path) -> None:
    out = tmp_path / "models" / "trf.joblib"
    res = CliRunner().invoke(cli, ["train", "--from", str(_wide_csv(tmp_path / "h.csv")), "--out", str(out),
                                   "--trees", "20", "--since", "2025-10-06T00:00:00+00:00"])
    assert res.exit_code == 0, res.output
    am = load_model(out, sensor_id="TRF_TRAN_PHU_24")
    assert am.metadata.kind == "traffic" and am.metadata.n_samples == 400
    assert am.metadata.params["n_estimators"] == 20
    assert "hour_sin" in am.metadata.features  # traffic follows the clock


def test_ioc_train_from_a_recording(tmp_path: Path) -> None:
    rec = tmp_path / "run.jsonl.gz"
    with gzip.open(rec, "wt", encoding="utf-8") as fh:
        for r in _traffic_rows(300):
            payload = json.loads(encode_payload(r.sensor_id, r.ts, r.seq, r.metrics))
            fh.write(json.dumps({"t": r.ts.timestamp(), "topic": f"khanhhoa/v1/traffic/{r.sensor_id}",
                                 "payload": payload}) + "\n")
        fh.write(json.dumps({"t": 0, "topic": "khanhhoa/v1/air/AIR_X", "payload": {"x": 1}}) + "\n")
    out = tmp_path / "m.joblib"
    res = CliRunner().invoke(cli, ["train", "--from", str(rec), "--sensor", "TRF_TRAN_PHU_24", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert load_model(out).metadata.n_samples == 300


def test_ioc_train_refuses_ambiguous_or_missing_sources(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "m.joblib")])
    assert res.exit_code == 2 and "exactly one of --from FILE or --from-db" in res.output
    res = CliRunner().invoke(cli, ["train", "--from-db", "--out", str(tmp_path / "m.joblib")])
    assert res.exit_code == 2 and "--from-db needs --sensor" in res.output
    res = CliRunner().invoke(cli, ["train", "--from", str(tmp_path / "none.csv"), "--out", str(tmp_path / "m.joblib")])
    assert res.exit_code != 0 and "no such file" in str(res.exception)


# ---------------------------------------------------------------- the whole set on an ordinary day
def test_anomaly_set_follows_the_family_table() -> None:
    rules = {k: [d.rule for d in anomaly_detectors("X", k, ms, 300)] for k, ms in (
        ("traffic", ["speed_kmh", "flow_vph", "occupancy_pct"]), ("rain", ["rain_mm"]), ("noise", ["laeq_dba"]),
        ("water_level", ["water_level_m"]))}
    assert rules == {
        "traffic": ["anomaly_zscore", "anomaly_seasonal"],
        "rain": [],
        "noise": ["anomaly_zscore", "anomaly_seasonal"],
        "water_level": ["anomaly_zscore", "anomaly_level_shift"],
    }
    with pytest.raises(ValueError, match="is for TRF_TRAN_PHU_24, not X"):
        anomaly_detectors("X", "traffic", ["speed_kmh"], 60, model=traffic_model())


def test_normal_day_after_a_warm_up_day_raises_almost_nothing() -> None:
    """The false-alert baseline: every sensor of sensors_sim's normal_day, all health and anomaly
    detectors, a silence timer every 30 s, after one (different-seed) day of warm-up."""
    from sensors_sim.engine import simulate

    warm, day = simulate("normal_day", seed=4242), simulate("normal_day")
    shift = -86400.0
    dets = {d.spec.sensor_id: sensor_detectors(d.spec.sensor_id, d.spec.kind, d.spec.metric_names, d.spec.interval_s,
                                               alarm_levels=d.spec.alarm_levels, extra=d.spec.extra)
            for d in day.deliveries}
    events = []
    for sim, dt in ((warm, shift), (day, 0.0)):
        for d in sim.deliveries:
            names = d.spec.metric_names
            for i in np.flatnonzero(d.bad == 0):
                events.append((float(d.emit[i]) + dt, d.spec.sensor_id, int(d.ts[i]) + dt, int(d.seq[i]),
                               d.values[i].tolist(), d.spec.kind, names))
    events.sort(key=lambda e: e[0])
    raised = []
    tick = events[0][0]
    for emit, sid, ts, seq, values, kind, names in events:
        while tick <= emit:
            raised += check_silence([silence_of(x) for x in dets.values()], datetime.fromtimestamp(tick, UTC))[1]
            tick += 30.0
        r = Reading(sid, kind, datetime.fromtimestamp(ts, UTC), seq, dict(zip(names, values, strict=True)))
        raised += [f for f in update_all(dets[sid], r, datetime.fromtimestamp(emit, UTC)) if f.severity]
    in_day = [f for f in raised if f.ts.timestamp() >= day.scenario.t0]
    print("raised on normal_day:", len(in_day), [(f.sensor_id, f.rule) for f in in_day])
    assert len(in_day) <= 0.05 * len(dets), [(f.sensor_id, f.rule, f.ts.isoformat()) for f in in_day]
