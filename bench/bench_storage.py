"""Readings sink throughput and storage cost against a real, throwaway PostgreSQL.

Starts PostgreSQL with the project's own stack code (``ioc.stack.services.start_postgres``),
migrates a fresh database, then measures:

- the raw ceiling: binary COPY of the same rows into an unindexed temp table (one COPY, and one
  COPY per batch-sized transaction);
- ``write_readings`` on fresh data (batches of 500 readings × 3 metrics), on full duplicates
  (the idempotent path) and on batches with 5 % late readings into already-filled minute buckets;
- bytes per row of ``readings`` and ``readings_1m`` (table and index split).

Prints figures and ratios; asserts nothing about timing.

    .venv/bin/python bench/bench_storage.py [--rows 1000000] [--sensors 80] [--batch 500]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from ioc.stack.process import stop_pid
from ioc.stack.services import remove_tree, start_postgres, stop_postgres
from ioc.storage.db import create_database
from ioc.storage.migrate import migrate
from ioc.storage.readings_sink import write_readings
from ioc.wire import Reading

console = Console(width=120)

METRICS = ("temperature_c", "humidity_pct", "pressure_hpa")  # 3 metrics per reading, as in the brief
LATE_SHARE = 0.05


@dataclass(frozen=True)
class Phase:
    name: str
    readings: int
    rows_in: int
    rows_inserted: int
    seconds: float
    batch_ms: tuple[float, ...]

    def batch_quantile(self, q: float) -> float:
        ordered = sorted(self.batch_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds


def make_stream(n_rows: int, n_sensors: int, seed: int = 42) -> list[Reading]:
    """Readings at 1-minute spacing per sensor, all sensors each minute, in time order."""
    rng = random.Random(seed)
    n_readings = max(n_sensors, n_rows // len(METRICS))
    minutes = math.ceil(n_readings / n_sensors)
    start = (datetime.now(UTC) - timedelta(minutes=minutes + 5)).replace(second=0, microsecond=0)
    out: list[Reading] = []
    for k in range(minutes):
        for s in range(n_sensors):
            if len(out) == n_readings:
                break
            ts = start + timedelta(minutes=k, seconds=s % 60, microseconds=rng.randrange(1_000_000))
            out.append(Reading(f"WX_{s:03d}", "weather", ts, k, {
                "temperature_c": round(rng.gauss(28, 3), 2),
                "humidity_pct": round(rng.uniform(55, 100), 1),
                "pressure_hpa": round(rng.gauss(1008, 4), 1),
            }))
    return out


def batches(items: Sequence[Reading], size: int) -> list[Sequence[Reading]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def raw_copy(url: str, rows: list[tuple[datetime, str, str, float]], batch_rows: int | None) -> float:
    """Seconds to binary-COPY ``rows`` into an unindexed temp table, in one or many transactions."""
    chunks = [rows] if batch_rows is None else [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TEMP TABLE raw_ceiling (ts timestamptz, sensor_id text, metric text, value float8)")
        conn.commit()
        t0 = time.perf_counter()
        for chunk in chunks:
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY raw_ceiling (ts, sensor_id, metric, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["timestamptz", "text", "text", "float8"])
                for row in chunk:
                    copy.write_row(row)
        return time.perf_counter() - t0


def run_phase(conn: psycopg.Connection, name: str, work: list[Sequence[Reading]]) -> Phase:
    rows_in = inserted = readings = 0
    batch_ms = []
    t0 = time.perf_counter()
    for b in work:
        tb = time.perf_counter()
        res = write_readings(conn, b)
        batch_ms.append((time.perf_counter() - tb) * 1000)
        rows_in += res.rows_in
        inserted += res.rows_inserted
        readings += len(b)
    return Phase(name, readings, rows_in, inserted, time.perf_counter() - t0, tuple(batch_ms))


def storage_table(url: str) -> Table:
    t = Table(title="Storage cost (after VACUUM ANALYZE)")
    for col in ("relation", "rows", "heap MB", "indexes MB", "total MB", "B/row total", "B/row heap", "B/row idx"):
        t.add_column(col, justify="left" if col == "relation" else "right")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE readings")
        conn.execute("VACUUM ANALYZE readings_1m")
        per_reading = 0.0
        for rel in ("readings", "readings_1m"):
            n = conn.execute(f"SELECT count(*) FROM {rel}").fetchone()[0]  # type: ignore[index]  # noqa: S608
            heap, idx, total = conn.execute(
                "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass),"
                " pg_total_relation_size(%s::regclass)",
                (rel, rel, rel),
            ).fetchone()  # type: ignore[misc]
            t.add_row(rel, f"{n:,}", f"{heap / 2**20:.1f}", f"{idx / 2**20:.1f}", f"{total / 2**20:.1f}",
                      f"{total / max(n, 1):.1f}", f"{heap / max(n, 1):.1f}", f"{idx / max(n, 1):.1f}")
            if rel == "readings":
                per_reading = total / max(n, 1) * len(METRICS)
                readings_rows = n
            for iname, isize in conn.execute(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
                " WHERE indrelid = %s::regclass ORDER BY 1",
                (rel,),
            ):
                t.add_row(f"  └ {iname}", "", "", f"{isize / 2**20:.1f}", "", "", "", f"{isize / max(n, 1):.1f}")
        rollup_total = conn.execute("SELECT pg_total_relation_size('readings_1m')").fetchone()[0]  # type: ignore[index]
    t.caption = (
        f"one reading = {len(METRICS)} rows → {per_reading:.0f} B per reading in readings, "
        f"{(per_reading / len(METRICS) * readings_rows + rollup_total) / readings_rows * len(METRICS):.0f} B "
        "with its share of readings_1m"
    )
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="reading rows in total (3 per reading)")
    ap.add_argument("--sensors", type=int, default=80, help="sensors, each reporting once a minute")
    ap.add_argument("--batch", type=int, default=500, help="readings per write_readings call")
    ap.add_argument("--dup-batches", type=int, default=200, help="batches rewritten in the duplicate phase")
    args = ap.parse_args()

    stream = make_stream(args.rows, args.sensors)
    rows = [(r.ts, r.sensor_id, m, v) for r in stream for m, v in r.metrics.items()]
    # Phase split: fresh (80 % of the time range, minus the late pool), then the last 20 % with
    # 5 % of every batch made of readings held back from the fresh phase (late, into filled buckets).
    cut = int(len(stream) * 0.8)
    fresh_per_batch = round(args.batch * (1 - LATE_SHARE))
    tail = stream[cut:]
    n_late = min(cut // 2, math.ceil(len(tail) / fresh_per_batch) * (args.batch - fresh_per_batch))
    rng = random.Random(7)
    late_idx = set(rng.sample(range(cut), n_late))
    late = [stream[i] for i in sorted(late_idx)]
    rng.shuffle(late)
    head = [r for i, r in enumerate(stream[:cut]) if i not in late_idx]
    late_per_batch = args.batch - fresh_per_batch
    mixed: list[Sequence[Reading]] = []
    for j, i in enumerate(range(0, len(tail), fresh_per_batch)):
        mixed.append([*tail[i : i + fresh_per_batch], *late[j * late_per_batch : (j + 1) * late_per_batch]])
    leftover = late[len(mixed) * late_per_batch :]
    if leftover:
        mixed.extend(batches(leftover, args.batch))

    console.print(
        f"[bold]bench_storage[/]: {len(stream):,} readings × {len(METRICS)} metrics = {len(rows):,} rows, "
        f"{args.sensors} sensors at 1-min spacing, batches of {args.batch} readings"
    )
    base = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    svc = None
    try:
        t0 = time.perf_counter()
        svc = start_postgres(base)
        url = create_database(svc.url, "bench")
        backend = migrate(url).backend
        console.print(f"PostgreSQL started and migrated in {time.perf_counter() - t0:.1f} s (backend: {backend})")

        one_copy = raw_copy(url, rows, None)
        batch_rows = args.batch * len(METRICS)
        batched_copy = raw_copy(url, rows, batch_rows)
        ceiling = len(rows) / one_copy
        ceiling_batched = len(rows) / batched_copy

        with psycopg.connect(url) as conn:
            fresh = run_phase(conn, "fresh data", batches(head, args.batch))
            dup = run_phase(conn, "full duplicates (idempotent)", batches(head, args.batch)[: args.dup_batches])
            late_phase = run_phase(conn, f"{LATE_SHARE:.0%} late into filled buckets", mixed)

        t = Table(title="Write throughput")
        for col in ("what", "rows", "rows new", "s", "rows/s", "readings/s", "÷ raw COPY", "÷ batched COPY",
                    "batch p50/p99 ms"):
            t.add_column(col, justify="left" if col == "what" else "right")
        t.add_row("raw binary COPY, one transaction, unindexed", f"{len(rows):,}", "", f"{one_copy:.2f}",
                  f"{ceiling:,.0f}", f"{ceiling / len(METRICS):,.0f}", "1.00", f"{ceiling / ceiling_batched:.2f}", "")
        t.add_row(f"raw binary COPY, {batch_rows:,} rows per transaction", f"{len(rows):,}", "",
                  f"{batched_copy:.2f}", f"{ceiling_batched:,.0f}", f"{ceiling_batched / len(METRICS):,.0f}",
                  f"{ceiling_batched / ceiling:.2f}", "1.00", "")
        for p in (fresh, dup, late_phase):
            t.add_row(f"write_readings: {p.name}", f"{p.rows_in:,}", f"{p.rows_inserted:,}", f"{p.seconds:.2f}",
                      f"{p.rows_per_s:,.0f}", f"{p.readings_per_s:,.0f}", f"{p.rows_per_s / ceiling:.2f}",
                      f"{p.rows_per_s / ceiling_batched:.2f}",
                      f"{p.batch_quantile(0.5):.0f} / {p.batch_quantile(0.99):.0f}")
        console.print(t)
        console.print(
            f"duplicates inserted {dup.rows_inserted} rows (expected 0); "
            f"late phase inserted {late_phase.rows_inserted:,} of {late_phase.rows_in:,} rows (all new, expected equal)"
        )
        console.print(storage_table(url))
    finally:
        if svc is not None:
            stop_postgres(svc)
            stop_pid(svc.pid)
            remove_tree(svc.data_dir)
        remove_tree(str(base))


if __name__ == "__main__":
    main()
