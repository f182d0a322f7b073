"""End-to-end throughput and latency of the real pipeline: MQTT → bridge → Kafka (Tansu) → Faust worker → PostgreSQL.

Starts the local stack with the project's own code (``ioc.stack.stack.up``), migrates a fresh
database, registers the sensors, then:

1. (burst) measures the bare paho QoS 1 pub→sub ceiling on the same broker (a plain paho
   subscriber in its own process counting messages, like the bridge is in its own process);
2. starts ``ioc worker`` and ``ioc bridge`` as subprocesses and warms them up (Tansu makes a new
   consumer group wait ~30 s for its first assignment);
3. (steady) publishes ``--rate`` readings/s for ``--seconds`` s, paced in bursts every 10 ms, each
   with ``ts`` = the moment of publishing; a poller in this process reads the rows that became
   visible in ``readings`` every ``--poll-ms`` ms and stamps their arrival, so each reading's
   end-to-end latency (publish → visible after DB commit) is measured, not sampled; the
   resolution is one poll interval (each figure is given as an upper and a lower bound);
4. (burst) publishes N readings at QoS 1 as fast as a paho inflight window allows, with ``ts`` =
   the moment of publishing, and waits until every row is in ``readings``;
5. reads the sink's own sampled end-to-end latency (sensor ts → DB commit) from
   ``pipeline_metrics`` for each phase.

Steady runs before burst, so the burst's backlog does not leak into the steady figures.
Prints figures and ratios; asserts nothing about timing. Every process and the stack are
stopped in ``finally``.

    .venv/bin/python bench/bench_pipeline.py [--mode both|steady|burst] [--rate 500] [--seconds 30]
        [--poll-ms 50] [--n 50000] [--inflight 1000] [--timeout 300]
"""

from __future__ import annotations

import argparse
import math
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
TICK_S = 0.010  # steady mode publishes a burst every 10 ms


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


# -- steady state: paced publisher, arrival poller ------------------------------------------------------


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list (q=1 → max)."""
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


class ArrivalPoller(threading.Thread):
    """Stamps the moment each published reading becomes visible in ``readings``.

    Every ``interval_s`` it runs ``SELECT sensor_id, ts FROM readings WHERE ts >= <oldest reading
    not yet seen>`` (range scan on ``readings_ts_idx``; one metric per kind, since a reading's rows
    commit together). A key first seen by the poll whose statement started at wall time t_k was
    committed in (t_{k-1}, t_k]: t_k is the upper bound of its arrival, t_{k-1} the lower bound.
    The watermark is the oldest *unseen* reading, not the newest seen one: readings of different
    partitions commit out of ts order, and a ``ts > max seen`` cursor would skip them.
    """

    def __init__(self, db: str, interval_s: float, first_metrics: list[str]) -> None:
        super().__init__(name="arrival-poller", daemon=True)
        self.db = db
        self.interval_s = interval_s
        self.first_metrics = first_metrics
        self.lock = threading.Lock()
        self.order: list[tuple[str, datetime]] = []  # publish order == ts order
        self.published: dict[tuple[str, datetime], float] = {}  # key → publish wall time (= ts)
        self.arrived: dict[tuple[str, datetime], tuple[float, float]] = {}  # key → (lower, upper) wall time
        self.head = 0  # index in order of the oldest reading not yet seen
        self.poll_starts: list[float] = []
        self.query_s: list[float] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def add(self, key: tuple[str, datetime], t_pub: float) -> None:
        with self.lock:
            self.order.append(key)
            self.published[key] = t_pub

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        try:
            with psycopg.connect(self.db, autocommit=True, connect_timeout=5) as conn:
                prev = time.time()
                next_at = time.monotonic()
                while not self._stop_event.is_set():
                    with self.lock:
                        while self.head < len(self.order) and self.order[self.head] in self.arrived:
                            self.head += 1
                        low = self.order[self.head][1] if self.head < len(self.order) else None
                    t_q = time.time()  # the statement's snapshot is taken right after this
                    q0 = time.perf_counter()
                    rows = [] if low is None else conn.execute(
                        "SELECT sensor_id, ts FROM readings WHERE ts >= %s AND metric = ANY(%s)",
                        (low, self.first_metrics),
                    ).fetchall()
                    self.query_s.append(time.perf_counter() - q0)
                    self.poll_starts.append(t_q)
                    with self.lock:
                        for key in rows:
                            key = (key[0], key[1])
                            if key in self.published and key not in self.arrived:
                                self.arrived[key] = (prev, t_q)
                    prev = t_q
                    next_at += self.interval_s
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self._stop_event.wait(delay)
                    else:
                        next_at = time.monotonic()  # a slow query: poll again at once, no catch-up burst
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e

    def latencies_ms(self) -> tuple[list[float], list[float], list[tuple[float, float]]]:
        """(upper bounds, lower bounds, (publish time, upper bound) pairs), all in ms; sorted bounds."""
        with self.lock:
            pairs = [(self.published[k], self.arrived[k]) for k in self.order if k in self.arrived]
        upper = sorted((hi - t) * 1000.0 for t, (_, hi) in pairs)
        lower = sorted(max(0.0, lo - t) * 1000.0 for t, (lo, _) in pairs)
        return upper, lower, [(t, (hi - t) * 1000.0) for t, (_, hi) in pairs]


def publish_paced(mqtt_url: str, bodies: list[tuple[str, str, str, dict[str, float]]], rate: float, seconds: float,
                  inflight: int, poller: ArrivalPoller) -> tuple[int, int, float, list[float]]:
    """Publish ``rate`` readings/s for ``seconds`` s at QoS 1, a burst every TICK_S.

    Each reading's ts is stamped just before its own publish call and registered with the poller.
    Returns (published, PUBACKed within 10 s of the end, seconds spent, per-tick lateness in ms).
    """
    client, target, props = make_client(mqtt_url, client_id=f"bench-steady-{uuid.uuid4().hex[:8]}",
                                        max_inflight=inflight)
    acked = 0
    lock = threading.Lock()

    def on_publish(c: object, u: object, mid: int, rc: object, p: object) -> None:
        nonlocal acked
        with lock:
            acked += 1

    client.on_publish = on_publish
    connect(client, target, props)
    client.loop_start()
    n_total = int(rate * seconds)
    sent = 0
    late_ms: list[float] = []
    try:
        t0 = time.perf_counter()
        tick = 0
        while sent < n_total:
            tick += 1
            due_at = t0 + tick * TICK_S
            pause = due_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            late_ms.append((time.perf_counter() - due_at) * 1000.0)
            due = min(n_total, round(rate * tick * TICK_S))
            while sent < due:
                sid, _, topic, metrics = bodies[sent % len(bodies)]
                t_pub = time.time()
                ts = datetime.fromtimestamp(t_pub, UTC)  # µs precision on the wire and in the DB
                poller.add((sid, ts), ts.timestamp())
                client.publish(topic, encode_payload(sid, ts, sent, metrics), qos=1)
                sent += 1
        spent = time.perf_counter() - t0
        _wait(lambda: acked >= sent, 10, 0.05)
        return sent, acked, spent, late_ms
    finally:
        client.loop_stop()
        client.disconnect()


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
                [sys.executable, "-m", "ioc.composition.cli", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def log(self, name: str) -> str:
        return log_tail(self.logdir / f"{name}.log", 30)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            stop_pid(p.pid, timeout_s=20)


def _sink_windows(db: str, since: datetime, until: datetime | None = None) -> tuple[list[float], list[float], list[float]]:
    """The sink's sampled latency windows (p50s, p99s, maxes) written in [since, until)."""
    with psycopg.connect(db, autocommit=True) as conn:
        windows = conn.execute(
            "SELECT metric, value FROM pipeline_metrics WHERE stage = 'sink' AND ts >= %s AND ts < %s"
            " AND metric IN ('e2e_latency_ms_p50', 'e2e_latency_ms_p99', 'e2e_latency_ms_max') ORDER BY ts",
            (since, until or datetime.now(UTC)),
        ).fetchall()
    return ([v for m, v in windows if m == "e2e_latency_ms_p50"], [v for m, v in windows if m == "e2e_latency_ms_p99"],
            [v for m, v in windows if m == "e2e_latency_ms_max"])


def _sink_counters(db: str, since: datetime) -> dict[str, float]:
    """Latest sink counter totals and the max consumer-lag gauge written since ``since`` (or before, if none)."""
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT metric, value FROM pipeline_metrics WHERE stage = 'sink'"
            " AND metric IN ('envelopes_total', 'readings_total') AND ts < %s ORDER BY ts",
            (since,),
        ).fetchall()
        lag = conn.execute(
            "SELECT max(value) FROM pipeline_metrics WHERE stage = 'sink' AND metric = 'consumer_lag_envelopes'"
            " AND ts >= %s",
            (since,),
        ).fetchone()
    out = {m: v for m, v in rows}  # the last one wins
    out["max_lag"] = float("nan") if lag is None or lag[0] is None else lag[0]
    return out


def _check_alive(children: Children) -> None:
    if not (children.alive("worker") and children.alive("bridge")):
        raise RuntimeError(f"a pipeline process died:\n{children.log('worker')}\n{children.log('bridge')}")


def run_steady(args: argparse.Namespace, mqtt_url: str, db: str, children: Children,
               bodies: list[tuple[str, str, str, dict[str, float]]]) -> None:
    """Steady paced load; per-reading latency publish → visible in ``readings``."""
    first_metrics = sorted({next(iter(KIND_METRICS[kind])) for _, kind, _, _ in bodies})
    poller = ArrivalPoller(db, args.poll_ms / 1000.0, first_metrics)
    poller.start()
    start_ts = datetime.now(UTC)
    before = _sink_counters(db, start_ts)
    try:
        sent, acked, spent, late_ms = publish_paced(mqtt_url, bodies, args.rate, args.seconds, args.inflight, poller)
        end_ts = datetime.now(UTC)

        def all_seen() -> bool:
            _check_alive(children)
            if poller.error is not None:
                raise RuntimeError(f"arrival poller failed: {poller.error!r}")
            return len(poller.arrived) >= sent

        complete = _wait(all_seen, args.timeout, 0.1)
    finally:
        poller.stop()
    drain_s = (datetime.now(UTC) - end_ts).total_seconds()
    time.sleep(METRICS_INTERVAL_S + 1.0)  # let the sink flush its last metrics window
    p50s, p99s, maxes = _sink_windows(db, start_ts)
    after = _sink_counters(db, datetime.now(UTC))
    lag = _sink_counters(db, start_ts)["max_lag"]
    upper, lower, series = poller.latencies_ms()

    gaps = sorted((b - a) * 1000.0 for a, b in zip(poller.poll_starts, poller.poll_starts[1:], strict=False))
    query_ms = sorted(q * 1000.0 for q in poller.query_s)
    late = sorted(late_ms)
    t = Table(title=f"Pipeline steady state: {args.rate:,.0f} readings/s for {args.seconds:.0f} s, QoS 1, "
                    f"a burst every {TICK_S * 1000:.0f} ms; latency = sensor ts (publish) → row visible in readings")
    for col in ("latency", "p50", "p95", "p99", "max"):
        t.add_column(col, justify="left" if col == "latency" else "right")
    if upper:
        for label, values in (("measured, upper bound (seen by poll k)", upper),
                              ("measured, lower bound (not yet seen by poll k-1)", lower)):
            t.add_row(label, *(f"{_quantile(values, q):,.0f} ms" for q in (0.5, 0.95, 0.99, 1.0)))
    else:
        t.add_row("measured", "no reading seen", "", "", "")
    if p50s:
        t.add_row(f"sink sample, pipeline_metrics ({len(p50s)} windows of {METRICS_INTERVAL_S:.0f} s;"
                  " median p50, worst p99)", f"{statistics.median(p50s):,.0f} ms", "-", f"{max(p99s):,.0f} ms",
                  f"{max(maxes):,.0f} ms")
    else:
        t.add_row("sink sample, pipeline_metrics", "no windows", "", "", "")
    console.print(t)

    s = Table(title="Steady-state run: load and measurement resolution")
    s.add_column("what")
    s.add_column("value", justify="right")
    s.add_row("readings published / PUBACKed / seen in readings",
              f"{sent:,} / {acked:,} / {len(upper):,}" + ("" if complete else f" (TIMED OUT after {args.timeout:.0f} s)"))
    s.add_row("achieved publish rate", f"{sent / spent:,.0f} readings/s over {spent:.1f} s")
    if late:
        s.add_row("publisher tick lateness p50 / p99 / max",
                  f"{_quantile(late, 0.5):.1f} / {_quantile(late, 0.99):.1f} / {late[-1]:.1f} ms")
    s.add_row("drain after last publish until all seen", f"{drain_s:.2f} s")
    s.add_row("pipeline throughput (seen ÷ first publish → last seen)", f"{len(upper) / (spent + drain_s):,.0f} readings/s")
    envelopes = after.get("envelopes_total", 0.0) - before.get("envelopes_total", 0.0)
    readings = after.get("readings_total", 0.0) - before.get("readings_total", 0.0)
    if envelopes > 0:
        s.add_row("sink: envelopes committed (one transaction each), readings per envelope",
                  f"{envelopes:,.0f} ({envelopes / (spent + drain_s):,.0f}/s), {readings / envelopes:,.1f}")
    s.add_row("sink: max consumer lag (envelopes)", f"{lag:,.0f}")
    if gaps:
        s.add_row(f"poller resolution: poll every {args.poll_ms:.0f} ms; actual gap p50 / p99 / max",
                  f"{_quantile(gaps, 0.5):.1f} / {_quantile(gaps, 0.99):.1f} / {gaps[-1]:.1f} ms")
    if query_ms:
        s.add_row("poll query time p50 / p99 / max",
                  f"{_quantile(query_ms, 0.5):.1f} / {_quantile(query_ms, 0.99):.1f} / {query_ms[-1]:.1f} ms")
    console.print(s)

    if series:
        window_s = max(5.0, args.seconds / 6)
        t0 = series[0][0]
        buckets: dict[int, list[float]] = {}
        for t_pub, ms in series:
            buckets.setdefault(int((t_pub - t0) // window_s), []).append(ms)
        w = Table(title=f"Steady state over time (upper bound, by publish time, {window_s:.0f} s windows)")
        for col in ("window", "readings", "p50", "p99", "max"):
            w.add_column(col, justify="right")
        for k in sorted(buckets):
            vals = sorted(buckets[k])
            w.add_row(f"{k * window_s:.0f}-{(k + 1) * window_s:.0f} s", f"{len(vals):,}",
                      f"{_quantile(vals, 0.5):,.0f} ms", f"{_quantile(vals, 0.99):,.0f} ms", f"{vals[-1]:,.0f} ms")
        console.print(w)
        first, last = sorted(buckets[min(buckets)]), sorted(buckets[max(buckets)])
        if drain_s > 2.0 or _quantile(last, 0.5) > 2 * _quantile(first, 0.5) + 500:
            console.print(
                f"[bold yellow]NOT a steady state:[/] latency grows during the run (p50 {_quantile(first, 0.5):,.0f} ms"
                f" in the first window, {_quantile(last, 0.5):,.0f} ms in the last) and the backlog took"
                f" {drain_s:.1f} s to drain: {args.rate:,.0f} readings/s is above what the pipeline sustains here"
                f" (~{len(upper) / (spent + drain_s):,.0f} readings/s). The quantiles above grow with --seconds."
            )


def run_burst(args: argparse.Namespace, mqtt_url: str, db: str, children: Children,
              bodies: list[tuple[str, str, str, dict[str, float]]], prefix: str, warm: str,
              ceiling: float, ceiling_pub: float) -> None:
    """Publish N readings as fast as QoS 1 allows; throughput and the sink's sampled latency."""
    expected_rows = sum(len(bodies[i % len(bodies)][3]) for i in range(args.n))

    def message(i: int) -> tuple[str, bytes]:
        sid, _, topic, metrics = bodies[i % len(bodies)]
        return topic, encode_payload(sid, datetime.now(UTC), i, metrics)

    like = f"{prefix}\\_%"
    # Rows already there (a steady run before) count toward neither side.

    def count() -> int:
        n = _scalar(db, "SELECT count(*) FROM readings WHERE sensor_id LIKE %s AND sensor_id <> %s", (like, warm))
        return int(n)  # type: ignore[call-overload]

    rows_before = count()
    start_ts = datetime.now(UTC)
    t_start = time.perf_counter()
    _, pub_s, acked = publish_qos1(mqtt_url, message, args.n, args.inflight, args.timeout)
    rows = 0

    def all_in() -> bool:
        nonlocal rows
        rows = count() - rows_before
        _check_alive(children)
        return rows >= expected_rows

    complete = _wait(all_in, args.timeout, 0.1)
    e2e_s = time.perf_counter() - t_start
    time.sleep(METRICS_INTERVAL_S + 1.0)  # let the sink flush its last metrics window
    p50s, p99s, maxes = _sink_windows(db, start_ts)

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


def run(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    tag = uuid.uuid4().hex[:6]
    prefix = f"BP{tag.upper()}"
    sensors = _sensors(prefix)
    children: Children | None = None
    modes = ("steady", "burst") if args.mode == "both" else (args.mode,)
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

        ceiling = ceiling_pub = 0.0
        if "burst" in modes:
            ceiling, ceiling_pub, ceiling_got = measure_ceiling(urls["IOC_MQTT_URL"], sensors, args.n, args.inflight,
                                                               args.timeout)
            console.print(f"ceiling: paho QoS 1 pub→sub {ceiling:,.0f} msg/s ({ceiling_got:,} of {args.n:,} received)")

        # tuning knobs pass through (e.g. IOC_ENVELOPE_MAX_MS=100); URLs and identities are the bench's own
        tuning = ("IOC_ENVELOPE_MAX_MS", "IOC_ENVELOPE_MAX_READINGS", "IOC_KAFKA_PARTITIONS", "IOC_DETECTORS_ENABLED",
              "IOC_DETECTOR_CHECKPOINT_S")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_") or k in tuning}
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

        # The measured runs: ts is the publish moment, so latency is sensor → DB commit.
        rng = random.Random(5)
        bodies = [(sid, kind, reading_topic(kind, sid), _metrics(kind, rng)) for sid, kind in sensors]
        if "steady" in modes:
            t_phase = time.perf_counter()
            run_steady(args, urls["IOC_MQTT_URL"], db, children, bodies)
            console.print(f"steady phase took {time.perf_counter() - t_phase:.1f} s")
        if "burst" in modes:
            t_phase = time.perf_counter()
            run_burst(args, urls["IOC_MQTT_URL"], db, children, bodies, prefix, warm, ceiling, ceiling_pub)
            console.print(f"burst phase took {time.perf_counter() - t_phase:.1f} s")
        console.print(f"total {time.perf_counter() - t0:.1f} s")
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
    ap.add_argument("--mode", choices=("both", "steady", "burst"), default="both",
                    help="steady: paced load, measured per-reading latency; burst: as fast as possible (default both)")
    ap.add_argument("--rate", type=float, default=500.0, help="steady: readings/s")
    ap.add_argument("--seconds", type=float, default=30.0, help="steady: seconds of publishing")
    ap.add_argument("--poll-ms", type=float, default=50.0, help="steady: arrival poller interval (the resolution)")
    ap.add_argument("--n", type=int, default=50_000, help="burst: readings to publish")
    ap.add_argument("--inflight", type=int, default=1000, help="paho max_inflight_messages of the publisher")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all rows")
    args = ap.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.poll_ms <= 0:
        ap.error("--rate, --seconds and --poll-ms must be > 0")
    run(args)


if __name__ == "__main__":
    main()
