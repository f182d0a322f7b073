"""Helpers for integration tests: publishing over real MQTT and waiting on the real database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ioc.mqtt_client import connect, make_client
from ioc.stack.process import log_tail, stop_pid


def publish(mqtt_url: str, messages: Iterable[tuple[str, bytes]], timeout_s: float = 60.0) -> int:
    """Publish at QoS 1 and wait for every PUBACK; returns how many the broker acked."""
    client, target, props = make_client(mqtt_url, client_id=f"test-pub-{uuid.uuid4().hex[:8]}", max_inflight=2000)
    connect(client, target, props)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1) for t, p in messages]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        return sum(1 for i in infos if i.is_published())
    finally:
        client.loop_stop()
        client.disconnect()


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last value {last!r})")


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
class Processes:
    """`ioc worker` / `ioc bridge` child processes of one test, stopped by pid."""

    env: dict[str, str]
    logdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with open(self.logdir / f"{name}.log", "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "ioc.cli", *args],
                env={**self.env, **(extra_env or {})},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        return log_tail(self.logdir / f"{name}.log", 40)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def kill(self, name: str, sig: int) -> None:
        os.killpg(self.procs[name].pid, sig)
        self.procs[name].wait(30)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            stop_pid(p.pid, timeout_s=20)
