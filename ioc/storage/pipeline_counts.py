"""What the pipeline has stored so far, counted in one snapshot: the demo's end-to-end check."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class PipelineCounts:
    stored: int = 0
    rows: int = 0
    deadlettered: int = 0
    open_alerts: int = 0
    alerts_total: int = 0

    def __sub__(self, other: PipelineCounts) -> PipelineCounts:
        """This run's share, when a run shares a database with earlier runs."""
        return PipelineCounts(self.stored - other.stored, self.rows - other.rows,
                              self.deadlettered - other.deadlettered, self.open_alerts - other.open_alerts,
                              self.alerts_total - other.alerts_total)


def has_schema(conn: psycopg.Connection) -> bool:
    """False on a database the migrations have not reached yet (nothing to count)."""
    return conn.execute("SELECT to_regclass('readings') IS NOT NULL").fetchone() == (True,)


def pipeline_counts(conn: psycopg.Connection) -> PipelineCounts:
    """Distinct (sensor, time) readings, rows, dead letters, open and all alerts, in one statement."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM (SELECT DISTINCT sensor_id, ts FROM readings) d),"
        " (SELECT count(*) FROM readings), (SELECT count(*) FROM deadletters),"
        " (SELECT count(*) FROM alerts WHERE state <> 'resolved'), (SELECT count(*) FROM alerts)"
    ).fetchone()
    assert row is not None
    return PipelineCounts(*[int(x) for x in row])
