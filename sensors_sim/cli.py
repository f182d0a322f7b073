"""``ioc simulate | record | replay | scenarios``: registered on the lead's ``ioc`` click group.

Every option can also be set from an ``IOC_*`` environment variable (shown in ``--help``).
Expected failures raise IocError subclasses, which the ``ioc`` CLI prints and exits 2 on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from ioc.settings import load_settings
from sensors_sim import scenario as scenarios_mod
from sensors_sim.reporting import PROFILES

console = Console(stderr=True)


class SpeedType(click.ParamType):
    """``max`` (as fast as possible) or a positive factor such as 1, 10 or 0.5."""

    name = "speed"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or (isinstance(value, str) and value.lower() == "max"):
            return None
        try:
            f = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither 'max' nor a number", param, ctx)
        if f <= 0:
            self.fail("speed must be > 0 (or 'max')", param, ctx)
        return f


SPEED = SpeedType()


def _mqtt_url(url: str | None) -> str:
    if url:
        return url
    settings = load_settings()
    settings.require("mqtt_url")
    assert settings.mqtt_url is not None
    return settings.mqtt_url


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if total is not None:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def register(group: click.Group) -> None:
    """Add the simulator's commands to the ``ioc`` group."""

    @group.command("simulate")
    @click.option("--scenario", "scenario_name", required=True, envvar="IOC_SIM_SCENARIO", show_envvar=True,
                  help="Scenario name (see `ioc scenarios`) or a path to a scenario TOML; NAME@PROFILE picks a "
                       "reporting profile.")
    @click.option("--reporting", type=click.Choice(list(PROFILES)), default=None, envvar="IOC_SIM_REPORTING",
                  show_envvar=True,
                  help="Run the scenario under this reporting profile (cadence, quantisation, noise, gaps, spikes) "
                       "instead of its own; the same as --scenario NAME@PROFILE.")
    @click.option("--speed", type=SPEED, default="1", show_default=True, envvar="IOC_SIM_SPEED", show_envvar=True,
                  help="Virtual clock when publishing: 1 = real time, N = N times faster, 'max' = as fast as possible.")
    @click.option("--seed", type=int, default=None, envvar="IOC_SIM_SEED", show_envvar=True,
                  help="Override the scenario's seed; the same seed gives byte-identical output.")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, envvar="IOC_SIM_OUT",
                  show_envvar=True, help="Write FILE.jsonl.gz (+ FILE.labels.json) instead of publishing to MQTT.")
    @click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  envvar="IOC_SIM_PLOT", show_envvar=True, help="Also draw the key series with labelled events to a PNG.")
    @click.option("--labels", "labels_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  envvar="IOC_SIM_LABELS", show_envvar=True,
                  help="Where to write labels when publishing (default: none; with --out they go next to it).")
    @click.option("--mqtt-url", default=None, envvar="IOC_MQTT_URL", show_envvar=True,
                  help="Broker to publish to, mqtt://user:pass@host:port (default: settings / `ioc stack up`).")
    def simulate_cmd(scenario_name: str, reporting: str | None, speed: float | None, seed: int | None,
                     out: Path | None, plot_path: Path | None, labels_out: Path | None, mqtt_url: str | None) -> None:
        """Run a scenario: publish it to MQTT on a virtual clock, or write it to a file."""
        from sensors_sim.api import publish_simulation
        from sensors_sim.engine import simulate
        from sensors_sim.output import write_simulation

        scenario_name = scenarios_mod.variant(scenario_name, reporting)
        with console.status(f"simulating {scenario_name}…"):
            sim = simulate(scenario_name, seed)
        if out is not None:
            with _progress(f"writing {out.name}", sim.n_messages) as advance:
                count, lpath = write_simulation(sim, out, progress=advance)
            console.print(f"wrote {count:,} readings to {out} and {len(sim.labels)} labels to {lpath}")
        else:
            url = _mqtt_url(mqtt_url)
            stop = threading.Event()
            with _progress(f"publishing {scenario_name}", sim.n_messages) as advance:
                try:
                    res = publish_simulation(sim, url, speed=speed, stop=stop, progress=advance, labels_out=labels_out)
                except KeyboardInterrupt:
                    stop.set()
                    raise
            console.print(f"published {res.published:,} ({res.valid:,} valid, {res.malformed:,} malformed)")
        if plot_path is not None:
            from sensors_sim.plot import plot

            plot(sim, plot_path)
            console.print(f"plot written to {plot_path}")

    @group.command("record")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, envvar="IOC_RECORD_OUT",
                  show_envvar=True, help="Recording file to write (.jsonl.gz).")
    @click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
                  envvar="IOC_RECORD_DURATION", show_envvar=True, help="Seconds to record (default: until Ctrl-C).")
    @click.option("--count", type=click.IntRange(min=1), default=None, envvar="IOC_RECORD_COUNT", show_envvar=True,
                  help="Stop after this many messages.")
    @click.option("--topic", default="khanhhoa/v1/+/+", show_default=True, envvar="IOC_RECORD_TOPIC",
                  show_envvar=True, help="MQTT topic filter to record.")
    @click.option("--mqtt-url", default=None, envvar="IOC_MQTT_URL", show_envvar=True,
                  help="Broker to record from (default: settings / `ioc stack up`).")
    def record_cmd(out: Path, duration: float | None, count: int | None, topic: str, mqtt_url: str | None) -> None:
        """Record live MQTT readings, with receive times, to a .jsonl.gz file."""
        from sensors_sim.recorder import record

        url = _mqtt_url(mqtt_url)
        stop = threading.Event()
        with _progress(f"recording {topic}", count) as advance:
            try:
                n = record(url, out, duration=duration, count=count, topic=topic, stop=stop, progress=advance)
            except KeyboardInterrupt:
                stop.set()
                n = -1
        console.print(f"recorded {n:,} messages to {out}" if n >= 0 else f"stopped; partial recording in {out}")

    @group.command("replay")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path), envvar="IOC_REPLAY_FILE")
    @click.option("--speed", type=SPEED, default="1", show_default=True, envvar="IOC_REPLAY_SPEED", show_envvar=True,
                  help="Keep the original spacing divided by N; 'max' = as fast as possible.")
    @click.option("--rebase/--no-rebase", default=False, show_default=True, envvar="IOC_REPLAY_REBASE",
                  show_envvar=True, help="Shift payload timestamps so the run ends no later than the wall clock.")
    @click.option("--mqtt-url", default=None, envvar="IOC_MQTT_URL", show_envvar=True,
                  help="Broker to publish to (default: settings / `ioc stack up`).")
    def replay_cmd(file: Path, speed: float | None, rebase: bool, mqtt_url: str | None) -> None:
        """Publish a recording or a simulated file again (FILE may also come from IOC_REPLAY_FILE)."""
        from sensors_sim.replay import load, replay

        url = _mqtt_url(mqtt_url)
        msgs = load(file)
        stop = threading.Event()
        with _progress(f"replaying {file.name}", len(msgs)) as advance:
            try:
                c = replay(file, url, speed=speed, rebase=rebase, stop=stop, progress=advance, messages=msgs)
            except KeyboardInterrupt:
                stop.set()
                raise
        console.print(f"published {c.published:,} ({c.valid:,} valid, {c.malformed:,} malformed)")

    @group.command("scenarios")
    def scenarios_cmd() -> None:
        """List the scenarios with their span, seed, reporting profile and description."""
        table = Table(Column("name", no_wrap=True), "start", "hours", "seed", "reporting", "description")
        for name in scenarios_mod.available():
            raw = scenarios_mod.source(name).raw
            rep = raw.get("reporting")
            profile = str(rep.get("profile", "ideal")) if isinstance(rep, dict) else "ideal"
            table.add_row(name, str(raw.get("start", "?")), f"{raw.get('duration_h', '?'):g}"
                          if isinstance(raw.get("duration_h"), int | float) else "?", str(raw.get("seed", "?")),
                          profile, str(raw.get("description", "")))
        console_out = Console()
        console_out.print(table)
        console_out.print("Reporting profiles (run any scenario as NAME@PROFILE or with --reporting PROFILE):")
        for name, prof in PROFILES.items():
            console_out.print(f"  {name}: {prof.description}")
