"""Run dashboard panel SQL against the database, read-only, for ``ioc dashboards check``.

The SQL text is the dashboards' own content with Grafana's macros already expanded
(:mod:`dashboards.macros`); it arrives here as a finished statement without parameters. It runs
in a ``READ ONLY`` transaction with a statement timeout and is always rolled back, so a panel
query can neither change data nor hang the check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import LiteralString, cast

import psycopg
from psycopg import sql

from ioc.errors import IocError
from ioc.storage.db import connect

SAMPLE_ROWS = 200


class PanelQueryError(IocError):
    """A panel query failed in PostgreSQL; the message carries the server's first line."""


@dataclass(frozen=True)
class QueryResult:
    rows: int
    elapsed_ms: float
    columns: tuple[str, ...]
    first_column: tuple[str, ...]  # text of the first column, or of __value (variable queries)
    sample: tuple[tuple[object, ...], ...]  # the first SAMPLE_ROWS rows, for reports and tests


def _statement(text: str) -> sql.SQL:
    # Panel SQL is generated dashboard content, not user input; it carries no parameters.
    return sql.SQL(cast(LiteralString, text))


def run_readonly(conn: psycopg.Connection, text: str, *, timeout_ms: int = 15_000) -> QueryResult:
    """Execute one statement in a read-only transaction that is rolled back; count its rows."""
    if conn.autocommit:
        raise ValueError("run_readonly needs a connection with autocommit off")
    t0 = time.perf_counter()
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
            cur.execute(_statement(text))
            rows = cur.fetchall() if cur.description else []
            columns = tuple(d.name for d in cur.description or ())
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PanelQueryError(first) from e
    finally:
        conn.rollback()
    elapsed = (time.perf_counter() - t0) * 1000.0
    if "__value" in columns:
        idx = columns.index("__value")
    else:
        idx = 0
    first_col = tuple("" if r[idx] is None else str(r[idx]) for r in rows) if columns else ()
    return QueryResult(len(rows), elapsed, columns, first_col, tuple(tuple(r) for r in rows[:SAMPLE_ROWS]))


def open_checker(url: str) -> psycopg.Connection:
    """A connection for :func:`run_readonly` (autocommit off)."""
    conn = connect(url)
    conn.read_only = True
    return conn


def has_extension(conn: psycopg.Connection, name: str) -> bool:
    """Whether an extension is installed in this database (decides Grafana's TimescaleDB macros)."""
    try:
        row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (name,)).fetchone()
    finally:
        conn.rollback()
    return row is not None


def missing_relations(conn: psycopg.Connection, names: list[str]) -> list[str]:
    """Which of these relations (tables or views in the search path) do not exist."""
    missing = []
    try:
        for n in names:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (n,)).fetchone()
            if not (row and row[0]):
                missing.append(n)
    finally:
        conn.rollback()
    return missing
