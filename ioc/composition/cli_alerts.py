"""`ioc alerts`: list, acknowledge and silence alerts (thin: the work is in ioc.storage)."""

from __future__ import annotations

import functools
import sys
from datetime import timedelta
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

from ioc.alerting.rules import load_rules, parse_duration
from ioc.errors import IocError
from ioc.settings import Settings, load_settings

console = Console(width=None if sys.stdout.isatty() else 160)
option = functools.partial(click.option, show_envvar=True)
_SEV_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _db(s: Settings) -> Any:
    from ioc.storage.db import connect

    s.require("database_url")
    return connect(s.database_url or "", autocommit=True)


@click.group()
def alerts() -> None:
    """Alerts for emergency staff: list, acknowledge, silence."""


@alerts.command("list")
@option("--open", "open_only", is_flag=True, help="Only active (open or acknowledged) alerts.")
@option("--json", "as_json", is_flag=True, help="One JSON document on stdout, for scripts.")
@option("--limit", default=200, show_default=True, type=click.IntRange(1, 100_000), help="At most this many.")
def alerts_list(open_only: bool, as_json: bool, limit: int) -> None:
    """Alerts, most severe and newest first."""
    from ioc.storage.alerts_store import list_alerts

    with _db(load_settings()) as conn:
        rows = list_alerts(conn, active_only=open_only, limit=limit)
    if as_json:
        sys.stdout.write(msgspec.json.encode([r.__dict__ for r in rows]).decode() + "\n")
        return
    t = Table(title="alerts" + (" (active)" if open_only else ""))
    for c in ("id", "severity", "peak", "kind", "state", "opened", "sensors", "value", "message", "note"):
        t.add_column(c)
    for r in rows:
        note = f"ack {r.acknowledged_by}" if r.acknowledged_by else (r.muted_by or "")
        t.add_row(str(r.alert_id), f"[{_SEV_STYLE.get(r.severity, '')}]{r.severity}[/]", r.peak_severity, r.kind,
                  r.state, r.opened_at.isoformat(timespec="minutes"), ", ".join(r.members) or r.sensor_id,
                  "" if r.value is None else f"{r.value:.2f}", r.message, note)
    console.print(t)


@alerts.command("ack")
@click.argument("alert_id", type=int)
@option("--by", required=True, help="Who acknowledges (name or role).")
@option("--note", default=None, help="Why, or what is being done.")
def alerts_ack(alert_id: int, by: str, note: str | None) -> None:
    """Acknowledge an open alert; its channels are told through the outbox."""
    from ioc.storage.alerts_store import Delivery, acknowledge
    from streams.alert_channels import enabled_channels

    s = load_settings()
    delivery = Delivery(load_rules(s.alert_rules), enabled_channels(s))
    with _db(s) as conn:
        notes = acknowledge(conn, alert_id, by, delivery, note=note)
    if notes is None:
        raise IocError(f"alert {alert_id} is not open (unknown, already acknowledged or resolved)")
    console.print(f"alert {alert_id} acknowledged by {by}; {len(notes)} notification(s) queued")


@alerts.command("silence")
@option("--sensor", default=None, help="Silence one sensor's alerts.")
@option("--kind", default=None, help="Silence a kind: flood, rain, air, noise, traffic, health.")
@option("--for", "duration", required=True, help="How long, e.g. 30m, 2h, 1d.")
@option("--by", required=True, help="Who sets it.")
@option("--reason", required=True, help="Why (maintenance window, known fault...).")
def alerts_silence(sensor: str | None, kind: str | None, duration: str, by: str, reason: str) -> None:
    """Mute notifications (not the alerts themselves) for a maintenance window."""
    from ioc.storage.silences import add_silence

    if (sensor is None) == (kind is None):
        raise IocError("give exactly one of --sensor or --kind")
    try:
        seconds = parse_duration(duration)
    except ValueError as e:
        raise IocError(f"--for: {e}") from e
    if seconds <= 0 or seconds > 90 * 86400:
        raise IocError("--for must be more than 0 and at most 90 days")
    with _db(load_settings()) as conn:
        sil = add_silence(conn, sensor_id=sensor, kind=kind, duration=timedelta(seconds=seconds), by=by, reason=reason)
    console.print(f"silence {sil.silence_id}: {sensor or kind} until {sil.ends_at.isoformat(timespec='minutes')}")


@alerts.command("silences")
@option("--all", "include_ended", is_flag=True, help="Include ended and expired silences.")
def alerts_silences(include_ended: bool) -> None:
    """List silences."""
    from ioc.storage.silences import list_silences

    with _db(load_settings()) as conn:
        rows = list_silences(conn, include_ended=include_ended)
    t = Table(title="silences")
    for c in ("id", "target", "from", "until", "by", "reason", "status"):
        t.add_column(c)
    for s in rows:
        status = "expired" if s.expired_at else ("active" if s.ends_at > s.starts_at else "ended")
        t.add_row(str(s.silence_id), s.sensor_id or f"kind={s.kind}", s.starts_at.isoformat(timespec="minutes"),
                  s.ends_at.isoformat(timespec="minutes"), s.created_by, s.reason, status)
    console.print(t)


@alerts.command("unsilence")
@click.argument("silence_id", type=int)
def alerts_unsilence(silence_id: int) -> None:
    """End a silence early."""
    from ioc.storage.silences import expire_silence

    with _db(load_settings()) as conn:
        if not expire_silence(conn, silence_id):
            raise IocError(f"silence {silence_id} is unknown or already over")
    console.print(f"silence {silence_id} expired")


@alerts.command("check-rules")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def alerts_check_rules(path: str | None) -> None:
    """Check an alert rules file (the shipped defaults without PATH)."""
    from pathlib import Path

    rules = load_rules(Path(path) if path else None)
    console.print(f"{rules.source}: {len(rules.rules)} rules OK")
