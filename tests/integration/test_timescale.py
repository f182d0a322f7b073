"""The TimescaleDB path: hypertable, compression, retention and continuous aggregates.

Runs whenever the session PostgreSQL offers the ``timescaledb`` extension and skips, saying why,
when it does not (the plain-PostgreSQL path is tested in ``test_storage.py``). The checks go
through ``timescaledb_information`` views, whose names moved across 2.x releases:
``compression_settings`` (one row per column, deprecated in 2.14), ``hypertable_compression_settings``
(2.14+, deprecated in 2.18) and ``hypertable_columnstore_settings`` (2.18+). All three are handled.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ioc.storage.db import create_database
from ioc.storage.migrate import MigrateResult, available_migrations, migrate
from ioc.storage.readings_sink import write_readings
from ioc.wire import Reading

pytestmark = [pytest.mark.integration, pytest.mark.timescale]

SKIP_REASON = (
    "TimescaleDB extension not installed on this PostgreSQL (pg_available_extensions has no timescaledb); "
    "the plain-PostgreSQL path is tested in test_storage.py"
)
ROLLUP_COLUMNS = ("bucket", "sensor_id", "metric", "n", "mean", "min", "max", "last")


def _rows(url: str, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """Without params the query is sent as it is, so a literal ``%`` (as in ``LIKE 'TSX%'``) stays one."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def _scalar(url: str, query: str, params: Sequence[Any] | None = None) -> Any:
    rows = _rows(url, query, params)
    return rows[0][0] if rows else None


@pytest.fixture(scope="module", autouse=True)
def timescale(pg_url: str) -> Iterator[tuple[str, MigrateResult]]:
    """A database of this module's own, migrated on TimescaleDB; skips the module without the extension."""
    if _scalar(pg_url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'") == 0:
        pytest.skip(SKIP_REASON, allow_module_level=True)
    preload = str(_scalar(pg_url, "SHOW shared_preload_libraries"))
    # Installed but not preloaded is a stack misconfiguration, not a reason to skip: say how to fix it.
    assert "timescaledb" in preload, (
        "the timescaledb extension is installed but not preloaded (shared_preload_libraries = "
        f"{preload!r}); the stack's postgresql.conf needs shared_preload_libraries = 'timescaledb'"
    )
    url = create_database(pg_url, f"ts_{uuid.uuid4().hex[:12]}")
    yield url, migrate(url)


@pytest.fixture
def ts_url(timescale: tuple[str, MigrateResult]) -> str:
    return timescale[0]


def test_migrate_chooses_timescale_and_is_idempotent(timescale: tuple[str, MigrateResult]) -> None:
    url, first = timescale
    assert first.backend == "timescale"
    assert "002_timeseries" in first.applied
    again = migrate(url)
    assert (again.backend, again.applied) == ("timescale", [])
    expected = [(m.version, m.backend) for m in available_migrations() if m.backend in ("any", "timescale")]
    assert ("002", "timescale") in expected
    assert _rows(url, "SELECT version, backend FROM schema_migrations ORDER BY version") == expected


def test_telemetry_is_off(ts_url: str) -> None:
    """An operations centre must not phone home: the stack (and compose) set telemetry_level = off."""
    assert _scalar(ts_url, "SHOW timescaledb.telemetry_level") == "off"


def test_readings_is_a_hypertable_with_one_day_chunks(ts_url: str) -> None:
    assert _rows(
        ts_url,
        "SELECT column_name, time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = 'public' AND hypertable_name = 'readings'",
    ) == [("ts", timedelta(days=1))]


def _segmentby(url: str) -> list[str]:
    """Segment-by columns of ``readings`` in order, whichever 2.x view this server has."""
    for view in ("hypertable_columnstore_settings", "hypertable_compression_settings"):
        if _scalar(url, "SELECT to_regclass(%s) IS NOT NULL", (f"timescaledb_information.{view}",)):
            seg = _scalar(
                url, f"SELECT segmentby FROM timescaledb_information.{view} WHERE hypertable = 'readings'::regclass"
            )
            return [c.strip().strip('"') for c in (seg or "").split(",") if c.strip()]
    rows = _rows(
        url,
        "SELECT attname FROM timescaledb_information.compression_settings WHERE hypertable_schema = 'public'"
        " AND hypertable_name = 'readings' AND segmentby_column_index IS NOT NULL ORDER BY segmentby_column_index",
    )
    return [r[0] for r in rows]


def test_compression_is_enabled_and_segmented_by_sensor_and_metric(ts_url: str) -> None:
    assert _scalar(
        ts_url,
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = 'public' AND hypertable_name = 'readings'",
    ) is True
    assert _segmentby(ts_url) == ["sensor_id", "metric"]


def test_retention_and_compression_policies_exist(ts_url: str) -> None:
    jobs = dict(
        _rows(
            ts_url,
            "SELECT proc_name, config FROM timescaledb_information.jobs"
            " WHERE hypertable_schema = 'public' AND hypertable_name = 'readings'",
        )
    )
    assert "policy_retention" in jobs, jobs
    assert "policy_compression" in jobs, jobs
    assert jobs["policy_retention"]["drop_after"] in ("365 days", "1 year")
    assert jobs["policy_compression"]["compress_after"] in ("7 days", "7 days 00:00:00")


def test_continuous_aggregates_exist_with_refresh_policies(ts_url: str) -> None:
    caggs = {
        r[0]: r[1]
        for r in _rows(
            ts_url,
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            " WHERE hypertable_name = 'readings'",
        )
    }
    assert caggs == {"readings_1h": False, "readings_1d": False}  # real-time: recent data is never missing
    refreshed = {
        r[0]
        for r in _rows(
            ts_url,
            # 2.28 names the continuous aggregate itself in the job row; older 2.x named its
            # materialization hypertable. Either identifies the aggregate.
            "SELECT c.view_name FROM timescaledb_information.jobs j"
            " JOIN timescaledb_information.continuous_aggregates c"
            " ON (j.hypertable_schema, j.hypertable_name) IN ((c.view_schema, c.view_name),"
            " (c.materialization_hypertable_schema, c.materialization_hypertable_name))"
            " WHERE j.proc_name = 'policy_refresh_continuous_aggregate' AND c.hypertable_name = 'readings'",
        )
    }
    assert refreshed == {"readings_1h", "readings_1d"}


def _assert_same_rows(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    for g, w in zip(got, want, strict=True):
        for col, a, b in zip(ROLLUP_COLUMNS, g, w, strict=True):
            if isinstance(a, float) or isinstance(b, float):
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{what}: {col} {a!r} != {b!r}"
            else:
                assert a == b, f"{what}: {col} {a!r} != {b!r} in {g} vs {w}"


def _group_by(width: str) -> str:
    """The query the plain-PostgreSQL views run: the answer both backends must give."""
    return (
        f"SELECT date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00'), sensor_id, metric,"
        " count(*)::integer, avg(value), min(value), max(value), (array_agg(value ORDER BY ts DESC))[1]"
        " FROM readings WHERE sensor_id LIKE 'TSX%' GROUP BY 1, 2, 3 ORDER BY 2, 3, 1"
    )


def _aggregate(view: str) -> str:
    return (
        f"SELECT bucket, sensor_id, metric, n, mean, min, max, last FROM {view}"
        " WHERE sensor_id LIKE 'TSX%' ORDER BY 2, 3, 1"
    )


def test_aggregates_give_the_same_answer_as_a_group_by_over_readings(ts_url: str) -> None:
    rng = random.Random(11)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3, minutes=17)
    stream = [
        Reading(f"TSX{s}", "water_level", start + timedelta(seconds=97 * k), k, {"water_level_m": rng.uniform(0, 12)})
        for s in range(4)
        for k in range(1800)
    ]
    late_idx = set(rng.sample(range(len(stream)), len(stream) // 20))
    late = [r for i, r in enumerate(stream) if i in late_idx]
    on_time = [r for i, r in enumerate(stream) if i not in late_idx]
    with psycopg.connect(ts_url) as conn:
        for i in range(0, len(on_time), 500):
            write_readings(conn, on_time[i : i + 500])
        write_readings(conn, late + late[:50])  # late and duplicated, into already-filled buckets
    assert _scalar(ts_url, "SELECT count(*) FROM readings WHERE sensor_id LIKE 'TSX%'") == len(stream)

    for view, width in (("readings_1h", "1 hour"), ("readings_1d", "1 day")):
        # Real-time aggregation answers before any refresh ...
        _assert_same_rows(_rows(ts_url, _aggregate(view)), _rows(ts_url, _group_by(width)), f"{view} (real-time)")
        # ... and after a refresh has materialised the buckets.
        with psycopg.connect(ts_url, autocommit=True) as conn:
            conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        _assert_same_rows(_rows(ts_url, _aggregate(view)), _rows(ts_url, _group_by(width)), f"{view} (refreshed)")

    # readings_1m is maintained by the sink on both backends.
    _assert_same_rows(
        _rows(ts_url, "SELECT bucket, sensor_id, metric, n, mean, min, max, last FROM readings_1m"
              " WHERE sensor_id LIKE 'TSX%' ORDER BY 2, 3, 1"),
        _rows(ts_url, _group_by("1 minute")),
        "readings_1m",
    )
