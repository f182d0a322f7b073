"""Helpers for integration tests: publishing over real MQTT and waiting on the real database."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from psycopg.types.json import Jsonb

from ioc.mqtt_client import connect, make_client
from ioc.stack.children import ChildProcesses
from ioc.stack.process import spawn, tcp_open, wait_until
from ioc.stack.services import Service, tansu_binary
from streams.topics import bootstrap_servers


def publish(mqtt_url: str, messages: Iterable[tuple[str, bytes]], timeout_s: float = 60.0) -> int:
    """Publish at QoS 1 and wait for every PUBACK; returns how many the broker acked."""
    client, target, props = make_client(mqtt_url, client_id=f"test-pub-{uuid.uuid4().hex[:8]}", max_inflight=2000)
    connect(client, target, props)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout_s
        infos = []
        for k, (t, p) in enumerate(messages):
            if k >= 20_000:  # window: paho message ids wrap at 65,535 unacked
                infos[k - 20_000].wait_for_publish(max(0.1, deadline - time.monotonic()))
            infos.append(client.publish(t, p, qos=1))
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        return sum(1 for i in infos if i.is_published())
    finally:
        client.loop_stop()
        client.disconnect()


def mqtt_session(mqtt_url: str, client_id: str, *, end: bool = False, timeout_s: float = 10.0) -> bool:
    """Whether the broker holds a persistent session for ``client_id``; ``end`` ends it as well.

    Resumes the session for a moment (clean_start false), so the broker's CONNACK says whether one
    was present, and leaves with session expiry 0 (``end``, or no session was there) or one day
    (the bridges' own expiry).
    A test's bridge left behind would otherwise queue every later reading of the session's broker
    for a day, and Mosquitto saves its whole queue every ``autosave_interval``.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client, target, props = make_client(mqtt_url, client_id=client_id, clean_start=False, session_expiry_s=60,
                                         manual_ack=True)  # what it holds is not taken
    present: list[bool] = []
    client.on_connect = lambda _c, _u, flags, rc, _p: present.append(bool(flags.session_present))
    connect(client, target, props)
    deadline = time.monotonic() + timeout_s
    while not present and time.monotonic() < deadline:
        client.loop(0.05)
    assert present, f"no CONNACK for {client_id} within {timeout_s:.0f} s"
    leave = Properties(PacketTypes.DISCONNECT)
    leave.SessionExpiryInterval = 0 if end or not present[0] else 86400
    client.disconnect(properties=leave)
    client.loop(0.05)
    return present[0]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last value {last!r})")


def _busy_idle_jiffies() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, idle


def wait_for_quiet_cpu(max_busy_cores: float = 0.5, window_s: float = 1.0, timeout_s: float = 30.0) -> float:
    """Wait until the whole machine used at most ``max_busy_cores`` over one ``window_s``; return that load.

    Timing tests measure pacing, not contention: a backlog an earlier test left to the session's
    pipeline (thousands of readings through bridge, worker and PostgreSQL) can hold both cores for
    seconds. Gives up after ``timeout_s`` and returns the last load, so a busy machine still runs the test.
    """
    ncpu = os.cpu_count() or 1
    deadline = time.monotonic() + timeout_s
    busy = float("inf")
    while time.monotonic() < deadline:
        b0, i0 = _busy_idle_jiffies()
        time.sleep(window_s)
        b1, i1 = _busy_idle_jiffies()
        busy = ncpu * (b1 - b0) / max(1, (b1 - b0) + (i1 - i0))
        if busy <= max_busy_cores:
            break
    return busy


def scalar(url: str, query: str, params: Sequence[Any] = ()) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]


def register_sensors(url: str, sensors: Iterable[tuple[str, str, dict[str, Any] | None]]) -> None:
    """(sensor_id, kind, alarm_levels) rows into the real `sensors` table."""
    with psycopg.connect(url, autocommit=True) as conn:
        for sid, kind, levels in sensors:
            conn.execute(
                "INSERT INTO sensors (sensor_id, kind, name, alarm_levels) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (sensor_id) DO UPDATE SET alarm_levels = EXCLUDED.alarm_levels",
                (sid, kind, sid, Jsonb(levels) if levels else None),
            )


@dataclass
class Pipeline:
    """Workers and bridges of one test pipeline: own database, topics, group and share group."""

    env: dict[str, str]
    db: str
    procs: ChildProcesses
    workers: int
    bridges: int
    bridge_ids: set[str] = field(default_factory=set)

    def stop(self) -> None:
        """Stop every process, then end the sessions its bridges leave on the (shared) broker."""
        self.procs.stop_all()
        for cid in sorted(self.bridge_ids):
            mqtt_session(self.env["IOC_MQTT_URL"], cid, end=True)

    def start_worker(self, i: int) -> None:
        self.procs.start(f"worker{i}", "worker")

    def bridge_id(self, i: int) -> str:
        return f"{self.env['IOC_BRIDGE_ID']}-{i}"

    def start_bridge(self, i: int, **extra_env: str) -> None:
        ready = self.logdir / f"bridge{i}.ready"
        ready.unlink(missing_ok=True)
        self.bridge_ids.add(self.bridge_id(i))
        self.procs.start(f"bridge{i}", "bridge", "--ready-file", str(ready),
                         extra_env={"IOC_BRIDGE_ID": self.bridge_id(i), **extra_env})
        wait_for(lambda: ready.exists() or not self.procs.alive(f"bridge{i}"), 60, f"bridge{i} subscription")
        assert self.procs.alive(f"bridge{i}"), self.procs.log(f"bridge{i}")

    @property
    def logdir(self) -> Path:
        return self.procs.logdir

    def warm_up(self, timeout_s: float = 150) -> None:
        """One reading end to end proves assignment happened (Tansu's first one takes ~30 s)."""
        from datetime import UTC, datetime

        from ioc.wire import encode_payload

        sid = f"WARMUP_{uuid.uuid4().hex[:6]}"
        register_sensors(self.db, [(sid, "rain", None)])
        time.sleep(1.5)
        publish(self.env["IOC_MQTT_URL"], [(f"khanhhoa/v1/rain/{sid}", encode_payload(sid, datetime.now(UTC), 1, {"rain_mm": 0.0}))])
        alive = lambda: all(self.procs.alive(n) for n in self.procs.procs)  # noqa: E731
        wait_for(lambda: scalar(self.db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (sid,)) == 1 or not alive(),
                 timeout_s, "the first partition assignment")
        assert alive(), "\n".join(f"--- {n}\n{self.procs.log(n)}" for n in self.procs.procs)


def start_pipeline(urls: dict[str, str], db: str, workdir: Path, *, workers: int = 1, bridges: int = 1,
                   **extra: str) -> Pipeline:
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(urls)
    env.update(
        IOC_DATABASE_URL=db, IOC_TOPIC_PREFIX=f"ioc-{tag}", IOC_APP_ID=f"ioc-worker-{tag}",
        IOC_BRIDGE_ID=f"bridge-{tag}", IOC_SHARE_GROUP=f"g{tag}", IOC_REGISTRY_REFRESH_S="1",
        IOC_METRICS_INTERVAL_S="1", IOC_DATA_DIR=str(workdir),
    )
    env.update(extra)
    p = Pipeline(env, db, ChildProcesses(env, workdir / "logs"), workers, bridges)
    for i in range(workers):
        p.start_worker(i)
    for i in range(bridges):
        p.start_bridge(i)
    return p


def reading_msgs(sensors: Sequence[str], per_sensor: int, kind: str = "water_level", metric: str = "water_level_m",
                 step_s: int = 60, start: Any = None) -> list[tuple[str, bytes]]:
    """Distinct, valid readings, interleaved across sensors, timestamps in the recent past."""
    from datetime import UTC, datetime, timedelta

    from ioc.wire import encode_payload

    t0 = start or datetime.now(UTC) - timedelta(seconds=step_s * per_sensor + 3600)
    return [
        (f"khanhhoa/v1/{kind}/{s}", encode_payload(s, t0 + timedelta(seconds=step_s * k), k, {metric: 1.0 + (k % 97) / 10}))
        for k in range(per_sensor)
        for s in sensors
    ]


class SteadyPublisher:
    """Publishes a list at a steady pace in a thread, surviving broker restarts.

    A persistent session (clean_start=False) makes paho resend unacked QoS 1 messages after a
    reconnect, so `acked` is what the broker really took responsibility for.
    """

    def __init__(self, mqtt_url: str, msgs: list[tuple[str, bytes]], duration_s: float) -> None:
        import threading

        self.msgs = msgs
        self.duration_s = duration_s
        self.client, self.target, self.props = make_client(
            mqtt_url, client_id=f"steady-{uuid.uuid4().hex[:8]}", clean_start=False, session_expiry_s=3600,
            max_inflight=1000,
        )
        self.client.reconnect_delay_set(0.2, 2)
        self.infos: list[tuple[int, Any]] = []
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _publish(self, idx: int) -> bool:
        topic, payload = self.msgs[idx]
        info = self.client.publish(topic, payload, qos=1)
        self.infos.append((idx, info))
        return info.rc == 0

    def _run(self) -> None:
        chunk = 200
        pause = self.duration_s / max(1, len(self.msgs) / chunk)
        retry: list[int] = []
        for i in range(0, len(self.msgs), chunk):
            while not self.client.is_connected():  # store and forward: hold new data while the broker is away
                time.sleep(0.05)
            retry += [k for k in range(i, min(i + chunk, len(self.msgs))) if not self._publish(k)]
            self.sent = i + chunk
            time.sleep(pause)
        while retry:
            while not self.client.is_connected():
                time.sleep(0.05)
            retry = [k for k in retry if not self._publish(k)]

    def start(self) -> SteadyPublisher:
        connect(self.client, self.target, self.props)
        self.client.loop_start()
        self.thread.start()
        return self

    def wait_progress(self, fraction: float, timeout_s: float = 120) -> None:
        wait_for(lambda: self.sent >= fraction * len(self.msgs), timeout_s, f"{fraction:.0%} published")

    @staticmethod
    def _acked(info: Any) -> bool:
        try:
            return bool(info.is_published())
        except (RuntimeError, ValueError):  # not sent on that call; a retry carried it
            return False

    def finish(self, timeout_s: float = 180) -> int:
        """Distinct messages the broker PUBACKed."""
        self.thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            acked = {idx for idx, info in self.infos if self._acked(info)}
            if len(acked) == len(self.msgs):
                break
            time.sleep(0.1)
        self.client.loop_stop()
        self.client.disconnect()
        return len({idx for idx, info in self.infos if self._acked(info)})


def restart_tansu(svc: Service) -> Service:
    """Tansu again on its old port, as a supervisor would start it (memory storage: empty)."""
    port = int(svc.url.rsplit(":", 1)[1])
    listener = f"tcp://127.0.0.1:{port}"
    proc = spawn([tansu_binary(), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                  "--storage-engine", "memory://tansu/"], Path(svc.log), env={"RUST_LOG": "warn"})
    wait_until("tansu", lambda: tcp_open("127.0.0.1", port), proc=proc, log_path=Path(svc.log), timeout_s=30)
    return Service(svc.name, proc.pid, svc.url, svc.log, svc.data_dir)


async def produce(kafka_url: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    """Write records straight to a Kafka partition, each acknowledged before the next."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(kafka_url))
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v, partition=partition)
    finally:
        await producer.stop()
