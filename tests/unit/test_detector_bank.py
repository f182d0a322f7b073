"""The stream stage's detector bank: which detectors a sensor gets, state in the table, live registry."""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np

from ioc.models import Reading
from ioc.storage.sensors_store import SensorEntry
from streams.detection import DetectorBank, build_detectors

T0 = datetime(2025, 11, 18, tzinfo=UTC)
GAUGE = SensorEntry("HYD_DONG_TRANG", "water_level", "Đồng Trăng", ("water_level_m",), 300.0,
                    {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}, {"record_m": 13.42, "max_rise_m_per_h": 1.77})
RAIN = SensorEntry("RAIN_X", "rain", "rain", ("rain_mm",), 300.0, None, {})


def _rise(n: int, start: int = 0) -> list[Reading]:
    return [Reading(GAUGE.sensor_id, "water_level", T0 + timedelta(minutes=5 * i), i,
                    {"water_level_m": round(6.0 + 0.03 * i, 2)}) for i in range(start, start + n)]


def _rules(findings: list[Any]) -> list[tuple[str, str | None]]:
    return [(f.rule, f.severity) for f in findings]


def test_a_gauge_gets_health_anomaly_and_warning_detectors() -> None:
    rules = {d.rule for d in build_detectors(GAUGE)}
    assert {"flood_alarm_level", "flood_projection", "sensor_range", "sensor_silent"} <= rules
    assert "flood_alarm_level" not in {d.rule for d in build_detectors(RAIN)}


def test_state_lives_in_the_table_and_a_new_bank_carries_on_exactly() -> None:
    readings = _rise(200)
    whole = _rules(DetectorBank({GAUGE.sensor_id: GAUGE}).process(readings, {}))
    assert ("flood_alarm_level", "critical") in whole
    assert any(r == "flood_projection" for r, _ in whole)
    for cut in (37, 120):
        for carried in ("raw bytes", "stdlib JSON text", "a dict"):
            table: dict[str, Any] = {}
            before = _rules(DetectorBank({GAUGE.sensor_id: GAUGE}).process(readings[:cut], table))
            assert all(isinstance(v, bytes) for v in table.values())  # the table's codec is raw
            if carried == "stdlib JSON text":  # a changelog written before the raw codec
                table = {k: json.dumps(json.loads(v)).encode() for k, v in table.items()}
            elif carried == "a dict":
                table = {k: json.loads(v) for k, v in table.items()}
            after = _rules(DetectorBank({GAUGE.sensor_id: GAUGE}).process(readings[cut:], table))  # restarted
            assert before + after == whole, carried


def test_registry_changes_take_effect_live() -> None:
    bank = DetectorBank({GAUGE.sensor_id: GAUGE})
    table: dict[str, Any] = {}
    bank.process(_rise(50), table)
    no_levels = SensorEntry(**{**GAUGE.__dict__, "alarm_levels": None})
    bank.update_registry({GAUGE.sensor_id: no_levels})
    later = bank.process(_rise(150, start=50), table)
    assert not [f for f in later if f.rule.startswith("flood")], "a removed alarm level must stop its warnings"
    bank.update_registry({})  # retired
    assert bank.process(_rise(10, start=200), table) == []


def test_a_registry_change_between_checkpoints_keeps_what_the_detectors_saw_since() -> None:
    readings = _rise(200)
    whole = _rules(DetectorBank({GAUGE.sensor_id: GAUGE}).process(readings, {}))
    bank = DetectorBank({GAUGE.sensor_id: GAUGE}, defer_writes=True)
    table: dict[str, Any] = {}
    before = _rules(bank.process(readings[:60], table))
    bank.flush(list(bank.dirty), table)  # a checkpoint, then 60 more readings not yet checkpointed
    before += _rules(bank.process(readings[60:120], table))
    bank.update_registry({GAUGE.sensor_id: SensorEntry(**{**GAUGE.__dict__, "name": "Đồng Trăng (mới)"})})
    after = _rules(bank.process(readings[120:], table))
    assert before + after == whole


def test_silence_is_raised_by_the_timer_and_survives_a_restart() -> None:
    table: dict[str, Any] = {}
    DetectorBank({GAUGE.sensor_id: GAUGE}).process(_rise(30), table)
    last = T0 + timedelta(minutes=5 * 29)
    fresh = DetectorBank({GAUGE.sensor_id: GAUGE})  # after a restart: only the table is left
    assert fresh.check_silence([GAUGE.sensor_id], table, last + timedelta(minutes=6), None) == []
    found = fresh.check_silence([GAUGE.sensor_id], table, last + timedelta(hours=1), None)
    assert _rules(found) and found[0].rule == "sensor_silent" and found[0].severity is not None
    assert fresh.check_silence([GAUGE.sensor_id], table, last + timedelta(hours=2), None) == []  # raised once


def _ticks(bank: DetectorBank, table: dict[str, Any], upto: datetime) -> list[Any]:
    return bank.silence_ticks([GAUGE.sensor_id], table, upto, 15.0, None)


def test_the_silence_tick_judges_by_the_detectors_a_registry_change_rebuilt() -> None:
    bank = DetectorBank({GAUGE.sensor_id: GAUGE})
    table: dict[str, Any] = {}
    bank.process(_rise(30), table)
    last = T0 + timedelta(minutes=5 * 29)  # silent after 2.5 × 300 s = 12.5 min at the old interval
    bank.update_registry({GAUGE.sensor_id: replace(GAUGE, interval_s=3600.0)})  # now 2.5 h
    assert _ticks(bank, table, last + timedelta(minutes=20)) == []
    found = _ticks(bank, table, last + timedelta(hours=3))
    assert _rules(found) == [("sensor_silent", "warning")] and found[0].threshold == 9000.0


def test_the_silence_tick_of_a_sensor_reloaded_from_its_checkpoint_uses_the_reloaded_state() -> None:
    bank = DetectorBank({GAUGE.sensor_id: GAUGE}, defer_writes=True)
    table: dict[str, Any] = {}
    bank.process(_rise(10), table)
    bank.flush(list(bank.dirty), table)  # checkpoint: last seen at reading 9
    bank.process(_rise(20, start=10), table)  # live only: last seen at reading 29
    bank.forget(GAUGE.sensor_id)  # a takeover reloads it from the table
    at = T0 + timedelta(minutes=5 * 9 + 13)  # 13 min after reading 9, long before 29's deadline
    found = _ticks(bank, table, at)
    assert _rules(found) == [("sensor_silent", "warning")]
    assert found[0].detail["last_seen"].startswith((T0 + timedelta(minutes=45)).isoformat()[:19])


def test_non_finite_values_never_become_findings() -> None:
    bad = [Reading(GAUGE.sensor_id, "water_level", T0 + timedelta(minutes=i), i, {"water_level_m": v})
           for i, v in enumerate([float("inf"), float("nan"), -float("inf"), 1e308])]
    for f in DetectorBank({GAUGE.sensor_id: GAUGE}).process(bad, {}):
        assert f.value == f.value and abs(f.value) != float("inf")


def _same(a: Any, b: Any, path: str = "") -> None:
    """Deep equality of two detectors' whole configuration and state (numpy-aware)."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple | deque):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif hasattr(a, "__dict__") or hasattr(a, "__slots__"):
        assert type(a) is type(b), path
        names = set(getattr(a, "__dict__", {})) | set(getattr(type(a), "__slots__", ()))
        for n in names:
            _same(getattr(a, n), getattr(b, n), f"{path}.{n}")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_sensors_sharing_a_template_get_detectors_equal_to_their_own_build() -> None:
    """The bank copies one template per parameter set; every copy must equal what building that
    sensor alone gives, id, name and all, and parameters that differ must not share a template."""
    entries = [
        GAUGE,
        replace(GAUGE, sensor_id="HYD_OTHER", name="Trạm khác"),  # same parameters, other id and name
        replace(GAUGE, sensor_id="HYD_LOWER", alarm_levels={"bd1": 3.0, "bd2": 4.0, "bd3": 5.0}),
        replace(GAUGE, sensor_id="HYD_FAST", interval_s=60.0),
        replace(GAUGE, sensor_id="HYD_RECORD", extra={"record_m": 6.5, "max_rise_m_per_h": 0.5}),
        replace(RAIN, sensor_id="RAIN_NAMELESS", name=""),
        RAIN,
        SensorEntry("TRF_A", "traffic", "Trần Phú", ("flow_vph", "occupancy_pct", "speed_kmh"), 10.0, None,
                    {"free_flow_kmh": 50}),
        SensorEntry("TRF_B", "traffic", "Lê Thánh Tôn", ("flow_vph", "occupancy_pct", "speed_kmh"), 10.0, None,
                    {"free_flow_kmh": 30}),
        SensorEntry("AIR_A", "air", "Chợ Đầm", ("co", "no2", "pm10", "pm25"), 10.0, None, {}),
        SensorEntry("AIR_B", "air", "Vĩnh Phước", ("co", "no2", "pm10", "pm25"), 10.0, None, {}),
    ]
    bank = DetectorBank({e.sensor_id: e for e in entries})
    for e in entries:
        got, want = bank.detectors(e.sensor_id, {}), build_detectors(e)
        assert got is not None and [type(d) for d in got] == [type(d) for d in want]
        for g, w in zip(got, want, strict=True):
            _same(vars(g), vars(w), f"{e.sensor_id}:{type(g).__name__}")
    assert bank._templates.built == 8  # GAUGE and HYD_OTHER, AIR_A and AIR_B, share theirs


def test_sensors_sharing_a_template_learn_apart() -> None:
    """Two gauges from one template, one rising to BĐ III and one flat: only the first warns."""
    other = replace(GAUGE, sensor_id="HYD_OTHER", name="Trạm khác")
    bank = DetectorBank({GAUGE.sensor_id: GAUGE, other.sensor_id: other})
    flat = [msgspec.structs.replace(r, sensor_id=other.sensor_id, metrics={"water_level_m": 6.0 + 0.01 * (i % 3)})
            for i, r in enumerate(_rise(200))]
    found = bank.process([r for pair in zip(_rise(200), flat, strict=True) for r in pair], {})
    assert ("flood_alarm_level", "critical") in _rules([f for f in found if f.sensor_id == GAUGE.sensor_id])
    assert not [f for f in found if f.sensor_id == other.sensor_id and f.rule.startswith("flood")]
