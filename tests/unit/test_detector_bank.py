"""The stream stage's detector bank: which detectors a sensor gets, state in the table, live registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

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


def test_non_finite_values_never_become_findings() -> None:
    bad = [Reading(GAUGE.sensor_id, "water_level", T0 + timedelta(minutes=i), i, {"water_level_m": v})
           for i, v in enumerate([float("inf"), float("nan"), -float("inf"), 1e308])]
    for f in DetectorBank({GAUGE.sensor_id: GAUGE}).process(bad, {}):
        assert f.value == f.value and abs(f.value) != float("inf")
