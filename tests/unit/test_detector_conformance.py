"""One conformance suite over every detector (STYLE 5): protocol, JSON state with a version,
resume from state, determinism, reset, no I/O, and bad input (hypothesis). New detectors join by
adding a case."""

from __future__ import annotations

import importlib
import json
import math
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.alarm_levels import AlarmLevelDetector
from detectors.base import Detector
from detectors.templates import fresh_copy
from ioc.models import Finding, Reading


def _gauge_wave(n: int = 400) -> list[Reading]:
    """A flood wave with noise, duplicates and one late reading: what the sink really delivers."""
    t0 = datetime(2025, 11, 16, tzinfo=UTC)
    out = []
    for i in range(n):
        level = 5.0 + 7.5 * math.exp(-(((i - 200) / 70) ** 2)) + 0.05 * math.sin(i * 1.7)
        out.append(Reading("HYD_DONG_TRANG", "water_level", t0 + timedelta(minutes=5 * i), i, {"water_level_m": level}))
    out.insert(150, out[149])  # duplicate delivery
    out.insert(260, out[100])  # late, out of order
    return out


CASES: dict[str, tuple[Callable[[], Any], Callable[[], list[Reading]]]] = {
    "alarm_levels": (lambda: AlarmLevelDetector("HYD_DONG_TRANG", {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}), _gauge_wave),
}
# Each family of detectors adds its cases in a module of its own: tests/unit/detector_cases_*.py,
# each defining ``CASES`` in the same shape. Every detector then runs this one suite.
for _path in sorted(Path(__file__).parent.glob("detector_cases_*.py")):
    _mod = importlib.import_module(f"tests.unit.{_path.stem}")
    _dupes = set(CASES) & set(_mod.CASES)
    assert not _dupes, f"{_path.name} redefines conformance cases {_dupes}"
    CASES.update(_mod.CASES)


def _run(det: Any, readings: list[Reading]) -> list[tuple[int, Finding]]:
    return [(i, f) for i, r in enumerate(readings) for f in det.update(r)]


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[Callable[[], Any], list[Reading]]:
    make, stream = CASES[request.param]
    return make, stream()


def test_follows_the_protocol(case: tuple[Callable[[], Any], list[Reading]]) -> None:
    make, _ = case
    det = make()
    assert isinstance(det, Detector)
    assert isinstance(det.ready, bool)


def test_stream_produces_findings_at_all(case: tuple[Callable[[], Any], list[Reading]]) -> None:
    make, stream = case
    assert _run(make(), stream), "the case stream must exercise the detector"


def test_state_is_versioned_json_and_resumes_exactly(case: tuple[Callable[[], Any], list[Reading]]) -> None:
    make, stream = case
    for cut in (1, len(stream) // 3, len(stream) // 2, len(stream) - 1):
        whole = make()
        expected = _run(whole, stream)
        first = make()
        before = _run(first, stream[:cut])
        state = json.loads(json.dumps(first.to_state()))
        assert "state_version" in state
        resumed = make()
        resumed.from_state(state)
        after = [(i + cut, f) for i, f in _run(resumed, stream[cut:])]
        assert before + after == expected, f"resume at {cut} differs"


def test_deterministic(case: tuple[Callable[[], Any], list[Reading]]) -> None:
    make, stream = case
    assert _run(make(), stream) == _run(make(), stream)


def test_reset_returns_to_the_initial_state(case: tuple[Callable[[], Any], list[Reading]]) -> None:
    make, stream = case
    det = make()
    _run(det, stream)
    det.reset()
    assert det.to_state() == make().to_state()
    assert _run(det, stream) == _run(make(), stream)


def test_a_copy_for_another_sensor_is_fresh_and_shares_no_state(case: tuple[Callable[[], Any], list[Reading]]) -> None:
    """Copies of one template (how the worker gives a city's new sensors their detectors) must act
    as if each were built alone: fed different streams side by side, neither sees the other's
    readings, and the template itself stays fresh for the next sensor."""
    make, stream = case
    template = make()
    name = getattr(template, "label", None)  # the label a fresh build got: the copies keep it
    a, b = fresh_copy(template, template.sensor_id, name), fresh_copy(template, template.sensor_id, name)
    assert a.to_state() == make().to_state()
    half = len(stream) // 2
    got_a: list[tuple[int, Finding]] = []
    got_b: list[tuple[int, Finding]] = []
    for i, r in enumerate(stream):  # a sees the whole stream, b only its second half, interleaved
        got_a += [(i, f) for f in a.update(r)]
        if i + half < len(stream):
            got_b += [(i, f) for f in b.update(stream[i + half])]
    assert got_a == _run(make(), stream)
    assert got_b == _run(make(), stream[half:])
    assert template.to_state() == make().to_state()
    assert _run(fresh_copy(template, template.sensor_id, name), stream) == _run(make(), stream)


def test_a_copy_for_another_sensor_speaks_of_that_sensor(case: tuple[Callable[[], Any], list[Reading]]) -> None:
    make, stream = case
    copy_ = fresh_copy(make(), "OTHER_SENSOR", "Trạm khác")
    found = [f for _, f in _run(copy_, stream)]
    assert found and {f.sensor_id for f in found} == {"OTHER_SENSOR"}
    if hasattr(copy_, "label"):
        assert copy_.label == "Trạm khác"
        assert any("Trạm khác" in f.message for f in found)


def test_does_no_io(case: tuple[Callable[[], Any], list[Reading]], monkeypatch: pytest.MonkeyPatch) -> None:
    make, stream = case

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("detectors must not do I/O")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr("builtins.open", refuse)
    det = make()
    _run(det, stream)
    det.to_state()


def test_findings_are_causal(case: tuple[Callable[[], Any], list[Reading]]) -> None:
    """A finding never carries a timestamp later than the reading that produced it."""
    make, stream = case
    for i, f in _run(make(), stream):
        assert f.ts <= stream[i].ts


# ---------------------------------------------------------------- bad input (issue 8), every detector
_HOSTILE_VALUES = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e15, -1e15, 0.0, -0.0, 5e-324]


@st.composite
def _hostile_stream(draw: st.DrawFn, template: list[Reading]) -> list[Reading]:
    """A slice of the case's own stream (so the detector's metrics are present), corrupted the way
    the sink really delivers data: NaN/inf/huge values, gaps, duplicates, out-of-order readings,
    sequence restarts and missing metrics."""
    start = draw(st.integers(0, len(template) - 1))
    n = draw(st.integers(1, 80))
    out: list[Reading] = []
    shift = timedelta(0)
    seq_base = 0
    for r in template[start : start + n]:
        action = draw(st.sampled_from(["keep", "keep", "keep", "value", "gap", "dup", "late", "restart", "drop"]))
        metrics = dict(r.metrics)
        if action == "value" and metrics:
            key = draw(st.sampled_from(sorted(metrics)))
            metrics[key] = draw(st.one_of(st.sampled_from(_HOSTILE_VALUES),
                                          st.floats(allow_nan=True, allow_infinity=True)))
        elif action == "drop" and metrics:
            metrics.pop(draw(st.sampled_from(sorted(metrics))))
        elif action == "gap":
            shift += timedelta(seconds=draw(st.integers(1, 3 * 86400)))
        elif action == "restart":
            seq_base = -r.seq + draw(st.integers(0, 3))
        reading = Reading(r.sensor_id, r.kind, r.ts + shift, r.seq + seq_base, metrics)
        out.append(reading)
        if action == "dup":
            out.append(reading)
        elif action == "late" and len(out) > 2:
            out.append(out[draw(st.integers(0, len(out) - 2))])
    return out


def _assert_sane(f: Finding, reading: Reading) -> None:
    assert 0.0 <= f.score <= 1.0, f"score {f.score} outside [0, 1]: {f}"
    assert math.isfinite(f.value), f"non-finite value in {f}"
    for name in ("threshold", "lead_time_s", "crossing_uncertainty_s"):
        v = getattr(f, name)
        assert v is None or math.isfinite(v), f"non-finite {name} in {f}"
    assert f.ts <= reading.ts, f"finding at {f.ts} after its reading at {reading.ts}"
    assert f.predicted_crossing_at is None or f.predicted_crossing_at.tzinfo is not None
    for k, v in f.detail.items():
        assert not (isinstance(v, float) and not math.isfinite(v)), f"non-finite detail {k}={v} in {f}"
    json.dumps(f.detail)  # detail travels as JSON


#: Known failures, each with the fix; strict, so the mark must go once the detector is fixed.
_KNOWN_BAD_INPUT: dict[str, str] = {}  # name -> reason, for a detector with a known, tracked defect


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=_KNOWN_BAD_INPUT[n])) if n in _KNOWN_BAD_INPUT else n
    for n in sorted(CASES)
])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_bad_input_never_crashes_nor_emits_nonsense(name: str, data: st.DataObject) -> None:
    make, stream = CASES[name]
    readings = data.draw(_hostile_stream(_template(name, stream)))
    det = make()
    for r in readings:
        for f in det.update(r):
            _assert_sane(f, r)
    resumed = make()
    resumed.from_state(json.loads(json.dumps(det.to_state())))
    for r in readings[-5:]:
        for f in resumed.update(r):
            _assert_sane(f, r)


_TEMPLATES: dict[str, list[Reading]] = {}


def _template(name: str, stream: Callable[[], list[Reading]]) -> list[Reading]:
    if name not in _TEMPLATES:
        _TEMPLATES[name] = stream()
    return _TEMPLATES[name]
