"""Connections with a bounded wait, so an unreachable database is named quickly, never hung on."""

from __future__ import annotations

import psycopg

from ioc.errors import ServiceUnavailable
from ioc.settings import mask_url


def connect(url: str, *, autocommit: bool = False, timeout_s: float = 5.0) -> psycopg.Connection:
    """Open a connection or raise ServiceUnavailable naming the (masked) URL."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, int(timeout_s)))
    except psycopg.OperationalError as e:
        raise ServiceUnavailable("PostgreSQL", mask_url(url), str(e).strip().splitlines()[0]) from e


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
