"""`ioc demo`: the whole pipeline on the local stack, with live progress and an honest summary."""

from __future__ import annotations

import os
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ioc.domain import SEVERITIES
from ioc.settings import load_settings
from ioc.stack.children import ChildProcesses
from ioc.stack.services import mqtt_role_env
from ioc.stack.stack import running_stack
from ioc.storage.alerts_store import list_alerts
from ioc.storage.db import connect, create_database
from ioc.storage.migrate import migrate
from ioc.storage.pipeline_counts import PipelineCounts as Counts
from ioc.storage.pipeline_counts import has_schema, pipeline_counts
from sensors_sim.api import publish_scenario


def recent_alerts(url: str, limit: int = 12) -> list[tuple[str, ...]]:
    """The alerts that mattered most: highest peak first, then the oldest (an incident lists its sensors)."""
    with connect(url, autocommit=True) as conn:
        rows = list_alerts(conn, active_only=False, limit=5000)
    rows.sort(key=lambda a: (-SEVERITIES.index(a.peak_severity), a.alert_id))
    return [(str(a.alert_id), a.peak_severity, a.severity, a.state, a.kind, ", ".join(a.members) or a.sensor_id,
             a.opened_at.isoformat(timespec="minutes"), a.message) for a in rows[:limit]]


def _has_schema(url: str) -> bool:
    with connect(url, autocommit=True) as conn:
        return has_schema(conn)


def db_counts(url: str) -> Counts:
    with connect(url, autocommit=True) as conn:
        return pipeline_counts(conn)


def run_demo(duration_s: float, scenario: str, console: Console) -> int:
    settings = load_settings()
    base = settings.data_dir / "stack"
    t0 = time.monotonic()
    with running_stack(base) as stack:
        run = f"{time.strftime('%Y%m%d%H%M%S')}{os.getpid()}"
        urls = dict(stack.urls)
        if "postgres" in stack.services:
            # A database and topics of its own: a re-run on a running stack counts only itself.
            urls["IOC_DATABASE_URL"] = create_database(urls["IOC_DATABASE_URL"], f"ioc_demo_{run}")
        os.environ.update(urls)
        # The bridge keeps its default id: a new id per run would leave the old persistent session
        # in the shared subscription, and Mosquitto would keep routing half the messages to it.
        os.environ.update(IOC_TOPIC_PREFIX=f"demo-{run}", IOC_APP_ID=f"demo-worker-{run}")
        env = dict(os.environ)
        settings = load_settings()
        assert settings.database_url is not None and settings.mqtt_url is not None
        before = db_counts(settings.database_url) if _has_schema(settings.database_url) else Counts()
        res = migrate(settings.database_url, retention_days=settings.retention_days,
                      compress_after_days=settings.compress_after_days, require_timescale=settings.require_timescale)
        from ioc.composition.seed import seed_registry

        n_sensors = seed_registry(settings.database_url)
        console.print(f"[bold]stack up[/] in {time.monotonic() - t0:.1f} s · storage backend: {res.backend} · "
                      f"{n_sensors} sensors registered")
        ready_file = settings.data_dir / "demo" / "bridge.ready"
        ready_file.unlink(missing_ok=True)
        procs = ChildProcesses(env, settings.data_dir / "demo")
        try:
            procs.start_pipeline(ready_file)
            published = [0]
            result: list[object] = []
            errors: list[BaseException] = []

            def publish() -> None:
                try:
                    result.append(publish_scenario(
                        scenario, urls.get(mqtt_role_env("sim")) or settings.mqtt_url or "", fit_seconds=max(5.0, duration_s * 0.75),
                        progress=lambda n: published.__setitem__(0, published[0] + n),
                    ))
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)

            pub = threading.Thread(target=publish, name="simulator", daemon=True)
            pub.start()
            counts = Counts()
            last = (time.monotonic(), 0)
            rate = 0.0
            settle_deadline: float | None = None
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                while True:
                    procs.check()
                    counts = db_counts(settings.database_url) - before
                    now = time.monotonic()
                    rate = (counts.stored - last[1]) / max(now - last[0], 1e-6)
                    last = (now, counts.stored)
                    live.update(_progress_table(published[0], counts, rate, now - t0))
                    if not pub.is_alive():
                        if errors:
                            raise errors[0]
                        total = result[0].published  # type: ignore[attr-defined]
                        if counts.stored + counts.deadlettered >= total:
                            break
                        settle_deadline = settle_deadline or now + 120
                        if now > settle_deadline:
                            break
                    time.sleep(1.0)
            alerts = recent_alerts(settings.database_url)
        finally:
            procs.stop_all()
    pubres = result[0]
    total = pubres.published  # type: ignore[attr-defined]
    summary = Table(title=f"ioc demo · scenario {scenario} · {time.monotonic() - t0:.0f} s")
    summary.add_column("what")
    summary.add_column("count", justify="right")
    summary.add_row("readings published (broker-acked)", str(total))
    summary.add_row("readings stored (distinct sensor, ts)", str(counts.stored))
    summary.add_row("rows stored (one per metric)", str(counts.rows))
    summary.add_row("dead-lettered", str(counts.deadlettered))
    summary.add_row("alerts raised", str(counts.alerts_total))
    summary.add_row("alerts still active", str(counts.open_alerts))
    console.print(summary)
    if alerts:
        at = Table(title="alerts (state at the end)")
        for col in ("id", "peak", "now", "state", "kind", "sensors", "opened (event time)", "latest"):
            at.add_column(col)
        for a in alerts:
            at.add_row(*a)
        console.print(at)
    if total != counts.stored + counts.deadlettered:
        console.print(f"[red]MISMATCH[/]: published {total} != stored {counts.stored} + dead-lettered "
                      f"{counts.deadlettered}; logs in {settings.data_dir / 'demo'}")
        return 1
    console.print("[green]OK[/]: every published reading is stored or dead-lettered, exactly once.")
    return 0


def _progress_table(published: int, c: Counts, rate: float, elapsed: float) -> Table:
    t = Table(title=f"pipeline · {elapsed:.0f} s", show_header=True)
    for col in ("published", "stored", "readings/s", "rows", "dead-lettered", "open alerts"):
        t.add_column(col, justify="right")
    t.add_row(str(published), str(c.stored), f"{rate:.0f}", str(c.rows), str(c.deadlettered), str(c.open_alerts))
    return t

