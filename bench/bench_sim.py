"""Simulator throughput: generation to file, and MQTT publishing against a bare paho QoS 1 loop.

Prints figures and ratios; asserts nothing about timing. Uses IOC_MQTT_URL when set, otherwise
starts a throwaway Mosquitto on a free loopback port for the duration of the run.

    .venv/bin/python bench/bench_sim.py [--n 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ioc.mqtt_client import connect, make_client
from sensors_sim.clock import Pacer
from sensors_sim.encode import Chunk, iter_chunks
from sensors_sim.engine import simulate
from sensors_sim.output import write_simulation
from sensors_sim.publisher import Publisher


@contextmanager
def broker() -> Iterator[str]:
    url = os.environ.get("IOC_MQTT_URL")
    if url:
        yield url
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 60000\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_generate(tmp: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    sim = simulate("typhoon_damrey")
    t1 = time.perf_counter()
    n, _ = write_simulation(sim, tmp / "run.jsonl.gz")
    t2 = time.perf_counter()
    return {"readings": n, "simulate_s": t1 - t0, "write_s": t2 - t1, "total_per_s": n / (t2 - t0)}


def bare_paho(url: str, topics: list[str], payloads: list[bytes]) -> float:
    """The raw limit: publish pre-encoded payloads at QoS 1 in a tight loop, wait for every PUBACK."""
    client, target, props = make_client(url)
    acked = [0]
    done = threading.Event()
    n = len(payloads)

    def on_publish(*_a: Any) -> None:
        acked[0] += 1
        if acked[0] == n:
            done.set()

    client.on_publish = on_publish
    connect(client, target, props)
    client.loop_start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    for topic, p in zip(topics, payloads, strict=True):
        client.publish(topic, p, qos=1)
    done.wait(120)
    dt = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return n / dt


def limited(sim: Any, n: int) -> Iterator[Chunk]:
    count = 0
    for c in iter_chunks(sim):
        yield c
        count += len(c.emit)
        if count >= n:
            return


def ours_pre(url: str, chunks: list[Chunk]) -> float:
    """Our publisher alone (window, bursts, ack accounting) on pre-encoded chunks: same work as bare."""
    pub = Publisher(url)
    n = sum(len(c.emit) for c in chunks)
    t0 = time.perf_counter()
    pub.publish_chunks(chunks, Pacer(v0=0.0, speed=None))
    pub.wait_acked(120)
    dt = time.perf_counter() - t0
    assert pub.counts.published == n
    pub.close()
    return n / dt


def ours(url: str, sim: Any, n_target: int) -> float:
    """Our publisher, encoding included: chunks are encoded lazily while publishing."""
    n = sum(len(c.emit) for c in limited(sim, n_target))
    pub = Publisher(url)
    t0 = time.perf_counter()
    pub.publish_chunks(limited(sim, n_target), Pacer(v0=0.0, speed=None))
    pub.wait_acked(120)
    dt = time.perf_counter() - t0
    assert pub.counts.published == n
    pub.close()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000, help="cap on messages published per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--publish-scenario", default="normal_day", help="scenario whose messages are published")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        gens = [bench_generate(Path(d)) for _ in range(args.repeat)]
    best = max(gens, key=lambda g: g["total_per_s"])
    med = statistics.median(g["total_per_s"] for g in gens)
    print(f"generate typhoon_damrey → jsonl.gz: {best['readings']:,} readings; "
          f"median {med:,.0f} readings/s (best: simulate {best['simulate_s']:.2f} s + write {best['write_s']:.2f} s)")
    print(f"  ratio to the 100k readings/s target: {med / 100_000:.2f}")
    sim = simulate(args.publish_scenario)
    args.n = min(args.n, sim.n_messages)
    chunks: list[Chunk] = []
    total = 0
    for c in iter_chunks(sim):
        chunks.append(c)
        total += len(c.emit)
        if total >= args.n:
            break
    topics = [t for c in chunks for t in c.topics]
    payloads = [p for c in chunks for p in c.payloads]
    with broker() as url:
        bare, mine, pre = [], [], []
        for _ in range(args.repeat):
            bare.append(bare_paho(url, topics, payloads))
            pre.append(ours_pre(url, chunks))
            mine.append(ours(url, sim, args.n))
    b, m = statistics.median(bare), statistics.median(mine)
    print(f"bare paho QoS 1 publish loop ({len(payloads):,} msgs of {args.publish_scenario}, pre-encoded): median {b:,.0f} msg/s")
    p = statistics.median(pre)
    print(f"sensors_sim publisher, pre-encoded (window + bursts + ack accounting): median {p:,.0f} msg/s")
    print(f"  ratio publisher / bare paho: {p / b:.2f} (target >= 0.80)")
    print(f"sensors_sim publisher incl. encoding while publishing: median {m:,.0f} msg/s")
    print(f"  ratio (incl. encoding) / bare paho: {m / b:.2f}")


if __name__ == "__main__":
    main()
