"""The one `ioc` command. Thin: parse options, configure logging, call into the packages."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ioc.composition.cli_alerts import alerts as alerts_group
from ioc.composition.cli_dashboards import dashboards_group
from ioc.composition.cli_detect import detect_file_cmd
from ioc.composition.cli_report import report_cmd
from ioc.composition.cli_score import score_cmd
from ioc.composition.cli_train import train as train_cmd
from ioc.errors import IocError
from ioc.logging_setup import setup_logging
from ioc.settings import Settings, load_settings

log = logging.getLogger("ioc")
console = Console(width=None if sys.stdout.isatty() else 160)  # pipes and logs get full rows
option = functools.partial(click.option, show_envvar=True)


def _settings() -> Settings:
    s = load_settings()
    log.info("settings: %s", s.masked())
    return s


def _stack_dir(settings: Settings) -> Path:
    return settings.data_dir / "stack"


@click.group(context_settings={"auto_envvar_prefix": "IOC", "help_option_names": ["-h", "--help"]})
@option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        help="Log level.")
def cli(log_level: str) -> None:
    """Khánh Hòa IOC stream processor: sensors → MQTT → Kafka → Faust → PostgreSQL/TimescaleDB → alerts."""
    setup_logging(log_level)


# ---------------------------------------------------------------- stack
@cli.group()
def stack() -> None:
    """Local stack: Mosquitto, Tansu (Kafka API) and PostgreSQL on free loopback ports."""


@stack.command("up")
def stack_up() -> None:
    """Start the services whose URL is not set in the environment; write .ioc/stack/env."""
    from ioc.stack.stack import up

    state = up(_stack_dir(load_settings()))
    _print_status(state.base)


@stack.command("down")
def stack_down() -> None:
    """Stop the processes `stack up` started (by pid)."""
    from ioc.stack.stack import down

    stopped = down(_stack_dir(load_settings()))
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack.command("status")
def stack_status() -> None:
    """Show each service, its pid and URL (passwords masked)."""
    _print_status(_stack_dir(load_settings()))


def _print_status(base: Path) -> None:
    from ioc.settings import mask_url
    from ioc.stack.stack import status

    st = status(base)
    t = Table(title=f"stack in {base}")
    for c in ("service", "pid", "alive", "url"):
        t.add_column(c)
    for name, info in st.items():
        t.add_row(name, str(info["pid"]), str(info["alive"]), mask_url(str(info["url"])))
    console.print(t if st else f"no stack in {base}")


# ---------------------------------------------------------------- db
@cli.group()
def db() -> None:
    """Database schema and registry."""


@db.command("migrate")
@option("--seed/--no-seed", default=True, help="Also load the sensor registry into `sensors`.")
def db_migrate(seed: bool) -> None:
    """Apply pending migrations (idempotent); TimescaleDB features when the extension exists."""
    from ioc.storage.migrate import migrate

    s = _settings()
    s.require("database_url")
    assert s.database_url is not None
    res = migrate(s.database_url, retention_days=s.retention_days, compress_after_days=s.compress_after_days,
                  require_timescale=s.require_timescale)
    console.print(f"backend {res.backend}; applied {res.applied or 'nothing (up to date)'}")
    if seed:
        from ioc.composition.seed import seed_registry

        console.print(f"registry: {seed_registry(s.database_url)} sensors")


# ---------------------------------------------------------------- processes
@cli.command()
@option("--ready-file", type=click.Path(path_type=Path), default=None,
        help="Write this file once subscribed (for supervisors).")
@click.option("--retire", is_flag=True, default=False,
              help="Resume the session of IOC_BRIDGE_ID, forward what it still holds, then end it and exit"
                   " (a bridge gone for good keeps receiving its share of a shared subscription).")
def bridge(ready_file: Path | None, retire: bool) -> None:
    """Run the MQTT→Kafka bridge (QoS 1, acks after Kafka, shared subscription)."""
    from streams.bridge_main import serve

    stats = asyncio.run(serve(_settings(), ready_file=ready_file, retire=retire))
    if retire and not stats.retired:
        raise IocError("the session was not drained and ended (IOC_BRIDGE_RETIRE_DRAIN_S passed, or a message or"
                       " another client with this id came at the last moment: see the log above); it is kept, so"
                       " nothing queued in it is lost: run again")


@cli.command()
def worker() -> None:
    """Run a Faust worker: sink, roll-ups, detectors, alerts."""
    from streams.worker_main import run_worker

    run_worker(_settings())


@cli.command()
@option("--duration", type=click.FloatRange(5, 3600), default=60.0, show_default=True,
        help="Approximate wall seconds of publishing plus settling.")
@option("--scenario", default="demo", show_default=True, help="Scenario to publish (see `ioc scenarios`).")
def demo(duration: float, scenario: str) -> None:
    """Stack up, migrate, run worker + bridge + simulator, show progress, print a summary."""
    from ioc.composition.demo import run_demo

    sys.exit(run_demo(duration, scenario, console))


# ---------------------------------------------------------------- dead letters
@cli.group()
def deadletters() -> None:
    """Inspect and replay rejected payloads."""


@deadletters.command("list")
@option("--reason", default=None, help="Only this reason code.")
@option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Max rows.")
@option("--all/--pending", "include_replayed", default=False, help="Include already replayed letters.")
def deadletters_list(reason: str | None, limit: int, include_replayed: bool) -> None:
    """List dead letters and the counts per reason."""
    from ioc.storage.db import connect
    from ioc.storage.deadletters import counts_by_reason, list_deadletters

    s = _settings()
    s.require("database_url")
    with connect(s.database_url or "") as conn:
        rows = list_deadletters(conn, reason=reason, limit=limit, include_replayed=include_replayed)
        counts = counts_by_reason(conn)
    t = Table(title="dead letters")
    for c in ("id", "received", "reason", "topic", "detail", "payload"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(str(r.dl_id), r.received_at.isoformat(timespec="seconds"), r.reason, r.topic or "",
                  r.detail[:80], r.raw[:60].decode("utf-8", "replace"))
    console.print(t)
    console.print("per reason: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@deadletters.command("replay")
@option("--reason", default=None, help="Only letters with this reason code.")
@option("--limit", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True, help="Max letters.")
def deadletters_replay(reason: str | None, limit: int) -> None:
    """Publish pending MQTT dead letters again to their original topic (after a fix)."""
    from ioc.composition.deadletter_replay import replay_deadletters

    s = _settings()
    n = replay_deadletters(s, reason=reason, limit=limit)
    console.print(f"replayed {n} dead letters")


# ---------------------------------------------------------------- alerts
@cli.command("config")
def config_cmd() -> None:
    """Print the effective settings (secrets masked)."""
    for k, v in load_settings().masked().items():
        console.print(f"IOC_{k.upper()} = {v}")


def _register_plugins(group: click.Group) -> None:
    try:
        from sensors_sim.cli import register
    except ImportError:  # pragma: no cover - the simulator ships with the project
        return
    register(group)


_register_plugins(cli)
cli.add_command(train_cmd)
cli.add_command(detect_file_cmd)
cli.add_command(score_cmd)
cli.add_command(dashboards_group)
cli.add_command(report_cmd)
cli.add_command(alerts_group)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: expected failures become one clear line and exit code 2."""
    try:
        return cli.main(args=argv, prog_name="ioc", standalone_mode=True)
    except IocError as e:
        Console(stderr=True).print(f"[red]error:[/] {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
