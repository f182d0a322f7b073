"""Migrating a server that has TimescaleDB installed but not in ``shared_preload_libraries``.

That is a packaged TimescaleDB before its tune step. There ``CREATE EXTENSION`` fails with a FATAL
error that closes the connection, so ``ioc db migrate`` must see the case before trying: it takes
the plain path with a warning that names the setting, or stops when ``IOC_REQUIRE_TIMESCALE`` asks
for TimescaleDB. The cluster is the local stack's own (``start_postgres(timescale_preload=False)``).
Skips, saying why, where TimescaleDB is not installed (CI); the plain path is tested in
``test_storage.py``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ioc.errors import ConfigError
from ioc.stack.services import (
    Service,
    pg_ctl,
    remove_tree,
    start_postgres,
    stop_postgres,
    timescaledb_installed,
)
from ioc.stack.stack import StackState
from ioc.storage.db import create_database
from ioc.storage.migrate import PRELOAD_FIX, _preloaded, available_migrations, migrate

pytestmark = [pytest.mark.integration, pytest.mark.timescale]

SKIP_REASON = (
    "TimescaleDB is not installed in this machine's PostgreSQL 15 (no timescaledb.so and timescaledb.control);"
    " the plain-PostgreSQL path is tested in test_storage.py"
)


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
        return None if row is None else row[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A local-stack PostgreSQL with TimescaleDB available but not preloaded."""
    if not timescaledb_installed():
        pytest.skip(SKIP_REASON)
    svc = start_postgres(tmp_path_factory.mktemp("pg-no-preload"), timescale_preload=False)
    try:
        yield svc
    finally:
        stop_postgres(svc)
        remove_tree(svc.data_dir)


@pytest.fixture
def url(cluster: Service) -> str:
    return create_database(cluster.url, f"np_{uuid.uuid4().hex[:12]}")


def test_the_server_offers_timescaledb_without_preloading_it(cluster: Service) -> None:
    assert _scalar(cluster.url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'") == 1
    assert "timescaledb" not in str(_scalar(cluster.url, "SHOW shared_preload_libraries"))
    # Telemetry is off in the config even here, so preloading it later cannot start phoning home.
    assert _scalar(cluster.url, "SELECT current_setting('timescaledb.telemetry_level', true)") == "off"


def test_migrate_takes_the_plain_path_and_names_the_setting(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ioc.storage.migrate"):
        res = migrate(url)
    assert res.backend == "plain"
    assert res.applied == [f"{m.version}_{m.name}" for m in available_migrations() if m.backend in ("any", "plain")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not preloaded" in w and PRELOAD_FIX in w for w in warnings), warnings
    assert PRELOAD_FIX == "shared_preload_libraries = 'timescaledb'"
    # The extension was never attempted, and the plain relations answer.
    assert _scalar(url, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
    assert _scalar(url, "SELECT relkind FROM pg_class WHERE relname = 'readings_1h'") == "v"
    assert _scalar(url, "SELECT count(*) FROM readings_1h") == 0
    again = migrate(url)
    assert (again.backend, again.applied) == ("plain", [])


def test_require_timescale_stops_with_the_setting_to_change(url: str) -> None:
    with pytest.raises(ConfigError) as e:
        migrate(url, require_timescale=True)
    assert "IOC_REQUIRE_TIMESCALE" in str(e.value) and PRELOAD_FIX in str(e.value)
    # Nothing was applied, and the database is still usable for a later, preloaded run.
    assert _scalar(url, "SELECT to_regclass('schema_migrations') IS NULL") is True


def test_a_role_that_cannot_read_shared_preload_libraries_gets_the_same_answer(
    cluster: Service, stack: StackState, url: str
) -> None:
    """Non-superusers see no ``shared_preload_libraries`` row; the loader's own setting answers instead."""
    role, password = f"np_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    servers = [cluster.url]
    if "postgres" in stack.services:  # the session's local stack, which preloads TimescaleDB
        servers.append(stack.services["postgres"].url)
    for server in servers:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), password))
            try:
                host = server.split("@", 1)[1]
                as_role = f"postgresql://{role}:{password}@{host}"
                with psycopg.connect(as_role, autocommit=True) as conn:
                    assert conn.execute(
                        "SELECT count(*) FROM pg_settings WHERE name = 'shared_preload_libraries'"
                    ).fetchone() == (0,)
                    assert _preloaded(conn) is _preloaded(admin)
                    assert _preloaded(conn) is (server != cluster.url)
            finally:
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_ioc_db_migrate_on_that_server_succeeds_on_the_plain_path(url: str) -> None:
    """The reported failure: the CLI used to go on with the connection that CREATE EXTENSION had closed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env.update(IOC_DATABASE_URL=url, IOC_STACK_ENV=os.devnull)
    res = subprocess.run(
        [sys.executable, "-m", "ioc.composition.cli", "db", "migrate", "--no-seed"],
        env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 0, res.stderr
    assert "backend plain" in res.stdout
    assert PRELOAD_FIX in res.stderr + res.stdout


def test_a_database_that_already_has_the_extension_is_not_migrated_plain(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Preloading was removed after the extension was created: stop and say what to fix, even unrequired."""
    if not timescaledb_installed():
        pytest.skip(SKIP_REASON)
    svc = start_postgres(tmp_path_factory.mktemp("pg-preload-removed"))
    try:
        url = create_database(svc.url, "ts_then_plain")
        assert migrate(url).backend == "timescale"
        conf = Path(svc.data_dir) / "data" / "postgresql.conf"
        conf.write_text(conf.read_text().replace("shared_preload_libraries = 'timescaledb'\n", ""))
        pg_ctl(svc, "stop")
        pg_ctl(svc, "start")
        with pytest.raises(ConfigError, match="uses the timescaledb extension") as e:
            migrate(url)
        assert PRELOAD_FIX in str(e.value)
    finally:
        stop_postgres(svc)
        remove_tree(svc.data_dir)
