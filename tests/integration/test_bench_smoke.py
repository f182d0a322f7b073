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
    assert {n for n, _, _ in raw["started_pids"]} >= {"mosquitto", "tansu", "postgres", "faust-agent"}
    assert _left_running(raw["started_pids"]) == []

    sus = _run("bench_sustained.py", tmp_path, "--quick", "--cadences", "10s", "--max-steps", "1", "--hold", "3",
               "--start", "200", "--latency-rates", "200", "--latency-seconds", "4", "--probes", "1", "--sample", "1")
    step = sus["cadences"]["10s"]["steps"][0]
    assert step["offered_rate"] == 200 and step["sensors"] == 2000
    assert step["published"] == step["acked"] == 600
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
