"""``SharedConnection``: the bridge's one connection for its registry checks, metrics and registrations.

Real PostgreSQL. Each call used to open a connection (a backend started and SCRAM on both sides,
about 14 ms of CPU); these tests pin that calls share one, and that losing it costs no call.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from ioc.errors import ServiceUnavailable
from ioc.stack.process import free_port
from ioc.storage.db import SharedConnection, connect

pytestmark = pytest.mark.integration


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
