from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from detectors.alarm_levels import AlarmLevelDetector
from ioc.models import Reading

LEVELS = {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}
T0 = datetime(2017, 11, 4, tzinfo=UTC)


def series(values: list[float], start: int = 0) -> list[Reading]:
    return [Reading("HYD_DONG_TRANG", "water_level", T0 + timedelta(minutes=start + i), i, {"water_level_m": v})
            for i, v in enumerate(values)]


def run(det: AlarmLevelDetector, readings: list[Reading]) -> list[tuple[int, str | None]]:
    out = []
    for i, r in enumerate(readings):
        out.extend((i, f.severity) for f in det.update(r))
    return out


def test_golden_flood_wave_raises_each_band_once_and_clears_with_hysteresis() -> None:
    wave = [7.0, 7.9, 8.0, 8.5, 9.5, 10.2, 11.0, 11.4, 10.96, 11.05, 10.5, 9.45, 9.3, 7.95, 7.85]
    assert run(AlarmLevelDetector("HYD_DONG_TRANG", LEVELS), series(wave)) == [
        (2, "info"), (4, "warning"), (6, "critical"), (10, "warning"), (12, "info"), (14, None)
    ]


def test_duplicates_and_late_readings_are_ignored() -> None:
    det = AlarmLevelDetector("HYD_DONG_TRANG", LEVELS)
    rising = series([7.0, 8.2, 9.6])
    assert run(det, rising) == [(1, "info"), (2, "warning")]
    assert run(det, rising) == []  # redelivered: no new findings, no flapping


def test_state_round_trips_through_json_and_resumes() -> None:
    a = AlarmLevelDetector("HYD_DONG_TRANG", LEVELS)
    run(a, series([7.0, 9.7]))
    b = AlarmLevelDetector("HYD_DONG_TRANG", LEVELS)
    b.from_state(json.loads(json.dumps(a.to_state())))
    nxt = series([9.8, 11.2], start=10)
    assert run(a, nxt) == run(b, nxt) == [(1, "critical")]


def test_reset_forgets_everything() -> None:
    det = AlarmLevelDetector("HYD_DONG_TRANG", LEVELS)
    run(det, series([9.7]))
    det.reset()
    assert det.to_state() == AlarmLevelDetector("HYD_DONG_TRANG", LEVELS).to_state()


def test_missing_bd2_is_allowed_like_duc_my() -> None:
    det = AlarmLevelDetector("HYD_DUC_MY", {"bd1": 15.5, "bd2": None, "bd3": 17.5})
    assert run(det, series([15.0, 15.6, 17.6])) == [(1, "info"), (2, "critical")]


@pytest.mark.parametrize("levels", [{}, {"bd1": 9.0, "bd2": 8.0}, {"bd1": None, "bd2": None, "bd3": None}])
def test_bad_configuration_says_what_to_do(levels: dict[str, float | None]) -> None:
    with pytest.raises(ValueError, match="alarm levels"):
        AlarmLevelDetector("X", levels)


def test_unsupported_state_version_is_refused() -> None:
    with pytest.raises(ValueError, match="state_version"):
        AlarmLevelDetector("X", LEVELS).from_state({"state_version": 99, "band": 1})
