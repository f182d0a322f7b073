"""Per-stage counters that the worker writes to ``pipeline_metrics`` every few seconds.

The SQL lives in :mod:`ioc.storage.metrics_store`; this module only shapes the rows.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from ioc.storage.metrics_store import write_metric_rows


@dataclass
class StageStats:
    stage: str
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    counters: dict[str, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    gauges: dict[str, float] = field(default_factory=dict)
    _last_flush: float = field(default_factory=time.monotonic)
    _last_counters: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, n: float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def latency(self, ms: float) -> None:
        if len(self.latencies_ms) < 100_000:
            self.latencies_ms.append(ms)

    def rows(self) -> list[tuple[datetime, str, str, str, float]]:
        """Totals, per-second rates since the last flush and latency quantiles; resets the window."""
        now = time.monotonic()
        dt = max(now - self._last_flush, 1e-6)
        ts = datetime.now(UTC)
        out = []
        for name, total in sorted(self.counters.items()):
            out.append((ts, self.stage, self.worker, f"{name}_total", total))
            out.append((ts, self.stage, self.worker, f"{name}_per_s", (total - self._last_counters.get(name, 0)) / dt))
        for name, value in sorted(self.gauges.items()):
            out.append((ts, self.stage, self.worker, name, value))
        if self.latencies_ms:
            lat = sorted(self.latencies_ms)
            for q in (0.5, 0.99):
                out.append((ts, self.stage, self.worker, f"e2e_latency_ms_p{int(q * 100)}", lat[int(q * (len(lat) - 1))]))
            out.append((ts, self.stage, self.worker, "e2e_latency_ms_max", lat[-1]))
        self._last_counters = dict(self.counters)
        self._last_flush = now
        self.latencies_ms = []
        return out


def write_stats(conn: psycopg.Connection, rows: list[tuple[datetime, str, str, str, float]]) -> None:
    """Kept for the agents and the bridge, which pass it to their DB worker."""
    write_metric_rows(conn, rows)
