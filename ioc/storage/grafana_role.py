"""A read-only PostgreSQL role for Grafana's data source.

Grafana runs whatever SQL a dashboard editor types, so it gets a role that can only read:
``SELECT`` on the schema's tables and views (present and future), no DDL, no writes
(``default_transaction_read_only``), and a statement timeout so one heavy panel cannot hold a
connection for long. Names are quoted as identifiers and the password as a literal with
psycopg's ``sql`` module; PostgreSQL does not accept bind parameters in these statements.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql
from pydantic import SecretStr

log = logging.getLogger(__name__)

#: Grafana panels should answer well within a wall's 30 s refresh.
STATEMENT_TIMEOUT = "20s"


def ensure_readonly_role(
    conn: psycopg.Connection,
    role: str,
    password: SecretStr,
    *,
    schema: str = "public",
    statement_timeout: str = STATEMENT_TIMEOUT,
) -> bool:
    """Create the role, or update its password, and grant read access; idempotent.

    Returns True when the role was created. Runs in one transaction on ``conn``'s database.
    """
    if not role or len(role) > 63:
        raise ValueError("role name must be 1-63 characters")
    secret = password.get_secret_value()
    if len(secret) < 12:
        raise ValueError("the Grafana role's password must be at least 12 characters")
    ident = sql.Identifier(role)
    with conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
        verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD {}").format(
                verb, ident, sql.Literal(secret)
            )
        )
        db = conn.execute("SELECT current_database()").fetchone()
        assert db is not None
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db[0]), ident))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(sql.Identifier(schema), ident))
        conn.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                sql.Identifier(schema), ident
            )
        )
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
        conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(ident, sql.Literal(statement_timeout)))
    log.info("grafana role %s %s with read-only access to schema %s", role, "updated" if exists else "created", schema)
    return not exists
