"""Simulation: determinism, label truth, physical plausibility, faults and wire-format identity."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.errors import PayloadRejected
from ioc.wire import SensorInfo, ValidationPolicy, encode_payload, validate
from sensors_sim.clock import Pacer, live_offset
from sensors_sim.encode import iter_chunks
from sensors_sim.engine import Simulation, simulate
from sensors_sim.fileio import read
from sensors_sim.output import write_simulation
from sensors_sim.registry import load_registry, registry_by_id

REG = load_registry()
KINDS = {s.sensor_id: SensorInfo(s.kind) for s in REG}
#: Top VN_AQI breakpoints (µg/m³) from the domain data: values above are off the scale.
AQI_TOP = {"pm25": 500, "pm10": 600, "no2": 3850, "co": 150000, "so2": 2630, "o3": 1200}


@pytest.fixture(scope="module")
def damrey() -> Simulation:
    return simulate("typhoon_damrey")


@pytest.fixture(scope="module")
def faults() -> Simulation:
    return simulate("sensor_faults")


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz", tmp_path / "c.jsonl.gz"
    write_simulation(simulate("sensor_faults"), a)
    write_simulation(simulate("sensor_faults"), b)
    write_simulation(simulate("sensor_faults", seed=7), c)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.labels.json").read_bytes() == (tmp_path / "b.labels.json").read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_damrey_bd3_crossing_label_is_the_true_crossing(damrey: Simulation) -> None:
    label = next(lab for lab in damrey.labels if lab["event_id"] == "damrey_flood/HYD_DONG_TRANG")
    s = damrey.by_id("HYD_DONG_TRANG")
    v, t = s.values["water_level_m"], s.t
    for key, level in (("bd1", 8.0), ("bd2", 9.5), ("bd3", 11.0)):
        ts = label["crossings"]["HYD_DONG_TRANG"][key]
        i = int(np.flatnonzero(t == ts)[0])
        assert v[i] >= level and (v[:i] < level).all()
    assert label["min_severity"] == "critical"
    nh = next(lab for lab in damrey.labels if lab["event_id"] == "damrey_flood/HYD_NINH_HOA")
    assert set(nh["crossings"]["HYD_NINH_HOA"]) == {"bd1", "bd2", "bd3"}


def test_labels_file_has_rfc3339_crossings(tmp_path: Path, damrey: Simulation) -> None:
    out = tmp_path / "run.jsonl.gz"
    write_simulation(damrey, out)
    labels = json.loads((tmp_path / "run.labels.json").read_text(encoding="utf-8"))
    lab = next(lab for lab in labels if lab["event_id"] == "damrey_flood/HYD_DONG_TRANG")
    bd3 = datetime.fromisoformat(lab["crossings"]["HYD_DONG_TRANG"]["bd3"])
    # The reading published at that instant is the first one at or above 11.0 m.
    levels = [
        (json.loads(m.payload)["ts"], json.loads(m.payload)["metrics"]["water_level_m"])
        for m in read(out)
        if m.topic.endswith("/HYD_DONG_TRANG")
    ]
    first = next(ts for ts, v in levels if v >= 11.0)
    assert datetime.fromisoformat(first) == bd3


def _hourly_rates(sim: Simulation, sid: str) -> np.ndarray:
    s = sim.by_id(sid)
    per_hour = 3600 // s.spec.interval_s
    return np.diff(s.values["water_level_m"][::per_hour])


@pytest.mark.parametrize("name", ["typhoon_damrey", "flood_2025_11", "demo"])
def test_rise_rates_are_physical(name: str) -> None:
    sim = simulate(name)
    dt = _hourly_rates(sim, "HYD_DONG_TRANG")
    assert dt.max() <= 1.8 and dt.min() >= -0.76 - 0.025
    nh = _hourly_rates(sim, "HYD_NINH_HOA")
    assert nh.max() <= 0.12 + 0.025 and nh.min() >= -0.07 - 0.025  # cm rounding + 3 mm gauge noise
    if name != "demo":  # typical rises at Đồng Trăng are 0.3-0.6 m/h
        rising = dt[dt > 0.1]
        assert 0.25 <= float(np.median(rising)) <= 0.65


def test_flood_2025_11_peaks_follow_the_record(name: str = "flood_2025_11") -> None:
    sim = simulate(name)
    assert sim.by_id("HYD_DONG_TRANG").values["water_level_m"].max() == pytest.approx(13.14, abs=0.05)
    assert sim.by_id("HYD_NINH_HOA").values["water_level_m"].max() == pytest.approx(6.77, abs=0.05)


@pytest.mark.parametrize("name", ["normal_day", "typhoon_damrey", "pollution_episode", "rush_hour_incident"])
def test_values_in_physical_ranges(name: str) -> None:
    sim = simulate(name)
    for s in sim.series:
        for metric, v in s.values.items():
            assert np.isfinite(v).all(), (s.spec.sensor_id, metric)
            if metric in AQI_TOP:
                assert (v >= 0).all() and (v <= AQI_TOP[metric]).all(), (s.spec.sensor_id, metric)
        if s.spec.kind == "traffic":
            assert (s.values["flow_vph"] >= 0).all()
            assert (s.values["speed_kmh"] > 0).all()
            assert ((s.values["occupancy_pct"] >= 0) & (s.values["occupancy_pct"] <= 100)).all()
        if s.spec.kind == "rain":
            assert (s.values["rain_mm"] >= 0).all()
        if s.spec.kind == "weather":
            assert (s.values["humidity_pct"] <= 100).all() and (s.values["wind_speed_ms"] >= 0).all()


def test_damrey_rain_and_wind_match_the_record(damrey: Simulation) -> None:
    rain = [lab["max_24h_mm"] for lab in damrey.labels if lab["kind"] == "heavy_rain"]
    assert rain and all(200 * 0.9 <= r <= 400 * 1.05 for r in rain)
    wind = max(s.values["wind_speed_ms"].max() for s in damrey.series if s.spec.kind == "weather")
    assert 115 / 3.6 <= wind <= 135 / 3.6 * 1.1


def test_incident_congests_and_spreads_upstream() -> None:
    sim = simulate("rush_hour_incident")
    lab = next(lab for lab in sim.labels if lab["event_id"] == "xom_bong_crash")
    assert lab["sensors"][0] == "TRF_2T4_XOM_BONG" and len(lab["sensors"]) >= 3
    for sid in lab["sensors"][:2]:
        s = sim.by_id(sid)
        inside = (s.t >= lab["start"]) & (s.t <= lab["end"])
        slow = s.values["speed_kmh"][inside] < 10
        assert slow.sum() * s.spec.interval_s >= 30 * 60, sid  # jam: < 10 km/h for >= 30 min


def test_malformed_rate_and_every_payload_classified(faults: Simulation) -> None:
    now = faults.scenario.end + timedelta(minutes=1)
    policy = ValidationPolicy(late_bound=timedelta(days=30))
    rejected = accepted = flagged = 0
    for chunk in iter_chunks(faults):
        for topic, payload, bad in zip(chunk.topics, chunk.payloads, chunk.malformed, strict=True):
            flagged += bad
            try:
                validate(topic, payload, sensors=KINDS.get, now=now, policy=policy)
                accepted += 1
                assert not bad
            except PayloadRejected:
                rejected += 1
                assert bad, payload
    total = accepted + rejected
    assert rejected == flagged
    assert 0.006 <= rejected / total <= 0.014  # 1 % configured, binomial spread for ~18k messages
    lab = next(lab for lab in faults.labels if lab["kind"] == "malformed")
    assert lab["count"] == rejected


def test_delivery_faults_show_in_the_stream(faults: Simulation) -> None:
    d = {x.spec.sensor_id: x for x in faults.deliveries}
    tp = d["TRF_TRAN_PHU_24"]
    assert len(tp.seq) > len(set(tp.seq.tolist()))  # duplicates
    og = d["TRF_2310_CHO_GA"]
    order = np.argsort(og.emit, kind="stable")
    assert (np.diff(og.ts[order]) < 0).any()  # out of order on arrival
    stuck = faults.by_id("HYD_DONG_TRANG")
    lab = next(lab for lab in faults.labels if lab["event_id"] == "dong_trang_stuck")
    sent = d["HYD_DONG_TRANG"]
    win = (sent.ts >= lab["start"]) & (sent.ts < lab["end"])
    assert len(np.unique(sent.values[win, 0])) == 1 and len(np.unique(stuck.values["water_level_m"])) > 1
    cd = d["AIR_CHO_DAM"]
    gap = next(lab for lab in faults.labels if lab["event_id"] == "cho_dam_dropout")
    assert not ((cd.ts >= gap["start"]) & (cd.ts < gap["end"])).any()


def test_fast_encoding_is_byte_identical_to_wire_format() -> None:
    sim = simulate("normal_day")
    chunk = next(iter_chunks(sim))
    for payload in chunk.payloads[:500]:
        doc = json.loads(payload)
        ts = datetime.fromisoformat(doc["ts"])
        assert encode_payload(doc["sensor_id"], ts, doc["seq"], doc["metrics"]) == payload


def test_output_is_gzip_jsonl_with_send_times(tmp_path: Path) -> None:
    sim = simulate("demo")
    out = tmp_path / "demo.jsonl.gz"
    n, _ = write_simulation(sim, out)
    lines = gzip.decompress(out.read_bytes()).splitlines()
    assert len(lines) == n == sim.n_messages
    ts = [json.loads(line)["t"] for line in lines]
    assert ts == sorted(ts)


def test_pacer_releases_bursts_on_a_fake_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    p = Pacer(v0=1000.0, speed=10.0, monotonic=lambda: now[0], sleep=sleep)
    assert p.horizon() == pytest.approx(1000.0 + 0.005 * 10)
    p.wait_for(1100.0)
    assert now[0] == pytest.approx(10.0)
    assert Pacer(v0=0.0, speed=None).horizon() == float("inf")


@given(
    start=st.integers(0, 2_000_000_000),
    span=st.integers(60, 6 * 86400),
    speed=st.one_of(st.none(), st.floats(1.0, 1e6)),
)
def test_live_offset_never_puts_readings_in_the_future(start: int, span: int, speed: float | None) -> None:
    wall = 1_800_000_000.0
    off = live_offset(float(start), float(start + span), speed, wall)
    for v in (start, start + span / 2, start + span):
        sent_at = wall + (0.0 if speed is None else (v - start) / speed)
        assert v + off <= sent_at + 1e-6
        assert sent_at - (v + off) <= 7 * 86400


def test_registry_and_sim_ids_agree() -> None:
    by_id = registry_by_id(REG)
    sim = simulate("demo")
    assert all(s.spec.sensor_id in by_id for s in sim.series)
    assert datetime.fromtimestamp(sim.scenario.t0, UTC).hour == 17  # 00:00 +07:00
