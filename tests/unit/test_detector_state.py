"""Compact detector state (issue 8's cost target): the layouts that shrank keep exact behaviour,
old layouts are refused (the bank then starts that rule afresh), and the bulky part of the
seasonal state changes only once an hour."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.rain import WINDOWS_S, RainAccumulationDetector
from detectors.seasonal import SeasonalBaselineDetector
from ioc.models import Reading

T0 = datetime(2025, 10, 6, tzinfo=UTC)  # a Monday, 07:00 in Nha Trang


def _noise(i: int) -> float:
    return ((i * 2654435761) % 1000) / 1000.0 - 0.5


def _roundtrip(det: object) -> dict[str, Any]:
    return json.loads(json.dumps(det.to_state()))  # type: ignore[attr-defined]


# ---------------------------------------------------------------- rain: one window, exact sums
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(1, 7200), st.sampled_from([0.0, 0.0, 0.2, 0.4, 1.2, 5.0, 37.6])),
                      min_size=1, max_size=400),
       cut=st.integers(0, 400))
def test_rain_totals_equal_brute_force_sums_and_survive_a_restart(steps: list[tuple[int, float]], cut: int) -> None:
    det = RainAccumulationDetector("R")
    t = T0
    seen: list[tuple[float, float]] = []
    for i, (gap_s, mm) in enumerate(steps):
        if i == cut:  # a worker restart in the middle of the series
            fresh = RainAccumulationDetector("R")
            fresh.from_state(_roundtrip(det))
            det = fresh
        t += timedelta(seconds=gap_s)
        det.update(Reading("R", "rain", t, i, {"rain_mm": mm}))
        seen.append((t.timestamp(), mm))
        now = t.timestamp()
        for k, span in enumerate(WINDOWS_S):
            expected = math.fsum(v for ts, v in seen if ts > now - span)
            assert det.sums[k] == pytest.approx(expected, abs=1e-9), (k, i)


def test_rain_state_holds_each_rainy_reading_once() -> None:
    """24 h of 5-minute tips: one list of 288 readings, not three copies (the 1 h and 3 h windows are its tail)."""
    det = RainAccumulationDetector("R")
    for i in range(24 * 12):
        det.update(Reading("R", "rain", T0 + timedelta(minutes=5 * i), i, {"rain_mm": (0.2, 0.4, 0.6)[i % 3]}))
    state = _roundtrip(det)
    assert len(state["mm"]) == 288 and state["counts"] == [12, 36, 288]
    assert len(json.dumps(state)) < 4000  # the previous layout: 7.2 kB (an [epoch, mm] pair per reading per window)


# ---------------------------------------------------------------- seasonal: hot bins, hourly profile
def _traffic(i: int) -> dict[str, float]:
    h = ((i * 5) / 60 + 7) % 24
    flow = 300 + 900 * math.exp(-((h - 7.5) / 1.2) ** 2) + 800 * math.exp(-((h - 17.5) / 1.5) ** 2)
    return {"flow_vph": round(flow * (1 + 0.05 * _noise(i))), "speed_kmh": round(45 - flow / 100 + _noise(i + 7), 1),
            "occupancy_pct": round(flow / 60 + _noise(i + 3), 1)}


def _seasonal() -> SeasonalBaselineDetector:
    return SeasonalBaselineDetector("TRF", {"flow_vph": 20.0, "speed_kmh": 1.0, "occupancy_pct": 1.0}, interval_s=300)


def test_seasonal_profile_changes_once_an_hour_not_per_reading() -> None:
    det = _seasonal()
    profiles = []
    for i in range(36):  # 3 hours of 5-minute readings, starting on the hour
        det.update(Reading("TRF", "traffic", T0 + timedelta(minutes=5 * i), i, _traffic(i)))
        profiles.append(json.dumps(det.to_state()["profile"]))
    hot = [json.dumps(_roundtrip(det)["hot"])]
    assert len(set(profiles)) == 3  # one per hour: the bins of the current hour live in the hot record
    assert all(profiles[i] == profiles[i + 1] for i in range(36 - 1) if (i + 1) % 12)
    det.update(Reading("TRF", "traffic", T0 + timedelta(minutes=5 * 36), 36, _traffic(36)))
    assert json.dumps(_roundtrip(det)["hot"]) != hot[0]


def test_a_new_sensors_shared_empty_profile_encodes_exactly_as_its_own_would() -> None:
    from detectors.seasonal import _Metric

    for weekly in (True, False):
        for cap in (50.0, 1000.0):
            shared, own = _Metric(weekly), _Metric(weekly)
            own.empty = False  # forces the sensor's own encoding
            assert shared.encode(cap) == own.encode(cap)
    det = _seasonal()
    first = _roundtrip(det)
    for i in range(13):  # past the first hour: the folded profile is this sensor's own again
        det.update(Reading("TRF", "traffic", T0 + timedelta(minutes=5 * i), i, _traffic(i)))
    assert _roundtrip(det)["profile"] != first["profile"]


def test_seasonal_state_stays_small_after_weeks() -> None:
    """Two weeks of 5-minute data on three metrics: every bin filled. Was ~9.5 kB (raw float32 base64)."""
    det = _seasonal()
    for i in range(14 * 24 * 12):
        det.update(Reading("TRF", "traffic", T0 + timedelta(minutes=5 * i), i, _traffic(i)))
    state = _roundtrip(det)
    assert len(json.dumps(state)) < 7000
    resumed = _seasonal()
    resumed.from_state(state)
    later = [Reading("TRF", "traffic", T0 + timedelta(days=14, minutes=5 * i), 10**6 + i,
                     _traffic(i) | ({"flow_vph": 3000.0} if 100 <= i < 110 else {})) for i in range(200)]
    assert [(i, f.severity) for i, r in enumerate(later) for f in det.update(r)] == \
        [(i, f.severity) for i, r in enumerate(later) for f in resumed.update(r)]


def test_seasonal_counts_are_capped_where_they_stop_mattering() -> None:
    """Past the cap a bin is trusted and learns at its minimum rate, so capping changes nothing."""
    for interval_s in (1, 60, 300, 600, 3600, 86400):
        det = SeasonalBaselineDetector("S", {"x": 1.0}, interval_s=interval_s)
        k = 0  # the fewest visits after which the next one learns at min_alpha
        while (k + 1.0) * det.min_alpha < 1.0:
            k += 1
        assert det.count_cap == max(math.ceil(det.min_n), k, 1)


# ---------------------------------------------------------------- old layouts are refused
def test_previous_state_layouts_are_refused_with_a_clear_error() -> None:
    rain_v1 = {"state_version": 1, "windows": [[], [], []], "sums": [0.0, 0.0, 0.0], "last_ts": None,
               "last_total": None, "rank": 0, "rank_24h": 0, "rank_3h": 0}
    seasonal_v1 = {"state_version": 1, "bins": {}, "active": False, "ok_run": 0, "last_t": None}
    with pytest.raises(ValueError, match="state_version"):
        RainAccumulationDetector("R").from_state(rain_v1)
    with pytest.raises(ValueError, match="state_version"):
        _seasonal().from_state(seasonal_v1)


def test_a_corrupt_seasonal_profile_is_refused() -> None:
    det = _seasonal()
    for i in range(30):
        det.update(Reading("TRF", "traffic", T0 + timedelta(minutes=5 * i), i, _traffic(i)))
    state = _roundtrip(det)
    state["profile"]["flow_vph"] = state["profile"]["flow_vph"][:-8]
    with pytest.raises(ValueError):
        _seasonal().from_state(state)
