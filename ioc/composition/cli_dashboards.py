"""``ioc dashboards``: build the Grafana wall as JSON, push it to Grafana, check every panel's SQL."""

from __future__ import annotations

import functools
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.table import Table

from ioc.errors import ConfigError
from ioc.settings import load_settings

option = functools.partial(click.option, show_envvar=True)
console = Console(width=None if sys.stdout.isatty() else 160)
LANGS = click.Choice(["vi", "en"])


def parse_time(text: str, now: datetime) -> datetime:
    """Grafana-style ``now``, ``now-6h``, ``now-30d`` or an ISO 8601 time (UTC when no zone).

    >>> t = datetime(2025, 12, 4, 12, tzinfo=UTC)
    >>> parse_time("now-6h", t).isoformat(), parse_time("2025-12-04T01:00:00", t).isoformat()
    ('2025-12-04T06:00:00+00:00', '2025-12-04T01:00:00+00:00')
    """
    m = re.fullmatch(r"now(?:-(\d+)([smhdw]))?", text.strip())
    if m:
        if not m.group(1):
            return now
        secs = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return now - timedelta(seconds=int(m.group(1)) * secs)
    try:
        t = datetime.fromisoformat(text)
    except ValueError as e:
        raise click.BadParameter(f"use now, now-<n><s|m|h|d|w> or an ISO time, got {text!r}") from e
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _lang(value: str | None) -> Literal["vi", "en"]:
    return cast(Literal["vi", "en"], value or load_settings().lang)


@click.group("dashboards")
def dashboards_group() -> None:
    """The Grafana wall as code (grafana-foundation-sdk): build, push, check."""


@dashboards_group.command("build")
@option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("deploy/grafana"),
        envvar="IOC_DASHBOARDS_OUT", help="Directory for dashboards/ and provisioning/ [env IOC_DASHBOARDS_OUT].")
@option("--lang", type=LANGS, default=None, help="Title language; default IOC_LANG (vi).")
@option("--timescaledb/--no-timescaledb", default=True, envvar="IOC_DASHBOARDS_TIMESCALEDB",
        help="The data source's TimescaleDB option ($__timeGroup → time_bucket) [env IOC_DASHBOARDS_TIMESCALEDB].")
def build_cmd(out_dir: Path, lang: str | None, timescaledb: bool) -> None:
    """Write the dashboards' JSON and Grafana's provisioning files (deterministic)."""
    from dashboards.main import HOME_UID, wall_url, write

    files = write(out_dir, _lang(lang), timescaledb=timescaledb)
    for f in files:
        console.print(f"wrote {f}")
    console.print(f"wall: {wall_url('http://<grafana>:3000', HOME_UID)}")


@dashboards_group.command("push")
@option("--lang", type=LANGS, default=None, help="Title language; default IOC_LANG (vi).")
@option("--timescaledb/--no-timescaledb", default=True, envvar="IOC_DASHBOARDS_TIMESCALEDB",
        help="The data source's TimescaleDB option [env IOC_DASHBOARDS_TIMESCALEDB].")
@option("--db-host", envvar="IOC_GRAFANA_DB_HOST", default=None,
        help="host:port Grafana uses to reach PostgreSQL; default from IOC_DATABASE_URL [env IOC_GRAFANA_DB_HOST].")
@option("--db-name", envvar="IOC_GRAFANA_DB_NAME", default=None,
        help="Database name; default from IOC_DATABASE_URL [env IOC_GRAFANA_DB_NAME].")
@option("--db-user", envvar="IOC_GRAFANA_DB_USER", default="grafana_reader",
        help="The read-only role (see `ioc dashboards db-role`) [env IOC_GRAFANA_DB_USER].")
@option("--db-password", envvar="IOC_GRAFANA_DB_PASSWORD", default=None, hide_input=True,
        help="That role's password; never printed [env IOC_GRAFANA_DB_PASSWORD].")
def push_cmd(lang: str | None, timescaledb: bool, db_host: str | None, db_name: str | None, db_user: str,
             db_password: str | None) -> None:
    """Create the folder and data source if missing, then create or update each dashboard by uid."""
    from grafana_client import GrafanaApi, TokenAuth

    from dashboards.common import FOLDER_TITLE, FOLDER_UID
    from dashboards.main import datasource_json, render, wall_url
    from dashboards.push import push

    settings = load_settings()
    settings.require("grafana_url", "grafana_token")
    assert settings.grafana_url is not None and settings.grafana_token is not None
    if not settings.grafana_token.get_secret_value().strip():
        raise ConfigError("IOC_GRAFANA_TOKEN is empty: set it to a Grafana service-account token")
    if (db_host is None or db_name is None) and settings.database_url:
        parts = urlsplit(settings.database_url)
        db_host = db_host or f"{parts.hostname}:{parts.port or 5432}"
        db_name = db_name or parts.path.lstrip("/")
    if not db_host or not db_name:
        raise ConfigError("set IOC_GRAFANA_DB_HOST and IOC_GRAFANA_DB_NAME (or IOC_DATABASE_URL) for the data source")
    if db_password is None:
        console.print("[yellow]warning:[/] IOC_GRAFANA_DB_PASSWORD is not set; the data source keeps the password "
                      "Grafana already has (none if it is new)")
    chosen = _lang(lang)
    api = GrafanaApi.from_url(settings.grafana_url, credential=TokenAuth(settings.grafana_token.get_secret_value()))
    ds = datasource_json(timescaledb=timescaledb, host=db_host, database=db_name, user=db_user, password=db_password)
    report = push(api, render(chosen), folder_uid=FOLDER_UID, folder_title=FOLDER_TITLE[chosen], datasource=ds)
    table = Table(title=f"ioc dashboards push → {settings.grafana_url}")
    table.add_column("object")
    table.add_column("result")
    table.add_row(f"folder {FOLDER_UID}", "created" if report.folder_created else "unchanged")
    table.add_row(f"data source {ds['uid']}", report.datasource)
    for uid, state in report.dashboards.items():
        table.add_row(f"dashboard {uid}", state)
    console.print(table)
    console.print(f"wall: {wall_url(settings.grafana_url)}")


@dashboards_group.command("check")
@option("--from", "time_from", default="now-24h", show_default=True, envvar="IOC_CHECK_FROM",
        help="Range start: now-<n><unit> or ISO time [env IOC_CHECK_FROM].")
@option("--to", "time_to", default="now", show_default=True, envvar="IOC_CHECK_TO",
        help="Range end [env IOC_CHECK_TO].")
@option("--lang", type=LANGS, default=None, help="Which language's dashboards; default IOC_LANG (vi).")
@option("--timescaledb", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
        envvar="IOC_CHECK_TIMESCALEDB",
        help="Expand $__timeGroup as with the TimescaleDB option; auto = if the extension is installed "
             "[env IOC_CHECK_TIMESCALEDB].")
@option("--max-data-points", default=1000, show_default=True, type=click.IntRange(10, 100_000),
        envvar="IOC_CHECK_MAX_DATA_POINTS", help="Panel width in points, for $__interval [env IOC_CHECK_MAX_DATA_POINTS].")
def check_cmd(time_from: str, time_to: str, lang: str | None, timescaledb: str, max_data_points: int) -> None:
    """Run every variable, panel and annotation query with Grafana's macros expanded; rows and time each."""
    from dashboards.check import check_dashboards, timescaledb_queries
    from dashboards.main import render

    settings = load_settings()
    settings.require("database_url")
    assert settings.database_url is not None
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = parse_time(time_from, now), parse_time(time_to, now)
    if end <= start:
        raise click.BadParameter(f"--from {time_from} is not before --to {time_to}")
    tsdb = {"auto": None, "on": True, "off": False}[timescaledb]
    dashboards = render(_lang(lang))
    results = check_dashboards(settings.database_url, dashboards, start=start, end=end,
                               max_data_points=max_data_points, timescaledb=tsdb)
    table = Table(title=f"ioc dashboards check · {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC")
    for col, justify in (("dashboard", "left"), ("query", "left"), ("title", "left"), ("rows", "right"),
                         ("ms", "right"), ("status", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    failed = 0
    for r in results:
        q = r.query
        if r.error:
            failed += 1
            status = f"[red]error[/]: {r.error}"
        elif not r.rows:
            status = "[yellow]no rows[/]"
        else:
            status = "[green]ok[/]"
        table.add_row(q.dashboard_uid, f"{q.kind} {q.panel_id}/{q.ref_id}", q.title,
                      "—" if r.rows is None else str(r.rows),
                      "—" if r.elapsed_ms is None else f"{r.elapsed_ms:.0f}", status)
    console.print(table)
    needs = timescaledb_queries(dashboards)
    console.print(f"{len(results)} queries, {failed} failed")
    console.print(f"{len(needs)} queries use $__timeGroup, which needs TimescaleDB (time_bucket) when the data "
                  f"source's TimescaleDB option is on: {', '.join(q.key for q in needs)}")
    if failed:
        sys.exit(1)


@dashboards_group.command("db-role")
@option("--role", default="grafana_reader", show_default=True, envvar="IOC_GRAFANA_DB_USER",
        help="Role name [env IOC_GRAFANA_DB_USER].")
@option("--password", envvar="IOC_GRAFANA_DB_PASSWORD", required=True, hide_input=True,
        help="Its password (at least 12 characters); never printed [env IOC_GRAFANA_DB_PASSWORD].")
@option("--schema", default="public", show_default=True, help="Schema to grant SELECT on.")
def db_role_cmd(role: str, password: str, schema: str) -> None:
    """Create (or update) the read-only PostgreSQL role Grafana's data source logs in as."""
    from pydantic import SecretStr

    from ioc.storage.db import connect
    from ioc.storage.grafana_role import ensure_readonly_role

    settings = load_settings()
    settings.require("database_url")
    assert settings.database_url is not None
    with connect(settings.database_url) as conn:
        try:
            created = ensure_readonly_role(conn, role, SecretStr(password), schema=schema)
        except ValueError as e:
            raise click.BadParameter(str(e)) from e
    console.print(f"role {role}: {'created' if created else 'updated'}; SELECT on schema {schema}, read-only")
