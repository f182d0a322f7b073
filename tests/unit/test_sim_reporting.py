"""Reporting profiles: realistic cadence, quantisation, noise, gaps and spikes, with truthful labels."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from ioc.domain import KIND_METRICS
from sensors_sim import scenario
from sensors_sim.cli import register
from sensors_sim.engine import Simulation, simulate
from sensors_sim.errors import ScenarioError
from sensors_sim.fileio import read
from sensors_sim.output import write_simulation
from sensors_sim.registry import load_registry, registry_by_id
from sensors_sim.reporting import PROFILES, SILENT_MIN_MISSED, Reporting, check, lost_runs

REG = load_registry()
BY_ID = registry_by_id(REG)

RATES = """name = "reporting_rates"
description = "a quiet month of gauges and air stations with high reporting fault rates"
start = 2025-01-01T00:00:00+07:00
duration_h = 744
seed = 42

[sensors]
kinds = ["water_level", "air", "rain"]

[reporting]
profile = "national"

[reporting.kinds.water_level]
miss_rate = 0.05
outages_per_day = 0.5
outage_h = [2.0, 6.0]
spike_rate = 0.02

[reporting.kinds.air]
miss_rate = 0.05
outages_per_day = 0.5
outage_h = [2.0, 6.0]
spike_rate = 0.02
"""


@pytest.fixture(scope="module")
def damrey() -> Simulation:
    return simulate("typhoon_damrey_national")


@pytest.fixture(scope="module")
def damrey_ideal() -> Simulation:
    return simulate("typhoon_damrey")


@pytest.fixture(scope="module")
def rates(tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    p = tmp_path_factory.mktemp("rates") / "reporting_rates.toml"
    p.write_text(RATES, encoding="utf-8")
    return simulate(str(p))


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory, damrey: Simulation) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """What the output file actually carries, per sensor: (ts, metrics) of every well-formed message."""
    out = tmp_path_factory.mktemp("sent") / "damrey.jsonl.gz"
    write_simulation(damrey, out)
    per: dict[str, list[tuple[float, dict[str, float]]]] = defaultdict(list)
    for m in read(out):
        doc = json.loads(m.payload)
        per[doc["sensor_id"]].append((float(np.datetime64(doc["ts"].rstrip("Z"), "s").astype(np.int64)), doc["metrics"]))
    return per


def _bytes(sim: Simulation, path: Path) -> tuple[bytes, bytes]:
    _, lpath = write_simulation(sim, path)
    return path.read_bytes(), lpath.read_bytes()


# -- design: defaults unchanged, variants equivalent, determinism --------------------------------


@pytest.mark.parametrize("name", ["demo", "sensor_faults"])
def test_ideal_profile_is_the_default_and_changes_nothing(tmp_path: Path, name: str) -> None:
    assert scenario.load(name, REG).reporting == Reporting()
    plain = _bytes(simulate(name), tmp_path / "a.jsonl.gz")
    assert plain == _bytes(simulate(f"{name}@ideal"), tmp_path / "b.jsonl.gz")
    assert plain == _bytes(simulate(name, reporting="ideal"), tmp_path / "c.jsonl.gz")
    assert all(s.transmission is None for s in simulate(name).series)


def test_bundled_variant_file_equals_the_at_profile_form(tmp_path: Path, damrey: Simulation) -> None:
    assert damrey.scenario.reporting.profile == "national" and damrey.scenario.extends == "typhoon_damrey"
    via_at = simulate("typhoon_damrey@national")
    assert via_at.scenario.name == "typhoon_damrey@national"
    assert _bytes(damrey, tmp_path / "a.jsonl.gz") == _bytes(via_at, tmp_path / "b.jsonl.gz")
    assert {"flood_2025_11_national", "typhoon_damrey_national"} <= set(scenario.available())


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = _bytes(simulate("demo@national"), tmp_path / "a.jsonl.gz")
    assert a == _bytes(simulate("demo@national"), tmp_path / "b.jsonl.gz")
    assert a[0] != _bytes(simulate("demo@national", seed=7), tmp_path / "c.jsonl.gz")[0]


def test_physics_is_the_ideal_run_reported_differently(damrey: Simulation, damrey_ideal: Simulation) -> None:
    for sid in ("HYD_DONG_TRANG", "HYD_NINH_HOA"):
        ideal, rep = damrey_ideal.by_id(sid), damrey.by_id(sid)
        rows = np.searchsorted(ideal.t, rep.t)
        assert (ideal.t[rows] == rep.t).all()  # reports fall on the native grid, just after each hour
        assert np.abs(rep.values["water_level_m"] - ideal.values["water_level_m"][rows]).max() <= 0.03
    for s in damrey.series:
        if s.spec.kind == "rain":  # rain is summed over the hour, not sampled: the totals are conserved
            ideal = damrey_ideal.by_id(s.spec.sensor_id)
            covered = ideal.values["rain_mm"][: int(np.searchsorted(ideal.t, s.t[-1])) + 1].sum()
            assert s.values["rain_mm"].sum() == pytest.approx(covered, abs=0.05)


# -- cadence and quantisation ------------------------------------------------------------------


def test_cadence_follows_the_profile(damrey: Simulation) -> None:
    want = {"water_level": 3600, "tide": 3600, "rain": 3600, "air": 3600, "weather": 600, "traffic": 60, "noise": 300}
    for s, d in zip(damrey.series, damrey.deliveries, strict=True):
        interval = 600 if s.spec.sensor_id == "URB_XOM_BONG" else want[s.spec.kind]
        assert s.spec.interval_s == d.spec.interval_s == interval
        assert (np.diff(s.t) == interval).all(), s.spec.sensor_id
        assert np.isin(d.ts, s.t).all() and (np.diff(d.ts) % interval == 0).all()
        assert s.transmission is not None and len(d.ts) == int((~s.transmission.lost).sum())


@pytest.mark.parametrize(("metric", "quantum"), [("water_level_m", 0.01), ("rain_mm", 0.1), ("pm25", 1.0),
                                                 ("pm10", 1.0), ("sea_level_m", 0.01), ("speed_kmh", 1.0)])
def test_sent_values_are_quantised(sent: dict[str, list[tuple[float, dict[str, float]]]], metric: str,
                                   quantum: float) -> None:
    values = np.array([m[metric] for rows in sent.values() for _, m in rows if metric in m])
    assert len(values) > 50
    steps = values / quantum
    assert np.abs(steps - np.round(steps)).max() < 1e-6
    assert len(np.unique(values)) > 5


def test_noise_quantum_on_a_profile_with_noise_stations() -> None:
    sim = simulate("normal_day@national")
    laeq = np.concatenate([d.values[:, 0] for d in sim.deliveries if d.spec.kind == "noise"])
    assert np.abs(laeq * 10 - np.round(laeq * 10)).max() < 1e-6
    assert all(d.spec.interval_s == 300 for d in sim.deliveries if d.spec.kind == "noise")


# -- gaps and spikes at the configured rates ---------------------------------------------------


def test_gaps_come_at_the_configured_rates_and_are_one_report_or_an_outage(rates: Simulation) -> None:
    singles = outages = in_outage = outage_s = reports = 0
    for s in rates.series:
        if s.spec.kind not in ("water_level", "air"):
            continue
        assert s.transmission is not None
        runs = lost_runs(s.transmission.lost)
        assert all(b - a + 1 == 1 or b - a + 1 >= SILENT_MIN_MISSED for a, b in runs), s.spec.sensor_id
        singles += sum(1 for a, b in runs if a == b)
        long = [(a, b) for a, b in runs if b - a + 1 >= SILENT_MIN_MISSED]
        outages += len(long)
        in_outage += sum(b - a + 1 for a, b in long)
        outage_s += sum((b - a + 1) * s.spec.interval_s for a, b in long)
        reports += len(s.t)
    p = 0.05
    # single losses are never adjacent (p·(1-p) per report), and none falls inside an outage
    assert singles / (reports - in_outage) == pytest.approx(p * (1 - p), rel=0.1)
    n_sensors = sum(1 for s in rates.series if s.spec.kind in ("water_level", "air"))
    expected = 0.5 * 31 * n_sensors  # Poisson mean; outages that overlap (~8 % at 4 h each) merge into one
    assert 0.92 * expected - 4 * expected**0.5 <= outages <= expected + 4 * expected**0.5
    assert outage_s / outages / 3600 == pytest.approx(4.0, rel=0.15)  # U(2, 6) h, a little more where they merge


def test_no_gap_is_ambiguous_for_a_silence_timer(rates: Simulation) -> None:
    """Delivered readings are 1 or 2 intervals apart, or at least 4: a 3-interval timer is never borderline."""
    for d in rates.deliveries:
        steps = np.diff(d.ts) // d.spec.interval_s
        assert set(np.unique(steps).tolist()) <= {1, 2} | set(range(SILENT_MIN_MISSED + 1, 10_000)), d.spec.sensor_id


def test_spikes_come_at_the_configured_rate(rates: Simulation) -> None:
    spikes = delivered = 0
    for s in rates.series:
        if s.spec.kind in ("water_level", "air") and s.transmission is not None:
            spikes += int(s.transmission.spiked.sum())
            delivered += int((~s.transmission.lost).sum())
    assert spikes / delivered == pytest.approx(0.02, rel=0.15)
    rain = [s for s in rates.series if s.spec.kind == "rain"]
    assert rain and all(s.transmission is not None and not s.transmission.spiked.any() for s in rain)


# -- labels are truthful -----------------------------------------------------------------------


def test_every_reporting_fault_is_labelled_and_nothing_else(rates: Simulation) -> None:
    labels = [lab for lab in rates.labels if lab["kind"] == "sensor_fault"]
    by_alert: dict[str, set[tuple[str, float]]] = defaultdict(set)
    for lab in labels:
        assert lab["min_severity"] == "warning"
        by_alert[lab["expected_alert"]].add((lab["sensors"][0], lab["start"]))
    want_spikes, want_silent = set(), set()
    for s in rates.series:
        tr = s.transmission
        assert tr is not None
        want_spikes |= {(s.spec.sensor_id, float(s.t[i])) for i in np.flatnonzero(tr.spiked)}
        want_silent |= {(s.spec.sensor_id, float(s.t[a])) for a, b in lost_runs(tr.lost) if b - a + 1 >= 3}
    assert by_alert["sensor_spike"] == want_spikes and len(want_spikes) > 100
    assert by_alert["sensor_silent"] == want_silent and len(want_silent) > 100
    assert set(by_alert) == {"sensor_spike", "sensor_silent"}


def test_silent_labels_cover_exactly_the_missing_reports(rates: Simulation) -> None:
    delivered = {d.spec.sensor_id: d for d in rates.deliveries}
    for lab in rates.labels:
        if lab["expected_alert"] != "sensor_silent":
            continue
        d = delivered[lab["sensors"][0]]
        interval = lab["interval_s"]
        assert lab["fault"] == "dropout" and lab["missed"] >= SILENT_MIN_MISSED
        assert not ((d.ts >= lab["start"]) & (d.ts < lab["end"])).any()
        assert (d.ts == lab["start"] - interval).any()  # the last reading before the silence
        assert lab["end"] == rates.scenario.t1 or (d.ts == lab["end"]).any()  # the next one after it
        assert lab["end"] - lab["start"] == pytest.approx(lab["missed"] * interval) or lab["end"] == rates.scenario.t1


def test_spike_labels_match_the_values_sent(damrey: Simulation,
                                            sent: dict[str, list[tuple[float, dict[str, float]]]]) -> None:
    spikes = [lab for lab in damrey.labels if lab["expected_alert"] == "sensor_spike"]
    assert spikes
    for lab in spikes:
        sid = lab["sensors"][0]
        (value,) = [m[lab["metric"]] for ts, m in sent[sid] if ts == lab["start"]]
        assert value == lab["value"] != lab["true_value"]
        assert lab["start"] == lab["end"] and lab["fault"] == "spike"
        assert lab["true_value"] == damrey.by_id(sid).values[lab["metric"]][damrey.by_id(sid).t == lab["start"]][0]


def test_flood_crossings_are_the_first_sent_hourly_reading_at_the_level(
    damrey: Simulation, sent: dict[str, list[tuple[float, dict[str, float]]]]
) -> None:
    spiked = {(lab["sensors"][0], lab["start"]) for lab in damrey.labels if lab["expected_alert"] == "sensor_spike"}
    floods = [lab for lab in damrey.labels if lab["kind"] == "flood"]
    assert len(floods) == 4
    for lab in floods:
        ((sid, crossings),) = lab["crossings"].items()
        readings = sorted((ts, m["water_level_m"]) for ts, m in sent[sid] if (sid, ts) not in spiked)
        for key, ts in crossings.items():
            level = BY_ID[sid].alarm_levels[key]  # type: ignore[index]
            first = next(t for t, v in readings if v >= level)
            assert ts == first, (sid, key)
            assert round(ts - damrey.by_id(sid).t[0]) % 3600 == 0  # on the hourly reporting grid
    assert next(lab for lab in floods if lab["sensors"] == ["HYD_DONG_TRANG"])["min_severity"] == "critical"


def test_heavy_rain_labels_use_hourly_totals(damrey: Simulation, damrey_ideal: Simulation) -> None:
    rain = {lab["sensors"][0]: lab["max_24h_mm"] for lab in damrey.labels if lab["kind"] == "heavy_rain"}
    ideal = {lab["sensors"][0]: lab["max_24h_mm"] for lab in damrey_ideal.labels if lab["kind"] == "heavy_rain"}
    assert rain.keys() == ideal.keys()
    for sid, mm in rain.items():
        assert mm == pytest.approx(ideal[sid], rel=0.1), sid  # the same storm seen in hourly totals


# -- configuration -----------------------------------------------------------------------------


def test_builtin_profiles_are_valid_for_the_whole_registry() -> None:
    assert {"ideal", "national", "national_10min"} <= set(PROFILES)
    for name in PROFILES:
        assert check(Reporting(profile=name), BY_ID, REG) is None, name
    ten = simulate("demo@national_10min")
    assert {s.spec.interval_s for s in ten.series if s.spec.kind in ("water_level", "rain", "tide")} == {600}


def test_toml_overrides_per_kind_and_per_sensor(tmp_path: Path) -> None:
    p = tmp_path / "over.toml"
    p.write_text(RATES.replace("duration_h = 744", "duration_h = 24")
                 + '\n[reporting.sensors.HYD_NINH_HOA]\ninterval_s = 600\nquantum = { water_level_m = 0.05 }\n',
                 encoding="utf-8")
    sim = simulate(str(p))
    nh = sim.by_id("HYD_NINH_HOA")
    assert nh.spec.interval_s == 600 and sim.by_id("HYD_DONG_TRANG").spec.interval_s == 3600
    steps = nh.values["water_level_m"] / 0.05
    assert np.abs(steps - np.round(steps)).max() < 1e-6


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ('\n[reporting.kinds.water_level]\nquantum = { pm25 = 1.0 }\n',
         r"over.toml:\d+: field `reporting.kinds.water_level.quantum`: 'pm25' is not a water_level metric"),
        ('\n[reporting.sensors.HYD_NINH_HOA]\ninterval_s = 450\n', r"HYD_NINH_HOA: interval_s 450 must be a whole multiple"),
        ('\n[reporting.kinds.lava]\nmiss_rate = 0.1\n', r"unknown kind 'lava'"),
        ('\n[reporting.kinds.rain]\nmiss_rate = 1.5\n', r"`reporting.kinds.rain.miss_rate`: must be in \[0, 1\]"),
    ],
)
def test_bad_reporting_tables_name_file_line_and_field(tmp_path: Path, extra: str, match: str) -> None:
    p = tmp_path / "over.toml"
    base = RATES.split("\n[reporting.kinds.water_level]")[0]
    p.write_text(base + extra, encoding="utf-8")
    with pytest.raises(ScenarioError, match=match):
        scenario.load(str(p), REG)


def test_unknown_profile_and_bad_variant_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"unknown reporting profile 'vndms'.*national"):
        scenario.load("flood_2025_11@vndms", REG)
    p = tmp_path / "v.toml"
    p.write_text('extends = "typhoon_damrey"\nname = "v"\n[reporting]\nprofile = "hourly"\n', encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"v.toml:4: field `reporting.profile`: unknown profile 'hourly'"):
        scenario.load(str(p), REG)
    p.write_text('extends = "typhoon_damrey_national"\nname = "v"\n', encoding="utf-8")
    with pytest.raises(ScenarioError, match="extends another scenario"):
        scenario.load(str(p), REG)


def test_cli_reporting_option_is_the_at_form(tmp_path: Path) -> None:
    group = click.Group("ioc")
    register(group)
    runner = CliRunner()
    helptext = runner.invoke(group, ["simulate", "--help"], terminal_width=200).output
    assert "IOC_SIM_REPORTING" in helptext and "national" in helptext
    out = tmp_path / "cli.jsonl.gz"
    res = runner.invoke(group, ["simulate", "--scenario", "demo", "--reporting", "national", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out.read_bytes(), (tmp_path / "cli.labels.json").read_bytes()) == _bytes(
        simulate("demo@national"), tmp_path / "ref.jsonl.gz")
    listing = runner.invoke(group, ["scenarios"], terminal_width=200).output
    assert "typhoon_damrey_national" in listing and "national_10min" in listing


def test_every_kind_has_a_national_rule() -> None:
    assert set(PROFILES["national"].kinds) == set(KIND_METRICS)
