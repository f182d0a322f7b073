"""`ioc detect-file`: CSV reading and its errors, causality, score range, detection quality, CLI."""

from __future__ import annotations

import csv
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from detectors.univariate import METHODS, UnivariateAnomalyScorer
from ioc.composition.cli import cli
from ioc.composition.cli_detect import DetectInputError, detect_file, parse_timestamp, parse_value

SPIKE, SHIFT, PERIOD = 900, 1300, 96


def seasonal(n: int = 1800, seed: int = 0) -> list[float]:
    """A noisy daily-like cycle (period 96) with a spike at 900 and a lasting +12 shift from 1300."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        v = 50 + 10 * math.sin(2 * math.pi * i / PERIOD) + rng.gauss(0, 1.5)
        if i == SPIKE:
            v += 25
        if i >= SHIFT:
            v += 12
        out.append(v)
    return out


def write_series(path: Path, values: list[float], *, fmt: str = "%Y-%m-%d %H:%M:%S") -> Path:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        for i, v in enumerate(values):
            w.writerow([(t0 + timedelta(minutes=15 * i)).strftime(fmt), repr(v)])
    return path


def read_scores(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [row["anomaly_score"] for row in csv.DictReader(f)]


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize("text", [
    "2024-03-01 07:30:00", "2024-03-01T07:30:00", "2024-03-01T07:30:00Z", "2024-03-01T14:30:00+07:00",
    "2024/03/01 07:30:00", "2024-03-01 07:30:00.000000", "1709278200", "1709278200.0", "1709278200000",
    " 2024-03-01 07:30 ",
])
def test_timestamps_in_every_common_form(text: str) -> None:
    assert parse_timestamp(text) == 1709278200.0


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01 00:00:00", "nan", "1e40"])
def test_unreadable_timestamps_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_values_blank_nan_and_inf_mean_no_reading() -> None:
    assert [parse_value(t) for t in ("", " ", "NaN", "nan", "NULL", "NA", "inf", "-Infinity")] == [None] * 8
    assert parse_value("-1.5e2") == -150.0
    with pytest.raises(ValueError, match="cannot read value"):
        parse_value("12,5")


def test_header_is_required_and_named(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("2024-03-01 00:00:00,1\n2024-03-01 00:15:00,2\n")
    with pytest.raises(DetectInputError, match=r"in\.csv:1: .*'timestamp' and 'value'"):
        detect_file(src, tmp_path / "out.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DetectInputError, match="empty"):
        detect_file(tmp_path / "empty.csv", tmp_path / "out.csv")


def test_bad_row_fails_naming_its_line_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n2024-03-01 00:00:00,1\n\n2024-03-01 00:15:00,abc\n")
    out = tmp_path / "out.csv"
    with pytest.raises(DetectInputError, match=r"in\.csv:4: cannot read value 'abc'.*--on-error skip"):
        detect_file(src, out)
    assert not out.exists() and not list(tmp_path.glob(".out.csv.*"))


def test_skip_policy_keeps_bad_rows_with_score_zero(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n2024-03-01 00:00:00,1\nnot a time,2\n2024-03-01 00:30:00\n"
                   "2024-03-01 00:45:00,\n2024-03-01 01:00:00,NaN\n2024-03-01 01:15:00,4\n")
    out = tmp_path / "out.csv"
    summary = detect_file(src, out, on_error="skip")
    assert (summary.rows, summary.scored, summary.missing, summary.skipped) == (6, 2, 2, 2)
    rows = list(csv.reader(out.open(newline="")))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert rows[2] == ["not a time", "2", "0.000000"]
    assert rows[3] == ["2024-03-01 00:30:00", "0.000000"]  # short row kept as it was, plus its score
    assert [r[-1] for r in rows[1:]] == ["0.000000"] * 6


def test_extra_columns_bom_and_an_old_score_column(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("\ufeffValue,anomaly_score,Timestamp,note\n1.0,0.9,2024-03-01 00:00:00,a\n2.0,,1709251200,b\n",
                   encoding="utf-8")
    detect_file(src, tmp_path / "out.csv")
    rows = list(csv.reader((tmp_path / "out.csv").open(newline="")))
    assert rows == [["Value", "anomaly_score", "Timestamp", "note"],
                    ["1.0", "0.000000", "2024-03-01 00:00:00", "a"],
                    ["2.0", "0.000000", "1709251200", "b"]]


# ---------------------------------------------------------------- scores
def test_scores_are_causal_prefixes_are_identical_when_truncated(tmp_path: Path) -> None:
    values = seasonal(1500)
    whole = read_scores_of(tmp_path, "whole", values)
    for cut in (151, 640, 901, 1302):
        assert read_scores_of(tmp_path, f"cut{cut}", values[:cut]) == whole[:cut], f"prefix {cut} differs"


def read_scores_of(tmp_path: Path, name: str, values: list[float], method: str = "knn-range") -> list[str]:
    src = write_series(tmp_path / f"{name}.csv", values)
    out = tmp_path / f"{name}.scored.csv"
    detect_file(src, out, method=method)
    return read_scores(out)


@pytest.mark.parametrize("method", list(METHODS))
def test_scores_are_finite_and_in_unit_interval(method: str) -> None:
    rng = random.Random(3)
    values: list[float | None] = [rng.lognormvariate(0, 2) for _ in range(600)]
    values += [1e300, -1e300, 0.0, None, 5e-324] + [rng.gauss(0, 1) for _ in range(100)] + [7.0] * 200
    s = UnivariateAnomalyScorer(method)
    scores = [s.score(float(i), v) for i, v in enumerate(values)]
    assert all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in scores)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detects_a_spike_and_a_level_shift_and_is_quiet_elsewhere(seed: int) -> None:
    values = seasonal(seed=seed)
    s = UnivariateAnomalyScorer()
    scores = [s.score(float(i), v) for i, v in enumerate(values)]
    alarm = 0.25  # an alarm is surprise >= 2.5, i.e. p <= 10^-2.5
    assert scores[SPIKE] >= 0.5, "the spike is a one-in-a-million value"
    after_shift = [i for i in range(SHIFT, SHIFT + PERIOD) if scores[i] >= alarm]
    assert after_shift, "the shift is seen within one seasonal period"
    quiet = [i for i, x in enumerate(scores) if x >= alarm and i != SPIKE and not SHIFT <= i < SHIFT + PERIOD]
    assert len(quiet) <= 1, f"false alarms at {quiet}"
    elsewhere = sorted(x for i, x in enumerate(scores) if i != SPIKE and not SHIFT <= i < SHIFT + PERIOD)
    assert elsewhere[int(0.99 * len(elsewhere))] < 0.15, "99 % of ordinary values score below 0.15"


def test_one_incident_raises_one_alarm() -> None:
    s = UnivariateAnomalyScorer()
    values = seasonal(1200, seed=4)[:1000] + [200.0] * 15 + seasonal(1200, seed=4)[1000:1100]
    scores = [s.score(float(i), v) for i, v in enumerate(values)]
    assert sum(x >= 0.25 for x in scores[1000:1100]) == 1


def test_gaps_score_zero_and_teach_nothing() -> None:
    a, b = UnivariateAnomalyScorer(), UnivariateAnomalyScorer()
    values = seasonal(400, seed=5)
    with_gaps = [a.score(float(i), None if i % 7 == 3 else v) for i, v in enumerate(values)]
    plain = [b.score(float(i), v) for i, v in enumerate(values) if i % 7 != 3]
    assert [x for i, x in enumerate(with_gaps) if i % 7 != 3] == plain
    assert all(x == 0.0 for i, x in enumerate(with_gaps) if i % 7 == 3)


def test_scorer_state_resumes_exactly() -> None:
    import json

    values = seasonal(1000, seed=6)
    whole = UnivariateAnomalyScorer()
    expected = [whole.score(float(i), v) for i, v in enumerate(values)]
    first = UnivariateAnomalyScorer()
    got = [first.score(float(i), v) for i, v in enumerate(values[:555])]
    resumed = UnivariateAnomalyScorer()
    resumed.from_state(json.loads(json.dumps(first.to_state())))
    got += [resumed.score(float(i), v) for i, v in enumerate(values[555:], start=555)]
    assert got == expected
    with pytest.raises(ValueError, match="method"):
        UnivariateAnomalyScorer("knn").from_state(first.to_state())


def test_constructor_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="choose one of knn-range"):
        UnivariateAnomalyScorer("htm")


# ---------------------------------------------------------------- the command
def test_cli_end_to_end(tmp_path: Path) -> None:
    src = write_series(tmp_path / "in.csv", seasonal(1000, seed=7), fmt="%Y-%m-%dT%H:%M:%S+00:00")
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(cli, ["detect-file", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1000 rows (1000 scored, 0 without a value, 0 skipped) with knn-range" in res.output
    scores = [float(x) for x in read_scores(out)]
    assert len(scores) == 1000 and max(scores) >= 0.5 and scores.index(max(scores)) == SPIKE
    res = CliRunner().invoke(cli, ["detect-file", str(src), "--out", str(out), "--detector", "windowed-gaussian"])
    assert res.exit_code == 0, res.output
    assert max(float(x) for x in read_scores(out)) >= 0.25


def test_cli_help_lists_the_detectors() -> None:
    res = CliRunner().invoke(cli, ["detect-file", "--help"])
    assert res.exit_code == 0
    for name in METHODS:
        assert name in res.output
    assert "IOC_DETECT_FILE_DETECTOR" in res.output


def test_cli_bad_row_is_one_clear_line_and_exit_code_2(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n2024-03-01 00:00:00,1\n2024-03-01 00:15:00,oops\n")
    res = subprocess.run([sys.executable, "-m", "ioc.composition.cli", "detect-file", str(src), "--out", str(tmp_path / "o.csv")],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 2, res.stderr
    assert "in.csv:3: cannot read value 'oops'" in " ".join(res.stderr.split())
