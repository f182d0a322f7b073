"""Session fixtures: the real local stack (same code as `ioc stack up`) and a running pipeline.

Tansu makes a new consumer group wait ~30 s for its first assignment, so one worker serves the
whole session; tests isolate themselves with their own sensor ids, databases and topics.

Mosquitto runs with authentication and the compose ACL (deploy/mosquitto/acl). ``mqtt_url`` is
the local stack's all-rights observer account ``ioc``, which tests use to publish test traffic
and to subscribe to what they measure; the pipeline's bridge and worker run as ``ioc-bridge`` and
``ioc-worker`` (ChildProcesses), and :func:`mqtt_account_url` gives the other role accounts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping

import pytest

from ioc.stack.services import mqtt_role_env
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


def mqtt_account_url(urls: Mapping[str, str], role: str) -> str:
    """The URL of a role account of deploy/mosquitto/acl (bridge, worker, operator, sim) on the local
    stack's Mosquitto; IOC_MQTT_URL itself when the broker was configured, not started by the stack."""
    return urls.get(mqtt_role_env(role)) or urls["IOC_MQTT_URL"]


@pytest.fixture(scope="session")
def sim_mqtt_url(stack: StackState) -> str:
    """The simulator's account (``ioc-sim``): may publish readings of every kind, nothing else."""
    return mqtt_account_url(stack.urls, "sim")


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
        p.stop()
