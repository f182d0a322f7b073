"""Shared machinery of the comparable benches (issue 11): stack, pipeline processes, load generator,
row-by-row arrival tracking, CPU/RSS accounting, JSON results and the summary table.

Every bench that uses it starts its own local stack with the project's code (``ioc.stack``), talks
to it over loopback only, and stops every process it started in ``finally``. The pids it started
go into the JSON (``started_pids``) so a test can check that none is left running.

SQL text: the benches read ``readings`` row by row and register thousands of synthetic sensors,
queries the storage layer has no use for, so they live here, in one place, parameterised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg.types.json import Jsonb

from ioc.domain import reading_topic
from ioc.mqtt_client import connect, make_client
from ioc.settings import Settings
from ioc.stack import stack as local_stack
from ioc.stack.children import ChildProcesses
from ioc.stack.services import remove_tree
from ioc.storage.db import create_database
from ioc.storage.migrate import migrate
from ioc.wire import encode_payload
from streams.topics import partition_for

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The issue's load shape: traffic, air and water level in equal shares, 2.33 rows per reading.
LOAD_SHAPE: dict[str, tuple[str, ...]] = {
    "traffic": ("speed_kmh", "flow_vph", "occupancy_pct"),
    "air": ("pm25", "pm10", "no2"),
    "water_level": ("water_level_m",),
}
LOAD_KINDS = tuple(LOAD_SHAPE)
ROWS_PER_READING = sum(len(m) for m in LOAD_SHAPE.values()) / len(LOAD_SHAPE)
#: Mid-range values per metric; the generator moves them smoothly so no detector fires on the load.
LOAD_BASE: dict[str, float] = {
    "speed_kmh": 35.0, "flow_vph": 900.0, "occupancy_pct": 18.0,
    "pm25": 22.0, "pm10": 40.0, "no2": 25.0,
    "water_level_m": 3.0,  # the Đồng Trăng gauge's base level in the registry, far below BĐ I
}
TICK_S = 0.010  # the generator publishes what is due every 10 ms
KEY_FLUSH_S = 0.1  # and reports the keys it published to the bench every 100 ms
#: Publishes a generator leaves without a PUBACK before it waits for one. paho numbers messages
#: 1..65,535 and wraps; with more outstanding, a reused number would overwrite a message in
#: paho's own queue (lost without a trace) and the generator could not tell which reading the
#: broker acknowledged. Waiting here is what a real sensor's client would do.
MAX_UNACKED = 60_000
MAX_ACK_WAIT_S = 30.0  # a broker that acknowledges nothing for this long ends the generator's run
#: How long a generator waits for its last PUBACKs. A saturated Mosquitto (one thread for the
#: sensors' publishes and the bridge's backlog) acknowledged 28,569 publishes of a 7,000/s
#: minute more than 15 s late.
END_ACK_WAIT_S = 45.0


class _BrokerStalled(Exception):
    pass


def now_us() -> int:
    return time.time_ns() // 1000


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max (nearest rank) and n; empty input gives n = 0 and NaN figures."""
    v = sorted(values)
    if not v:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "max": math.nan}

    def q(p: float) -> float:
        return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]

    return {"n": len(v), "p50": round(q(0.5), 2), "p99": round(q(0.99), 2), "max": round(v[-1], 2)}


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def host_info() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "mem_gb": round(psutil.virtual_memory().total / 2**30, 1)}


# -- process accounting -------------------------------------------------------------------------------


@dataclass
class StartedPids:
    """(name, pid, create_time) of every process a bench started, for the no-leftovers check."""

    items: list[tuple[str, int, float]] = field(default_factory=list)

    def add(self, name: str, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self.items.append((name, pid, psutil.Process(pid).create_time()))

    def alive(self) -> list[tuple[str, int]]:
        return [(n, pid) for n, pid, ct in self.items if pid_running(pid, ct)]


def pid_running(pid: int, create_time: float) -> bool:
    """True if that very process (same pid and start time) still runs; a zombie counts as gone."""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - create_time) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ProcWatch:
    """CPU-seconds and RSS of named process trees (a service and everything it forked).

    CPU of a tree = user + system of the root and its live descendants, plus the CPU of children
    the root has already reaped (``children_user``/``children_system``): PostgreSQL's backends come
    and go, and the postmaster reaps them. RSS is sampled every ``interval_s`` and summed over the
    tree; for PostgreSQL the sum counts shared buffers once per backend that touched them, so it
    overstates what the server holds. A watched tree inside another (the bench's own process started
    the pipeline it watches) is counted under its own name only, never twice.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.roots: dict[str, int] = {}
        # Processes counted under a name although they sit in another tree: the bench's own
        # database connection is a PostgreSQL backend, and its polls are the bench's work.
        self.extra: dict[str, set[int]] = {}
        self.interval_s = interval_s
        self.peak: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procwatch", daemon=True)

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self.roots[name] = pid

    def also(self, name: str, pid: int) -> None:
        """Count process ``pid`` (not its children) under ``name``, and not in the tree it sits in."""
        with self._lock:
            self.extra.setdefault(name, set()).add(pid)

    def drop(self, name: str, pid: int) -> None:
        with self._lock:
            self.extra.get(name, set()).discard(pid)

    def start(self) -> ProcWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @staticmethod
    def _tree(pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _trees(self) -> dict[str, list[psutil.Process]]:
        """Each name's tree less the watched trees nested in it: the bench's process is the parent of the
        worker, the bridge and the services, and its figure must be its own (load generators, probe,
        poller), or a ratio against it measures the pipeline twice."""
        with self._lock:
            roots = dict(self.roots)
            extra = {name: set(ps) for name, ps in self.extra.items()}
        trees = {name: self._tree(pid) for name, pid in roots.items()}
        pids = {name: {p.pid for p in tree} for name, tree in trees.items()}
        claimed = set().union(*extra.values()) if extra else set()
        out: dict[str, list[psutil.Process]] = {}
        for name, tree in trees.items():
            nested = [pids[n] for n, pid in roots.items() if pid != roots[name] and pid in pids[name]]
            skip = set().union(claimed, *nested)
            out[name] = [p for p in tree if p.pid not in skip]
        for name, extra_pids in extra.items():
            for pid in extra_pids:
                with contextlib.suppress(psutil.Error):
                    out.setdefault(name, []).append(psutil.Process(pid))
        return out

    def cpu(self) -> dict[str, float]:
        """Cumulative CPU-seconds per name, now."""
        out: dict[str, float] = {}
        for name, tree in self._trees().items():
            total = 0.0
            for k, p in enumerate(tree):
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system + (t.children_user + t.children_system if k == 0 else 0.0)
            out[name] = total
        return out

    def rss_mb(self) -> dict[str, float]:
        return self._mem_mb(lambda p: int(p.memory_info().rss))

    def pss_mb(self) -> dict[str, float]:
        """Proportional set size per tree (Linux): shared pages (PostgreSQL's shared buffers) split
        between the processes that map them, so a tree's sum counts them once. Slower than RSS."""
        return self._mem_mb(lambda p: int(getattr(p.memory_full_info(), "pss", 0)))

    def _mem_mb(self, size: Callable[[psutil.Process], int]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, tree in self._trees().items():
            total = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    total += size(p)
            out[name] = total / 2**20
        return out

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = {}

    def peaks(self) -> dict[str, float]:
        with self._lock:
            return {k: round(v, 1) for k, v in self.peak.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self.rss_mb()
            with self._lock:
                for k, v in rss.items():
                    self.peak[k] = max(self.peak.get(k, 0.0), v)


@dataclass
class CpuWindow:
    """CPU used by each watched tree between ``begin`` and ``end``."""

    watch: ProcWatch
    start: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def begin(self) -> CpuWindow:
        self.start = self.watch.cpu()
        self.watch.reset_peak()
        return self

    def end(self) -> dict[str, float]:
        now = self.watch.cpu()
        self.used = {k: now[k] - self.start.get(k, 0.0) for k in now}
        return self.used

    def per_1k(self, readings: int) -> dict[str, float]:
        if readings <= 0:
            return {}
        out = {k: round(v / (readings / 1000.0), 4) for k, v in self.used.items()}
        out["total_pipeline"] = round(sum(v for k, v in out.items() if k != "bench"), 4)
        return out


# -- the local stack and the pipeline ------------------------------------------------------------------


def exit_on_sigterm() -> None:
    """A bench stopped by SIGTERM (``kill``, a CI or shell timeout) unwinds as Ctrl-C does, so the
    stack and the pipeline processes it started are torn down instead of left running."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class BenchStack:
    """The local stack (Mosquitto, Tansu, PostgreSQL) in a temp dir, always started fresh."""

    def __init__(self, prefix: str, pids: StartedPids) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
        self.pids = pids
        self.urls: dict[str, str] = {}
        self.service_pids: dict[str, int] = {}

    def __enter__(self) -> BenchStack:
        exit_on_sigterm()
        try:
            state = local_stack.up(self.base / "stack", environ={})  # ignore any IOC_* URLs of the caller
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.urls = state.urls
        for name, svc in state.services.items():
            self.service_pids[name] = svc.pid
            self.pids.add(name, svc.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        local_stack.down(self.base / "stack")
        remove_tree(str(self.base))

    def new_database(self, tag: str) -> str:
        db = create_database(self.urls["IOC_DATABASE_URL"], f"bench_{tag}")
        migrate(db)
        return db

    def watch(self) -> ProcWatch:
        w = ProcWatch()
        for name, pid in self.service_pids.items():
            w.add(name, pid)
        return w


class PipelineProcs:
    """``ioc worker`` and ``ioc bridge`` on the bench's own database, topics, group and share group."""

    def __init__(self, stack: BenchStack, db: str, tag: str, pids: StartedPids, **extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
        env.update(stack.urls)
        env.update(
            IOC_DATABASE_URL=db, IOC_TOPIC_PREFIX=f"bench-{tag}", IOC_APP_ID=f"bench-worker-{tag}",
            IOC_BRIDGE_ID=f"bench-bridge-{tag}", IOC_SHARE_GROUP=f"b{tag}", IOC_METRICS_INTERVAL_S="2",
            IOC_DATA_DIR=str(stack.base / "data"), IOC_STACK_ENV=str(stack.base / "no-such-env-file"),
        )
        env.update(extra)
        self.env = env
        self.db = db
        self.procs = ChildProcesses(env, stack.base / "logs")
        self.pids = pids
        self.workers: list[str] = []
        self.bridges: dict[str, str] = {}  # name -> MQTT client id (IOC_BRIDGE_ID)

    def start(self, timeout_s: float = 60.0, workers: int = 1, bridges: int = 1) -> None:
        """``workers`` workers (one Faust app id, so one consumer group: they split the partitions) and
        ``bridges`` bridges (one share group, own MQTT client ids: they split the subscription).
        The first of each is named ``worker`` / ``bridge``, the next ``worker2``, ``bridge2``, …"""
        for i in range(1, workers + 1):
            name = "worker" if i == 1 else f"worker{i}"
            self.workers.append(name)
            self.pids.add(name, self.procs.start(name, "worker").pid)
        for i in range(1, bridges + 1):
            name = "bridge" if i == 1 else f"bridge{i}"
            extra = {} if i == 1 else {"IOC_BRIDGE_ID": f"{self.env['IOC_BRIDGE_ID']}-{i}"}
            ready = self.procs.logdir / f"{name}.ready"
            self.bridges[name] = extra.get("IOC_BRIDGE_ID", self.env["IOC_BRIDGE_ID"])
            self.pids.add(name, self.procs.start(name, "bridge", "--ready-file", str(ready), extra_env=extra).pid)
            if not self._wait_ready(name, ready, timeout_s):
                raise RuntimeError(f"{name} did not subscribe:\n{self.procs.log(name)}")

    def _wait_ready(self, name: str, ready: Path, timeout_s: float) -> bool:
        return wait_until(lambda: ready.exists() or not self.procs.alive(name), timeout_s) and self.procs.alive(name)

    def watch_into(self, watch: ProcWatch) -> None:
        """Every worker and bridge, each under its own name, into ``watch``."""
        for name in [*self.workers, *self.bridges]:
            watch.add(name, self.pid(name))

    def pid(self, name: str) -> int:
        return self.procs.procs[name].pid

    def check(self) -> None:
        self.procs.check()

    def warm_up(self, timeout_s: float = 180.0) -> float:
        """One reading end to end proves the worker has its partitions (Tansu's first assignment takes
        ~30 s); returns the seconds it took."""
        sid = f"WARMUP_{uuid.uuid4().hex[:6].upper()}"
        register_sensors(self.db, [(sid, "water_level", None)])
        time.sleep(float(self.env.get("IOC_REGISTRY_REFRESH_S", "10")) + 1.0)
        t0 = time.monotonic()
        publish_once(self.env["IOC_MQTT_URL"], reading_topic("water_level", sid),
                     encode_payload(sid, datetime.now(UTC), 1, {"water_level_m": 3.0}))

        def arrived() -> bool:
            self.check()
            return bool(db_scalar(self.db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sid,)))

        if not wait_until(arrived, timeout_s, 0.2):
            raise RuntimeError(f"worker got no partitions in {timeout_s:.0f} s:\n{self.procs.log('worker')}")
        return time.monotonic() - t0

    def warm_up_all(self, timeout_s: float = 300.0, rounds: int = 2) -> float:
        """Like ``warm_up``, for several workers and bridges: rounds of one reading per Kafka partition
        until, in ``rounds`` rounds in a row, every reading arrived and every worker stored some of
        them and every bridge received some (their ``pipeline_metrics`` counters grew): all partitions
        are assigned, split between the workers, and the shared subscription reaches every bridge.
        Tansu's first assignment and a rebalance after the second worker joins take 10-30 s each.
        Returns the seconds it took."""
        parts = int(self.env.get("IOC_KAFKA_PARTITIONS", Settings.model_fields["kafka_partitions"].default))
        tag = uuid.uuid4().hex[:6].upper()
        by_part: dict[int, str] = {}
        i = 0
        while len(by_part) < parts:
            by_part.setdefault(partition_for(f"WARMUP_{tag}_{i}", parts), f"WARMUP_{tag}_{i}")
            i += 1
        sids = sorted(by_part.values())
        register_sensors(self.db, [(sid, "water_level", None) for sid in sids])
        time.sleep(float(self.env.get("IOC_REGISTRY_REFRESH_S", "10")) + 1.0)
        interval = float(self.env.get("IOC_METRICS_INTERVAL_S", "2"))
        sinks = self.sink_names()
        t0 = time.monotonic()
        ok = 0
        seq = 0
        before = (metric_latest(self.db, "sink", "readings_total"), metric_latest(self.db, "bridge", "received_total"))
        while ok < rounds:
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"workers {sorted(self.workers)} / bridges {sorted(self.bridges)} not all busy"
                                   f" after {timeout_s:.0f} s:\n{self.procs.log(self.workers[-1])}")
            seq += 1
            ts = datetime.now(UTC)
            publish_many(self.env["IOC_MQTT_URL"], [
                (reading_topic("water_level", sid), encode_payload(sid, ts, seq, {"water_level_m": 3.0})) for sid in sids])

            def arrived(t: datetime = ts) -> bool:
                self.check()
                n = db_scalar(self.db, "SELECT count(DISTINCT sensor_id) FROM readings WHERE sensor_id = ANY(%s)"
                              " AND ts = %s", (sids, t))
                return bool(n == len(sids))

            if not wait_until(arrived, 30.0, 0.2):
                ok = 0
                continue
            time.sleep(interval + 0.5)  # the counters reach pipeline_metrics every IOC_METRICS_INTERVAL_S
            after = (metric_latest(self.db, "sink", "readings_total"), metric_latest(self.db, "bridge", "received_total"))
            busy = all(after[0].get(w, 0) > before[0].get(w, 0) for w in sinks.values()) and \
                all(after[1].get(b, 0) > before[1].get(b, 0) for b in self.bridges.values())
            ok = ok + 1 if busy else 0
            before = after
        return time.monotonic() - t0

    def sink_names(self) -> dict[str, str]:
        """Worker name -> its name in ``pipeline_metrics`` (host:pid)."""
        host = socket.gethostname()
        return {name: f"{host}:{self.pid(name)}" for name in self.workers}

    def stop(self) -> None:
        self.procs.stop_all()


def publish_once(url: str, topic: str, payload: bytes, timeout_s: float = 15.0) -> None:
    publish_many(url, [(topic, payload)], timeout_s)


def publish_many(url: str, messages: Sequence[tuple[str, bytes]], timeout_s: float = 15.0) -> None:
    """QoS 1, one connection, returns once every message is PUBACKed (or the timeout passed)."""
    client, target, props = make_client(url, client_id=f"bench-one-{uuid.uuid4().hex[:8]}")
    connect(client, target, props)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
    finally:
        client.loop_stop()
        client.disconnect()


# -- database helpers (the bench's own queries) ---------------------------------------------------------


def db_scalar(url: str, query: str, params: Sequence[Any] = ()) -> Any:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]


def metric_latest(db: str, stage: str, metric: str) -> dict[str, float]:
    """The latest value of one ``pipeline_metrics`` counter per worker (the bridge: its MQTT client id)."""
    with psycopg.connect(db, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT DISTINCT ON (worker) worker, value FROM pipeline_metrics"
                            " WHERE stage = %s AND metric = %s ORDER BY worker, ts DESC", (stage, metric)).fetchall()
    return {str(w): float(v) for w, v in rows}


def register_sensors(db: str, sensors: Sequence[tuple[str, str, Mapping[str, float] | None]],
                     interval_s: int | None = None) -> None:
    """(sensor_id, kind, alarm_levels) into ``sensors``, by COPY (tens of thousands at a time).

    ``interval_s`` is the reporting interval the load really has: with the registry's default,
    a sensor that reports every 10 s looks like one whose clock runs fast, and every sensor of
    the bench would raise a clock-skew alert at once (a storm the bench did not mean to measure).
    """
    with psycopg.connect(db) as conn, conn.cursor() as cur:
        with cur.copy("COPY sensors (sensor_id, kind, name, metrics, alarm_levels, interval_s) FROM STDIN") as copy:
            for sid, kind, levels in sensors:
                metrics = {m: "" for m in LOAD_SHAPE.get(kind, ("water_level_m",))}
                copy.write_row((sid, kind, sid, Jsonb(metrics), Jsonb(dict(levels)) if levels else None, interval_s))
        conn.commit()


def set_active(db: str, prefix: str, active: Sequence[str]) -> None:
    """Retire every sensor under ``prefix`` except ``active`` (un-retiring those): a sensor that stops
    reporting between two steps would otherwise raise a silence alert in a later step."""
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE sensors SET retired_at = now() WHERE sensor_id LIKE %s AND retired_at IS NULL"
                     " AND NOT (sensor_id = ANY(%s))", (prefix + "%", list(active)))
        conn.execute("UPDATE sensors SET retired_at = NULL WHERE sensor_id = ANY(%s) AND retired_at IS NOT NULL",
                     (list(active),))
        conn.commit()


def rows_by_key(db: str, like: str, t0_us: int, t1_us: int) -> dict[tuple[str, int], int]:
    """Rows per (sensor_id, ts in µs) in ``readings`` for sensors LIKE ``like`` and ts in [t0, t1]."""
    t0 = EPOCH + timedelta(microseconds=t0_us)
    t1 = EPOCH + timedelta(microseconds=t1_us)
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT sensor_id, floor(extract(epoch FROM ts) * 1000000)::bigint, count(*) FROM readings"
            " WHERE ts >= %s AND ts <= %s AND sensor_id LIKE %s GROUP BY 1, 2",
            (t0, t1, like),
        ).fetchall()
    return {(r[0], int(r[1])): int(r[2]) for r in rows}


# -- load generator: a separate process publishing QoS 1 ------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """What one generator process publishes: its sensors (round robin) at ``rate`` readings/s."""

    mqtt_url: str
    sensors: tuple[str, ...]
    kinds: tuple[str, ...]
    rate: float
    seconds: float
    start_at: float  # wall time of the first tick, so several generators start together
    inflight: int = 1000


def _load_values(kind: str, idx: int, lap: int) -> dict[str, float]:
    """Smooth, per-sensor values: a flat line would trip the stuck detector, noise the anomaly ones."""
    wobble = 0.05 * math.sin(0.3 * lap + idx)
    return {m: round(LOAD_BASE[m] * (1.0 + wobble + 0.01 * (idx % 7)), 3) for m in LOAD_SHAPE[kind]}


def generator_main(spec: LoadSpec, conn: Connection) -> None:
    """Child process: publish ``spec``; send key batches (array of idx, ts_us pairs) and a final dict.

    Each reading's ts is the wall time just before its publish call, so latency is sensor → X.
    """
    client, target, props = make_client(spec.mqtt_url, client_id=f"bench-load-{uuid.uuid4().hex[:8]}",
                                        max_inflight=spec.inflight)
    acks: deque[int] = deque()  # mids PUBACKed, from paho's network thread (deque: thread-safe appends)
    pending: dict[int, tuple[int, int]] = {}  # mid -> (sensor index, ts_us), owned by this thread
    unacked = array("q")  # readings given up on: never acknowledged, or their mid reused
    reused = 0
    ack_wait_s = 0.0  # time spent waiting with MAX_UNACKED outstanding: the broker's back-pressure

    def on_publish(c: object, u: object, mid: int, rc: object, p: object) -> None:
        acks.append(mid)

    def drain() -> None:
        """Take the acknowledged readings off ``pending``."""
        while acks:
            pending.pop(acks.popleft(), None)

    def settle() -> None:
        """Drain; while too many are outstanding, wait (at most MAX_ACK_WAIT_S: then give up)."""
        nonlocal ack_wait_s
        drain()
        started = time.monotonic()
        try:
            while len(pending) >= MAX_UNACKED:
                if time.monotonic() - started > MAX_ACK_WAIT_S:
                    raise _BrokerStalled
                time.sleep(0.001)
                drain()
        finally:
            ack_wait_s += time.monotonic() - started

    client.on_publish = on_publish
    connect(client, target, props)
    client.loop_start()
    n = len(spec.sensors)
    topics = [reading_topic(k, s) for s, k in zip(spec.sensors, spec.kinds, strict=True)]
    total = int(spec.rate * spec.seconds)
    sent = 0
    keys = array("q")
    late: list[float] = []
    seq0 = int(spec.start_at)
    try:
        while time.time() < spec.start_at:
            time.sleep(0.001)
        t0 = time.monotonic()
        next_flush = t0 + KEY_FLUSH_S
        stalled = False
        try:
            while sent < total:
                now = time.monotonic()
                due = min(total, int(spec.rate * (now - t0)) + 1)
                while sent < due:
                    idx = sent % n
                    lap = sent // n
                    ts_us = now_us()
                    payload = encode_payload(spec.sensors[idx], EPOCH + timedelta(microseconds=ts_us), seq0 + lap,
                                             _load_values(spec.kinds[idx], idx, lap))
                    if len(pending) >= MAX_UNACKED or not sent % 1000:
                        settle()
                    mid = client.publish(topics[idx], payload, qos=1).mid
                    if mid in pending:  # cannot happen while MAX_UNACKED < 65,535 and acks come in order
                        reused += 1
                        unacked.extend(pending[mid])
                    pending[mid] = (idx, ts_us)
                    keys.append(idx)
                    keys.append(ts_us)
                    sent += 1
                if now >= next_flush:
                    conn.send_bytes(keys.tobytes())
                    keys = array("q")
                    next_flush = now + KEY_FLUSH_S
                nxt = t0 + (int((time.monotonic() - t0) / TICK_S) + 1) * TICK_S
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    late.append(-delay)
        except _BrokerStalled:  # reported: the step fails on its unacknowledged readings
            stalled = True
        spent = time.monotonic() - t0
        last_us = now_us()
        if keys:
            conn.send_bytes(keys.tobytes())
        deadline = time.monotonic() + END_ACK_WAIT_S
        while time.monotonic() < deadline:
            drain()
            if not pending:
                break
            time.sleep(0.01)
        drain()
        for key in pending.values():
            unacked.extend(key)
        conn.send_bytes(b"")  # end of keys
        # acked counted from the keys, not paho's callbacks: a late PUBACK after the list was made
        # would otherwise count a reading as both acknowledged and not
        conn.send({"published": sent, "acked": sent - len(unacked) // 2, "seconds": spent, "last_publish_us": last_us,
                   "ticks_late": len(late), "max_late_ms": round(max(late, default=0.0) * 1000, 1),
                   "unacked": unacked.tobytes(), "mids_reused": reused, "ack_wait_s": round(ack_wait_s, 2),
                   "stalled": stalled})
    finally:
        client.loop_stop()
        client.disconnect()
        conn.close()


@dataclass
class GenResult:
    published: int = 0
    acked: int = 0
    seconds: float = 0.0
    last_publish_us: int = 0
    ticks_late: int = 0
    max_late_ms: float = 0.0
    mids_reused: int = 0
    ack_wait_s: float = 0.0
    stalled: bool = False  # the broker acknowledged nothing for MAX_ACK_WAIT_S: publishing stopped
    #: Readings published without a PUBACK (sensor id, ts_us): the broker may or may not have them,
    #: so they are not counted as the pipeline's loss (``ArrivalTracker.forget``).
    unacked: list[tuple[str, int]] = field(default_factory=list)


class LoadGenerator:
    """``processes`` generator processes (spawned), sensors split between them round robin.

    Keys arrive in the bench process through pipes and go to ``on_keys(sensor_ids, ts_us)``.
    """

    def __init__(self, mqtt_url: str, sensors: Sequence[str], kinds: Sequence[str], rate: float, seconds: float,
                 on_keys: Callable[[list[str], list[int]], None], pids: StartedPids, processes: int = 1) -> None:
        self.ctx = mp.get_context("spawn")
        self.on_keys = on_keys
        self.pids = pids
        start_at = time.time() + 1.5 + 0.5 * processes  # a spawned interpreter needs ~1 s to import
        self.parts: list[tuple[list[str], Any, Connection]] = []
        self._child_ends: list[Connection] = []
        for g in range(processes):
            sub = list(sensors[g::processes])
            sub_kinds = tuple(kinds[g::processes])
            spec = LoadSpec(mqtt_url, tuple(sub), sub_kinds, rate / processes, seconds, start_at)
            parent, child = self.ctx.Pipe(duplex=False)
            proc = self.ctx.Process(target=generator_main, args=(spec, child), name=f"bench-load-{g}", daemon=True)
            self.parts.append((sub, proc, parent))
            self._child_ends.append(child)
        self.results: list[GenResult] = []
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadGenerator:
        for sub, proc, conn in self.parts:
            proc.start()
            self.pids.add(proc.name, proc.pid)
            t = threading.Thread(target=self._read, args=(sub, proc, conn), daemon=True)
            t.start()
            self._threads.append(t)
        for c in self._child_ends:
            c.close()
        return self

    def _read(self, sub: list[str], proc: Any, conn: Connection) -> None:
        try:
            while True:
                raw = conn.recv_bytes()
                if not raw:
                    break
                a = array("q")
                a.frombytes(raw)
                self.on_keys([sub[i] for i in a[0::2]], list(a[1::2]))
            d = conn.recv()
            a = array("q")
            a.frombytes(d.pop("unacked"))
            self.results.append(GenResult(**d, unacked=[(sub[i], us) for i, us in zip(a[0::2], a[1::2], strict=True)]))
        except (EOFError, OSError) as e:
            self.errors.append(f"{proc.name}: {e!r} (exit {proc.exitcode})")

    def wait(self, timeout_s: float) -> GenResult:
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self.stop()
        if self.errors or len(self.results) != len(self.parts):
            raise RuntimeError(f"load generator failed: {self.errors or 'no result in time'}")
        r = GenResult(
            published=sum(x.published for x in self.results), acked=sum(x.acked for x in self.results),
            seconds=max(x.seconds for x in self.results),
            last_publish_us=max(x.last_publish_us for x in self.results),
            ticks_late=sum(x.ticks_late for x in self.results),
            max_late_ms=max(x.max_late_ms for x in self.results),
            mids_reused=sum(x.mids_reused for x in self.results),
            ack_wait_s=max(x.ack_wait_s for x in self.results),
            stalled=any(x.stalled for x in self.results),
            unacked=[k for x in self.results for k in x.unacked],
        )
        return r

    def stop(self) -> None:
        for _, proc, conn in self.parts:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            conn.close()


# -- arrival tracking: when each published reading became visible in readings ---------------------------


class ArrivalTracker(threading.Thread):
    """Polls ``readings`` every ``interval_s`` (less often while polls are slow: ``MAX_DUTY``) and stamps
    when each published reading first shows up.

    One metric per kind is polled (a reading's rows commit in one transaction). The poll whose
    statement started at wall time t_k is the upper bound of the arrival of a key it sees first.
    The window starts at the oldest reading not seen yet (minus a slack for generators whose key
    batches interleave), and a LIMIT keeps one poll bounded while the pipeline is behind.
    ``lag_s`` is now minus the publish time of the oldest unseen reading, per poll. Only readings
    whose ts in µs is divisible by ``sample`` are tracked, so the poll's own CPU stays small next to
    the pipeline's; a row-by-row count of every reading is the caller's (``rows_by_key``).
    """

    SLACK_US = 300_000
    LIMIT = 50_000
    MAX_DUTY = 0.1  # of the wall time spent polling, at most: a slow poll spaces the next ones

    def __init__(self, db: str, like: str, interval_s: float = 0.1, sample: int = 10) -> None:
        super().__init__(name="arrivals", daemon=True)
        self.db = db
        self.like = like
        self.interval_s = interval_s
        self.sample = max(1, sample)
        self.all_keys: list[tuple[str, int]] = []
        self.first_metrics = [m[0] for m in LOAD_SHAPE.values()]
        self.lock = threading.Lock()
        self.order: list[tuple[str, int]] = []
        self.arrived: dict[tuple[str, int], float] = {}
        self.pending: set[tuple[str, int]] = set()
        self.head = 0
        self.lags: list[tuple[float, float]] = []  # (wall time, lag s)
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        #: this tracker's PostgreSQL backend, once connected: its polls are the bench's CPU, not the
        #: pipeline's (``ProcWatch.also``); None if it never connected
        self.backend_pid: int | None = None
        self.connected = threading.Event()

    def add(self, sensor_ids: list[str], ts_us: list[int]) -> None:
        with self.lock:
            for key in zip(sensor_ids, ts_us, strict=True):
                self.all_keys.append(key)
                if key[1] % self.sample == 0:
                    self.order.append(key)
                    self.pending.add(key)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    @property
    def seen(self) -> int:
        return len(self.arrived)

    @property
    def tracked(self) -> int:
        with self.lock:
            return len(self.order)

    def run(self) -> None:
        try:
            with psycopg.connect(self.db, autocommit=True, connect_timeout=5) as conn:
                self.backend_pid = conn.info.backend_pid
                self.connected.set()
                next_at = time.monotonic()
                while not self._stop_event.is_set():
                    with self.lock:
                        while self.head < len(self.order) and self.order[self.head] in self.arrived:
                            self.head += 1
                        low = min((k[1] for k in self.order[self.head:self.head + 64]), default=None)
                    t_q = time.time()
                    started = time.monotonic()
                    if low is not None:
                        self.lags.append((t_q, max(0.0, t_q - low / 1e6)))
                        rows = conn.execute(
                            "SELECT sensor_id, floor(extract(epoch FROM ts) * 1000000)::bigint FROM readings"
                            " WHERE ts >= %s AND sensor_id LIKE %s AND metric = ANY(%s)"
                            " AND floor(extract(epoch FROM ts) * 1000000)::bigint %% %s = 0 ORDER BY ts LIMIT %s",
                            (EPOCH + timedelta(microseconds=low - self.SLACK_US), self.like, self.first_metrics,
                             self.sample, self.LIMIT),
                        ).fetchall()
                        with self.lock:
                            for sid, us in rows:
                                key = (sid, int(us))
                                if key in self.pending:
                                    self.pending.discard(key)
                                    self.arrived[key] = t_q
                    # Behind, a poll reads every row since the oldest unseen reading: polled as often,
                    # it would take PostgreSQL's CPU from the pipeline it measures. Keep it to MAX_DUTY.
                    next_at += max(self.interval_s, (time.monotonic() - started) * (1.0 / self.MAX_DUTY - 1.0))
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self._stop_event.wait(delay)
                    else:
                        next_at = time.monotonic()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e
        finally:
            self.connected.set()  # a tracker that failed to connect must not keep its caller waiting

    def latencies_ms(self) -> list[float]:
        with self.lock:
            return [(t - us / 1e6) * 1000.0 for (_, us), t in self.arrived.items()]

    def keys(self) -> list[tuple[str, int]]:
        """Every published key, sampled or not."""
        with self.lock:
            return list(self.all_keys)

    def forget(self, keys: Sequence[tuple[str, int]]) -> None:
        """Stop waiting for these readings (published, never acknowledged by the broker): their loss,
        if lost, is the broker's or the publisher's to report, not the pipeline's."""
        if not keys:
            return
        gone = set(keys)
        with self.lock:
            self.all_keys = [k for k in self.all_keys if k not in gone]
            self.order = [k for k in self.order if k not in gone or k in self.arrived]
            self.pending -= gone
            self.head = 0


# -- results ------------------------------------------------------------------------------------------


def write_result(out_dir: Path, name: str, data: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


def result_header(bench: str, quick: bool, argv: Sequence[str]) -> dict[str, Any]:
    return {"bench": bench, "quick": quick, "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": host_info(), "command": " ".join([Path(sys.executable).name, *argv])}


def add_load_args(ap: argparse.ArgumentParser) -> None:
    """The options bench_sustained's ``Bench.run_load`` reads, for the benches that reuse it."""
    ap.add_argument("--drain-bound", type=float, default=2.0,
                    help="the load passes only if every reading is visible this long after the last publish")
    ap.add_argument("--drain-timeout", type=float, default=60.0, help="how long to wait for a backlog before counting rows")
    ap.add_argument("--poll-ms", type=float, default=20.0, help="arrival poll interval (the latency resolution)")
    ap.add_argument("--sample", type=int, default=10,
                    help="latency is tracked on readings whose ts in µs is divisible by this (1 = all)")
    ap.set_defaults(budget=float("inf"))  # Bench's search budget; run_load does not use it


def short_tag() -> str:
    return uuid.uuid4().hex[:6]


# -- summary of a run -------------------------------------------------------------------------------------


def _load(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = out_dir / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


def _fmt_q(q: Mapping[str, Any] | None) -> str:
    if not q or not q.get("n"):
        return "-"
    return f"{q['p50']:,.0f} / {q['p99']:,.0f} / {q['max']:,.0f} ms (n={q['n']:,})"


def summary_rows(out_dir: Path = RESULTS_DIR) -> list[tuple[str, str]]:
    """(what, figure) rows from raw.json and sustained.json, ratios included, then scaleout.json and soak.json."""
    rows: list[tuple[str, str]] = []
    raw = _load(out_dir, "raw")
    sus = _load(out_dir, "sustained")
    slow: float | None = None
    if raw:
        tag = " (quick)" if raw.get("quick") else ""
        for key, h in raw.get("hops", {}).items():
            if h.get("readings_per_s"):
                rows.append((f"raw{tag}: {key}", f"{h.get('per_s', 0):,}/s = {h['readings_per_s']:,} readings/s"))
        for h in sorted(raw.get("kafka_wait", {}).values(), key=lambda h: h["fetch_max_wait_ms"]):
            rows.append((f"raw{tag}: Kafka hop at fetch wait {h['fetch_max_wait_ms']} ms", _fmt_q(h["latency_ms"])))
        if raw.get("slowest_hop"):
            slow = float(raw["slowest_hop"]["readings_per_s"])
            rows.append(("raw: slowest pipeline hop", f"{raw['slowest_hop']['name']} at {slow:,.0f} readings/s"))
    if sus:
        tag = f" (hold {sus['hold_s']:g} s" + (", quick)" if sus.get("quick") else ")")
        for code, c in sus.get("cadences", {}).items():
            rows.append((f"sustained rate, {code} per sensor{tag}",
                         f"{c['sustained_rate']:,.0f} readings/s (first fail {c.get('first_failing_rate')},"
                         f" {len(c['steps'])} steps, stopped: {c['search_stopped']})"))
            if slow and c["sustained_rate"]:
                rows.append((f"ratio: sustained {code} ÷ slowest raw hop", f"{c['sustained_rate'] / slow:.2f}"))
        for rate, p in sus.get("latency", {}).items():
            label = f"at {float(rate):,.0f}/s" + (" (sustained)" if p.get("is_sustained_rate") else "")
            rows.append((f"row latency {label}", _fmt_q(p.get("row_latency_ms"))))
            rows.append((f"alert latency {label}", _fmt_q(p.get("alert_latency_ms"))))
            cpu = dict(p.get("cpu_s_per_1k_readings", {}))
            total = cpu.pop("total_pipeline", 0.0)
            cpu.pop("bench", None)
            rows.append((f"CPU-s per 1k readings {label}",
                         f"{total:.3f}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))))
            if total:
                rows.append((f"CPU share {label}",
                             ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))))
            rss = {k: v for k, v in p.get("rss_peak_mb", {}).items() if k != "bench"}
            rows.append((f"RSS peak MB {label}", ", ".join(f"{k} {v:,.0f}" for k, v in sorted(rss.items()))))
    return rows + scaleout_rows(out_dir) + soak_rows(out_dir) + storm_rows(out_dir) + pause_rows(out_dir)


def pause_rows(out_dir: Path) -> list[tuple[str, str]]:
    """(what, figure) rows from stage_pauses.json: the detector stage's longest holds of the event loop."""
    sp = _load(out_dir, "stage_pauses")
    if not sp:
        return []
    return [(f"detector stage calls, {v['variant']} ({sp['sensors']:,} sensors at {sp['rate']:,.0f}/s)",
             f"{_fmt_q(v['call_ms'])}; {v['calls_over_20ms']} over 20 ms; full GC passes {v['gc_full_pass_ms']:.0f} ms")
            for v in sp.get("variants", {}).values()]


def storm_rows(out_dir: Path) -> list[tuple[str, str]]:
    """(what, figure) rows from alert_storm.json: findings per second in each round of the storm."""
    st = _load(out_dir, "alert_storm")
    if not st:
        return []
    return [(f"alert storm, {st['sensors']:,} sensors at once: {r['round']}",
             f"{r['findings_per_s']:,.0f} findings/s ({r['ms_per_finding']:.2f} ms each, {r['notifications']:,}"
             " notifications)") for r in st["rounds"]]


def scaleout_rows(out_dir: Path) -> list[tuple[str, str]]:
    """(what, figure) rows from scaleout.json: each configuration and its ratio to 1 worker + 1 bridge."""
    so = _load(out_dir, "scaleout")
    if not so:
        return []
    tag = f"at {so['rate']:,.0f}/s, hold {so['hold_s']:g} s" + (", quick" if so.get("quick") else "")
    rows: list[tuple[str, str]] = []
    for key, c in so.get("configs", {}).items():
        sums = c["cpu_s_per_1k_sums"]
        rows.append((f"scale-out {key}: {c['label']} ({tag})",
                     f"CPU-s per 1k {sums['total_pipeline']:.3f} (workers {sums['workers']:.3f}, bridges"
                     f" {sums['bridges']:.3f}); row p50/p99/max {_fmt_q(c['row_latency_ms'])}; {c['missing_rows']:,}"
                     " rows missing"))
    for pair, r in so.get("ratios", {}).items():
        target = f" (target ≤ 1.15: {'met' if so.get('workers_target_met') else 'not met'})" if pair == "b/a" else ""
        rows.append((f"ratio: scale-out CPU-s per 1k, {pair}",
                     ", ".join(f"{k} {r[k]:.2f}" for k in ("total_pipeline", "workers", "bridges") if k in r) + target))
    return rows


def soak_rows(out_dir: Path) -> list[tuple[str, str]]:
    """(what, figure) rows from soak.json: loss, latency, CPU and each process's memory trend."""
    sk = _load(out_dir, "soak")
    if not sk:
        return []
    tag = (f"{sk['sensors']:,} sensors every {sk['period_s']:g} s = {sk['rate']:,.0f}/s for {sk['minutes']:g} min"
           + (", quick" if sk.get("quick") else ""))
    cpu = sk.get("cpu_s_per_1k_readings", {})
    rows = [(f"soak ({tag})", f"{sk['missing_rows']:,} rows missing; row p50/p99/max {_fmt_q(sk['row_latency_ms'])};"
                             f" CPU-s per 1k {cpu.get('total_pipeline', 0):.3f}")]
    halves = sk.get("cpu_s_per_1k_halves") or {}
    if halves.get("first_half") is not None:
        rows.append(("soak CPU-s per 1k, first → second half after warm-up",
                     f"pipeline {halves['first_half']:.3f} → {halves['second_half']:.3f}; " + ", ".join(
                         f"{n} {a:.3f} → {b:.3f}" for n, (a, b) in sorted(halves.get("by_process", {}).items()))))
    for name, m in sk.get("memory", {}).items():
        r, p = m["rss"], m["pss"]
        if r.get("slope_mb_per_10min") is None:
            continue
        rows.append((f"soak RSS {name}, after {sk['warm_up_min']:.3g} min warm-up",
                     f"{r['start_mb']:,.0f} → {r['end_mb']:,.0f} MB (peak {r['peak_mb']:,.0f}), slope"
                     f" {r['slope_mb_per_10min']:+.1f} MB/10 min: {'flat' if r['flat'] else 'GROWING'};"
                     f" PSS {p['end_mb']:,.0f} MB, {p['slope_mb_per_10min']:+.1f} MB/10 min:"
                     f" {'flat' if p['flat'] else 'GROWING'}"))
    return rows


def write_summary(out_dir: Path = RESULTS_DIR) -> tuple[list[tuple[str, str]], Path | None]:
    """Print the summary table (rich) and write ``summary.md``; returns the rows and the file."""
    from rich.console import Console
    from rich.table import Table

    rows = summary_rows(out_dir)
    if not rows:
        return rows, None
    t = Table(title="Issue 11 figures (bench/results)")
    t.add_column("what")
    t.add_column("figure", justify="right")
    for what, fig in rows:
        t.add_row(what, fig)
    Console(width=140).print(t)
    lines = ["# Bench summary", "", f"Written {datetime.now(UTC).isoformat(timespec='seconds')} from "
             f"`bench/results/*.json` on {host_info()['cpus']} CPUs.", "", "| what | figure |", "|---|---|"]
    lines += [f"| {w} | {f} |" for w, f in rows]
    if (out_dir / "latency.png").exists():
        lines += ["", "![Latency against offered rate, with the raw limits](latency.png)"]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return rows, path
