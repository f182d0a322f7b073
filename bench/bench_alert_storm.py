"""An alert storm: thousands of sensors change state at once, as in a typhoon. How fast does the
alerts stage (``apply_detected``: conditions, alerts, events and outbox in one transaction per
batch, claimed per source envelope) turn findings into alerts?

Three rounds over ``--sensors`` sensors, each one finding per sensor, in batches as the worker
makes them (one per envelope, ``--batch`` envelopes per transaction): every sensor raises a
warning (an alert opens each), the same again (no transition: the alert's value is updated),
then every sensor clears (each alert resolves). Starts PostgreSQL with the project's own stack
code, on loopback, and leaves nothing running.

    .venv/bin/python bench/bench_alert_storm.py [--sensors 4000] [--batch 64] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.table import Table

from ioc.alerting.rules import load_rules
from ioc.models import Finding
from ioc.stack.services import remove_tree, start_postgres, stop_postgres
from ioc.storage.alerts_store import Delivery, apply_detected
from ioc.storage.db import create_database
from ioc.storage.migrate import migrate

console = Console()
T0 = datetime(2026, 11, 30, tzinfo=UTC)
ROUNDS = (("open", "warning"), ("repeat", "warning"), ("resolve", None))


def _register(conn: psycopg.Connection, n: int) -> list[str]:
    ids = [f"STORM{i:06d}" for i in range(n)]
    with conn.cursor() as cur, cur.copy("COPY sensors (sensor_id, kind, name, metrics, interval_s) FROM STDIN") as cp:
        for sid in ids:
            cp.write_row((sid, "traffic", sid, Jsonb({"speed_kmh": "km/h"}), 60))
    return ids


def storm(url: str, n: int, batch: int) -> list[dict[str, Any]]:
    """Each round's findings per second and notifications written, one finding per sensor."""
    delivery = Delivery(load_rules(), ("mqtt", "webhook"))
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        ids = _register(conn, n)
        for k, (name, severity) in enumerate(ROUNDS):
            findings = [Finding(sid, "clock_skew", "health", "speed_kmh", T0 + timedelta(minutes=k, seconds=i / n),
                                severity, 120.0, 90.0, family="health", message="đồng hồ lệch")
                        for i, sid in enumerate(ids)]
            notes = 0
            t = time.perf_counter()
            for start in range(0, n, batch):
                envelopes = [(j % 8, k * n + j, [f]) for j, f in enumerate(findings[start:start + batch], start)]
                notes += len(apply_detected(conn, envelopes, "bench:readings>alerts", delivery))
            dt = time.perf_counter() - t
            out.append({"round": name, "findings": n, "seconds": round(dt, 3),
                        "findings_per_s": round(n / dt, 1), "ms_per_finding": round(dt / n * 1000, 3),
                        "notifications": notes})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=None, help="sensors changing state at once (default 4000; --quick 300)")
    ap.add_argument("--batch", type=int, default=64, help="envelopes per transaction (the worker's group commit)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 sensors")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    n = args.sensors or (300 if args.quick else 4000)
    base = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    svc = None
    try:
        svc = start_postgres(base)
        url = create_database(svc.url, "storm")
        backend = migrate(url).backend
        rounds = storm(url, n, args.batch)
    finally:
        if svc is not None:
            stop_postgres(svc)
            remove_tree(svc.data_dir)
        remove_tree(str(base))
    t = Table(title=f"Alert storm: {n:,} sensors at once, {args.batch} envelopes per transaction ({backend})")
    for col in ("round", "findings/s", "ms per finding", "notifications"):
        t.add_column(col, justify="right")
    for r in rounds:
        t.add_row(str(r["round"]), f"{r['findings_per_s']:,.0f}", f"{r['ms_per_finding']:.2f}", f"{r['notifications']:,}")
    console.print(t)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "alert_storm.json").write_text(json.dumps({"sensors": n, "batch": args.batch, "backend": backend,
                                                           "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
