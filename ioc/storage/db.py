"""Connections with a bounded wait, so an unreachable database is named quickly, never hung on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import psycopg

from ioc.errors import ServiceUnavailable
from ioc.settings import mask_url


def connect(url: str, *, autocommit: bool = False, timeout_s: float = 5.0) -> psycopg.Connection:
    """Open a connection or raise ServiceUnavailable naming the (masked) URL."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, int(timeout_s)))
    except psycopg.OperationalError as e:
        raise ServiceUnavailable("PostgreSQL", mask_url(url), str(e).strip().splitlines()[0]) from e


T = TypeVar("T")


class SharedConnection:
    """One autocommit connection for a process's occasional calls, from any thread, one at a time.

    Opening a connection per call costs about 14 ms of CPU between client and server (a backend
    started, SCRAM on both sides); the bridge made one every metrics interval and registry check.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """``fn(conn)``; a kept connection found dead (the server restarted since its last use) is
        replaced and the call made once more, so a restart costs no failed call. Connection errors
        drop the connection and are raised (``ServiceUnavailable`` when none can be opened)."""
        with self._lock:
            for attempt in (1, 2):
                kept = self._conn is not None and not self._conn.closed and not self._conn.broken
                if not kept:
                    self._drop()
                    self._conn = connect(self.url, autocommit=True)
                assert self._conn is not None
                try:
                    return fn(self._conn)
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    self._drop()
                    if not kept or attempt == 2:
                        raise
            raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def database_url_for(url: str, dbname: str) -> str:
    """The same server URL pointing at another database.

    >>> database_url_for("postgresql://u:p@h:5/postgres", "t1")
    'postgresql://u:p@h:5/t1'
    """
    from urllib.parse import urlsplit

    return urlsplit(url)._replace(path=f"/{dbname}").geturl()


def create_database(url: str, dbname: str) -> str:
    """Create a database (tests give each test its own) and return its URL."""
    from psycopg import sql

    with connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return database_url_for(url, dbname)
