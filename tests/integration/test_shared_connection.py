"""``SharedConnection``: the bridge's one connection for its registry checks, metrics and registrations.

Real PostgreSQL. Each call used to open a connection (a backend started and SCRAM on both sides,
about 14 ms of CPU); these tests pin that calls share one, and that losing it costs no call.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from ioc.errors import ServiceUnavailable
from ioc.stack.process import free_port
from ioc.storage.db import SharedConnection, connect
from ioc.storage.metrics_store import write_metric_rows

pytestmark = pytest.mark.integration

METRICS_KEY_MIGRATION = Path(str(resources.files("ioc.storage").joinpath("migrations/010_pipeline_metrics_key.sql")))


def _pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_calls_from_several_threads_share_one_server_connection(db_url: str) -> None:
    db = SharedConnection(db_url)
    pids: list[int] = []

    def call() -> None:
        for _ in range(5):
            pids.append(db.run(_pid))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.close()
    assert len(pids) == 20 and len(set(pids)) == 1


def test_a_connection_the_server_dropped_is_replaced_without_a_failed_call(db_url: str) -> None:
    """What a database restart does to the bridge's idle connection between two metrics writes."""
    db = SharedConnection(db_url)
    first = db.run(_pid)
    with connect(db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    second = db.run(_pid)  # raises if the dead connection is used and its error passed on
    assert second != first
    assert db.run(_pid) == second
    db.close()


def test_an_sql_error_is_raised_and_keeps_the_connection(db_url: str) -> None:
    db = SharedConnection(db_url)
    first = db.run(_pid)
    with pytest.raises(psycopg.errors.UndefinedTable):
        db.run(lambda c: c.execute("SELECT * FROM no_such_table"))
    assert db.run(_pid) == first
    db.close()


def test_a_server_that_cannot_be_reached_is_named() -> None:
    db = SharedConnection(f"postgresql://ioc:secret-pw@127.0.0.1:{free_port()}/x")
    with pytest.raises(ServiceUnavailable) as e:
        db.run(_pid)
    assert "127.0.0.1" in str(e.value) and "secret-pw" not in str(e.value)


def test_a_metrics_flush_retried_after_its_commit_is_not_counted_twice(db_url: str) -> None:
    """The window the retry leaves open: the server committed the flush, then the connection was
    lost before the client moved on. The retry writes the same rows again; they must count once."""
    ts = datetime.now(UTC)
    rows = [(ts, "bridge", "host:1", "forwarded_total", 120.0), (ts, "bridge", "host:1", "forwarded_per_s", 4.0)]
    calls = []

    def flush_then_lose_the_connection(conn: psycopg.Connection) -> None:
        calls.append(1)
        write_metric_rows(conn, rows)
        if len(calls) == 1:  # committed; now the connection dies before the call returns
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    db = SharedConnection(db_url)
    db.run(_pid)  # a kept connection: the only kind that is retried
    db.run(flush_then_lose_the_connection)
    db.close()
    assert len(calls) == 2  # the retry did happen
    with connect(db_url, autocommit=True) as conn:
        got = conn.execute("SELECT metric, value FROM pipeline_metrics ORDER BY metric").fetchall()
    assert got == [("forwarded_per_s", 4.0), ("forwarded_total", 120.0)]


def test_the_metrics_key_migration_keeps_one_copy_of_rows_written_twice(db_url: str) -> None:
    """Tables from before the key may hold such doubles: the migration must remove them, or the
    unique index cannot be built and the upgrade stops."""
    ts = datetime.now(UTC)
    with connect(db_url, autocommit=True) as conn:
        conn.execute("DROP INDEX pipeline_metrics_key")
        for _ in range(3):
            conn.execute("INSERT INTO pipeline_metrics (ts, stage, worker, metric, value) VALUES (%s, 's', 'w', 'm', 1)",
                         (ts,))
        conn.execute("INSERT INTO pipeline_metrics (ts, stage, worker, metric, value) VALUES (%s, 's', 'w', 'other', 2)",
                     (ts,))
        conn.execute(METRICS_KEY_MIGRATION.read_text())
        got = conn.execute("SELECT metric, count(*) FROM pipeline_metrics GROUP BY 1 ORDER BY 1").fetchall()
        assert got == [("m", 1), ("other", 1)]
        assert conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'pipeline_metrics_key'").fetchone()
