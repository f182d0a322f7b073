"""Session fixtures: the real local stack (same code as `ioc stack up`) and a running pipeline.

Tansu makes a new consumer group wait ~30 s for its first assignment, so one worker serves the
whole session; tests isolate themselves with their own sensor ids, databases and topics.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ioc.stack.stack import StackState, down, up
from ioc.storage.db import create_database
from ioc.storage.migrate import migrate
from tests.support import start_pipeline


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
    p = start_pipeline(stack.urls, fresh_db(pg_url), tmp_path_factory.mktemp("pipeline"))
    try:
        p.warm_up()
        yield p.env
    finally:
        p.procs.stop_all()
