"""Run every panel's SQL as Grafana would, against a real database (``ioc dashboards check``).

For each dashboard: resolve its template variables in order (each variable's own query is run
with the variables before it, and "All" becomes every option, as Grafana does), expand the
macros for the chosen range and ``$__interval``, and execute each panel target and SQL
annotation through :mod:`ioc.storage.panel_check` in a read-only transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg

from dashboards.common import SQL_DATASOURCE_TYPES
from dashboards.macros import MacroContext, MacroError, Variable, auto_interval, expand
from ioc.storage.panel_check import (
    PanelQueryError,
    QueryResult,
    has_extension,
    open_checker,
    run_readonly,
)

#: Grafana's data source minimum interval (jsonData.timeInterval in the provisioning).
MIN_INTERVAL = timedelta(seconds=10)

Kind = Literal["panel", "annotation", "variable"]


@dataclass(frozen=True)
class PanelQuery:
    """One SQL statement of a dashboard, before macro expansion."""

    dashboard_uid: str
    dashboard_title: str
    panel_id: int
    title: str
    ref_id: str
    sql: str
    kind: Kind = "panel"

    @property
    def key(self) -> str:
        return f"{self.dashboard_uid}/{self.kind}/{self.panel_id}/{self.ref_id}"

    @property
    def needs_timescaledb(self) -> bool:
        """With the data source's TimescaleDB option on, ``$__timeGroup`` becomes ``time_bucket()``."""
        return "$__timeGroup" in self.sql


@dataclass(frozen=True)
class CheckResult:
    query: PanelQuery
    rows: int | None
    elapsed_ms: float | None
    error: str | None = None
    columns: tuple[str, ...] = ()
    sample: tuple[tuple[object, ...], ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def _is_sql(ds: Any) -> bool:
    return isinstance(ds, dict) and ds.get("type") in SQL_DATASOURCE_TYPES


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """Every SQL target of every panel, then every SQL annotation, in dashboard order."""
    uid, title = str(dashboard["uid"]), str(dashboard["title"])
    out: list[PanelQuery] = []
    for panel in dashboard.get("panels") or []:
        for t in panel.get("targets") or []:
            if _is_sql(t.get("datasource") or panel.get("datasource")) and t.get("rawSql"):
                out.append(PanelQuery(uid, title, int(panel["id"]), str(panel.get("title", "")),
                                      str(t.get("refId", "A")), str(t["rawSql"])))
    for i, ann in enumerate((dashboard.get("annotations") or {}).get("list") or []):
        target = ann.get("target") or {}
        if _is_sql(ann.get("datasource")) and target.get("rawSql"):
            out.append(PanelQuery(uid, title, i, str(ann.get("name", "")), str(target.get("refId", "Anno")),
                                  str(target["rawSql"]), "annotation"))
    return out


def variable_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    uid, title = str(dashboard["uid"]), str(dashboard["title"])
    out = []
    for i, v in enumerate((dashboard.get("templating") or {}).get("list") or []):
        if v.get("type") == "query" and _is_sql(v.get("datasource")):
            q = v.get("query")
            sql = q if isinstance(q, str) else str((q or {}).get("rawSql", ""))
            out.append(PanelQuery(uid, title, i, str(v["name"]), str(v["name"]), sql, "variable"))
    return out


def timescaledb_queries(dashboards: Mapping[str, Mapping[str, Any]]) -> list[PanelQuery]:
    """The queries that need TimescaleDB when the data source's TimescaleDB option is on."""
    return [q for d in dashboards.values() for q in panel_queries(d) if q.needs_timescaledb]


def check_dashboards(
    url: str,
    dashboards: Mapping[str, Mapping[str, Any]],
    *,
    start: datetime,
    end: datetime,
    max_data_points: int = 1000,
    timescaledb: bool | None = None,
    timeout_ms: int = 15_000,
) -> list[CheckResult]:
    """Check every variable, panel and annotation query of ``dashboards`` for one time range.

    ``timescaledb`` None detects the extension in the database; True expands ``$__timeGroup``
    to ``time_bucket()`` as Grafana does with the data source's TimescaleDB option.
    """
    interval = auto_interval(start, end, max_data_points, MIN_INTERVAL)
    results: list[CheckResult] = []
    with open_checker(url) as conn:
        tsdb = has_extension(conn, "timescaledb") if timescaledb is None else timescaledb
        for d in dashboards.values():
            variables: dict[str, Variable] = {}
            for vq in variable_queries(d):
                ctx = MacroContext(start, end, interval, dict(variables), timescaledb=tsdb)
                res = _run(conn, vq, ctx, timeout_ms)
                results.append(res[0])
                if res[1] is not None and res[1].first_column:
                    variables[vq.title] = Variable(tuple(dict.fromkeys(res[1].first_column)))
            ctx = MacroContext(start, end, interval, variables, timescaledb=tsdb)
            for q in panel_queries(d):
                results.append(_run(conn, q, ctx, timeout_ms)[0])
    return results


def _run(conn: psycopg.Connection[Any], q: PanelQuery, ctx: MacroContext, timeout_ms: int) -> tuple[CheckResult, QueryResult | None]:
    try:
        text = expand(q.sql, ctx)
    except MacroError as e:
        return CheckResult(q, None, None, error=f"macro: {e}"), None
    try:
        res = run_readonly(conn, text, timeout_ms=timeout_ms)
    except PanelQueryError as e:
        return CheckResult(q, None, None, error=str(e)), None
    return CheckResult(q, res.rows, res.elapsed_ms, columns=res.columns, sample=res.sample), res
