"""Ordered, idempotent SQL migrations tracked in ``schema_migrations``.

Files are ``NNN_name.sql`` (always), or ``NNN_name.timescale.sql`` / ``NNN_name.plain.sql``
(whichever fits the server). TimescaleDB is used when its extension can be created.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from ioc.storage.db import connect

log = logging.getLogger(__name__)

_LOCK_ID = 0x10C_0001  # advisory lock: concurrent `ioc db migrate` runs queue up instead of racing


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    backend: str  # "any", "timescale" or "plain"
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def available_migrations() -> list[Migration]:
    out = []
    for entry in resources.files("ioc.storage").joinpath("migrations").iterdir():
        fname = entry.name
        if not fname.endswith(".sql"):
            continue
        stem = fname[:-4]
        backend = "any"
        for b in ("timescale", "plain"):
            if stem.endswith("." + b):
                backend, stem = b, stem[: -len(b) - 1]
        version, _, name = stem.partition("_")
        out.append(Migration(version, name, backend, entry.read_text(encoding="utf-8")))
    return sorted(out, key=lambda m: (m.version, m.backend))


def detect_timescale(conn: psycopg.Connection) -> bool:
    """Create the extension if the server has it; False (and one log line) on plain PostgreSQL."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if row is None:
        log.info("TimescaleDB extension not available; using plain PostgreSQL tables and views")
        return False
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as e:
        log.info("TimescaleDB is installed but cannot be created (%s); using plain PostgreSQL", e)
        return False
    return True


@dataclass(frozen=True)
class MigrateResult:
    backend: str
    applied: list[str]


def migrate(url: str, *, retention_days: int = 365, compress_after_days: int = 7) -> MigrateResult:
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            timescale = detect_timescale(conn)
            backend = "timescale" if timescale else "plain"
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, name text NOT NULL,"
                " backend text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            applied = []
            for m in available_migrations():
                if m.version in done or m.backend not in ("any", backend):
                    continue
                text = sql.SQL(m.text).format(  # type: ignore[arg-type]
                    retention_days=sql.Literal(retention_days),
                    compress_after_days=sql.Literal(compress_after_days),
                ) if m.backend == "timescale" else sql.SQL(m.text)  # type: ignore[arg-type]
                with conn.transaction():
                    conn.execute(text)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, backend, checksum) VALUES (%s, %s, %s, %s)",
                        (m.version, m.name, m.backend, m.checksum),
                    )
                applied.append(f"{m.version}_{m.name}")
                log.info("applied migration %s_%s (%s)", m.version, m.name, m.backend)
            return MigrateResult(backend, applied)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))

