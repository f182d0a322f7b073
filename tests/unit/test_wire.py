from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.errors import PayloadRejected
from ioc.wire import SensorInfo, ValidationPolicy, decode_envelope, encode_envelope, encode_payload, validate

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
SENSORS = {"G1": SensorInfo("water_level"), "R1": SensorInfo("rain")}


def check(topic: str, raw: bytes, policy: ValidationPolicy | None = None):  # type: ignore[no-untyped-def]
    return validate(topic, raw, sensors=SENSORS.get, now=NOW, policy=policy or ValidationPolicy())


def reason(topic: str, raw: bytes, policy: ValidationPolicy | None = None) -> str:
    with pytest.raises(PayloadRejected) as e:
        check(topic, raw, policy)
    return e.value.reason


def test_valid_reading_round_trips_through_an_envelope() -> None:
    r = check("khanhhoa/v1/water_level/G1", encode_payload("G1", NOW, 7, {"water_level_m": 8.25}))
    assert (r.sensor_id, r.kind, r.ts, r.seq, r.metrics) == ("G1", "water_level", NOW, 7, {"water_level_m": 8.25})
    assert decode_envelope(encode_envelope([r, r])).readings == [r, r]


@pytest.mark.parametrize(
    ("topic", "raw", "expected"),
    [
        ("khanhhoa/v1/water_level/G1", b"{not json", "bad_json"),
        ("khanhhoa/v1/water_level/G1", b'{"sensor_id": "G1"}', "bad_schema"),
        ("khanhhoa/v1/water_level/G1", b'{"sensor_id":"G1","ts":"2026-11-28T08:00:00","seq":1,"metrics":{"water_level_m":1}}', "bad_ts"),
        ("khanhhoa/v1/water_level/G1", b'{"sensor_id":"G1","ts":"2026-11-28T08:00:00Z","seq":1,"metrics":{"water_level_m":NaN}}', "bad_json"),
        ("khanhhoa/v1/water_level/G1", b'{"sensor_id":"G1","ts":"2026-11-28T08:00:00Z","seq":1,"metrics":{"water_level_m":1e999}}', "bad_schema"),
        ("khanhhoa/v1/water_level/G1", encode_payload("G1", NOW, 1, {"rain_mm": 1}), "unknown_metric"),
        ("khanhhoa/v1/water_level/G1", encode_payload("G1", NOW, 1, {}), "no_metrics"),
        ("khanhhoa/v1/water_level/G1", encode_payload("G2", NOW, 1, {"water_level_m": 1}), "sensor_mismatch"),
        ("khanhhoa/v1/water_level/G9", encode_payload("G9", NOW, 1, {"water_level_m": 1}), "unknown_sensor"),
        ("khanhhoa/v1/rain/G1", encode_payload("G1", NOW, 1, {"rain_mm": 1}), "kind_mismatch"),
        ("khanhhoa/v1/lava/G1", encode_payload("G1", NOW, 1, {"x": 1}), "unknown_kind"),
        ("other/G1", b"{}", "bad_topic"),
        ("khanhhoa/v1/water_level/G1/extra", b"{}", "bad_topic"),
        ("khanhhoa/v1/water_level/G1", b"{" + b" " * 5000 + b"}", "too_large"),
        ("khanhhoa/v1/water_level/G1", encode_payload("G1", NOW + timedelta(minutes=6), 1, {"water_level_m": 1}), "future_ts"),
        ("khanhhoa/v1/water_level/G1", encode_payload("G1", NOW - timedelta(days=8), 1, {"water_level_m": 1}), "too_late"),
    ],
)
def test_rejections_carry_a_stable_reason(topic: str, raw: bytes, expected: str) -> None:
    assert reason(topic, raw) == expected


def test_auto_registration_accepts_unknown_sensors_when_enabled() -> None:
    raw = encode_payload("NEW", NOW, 1, {"rain_mm": 0.2})
    assert reason("khanhhoa/v1/rain/NEW", raw) == "unknown_sensor"
    assert check("khanhhoa/v1/rain/NEW", raw, ValidationPolicy(auto_register=True)).sensor_id == "NEW"


@settings(max_examples=400, deadline=None)
@given(topic=st.text(max_size=80), raw=st.binary(max_size=600))
def test_arbitrary_input_is_either_a_reading_or_a_rejection(topic: str, raw: bytes) -> None:
    try:
        check(topic, raw)
    except PayloadRejected as e:
        assert e.reason and len(str(e)) < 600


@settings(max_examples=300, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True), seq=st.integers(-(2**63), 2**63 - 1))
def test_numbers_are_finite_or_rejected(value: float, seq: int) -> None:
    raw = b'{"sensor_id":"R1","ts":"2026-11-28T07:59:00Z","seq":%d,"metrics":{"rain_mm":%s}}' % (seq, repr(value).encode())
    try:
        r = check("khanhhoa/v1/rain/R1", raw)
    except PayloadRejected:
        return
    assert r.metrics["rain_mm"] == value
