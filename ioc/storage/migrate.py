"""Ordered, idempotent SQL migrations tracked in ``schema_migrations``.

Files are ``NNN_name.sql`` (always), or ``NNN_name.timescale.sql`` / ``NNN_name.plain.sql``
(whichever fits the server). TimescaleDB is used when its extension is installed and its library
is preloaded; ``require_timescale`` turns every other case into a :class:`~ioc.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import psycopg
from psycopg import sql

from ioc.errors import ConfigError, IocError
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


def available_migrations(migrations_dir: Path | None = None) -> list[Migration]:
    """The packaged migrations, or those in ``migrations_dir`` (tests, a patched deployment)."""
    folder: Traversable = migrations_dir if migrations_dir is not None else (
        resources.files("ioc.storage").joinpath("migrations")
    )
    out = []
    for entry in folder.iterdir():
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


PRELOAD_FIX = "shared_preload_libraries = 'timescaledb'"


def _preloaded(conn: psycopg.Connection) -> bool:
    """Whether the server preloaded TimescaleDB's loader, asked without loading anything.

    ``shared_preload_libraries`` is readable only by superusers and pg_read_all_settings; other
    roles see no row, so then the loader's own setting, which exists only when it was preloaded,
    answers instead.
    """
    row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'").fetchone()
    if row is None:
        row = conn.execute("SELECT 1 FROM pg_settings WHERE name = 'timescaledb.max_background_workers'").fetchone()
        return row is not None
    libs = [lib.strip().strip('"').rsplit("/", 1)[-1].removesuffix(".so") for lib in str(row[0]).split(",")]
    return "timescaledb" in libs


def detect_timescale(conn: psycopg.Connection, *, require: bool = False) -> bool:
    """Create the extension when the server can load it; False (and one log line) on plain PostgreSQL.

    TimescaleDB installed but not in ``shared_preload_libraries`` is checked first: there
    ``CREATE EXTENSION`` fails with a FATAL error that closes the connection. That server gets the
    plain path and a warning naming the setting, or a :class:`ConfigError` when ``require`` is set
    (``IOC_REQUIRE_TIMESCALE``) or when this database already holds the extension.
    """
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if available is None:
        if require:
            raise ConfigError(
                "IOC_REQUIRE_TIMESCALE=true but this PostgreSQL has no timescaledb extension installed"
                " (pg_available_extensions); install TimescaleDB or unset IOC_REQUIRE_TIMESCALE"
            )
        log.info("TimescaleDB extension not available; using plain PostgreSQL tables and views")
        return False
    created = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
    if not _preloaded(conn):
        fix = f"set {PRELOAD_FIX} in postgresql.conf (or run timescaledb-tune) and restart PostgreSQL"
        if created:
            raise ConfigError(
                f"this database uses the timescaledb extension but the server does not preload it; {fix}"
            )
        if require:
            raise ConfigError(f"IOC_REQUIRE_TIMESCALE=true but TimescaleDB is installed and not preloaded; {fix}")
        log.warning("TimescaleDB is installed but not preloaded; using plain PostgreSQL. To use it, %s", fix)
        return False
    if not created:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as e:
            if conn.closed:
                raise IocError(f"CREATE EXTENSION timescaledb closed the connection: {e}") from e
            if require:
                raise ConfigError(f"IOC_REQUIRE_TIMESCALE=true but CREATE EXTENSION timescaledb failed: {e}") from e
            log.warning("TimescaleDB is installed but cannot be created (%s); using plain PostgreSQL", e)
            return False
    return True


def check_applied(applied: dict[str, tuple[str, str, str]], available: list[Migration]) -> None:
    """Refuse when an applied migration's file changed since: skipping it would hide a schema drift.

    ``applied`` maps version -> (name, backend, checksum) as stored in ``schema_migrations``.
    """
    files = {(m.version, m.backend): m for m in available}
    for version, (name, backend, stored) in sorted(applied.items()):
        m = files.get((version, backend))
        if m is None or m.checksum == stored:
            continue  # a removed file cannot be re-applied either; nothing to compare it with
        suffix = "" if backend == "any" else f".{backend}"
        raise IocError(
            f"migration {version}_{name} ({version}_{m.name}{suffix}.sql) was edited after it was applied"
            f" (checksum in schema_migrations {stored}, file {m.checksum}); nothing was migrated."
            " Restore the applied file and put the change in a new migration with a higher number;"
            f" if the edit is only cosmetic, store checksum {m.checksum} for version {version} in"
            " schema_migrations by hand"
        )


@dataclass(frozen=True)
class MigrateResult:
    backend: str
    applied: list[str]


def migrate(
    url: str, *, retention_days: int = 365, compress_after_days: int = 7, require_timescale: bool = False,
    migrations_dir: Path | None = None,
) -> MigrateResult:
    """Apply pending migrations; ``require_timescale`` (``IOC_REQUIRE_TIMESCALE``) refuses plain PostgreSQL.

    An applied migration whose file no longer matches its stored checksum stops the run before
    anything is applied (:func:`check_applied`).
    """
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            timescale = detect_timescale(conn, require=require_timescale)
            backend = "timescale" if timescale else "plain"
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, name text NOT NULL,"
                " backend text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done: dict[str, tuple[str, str, str]] = {
                r[0]: (r[1], r[2], r[3])
                for r in conn.execute("SELECT version, name, backend, checksum FROM schema_migrations")
            }
            available = available_migrations(migrations_dir)
            check_applied(done, available)
            applied = []
            for m in available:
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
            if not conn.closed:  # a closed session has released its advisory lock already
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))

