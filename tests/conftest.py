"""Session fixtures: the real local stack (same code as `ioc stack up`) and a running pipeline.

Tansu makes a new consumer group wait ~30 s for its first assignment, so one worker serves the
whole session; tests isolate themselves with their own sensor ids, databases and topics.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ioc.stack.stack import StackState, down, up
from ioc.storage.db import create_database
from ioc.storage.migrate import migrate
from ioc.wire import encode_payload
from tests.support import Processes, publish, register_sensors, scalar, wait_for


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    """Real Mosquitto, Tansu and PostgreSQL; URLs already set in the environment are used as-is."""
    base = tmp_path_factory.mktemp("stack")
    state = up(base)
    try:
        yield state
    finally:
        down(base)


@pytest.fixture(scope="session")
def mqtt_url(stack: StackState) -> str:
    return stack.urls["IOC_MQTT_URL"]


@pytest.fixture(scope="session")
def kafka_url(stack: StackState) -> str:
    return stack.urls["IOC_KAFKA_URL"]


@pytest.fixture(scope="session")
def pg_url(stack: StackState) -> str:
    return stack.urls["IOC_DATABASE_URL"]


def fresh_db(pg_url: str) -> str:
    url = create_database(pg_url, f"t_{uuid.uuid4().hex[:12]}")
    migrate(url)
    return url


@pytest.fixture
def db_url(pg_url: str) -> str:
    """A migrated database of its own for each test."""
    return fresh_db(pg_url)


def stack_env(stack: StackState, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(stack.urls)
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def pipeline(stack: StackState, pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One worker and one bridge for the session, on their own database and topics, warmed up."""
    tag = uuid.uuid4().hex[:8]
    db = fresh_db(pg_url)
    env = stack_env(
        stack,
        IOC_DATABASE_URL=db,
        IOC_TOPIC_PREFIX=f"ioc-{tag}",
        IOC_APP_ID=f"ioc-worker-{tag}",
        IOC_BRIDGE_ID=f"bridge-{tag}",
        IOC_SHARE_GROUP=f"g{tag}",
        IOC_REGISTRY_REFRESH_S="1",
        IOC_DATA_DIR=str(tmp_path_factory.mktemp("data")),
    )
    register_sensors(db, [("WARMUP_1", "rain", None)])
    procs = Processes(env, Path(env["IOC_DATA_DIR"]) / "logs")
    ready = Path(env["IOC_DATA_DIR"]) / "bridge.ready"
    procs.start("worker", "worker")
    procs.start("bridge", "bridge", "--ready-file", str(ready))
    try:
        wait_for(lambda: ready.exists() or not procs.alive("bridge"), 60, "bridge subscription")
        assert procs.alive("bridge"), procs.log("bridge")
        ts = datetime.now(UTC)
        publish(env["IOC_MQTT_URL"], [("khanhhoa/v1/rain/WARMUP_1", encode_payload("WARMUP_1", ts, 1, {"rain_mm": 0.0}))])
        wait_for(
            lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = 'WARMUP_1'") == 1
            or not procs.alive("worker"),
            150,
            "the worker's first partition assignment (Tansu waits ~30 s)",
        )
        assert procs.alive("worker"), procs.log("worker")
        yield env
    finally:
        procs.stop_all()
