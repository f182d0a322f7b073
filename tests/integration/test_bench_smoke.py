"""The issue-11 benches run end to end in quick mode, write the JSON the summary reads, lose no row,
and leave no process running. Each bench starts its own real stack with ``ioc.stack`` (that start and
stop is what the no-leftovers check is about), so this test does not use the session stack."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PIPELINE_PROCS = {"worker", "bridge", "tansu", "postgres", "mosquitto"}


def _run(script: str, out: Path, *args: str, timeout_s: float = 150) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = script.removeprefix("bench_").removesuffix(".py")
    data: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    return data


def _left_running(started: list[list[Any]]) -> list[tuple[str, int]]:
    alive = []
    for name, pid, create_time in started:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - create_time) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                alive.append((name, pid))
        except psutil.Error:
            continue
    return alive


def test_quick_raw_and_sustained_benches(tmp_path: Path) -> None:
    raw = _run("bench_raw.py", tmp_path, "--quick", "--n", "2000", "--timeout", "60")
    hops = raw["hops"]
    assert {"mqtt_qos0", "mqtt_qos1", "kafka_produce", "kafka_consume", "faust_agent", "pg_copy"} <= set(hops)
    assert hops["mqtt_qos1"]["received"] == 2000  # QoS 1 through a local broker loses nothing
    assert hops["kafka_consume"]["received"] == 2000
    assert hops["faust_agent"]["received"] == 2000
    assert all(h["readings_per_s"] > 0 for h in hops.values())
    assert raw["slowest_hop"]["readings_per_s"] == min(
        hops[k]["readings_per_s"] for k in ("mqtt_qos1", "kafka_produce", "kafka_consume", "faust_agent", "pg_copy"))
    waits = raw["kafka_wait"]  # the Kafka hop timed at each fetch wait, every record received
    assert sorted(w["fetch_max_wait_ms"] for w in waits.values()) == [10, 30, 50, 100]
    assert all(w["latency_ms"]["n"] == w["records"] == 100 for w in waits.values())
    assert {n for n, _, _ in raw["started_pids"]} >= {"mosquitto", "tansu", "postgres", "faust-agent"}
    assert _left_running(raw["started_pids"]) == []

    sus = _run("bench_sustained.py", tmp_path, "--quick", "--cadences", "10s", "--max-steps", "1", "--hold", "3",
               "--start", "200", "--latency-rates", "200", "--latency-seconds", "4", "--probes", "1", "--sample", "1")
    step = sus["cadences"]["10s"]["steps"][0]
    assert step["offered_rate"] == 200 and step["sensors"] == 2000
    assert step["published"] == step["acked"] == 600
    assert step["unacked_readings"] == 0 and step["mids_reused"] == 0 and step["generator_stalled"] is False
    assert step["missing_rows"] == 0, step  # counted row by row: the pipeline drops nothing
    assert step["row_latency_ms"]["n"] == 600  # --sample 1: every reading's arrival was seen
    assert PIPELINE_PROCS <= set(step["cpu_s_per_1k_readings"])
    assert all(step["cpu_s_per_1k_readings"][k] > 0 for k in PIPELINE_PROCS)
    assert PIPELINE_PROCS <= set(step["rss_peak_mb"])
    phase = sus["latency"]["200"]
    assert phase["alert_latency_ms"]["n"] == 1  # the probe's BĐ III crossing reached MQTT as an alert
    assert phase["missing_rows"] == 0
    assert {n for n, _, _ in sus["started_pids"]} >= {"mosquitto", "tansu", "postgres", "worker", "bridge",
                                                      "bench-load-0"}
    assert _left_running(sus["started_pids"]) == []

    spec = importlib.util.spec_from_file_location("bench_harness", ROOT / "bench" / "harness.py")
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = harness  # dataclasses look their module up while the class is built
    spec.loader.exec_module(harness)
    rows, path = harness.write_summary(tmp_path)
    assert path is not None and path.read_text().count("\n|") == len(rows) + 2
    assert any(w.startswith("ratio: sustained 10s") for w, _ in rows) or sus["cadences"]["10s"]["sustained_rate"] == 0


def test_quick_scaleout_bench(tmp_path: Path) -> None:
    """Two workers share the consumer group's partitions, two bridges the MQTT shared subscription."""
    so = _run("bench_scaleout.py", tmp_path, "--quick", "--rate", "100", timeout_s=300)
    configs = so["configs"]
    assert set(configs) == {"a", "b", "c"}
    for c in configs.values():
        assert c["published"] == c["acked"] == 300
        assert c["missing_rows"] == 0, c  # counted row by row
        assert set(c["cpu_s_per_1k_sums"]) == {"workers", "bridges", "total_pipeline"}
    assert len(configs["b"]["readings_by_worker"]) == 2 and all(n > 0 for n in configs["b"]["readings_by_worker"].values())
    assert {"worker", "worker2"} <= set(configs["b"]["cpu_s_per_1k_readings"])
    assert len(configs["c"]["received_by_bridge"]) == 2 and all(n > 0 for n in configs["c"]["received_by_bridge"].values())
    assert {"bridge", "bridge2"} <= set(configs["c"]["cpu_s_per_1k_readings"])
    assert set(so["ratios"]) == {"b/a", "c/a"}
    assert {n for n, _, _ in so["started_pids"]} >= {"mosquitto", "tansu", "postgres", "worker", "worker2", "bridge",
                                                     "bridge2"}
    assert _left_running(so["started_pids"]) == []


def test_quick_soak_bench_and_latency_plot(tmp_path: Path) -> None:
    soak = _run("bench_soak.py", tmp_path, "--quick", "--minutes", "0.25", "--sensors", "20", "--sample-every", "3",
                "--warm-up", "0.05", timeout_s=240)
    assert soak["missing_rows"] == 0 and soak["load"]["published"] == soak["load"]["acked"] == 300
    assert set(soak["memory"]) == PIPELINE_PROCS
    for m in soak["memory"].values():
        assert m["rss"]["end_mb"] > 0 and m["pss"]["end_mb"] > 0
        assert m["rss"]["flat"] in (True, False)  # enough samples after the warm-up for a slope
    assert len(soak["samples"]) >= 5
    assert _left_running(soak["started_pids"]) == []

    # The plot reads sustained.json and raw.json (not committed: bench/results/.gitignore); a small pair of the same shape.
    q = {"n": 10, "p50": 150.0, "p99": 400.0, "max": 450.0}
    step = {"offered_rate": 500.0, "passed": True, "row_latency_ms": q}
    (tmp_path / "sustained.json").write_text(json.dumps({
        "hold_s": 5, "drain_bound_s": 2.0, "latency_cadence": "10s", "quick": True,
        "cadences": {"10s": {"sustained_rate": 500.0, "steps": [step, {**step, "offered_rate": 1000.0, "passed": False}]}},
        "latency": {"500": {"row_latency_ms": q, "alert_latency_ms": {**q, "n": 3}}}}))
    (tmp_path / "raw.json").write_text(json.dumps({
        "hops": {"mqtt_qos1": {"readings_per_s": 9000}, "faust_agent": {"readings_per_s": 13000}},
        "slowest_hop": {"name": "mqtt_qos1", "readings_per_s": 9000}}))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "plot_latency.py"), "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_alert_storm_bench(tmp_path: Path) -> None:
    storm = _run("bench_alert_storm.py", tmp_path, "--quick", timeout_s=120)
    rounds = {r["round"]: r for r in storm["rounds"]}
    assert set(rounds) == {"open", "repeat", "resolve"} and storm["sensors"] == 300
    # Two channels: an alert opens and resolves per sensor, and a repeat of the same severity is silent.
    assert rounds["open"]["notifications"] == rounds["resolve"]["notifications"] == 600
    assert rounds["repeat"]["notifications"] == 0
    assert all(r["findings_per_s"] > 0 for r in rounds.values())
