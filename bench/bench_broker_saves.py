"""Mosquitto's autosave against the depth of a dead session's queue.

Mosquitto is one thread, and every ``autosave_interval`` it writes every queued message to disk,
so a session nobody resumes (a bridge lost without ``ioc bridge --retire``) stalls delivery to
everyone, more the more it holds. This starts the local stack's Mosquitto (the production topic
rights and queue bound, :func:`ioc.stack.services.start_mosquitto`), leaves a bridge-like session
with N readings queued, and times a live QoS 1 probe every 10 ms. Prints figures; asserts nothing.
Filling is slow (about 550 readings/s here), so the defaults take about 12 minutes.

    .venv/bin/python bench/bench_broker_saves.py [--queued 0 100000] [--autosave 5 60] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ioc.mqtt_client import connect, make_client
from ioc.stack.process import stop_pid
from ioc.stack.services import Service, mqtt_role_env, start_mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import exit_on_sigterm

READING = b'{"sensor_id":"BENCH_1","ts":"2026-12-03T00:00:00Z","seq":1,"values":{"water_level_m":1.23}}' + b" " * 150
WINDOW = 20_000  # publishes in flight: paho's message ids wrap at 65,535


def _dead_session(url: str) -> None:
    """A bridge's persistent session on the readings' shared subscription, then gone for good."""
    client, target, props = make_client(url, client_id="bench-dead-bridge", clean_start=False,
                                        session_expiry_s=86400, manual_ack=True)
    done = threading.Event()
    client.on_subscribe = lambda *_a: done.set()
    connect(client, target, props)
    client.loop_start()
    client.subscribe("$share/bench/khanhhoa/v1/+/+", qos=1)
    assert done.wait(10), "no SUBACK"
    client.disconnect()
    client.loop_stop()


def _fill(url: str, n: int) -> float:
    # No paho limit (0): with one, paho scans its whole outgoing table on every PUBACK to find the
    # next queued message, and a 20,000 window filled at about 550/s. WINDOW bounds it instead.
    client, target, props = make_client(url, max_inflight=0)
    connect(client, target, props)
    client.loop_start()
    t0 = time.perf_counter()
    try:
        infos = []
        for k in range(n):
            if k >= WINDOW:
                infos[k - WINDOW].wait_for_publish(60)
            infos.append(client.publish("khanhhoa/v1/water_level/BENCH_1", READING, qos=1))
        for info in infos[-WINDOW:]:
            info.wait_for_publish(60)
    finally:
        client.loop_stop()
        client.disconnect()
    return time.perf_counter() - t0


def _probe(url: str, seconds: float) -> list[float]:
    """Publish a timestamp every 10 ms and time its round trip to a live subscriber."""
    got: list[float] = []
    sub, target, props = make_client(url)
    ready = threading.Event()
    sub.on_subscribe = lambda *_a: ready.set()
    sub.on_message = lambda _c, _u, m: got.append(time.perf_counter() - float(m.payload))
    connect(sub, target, props)
    sub.loop_start()
    sub.subscribe("bench/probe", qos=1)
    assert ready.wait(10), "no SUBACK"
    pub, target, props = make_client(url)
    connect(pub, target, props)
    pub.loop_start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pub.publish("bench/probe", repr(time.perf_counter()).encode(), qos=1)
        time.sleep(0.01)
    time.sleep(2)
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return sorted(got)


def run(queued: int, autosave: int, seconds: float) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-saves-"))
    svc: Service = start_mosquitto(base, overrides={"autosave_interval": str(autosave)})
    try:
        _dead_session(svc.role_urls[mqtt_role_env("bridge")])
        fill_s = _fill(svc.url, queued)
        lat = _probe(svc.url, seconds)
        db = Path(svc.data_dir) / "mosquitto.db"
        with open(f"/proc/{svc.pid}/stat") as f:
            stat = f.read().split()
        return {
            "queued": queued, "autosave_s": autosave, "db_mb": round(db.stat().st_size / 1e6, 1) if db.exists() else 0.0,
            "fill_s": round(fill_s, 1), "probes": len(lat),
            "p50_ms": round(lat[len(lat) // 2] * 1e3, 1), "p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 1),
            "max_ms": round(lat[-1] * 1e3, 1), "over_100ms": sum(x > 0.1 for x in lat),
            "broker_cpu_s": round((int(stat[13]) + int(stat[14])) / 100, 1),
        }
    finally:
        stop_pid(svc.pid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queued", type=int, nargs="+", default=[0, 100_000])
    ap.add_argument("--autosave", type=int, nargs="+", default=[5, 60])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/broker_saves.json"))
    args = ap.parse_args()
    exit_on_sigterm()  # a killed bench must still stop the broker it started (``run``'s finally)
    print(f"{'queued':>8} {'autosave':>8} {'file MB':>8} {'fill s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
          f" {'>100ms':>7} {'cpu s':>6}", flush=True)
    rows = []
    for q in args.queued:
        for a in args.autosave:
            r = run(q, a, args.seconds)
            rows.append(r)
            print(f"{r['queued']:>8} {r['autosave_s']:>8} {r['db_mb']:>8} {r['fill_s']:>7} {r['p50_ms']:>7}"
                  f" {r['p99_ms']:>7} {r['max_ms']:>7} {r['over_100ms']:>7} {r['broker_cpu_s']:>6}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
