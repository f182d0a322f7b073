"""Writes to ``pipeline_metrics``: per-stage counters, rates and latency quantiles over time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg

MetricRow = tuple[datetime, str, str, str, float]  # ts, stage, worker, metric, value


def write_metric_rows(conn: psycopg.Connection, rows: Sequence[MetricRow]) -> None:
    """Insert one flush of metric rows in one transaction.

    Safe to run again: a retry after a connection lost at commit finds its rows and adds nothing
    (``pipeline_metrics_key``), so the health board never counts a flush twice.
    """
    if not rows:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pipeline_metrics (ts, stage, worker, metric, value) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (stage, worker, metric, ts) DO NOTHING", rows
        )
