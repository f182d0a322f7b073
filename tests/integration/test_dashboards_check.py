"""Every panel's SQL, with Grafana's macros expanded, against a database the real pipeline filled.

The `demo` scenario (a flash flood at Đồng Trăng, 19 sensors, ~7.5k messages) is published over
real MQTT through a bridge and a Faust worker of their own, into a fresh database with the
83-sensor registry on a PostgreSQL that does not preload TimescaleDB (so the plain path, whatever
this machine has installed), plus two malformed payloads for the dead-letter panel. Then every variable,
panel and annotation query runs for four ranges, one per roll-up tier (raw ≤ 6 h, readings_1m,
readings_1h, readings_1d), on plain PostgreSQL (the data source's TimescaleDB option off; the
queries that need it are listed by :func:`dashboards.check.timescaledb_queries` and expanded with
``time_bucket`` only when it is on).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dashboards import air_noise, health
from dashboards.check import CheckResult, check_dashboards, panel_queries, variable_queries
from dashboards.main import render
from detectors.vn_aqi import hourly_aqi, nowcast
from ioc.composition.seed import seed_registry
from ioc.stack.services import remove_tree, start_postgres, stop_postgres, timescaledb_installed
from ioc.stack.stack import StackState
from ioc.storage.db import create_database
from ioc.storage.migrate import migrate
from sensors_sim.api import publish_scenario
from tests.support import publish, scalar, start_pipeline, wait_for

pytestmark = pytest.mark.integration

#: One range per tier of dashboards.common.TIERS; the 24 h one covers the whole 16 h scenario.
SPANS = {"3h": timedelta(hours=3), "24h": timedelta(hours=24), "30d": timedelta(days=30),
         "400d": timedelta(days=400)}
FULL = "24h"


@pytest.fixture(scope="module")
def plain_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL of the local stack that does not preload TimescaleDB: the plain path on any machine."""
    svc = start_postgres(tmp_path_factory.mktemp("pg-plain"), timescale_preload=False)
    try:
        yield svc.url
    finally:
        stop_postgres(svc)
        remove_tree(svc.data_dir)


@pytest.fixture(scope="module")
def populated(stack: StackState, plain_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    t0 = time.monotonic()
    db = create_database(plain_pg, f"t_dash_{uuid.uuid4().hex[:10]}")
    assert migrate(db).backend == "plain"
    assert seed_registry(db) == 83
    work = tmp_path_factory.mktemp("dash_pipeline")
    (work / "faust").mkdir()  # the worker's Faust data dir lives under IOC_DATA_DIR
    p = start_pipeline(stack.urls, db, work)
    try:
        p.warm_up()
        res = publish_scenario("demo", stack.urls["IOC_MQTT_URL"], fit_seconds=12)
        assert res.published > 5000
        bad = [("khanhhoa/v1/rain/RAIN_DONG_TRANG", b"not json"),
               ("khanhhoa/v1/rain/RAIN_CHO_GA", b'{"sensor_id": "RAIN_CHO_GA", "metrics": {}}')]
        assert publish(stack.urls["IOC_MQTT_URL"], bad) == 2
        wait_for(lambda: scalar(db, "SELECT coalesce(sum(occurrences), 0) FROM deadletters") >= res.malformed + 2, 90,
                 "dead letters")
        last = -1
        while (n := scalar(db, "SELECT count(*) FROM readings")) != last:  # settled: no growth for 3 s
            last = n
            time.sleep(3)
        wait_for(lambda: scalar(db, "SELECT count(*) FROM alerts WHERE kind = 'flood'"), 60, "a flood alert")
        wait_for(lambda: scalar(db, "SELECT count(*) FROM pipeline_metrics WHERE metric = 'readings_per_s'"), 30,
                 "sink metrics")
    finally:
        p.stop()
    print(f"\npopulated {last} readings through the pipeline in {time.monotonic() - t0:.1f} s")
    yield db


@pytest.fixture(scope="module")
def check_end(populated: str) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)


@pytest.fixture(scope="module")
def results(populated: str, check_end: datetime) -> dict[str, dict[str, CheckResult]]:
    end = check_end
    out: dict[str, dict[str, CheckResult]] = {}
    dashboards = render("vi")
    for name, span in SPANS.items():
        t0 = time.monotonic()
        res = check_dashboards(populated, dashboards, start=end - span, end=end, timescaledb=False)
        out[name] = {r.query.key: r for r in res}
        print(f"range {name}: {len(res)} queries in {time.monotonic() - t0:.2f} s, slowest "
              f"{max(r.elapsed_ms or 0 for r in res):.0f} ms")
    return out


ALL_QUERIES = [q for d in render("vi").values() for q in variable_queries(d) + panel_queries(d)]


@pytest.mark.parametrize("key", [q.key for q in ALL_QUERIES])
def test_every_query_succeeds_on_every_range_and_returns_rows(
    key: str, results: dict[str, dict[str, CheckResult]], populated: str
) -> None:
    q = next(q for q in ALL_QUERIES if q.key == key)
    for name in SPANS:
        r = results[name][key]
        assert r.error is None, f"{key} over {name}: {r.error}"
    assert results[FULL][key].rows, f"{key} returned no rows over the whole scenario"
    if "FROM readings_1d r" in q.sql:  # a reading series: every tier must find the data
        for name in SPANS:
            assert results[name][key].rows, f"{key} returned no rows over {name}"


def test_the_wall_covers_every_dashboard_and_the_tiers_differ(results: dict[str, dict[str, CheckResult]]) -> None:
    full = results[FULL]
    assert {r.query.dashboard_uid for r in full.values()} == set(render("vi"))
    assert len(full) == len(ALL_QUERIES) >= 40
    # the same series over 3 h (raw rows) and 400 d (daily roll-up) has very different resolution
    key = "ioc-flood/panel/1/A"
    assert results["3h"][key].rows and results["400d"][key].rows
    assert results["400d"][key].rows < results["3h"][key].rows


def test_overview_shows_sensors_by_status_and_alerts_by_severity(
    results: dict[str, dict[str, CheckResult]],
) -> None:
    full = results[FULL]
    status = full["ioc-overview/panel/1/A"]
    assert status.rows == 83  # the registry; the warm-up sensor has no coordinates
    cols = status.columns
    statuses = {row[cols.index("status")] for row in status.sample}
    assert statuses <= {"ok", "warning", "alarm", "fault", "silent"}
    assert "alarm" in statuses  # Đồng Trăng passes BĐ III in the demo
    sev = full["ioc-overview/panel/4/A"]
    assert [row[0] for row in sev.sample] == ["critical", "warning", "info"]
    alerts = full["ioc-overview/panel/2/A"]
    order = {"critical": 0, "warning": 1, "info": 2}
    ranks = [order[row[alerts.columns.index("severity")]] for row in alerts.sample]
    assert ranks == sorted(ranks) and ranks


def test_aqi_now_matches_the_detectors_calculation(
    results: dict[str, dict[str, CheckResult]], populated: str, check_end: datetime
) -> None:
    """The SQL VN_AQI equals detectors.vn_aqi on the same hourly means (NowCast for PM)."""
    r = results[FULL][f"{air_noise.UID}/panel/2/A"]
    assert r.rows
    sql_aqi = {str(m).split(" · ")[0]: int(v) for m, v in r.sample}  # type: ignore[call-overload]
    hour = check_end.replace(minute=0, second=0)
    with psycopg.connect(populated) as conn:
        rows = conn.execute(
            "SELECT s.name, r.metric, r.bucket, r.mean FROM readings_1h r JOIN sensors s USING (sensor_id)"
            " WHERE s.kind = 'air' AND r.bucket > %s AND r.bucket <= %s",
            (hour - timedelta(hours=12), hour),
        ).fetchall()
    by: dict[str, dict[str, dict[int, float]]] = {}
    for name, metric, bucket, mean in rows:
        k = round((hour - bucket).total_seconds() / 3600)
        by.setdefault(name, {}).setdefault(metric, {})[k] = mean
    expected = {}
    for name, metrics in by.items():
        conc: dict[str, float | None] = {}
        for metric, hours in metrics.items():
            if metric in ("pm25", "pm10"):
                conc[metric] = nowcast([hours.get(k) for k in range(12)])
            else:
                conc[metric] = hours.get(0)
        res = hourly_aqi(conc)
        if res is not None:
            expected[name] = res.aqi
    assert expected and sql_aqi == expected
    assert all(0 <= v <= 500 and not math.isnan(v) for v in sql_aqi.values())


def test_health_panels_see_the_pipeline(results: dict[str, dict[str, CheckResult]]) -> None:
    full = results[FULL]
    dead = full[f"{health.UID}/panel/4/A"]
    assert dead.rows and sum(int(row[1]) for row in dead.sample) >= 2  # type: ignore[call-overload]
    silent = full[f"{health.UID}/panel/5/A"]
    assert silent.rows >= 83 - 19  # registered sensors the demo never publishes
    stages = {str(row[1]).split(" ")[0] for row in full[f"{health.UID}/panel/1/A"].sample}
    assert {"bridge", "sink"} <= stages


def test_the_grafana_role_reads_every_panel_and_writes_nothing(populated: str, check_end: datetime) -> None:
    """`ioc dashboards db-role`: the data source's role runs the whole wall, and nothing else."""
    from click.testing import CliRunner
    from psycopg import sql

    from ioc.composition.cli import cli
    from ioc.storage.db import database_url_for

    role, password = f"grafana_t{uuid.uuid4().hex[:8]}", "reader-" + uuid.uuid4().hex
    env = {"IOC_DATABASE_URL": populated, "IOC_GRAFANA_DB_PASSWORD": password}
    res = CliRunner().invoke(cli, ["dashboards", "db-role", "--role", role], env=env, catch_exceptions=False)
    assert res.exit_code == 0 and "created" in res.output and password not in res.output
    res = CliRunner().invoke(cli, ["dashboards", "db-role", "--role", role], env=env, catch_exceptions=False)
    assert res.exit_code == 0 and "updated" in res.output  # idempotent
    short = CliRunner().invoke(cli, ["dashboards", "db-role", "--role", role],
                               env={**env, "IOC_GRAFANA_DB_PASSWORD": "short"})
    assert short.exit_code != 0

    parts = psycopg.conninfo.conninfo_to_dict(populated)
    as_role = database_url_for(
        f"postgresql://{role}:{password}@{parts['host']}:{parts['port']}/postgres", str(parts["dbname"])
    )
    try:
        res_role = check_dashboards(as_role, render("en"), start=check_end - SPANS[FULL], end=check_end,
                                    timescaledb=False)
        assert [r.query.key for r in res_role if r.error] == []
        assert all(r.rows for r in res_role)
        with psycopg.connect(as_role) as conn:
            for stmt in ("INSERT INTO sensors (sensor_id, kind, name) VALUES ('X', 'rain', 'x')",
                         "CREATE TABLE grafana_was_here (x int)", "DELETE FROM alerts"):
                with pytest.raises(psycopg.Error):
                    conn.execute(stmt)
                conn.rollback()
    finally:
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


#: Tables whose rows the panels read; copied in this order (alert_outbox references alerts).
COPIED = ("sensors", "readings", "readings_1m", "alerts", "alert_events", "deadletters", "pipeline_metrics",
          "alert_outbox")


@pytest.mark.timescale
def test_every_query_runs_on_the_timescaledb_path_with_time_bucket(
    populated: str, pg_url: str, check_end: datetime
) -> None:
    """The same rows in a TimescaleDB database (hypertable, continuous aggregates), macros expanded
    with the data source's TimescaleDB option on (``time_bucket``)."""
    from psycopg import sql

    if not timescaledb_installed():
        pytest.skip("TimescaleDB is not installed in this machine's PostgreSQL 15; the plain path is tested above")
    db = create_database(pg_url, f"t_dash_ts_{uuid.uuid4().hex[:8]}")
    assert migrate(db).backend == "timescale"
    with psycopg.connect(populated) as src, psycopg.connect(db) as dst:
        for table in COPIED:
            cols = [r[0] for r in src.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (table,)).fetchall()]
            ident = sql.SQL(", ").join(map(sql.Identifier, cols))
            with src.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
                    ident, sql.Identifier(table))) as out, dst.cursor().copy(
                    sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), ident)) as inp:
                for chunk in out:
                    inp.write(chunk)
        dst.commit()
    assert scalar(db, "SELECT count(*) FROM readings") == scalar(populated, "SELECT count(*) FROM readings")
    for name, span in SPANS.items():
        res = check_dashboards(db, render("vi"), start=check_end - span, end=check_end, timescaledb=True)
        assert [(r.query.key, r.error) for r in res if r.error] == [], name
        if name == FULL:
            assert [r.query.key for r in res if not r.rows] == []
