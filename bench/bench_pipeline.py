"""End-to-end throughput of the real pipeline: MQTT → bridge → Kafka (Tansu) → Faust worker → PostgreSQL.

Starts the local stack with the project's own code (``ioc.stack.stack.up``), migrates a fresh
database, registers the sensors, then:

1. measures the bare paho QoS 1 pub→sub ceiling on the same broker (a plain paho subscriber in
   its own process counting messages, like the bridge is in its own process);
2. starts ``ioc worker`` and ``ioc bridge`` as subprocesses and warms them up (Tansu makes a new
   consumer group wait ~30 s for its first assignment);
3. publishes N readings at QoS 1 as fast as a paho inflight window allows, with ``ts`` = the
   moment of publishing, and waits until every row is in ``readings``;
4. reads the sink's end-to-end latency (sensor ts → DB commit) from ``pipeline_metrics``.

Prints figures and ratios; asserts nothing about timing. Every process and the stack are
stopped in ``finally``.

    .venv/bin/python bench/bench_pipeline.py [--n 50000] [--inflight 1000] [--timeout 300]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.table import Table

from ioc.domain import KIND_METRICS, reading_topic
from ioc.mqtt_client import connect, make_client
from ioc.stack import stack as local_stack
from ioc.stack.process import log_tail, stop_pid
from ioc.stack.services import remove_tree
from ioc.storage.db import create_database
from ioc.storage.migrate import migrate
from ioc.wire import encode_payload

console = Console(width=120)

KIND_MIX = {"traffic": 30, "air": 15, "noise": 10, "weather": 8, "water_level": 8, "rain": 6, "tide": 3}
CEILING_ROOT = "benchceil"
METRICS_INTERVAL_S = 2.0


def _sensors(prefix: str) -> list[tuple[str, str]]:
    return [(f"{prefix}_{kind.upper()}_{i:03d}", kind) for kind, count in KIND_MIX.items() for i in range(count)]


def _metrics(kind: str, rng: random.Random) -> dict[str, float]:
    return {m: round(rng.uniform(0, 100), 2) for m in KIND_METRICS[kind]}


def _wait(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def _scalar(url: str, query: str, params: tuple[object, ...] = ()) -> object:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]


# -- publishing -----------------------------------------------------------------------------------------


def publish_qos1(mqtt_url: str, messages: Callable[[int], tuple[str, bytes]], n: int, inflight: int,
                 timeout_s: float) -> tuple[float, float, int]:
    """Publish n messages at QoS 1 as fast as paho's inflight window allows.

    Returns (wall time of the first publish, seconds until the last PUBACK, PUBACKs received).
    ``messages(i)`` builds message i just in time, so a timestamp in it is the publish moment.
    """
    client, target, props = make_client(mqtt_url, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}", max_inflight=inflight)
    acked = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_publish(c: object, u: object, mid: int, rc: object, p: object) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked >= n:
                done.set()

    client.on_publish = on_publish
    connect(client, target, props)
    client.loop_start()
    try:
        t_wall = time.time()
        t0 = time.perf_counter()
        for i in range(n):
            topic, payload = messages(i)
            client.publish(topic, payload, qos=1)
        done.wait(timeout_s)
        return t_wall, time.perf_counter() - t0, acked
    finally:
        client.loop_stop()
        client.disconnect()


def _subscriber_main(url: str, topic: str, n: int, timeout_s: float) -> None:
    """Child process of the ceiling measurement: count QoS 1 messages, print the time of the last."""
    client, target, props = make_client(url, client_id=f"bench-sub-{uuid.uuid4().hex[:8]}")
    count = 0
    last = 0.0
    done = threading.Event()

    def on_message(c: object, u: object, m: object) -> None:
        nonlocal count, last
        count += 1
        if count >= n:
            last = time.time()
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda c, u, mid, rcs, p: print("ready", flush=True)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    connect(client, target, props)
    client.loop_start()
    done.wait(timeout_s)
    client.loop_stop()
    client.disconnect()
    print(f"{count} {last if done.is_set() else time.time()}", flush=True)


def measure_ceiling(mqtt_url: str, sensors: list[tuple[str, str]], n: int, inflight: int,
                    timeout_s: float) -> tuple[float, float, int]:
    """Bare paho QoS 1 pub→sub on the same broker: (msgs/s received, publish msgs/s, received)."""
    sub = subprocess.Popen(
        [sys.executable, __file__, "--_subscriber", mqtt_url, f"{CEILING_ROOT}/#", str(n), str(timeout_s)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "ready":
            raise RuntimeError("ceiling subscriber failed to subscribe")
        rng = random.Random(3)
        now = datetime.now(UTC)
        payloads = [
            (f"{CEILING_ROOT}/{kind}/{sid}", encode_payload(sid, now, k, _metrics(kind, rng)))
            for k, (sid, kind) in enumerate(sensors)
        ]
        t_wall, pub_s, _ = publish_qos1(mqtt_url, lambda i: payloads[i % len(payloads)], n, inflight, timeout_s)
        out, _ = sub.communicate(timeout=timeout_s + 10)
        received, last = out.split()[-2:]
        elapsed = float(last) - t_wall
        return int(received) / elapsed, n / pub_s, int(received)
    finally:
        stop_pid(sub.pid)


# -- the pipeline ---------------------------------------------------------------------------------------


class Children:
    """`ioc worker` / `ioc bridge` subprocesses, stopped by pid."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        logdir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> None:
        with open(self.logdir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "ioc.cli", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def log(self, name: str) -> str:
        return log_tail(self.logdir / f"{name}.log", 30)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            stop_pid(p.pid, timeout_s=20)


def run(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    tag = uuid.uuid4().hex[:6]
    prefix = f"BP{tag.upper()}"
    sensors = _sensors(prefix)
    children: Children | None = None
    try:
        t0 = time.perf_counter()
        state = local_stack.up(base / "stack", environ={})  # start all three, whatever the caller's env says
        urls = state.urls
        db = create_database(urls["IOC_DATABASE_URL"], f"bench_{tag}")
        migrate(db)
        with psycopg.connect(db, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sensors (sensor_id, kind, name, metrics) VALUES (%s, %s, %s, %s)",
                [(sid, kind, sid, Jsonb(KIND_METRICS[kind])) for sid, kind in [*sensors, (f"{prefix}_WARMUP", "rain")]],
            )
        console.print(f"stack up and migrated in {time.perf_counter() - t0:.1f} s; {len(sensors)} sensors registered")

        ceiling, ceiling_pub, ceiling_got = measure_ceiling(urls["IOC_MQTT_URL"], sensors, args.n, args.inflight,
                                                           args.timeout)
        console.print(f"ceiling: paho QoS 1 pub→sub {ceiling:,.0f} msg/s ({ceiling_got:,} of {args.n:,} received)")

        env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
        env.update(urls)
        env.update(
            IOC_DATABASE_URL=db,
            IOC_TOPIC_PREFIX=f"bench-{tag}",
            IOC_APP_ID=f"bench-worker-{tag}",
            IOC_BRIDGE_ID=f"bench-bridge-{tag}",
            IOC_SHARE_GROUP=f"b{tag}",
            IOC_REGISTRY_REFRESH_S="1",
            IOC_METRICS_INTERVAL_S=str(METRICS_INTERVAL_S),
            IOC_DATA_DIR=str(base / "data"),
            IOC_STACK_ENV=str(base / "no-such-env-file"),
        )
        children = Children(env, base / "logs")
        ready = base / "bridge.ready"
        t_warm = time.perf_counter()
        children.start("worker", "worker")
        children.start("bridge", "bridge", "--ready-file", str(ready))
        if not _wait(lambda: ready.exists() or not children.alive("bridge"), 60) or not children.alive("bridge"):
            raise RuntimeError(f"bridge did not subscribe:\n{children.log('bridge')}")
        warm = f"{prefix}_WARMUP"
        publish_qos1(urls["IOC_MQTT_URL"],
                     lambda i: (reading_topic("rain", warm), encode_payload(warm, datetime.now(UTC), i, {"rain_mm": 0.0})),
                     1, 10, 30)
        if not _wait(lambda: _scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (warm,)) == 1
                     or not children.alive("worker"), 180):
            raise RuntimeError(f"worker got no partitions in 180 s:\n{children.log('worker')}")
        if not children.alive("worker"):
            raise RuntimeError(f"worker died during warm-up:\n{children.log('worker')}")
        console.print(f"worker and bridge warm after {time.perf_counter() - t_warm:.1f} s (Tansu's first assignment)")
        time.sleep(METRICS_INTERVAL_S + 0.5)  # the warm-up reading's latency (~30 s) stays out of the windows

        # The measured run: ts is the publish moment, so latency is sensor → DB commit.
        rng = random.Random(5)
        bodies = [(sid, kind, reading_topic(kind, sid), _metrics(kind, rng)) for sid, kind in sensors]
        expected_rows = sum(len(bodies[i % len(bodies)][3]) for i in range(args.n))

        def message(i: int) -> tuple[str, bytes]:
            sid, _, topic, metrics = bodies[i % len(bodies)]
            return topic, encode_payload(sid, datetime.now(UTC), i, metrics)

        like = f"{prefix}\\_%"
        start_ts = datetime.now(UTC)
        t_start = time.perf_counter()
        _, pub_s, acked = publish_qos1(urls["IOC_MQTT_URL"], message, args.n, args.inflight, args.timeout)
        rows = 0

        def all_in() -> bool:
            nonlocal rows
            rows = int(_scalar(db, "SELECT count(*) FROM readings WHERE sensor_id LIKE %s AND sensor_id <> %s",
                               (like, warm)))  # type: ignore[arg-type]
            if not (children.alive("worker") and children.alive("bridge")):
                raise RuntimeError(f"a pipeline process died:\n{children.log('worker')}\n{children.log('bridge')}")
            return rows >= expected_rows

        complete = _wait(all_in, args.timeout, 0.1)
        e2e_s = time.perf_counter() - t_start
        time.sleep(METRICS_INTERVAL_S + 1.0)  # let the sink flush its last metrics window
        with psycopg.connect(db, autocommit=True) as conn:
            windows = conn.execute(
                "SELECT metric, value FROM pipeline_metrics WHERE stage = 'sink' AND ts >= %s"
                " AND metric IN ('e2e_latency_ms_p50', 'e2e_latency_ms_p99', 'e2e_latency_ms_max') ORDER BY ts",
                (start_ts,),
            ).fetchall()
        p50s = [v for m, v in windows if m == "e2e_latency_ms_p50"]
        p99s = [v for m, v in windows if m == "e2e_latency_ms_p99"]
        maxes = [v for m, v in windows if m == "e2e_latency_ms_max"]

        e2e_rate = (rows / expected_rows * args.n) / e2e_s
        t = Table(title=f"Pipeline end to end: {args.n:,} readings ({expected_rows:,} rows), QoS 1, inflight {args.inflight}")
        for col in ("what", "value", "÷ paho pub→sub ceiling"):
            t.add_column(col, justify="left" if col == "what" else "right")
        t.add_row("bare paho QoS 1 pub→sub (ceiling)", f"{ceiling:,.0f} msg/s", "1.00")
        t.add_row("  its publish side alone", f"{ceiling_pub:,.0f} msg/s", f"{ceiling_pub / ceiling:.2f}")
        t.add_row("publish rate into the pipeline (all PUBACKed)", f"{args.n / pub_s:,.0f} msg/s ({acked:,} acked)",
                  f"{args.n / pub_s / ceiling:.2f}")
        t.add_row("end to end: first publish → all rows in readings",
                  f"{e2e_rate:,.0f} readings/s ({e2e_s:.1f} s)", f"{e2e_rate / ceiling:.2f}")
        t.add_row("rows in readings", f"{rows:,} of {expected_rows:,}" + ("" if complete else " (TIMED OUT)"), "")
        if p50s:
            t.add_row(f"e2e latency p50 (median of {len(p50s)} sink windows of {METRICS_INTERVAL_S:.0f} s)",
                      f"{statistics.median(p50s):,.0f} ms", "")
            t.add_row("e2e latency p99 (worst window)", f"{max(p99s):,.0f} ms", "")
            t.add_row("e2e latency max", f"{max(maxes):,.0f} ms", "")
        else:
            t.add_row("e2e latency", "no sink windows in pipeline_metrics", "")
        console.print(t)
    finally:
        if children is not None:
            children.stop_all()
        local_stack.down(base / "stack")
        remove_tree(str(base))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_subscriber":
        url, topic, n, timeout_s = sys.argv[2:6]
        _subscriber_main(url, topic, int(n), float(timeout_s))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="readings to publish")
    ap.add_argument("--inflight", type=int, default=1000, help="paho max_inflight_messages of the publisher")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all rows")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
