"""``ioc report``: an incident report of one event window as a self-contained HTML page.

Thin on purpose: parse options, resolve the window (a scenario's range by default), load the
data through ``ioc.storage.report_queries`` and hand it to ``ioc.composition.report``.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click
from rich.console import Console

from ioc.composition.report.i18n import LANGS, Lang
from ioc.composition.report.times import parse_time, resolve_window, show
from ioc.settings import load_settings
from sensors_sim.registry import load_registry
from sensors_sim.scenario import load as load_scenario

if TYPE_CHECKING:
    from ioc.composition.report.build import ReportLabel

log = logging.getLogger(__name__)
option = functools.partial(click.option, show_envvar=True)


def _scenario(name: str) -> tuple[ReportLabel, datetime, datetime]:
    """The scenario's name, description and time range (ScenarioError, an IocError, when unknown)."""
    from ioc.composition.report.build import ReportLabel

    sc = load_scenario(name, load_registry())
    return ReportLabel(sc.name, sc.description), sc.start.astimezone(UTC), sc.end.astimezone(UTC)


@click.command("report")
@option("--from", "from_", default=None, envvar="IOC_REPORT_FROM",
        help="Start of the window, ISO 8601 (no offset = Vietnam time, UTC+7).")
@option("--to", "to", default=None, envvar="IOC_REPORT_TO", help="End of the window (exclusive), ISO 8601.")
@option("--scenario", default=None, envvar="IOC_REPORT_SCENARIO",
        help="Label the report with this scenario (see `ioc scenarios`); its time range is the default window. "
             "A scenario published live is rebased to the wall clock: give --to (or --from) and the window "
             "spans the scenario's duration.")
@option("--lang", type=click.Choice(LANGS), default="vi", show_default=True, envvar="IOC_LANG",
        help="Language of the report.")
@option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
        envvar="IOC_REPORT_OUT", help="Directory to write index.html into (created if missing).")
def report_cmd(from_: str | None, to: str | None, scenario: str | None, lang: str, out_dir: Path) -> None:
    """Write an incident report: gauges with BĐ lines and alert marks, rain, VN_AQI, alerts and sensor faults."""
    # matplotlib and the queries load only when a report is made, not on every `ioc` command
    from ioc.composition.report.aqi import AQI_METRICS
    from ioc.composition.report.build import buckets_for, write_report
    from ioc.storage.report_queries import load_report_data

    start = parse_time(from_, option="--from") if from_ else None
    end = parse_time(to, option="--to") if to else None
    label = None
    if scenario:
        label, sc_start, sc_end = _scenario(scenario)
        start, end = resolve_window(start, end, default_start=sc_start, default_end=sc_end,
                                    default_span=sc_end - sc_start)
    else:
        start, end = resolve_window(start, end)
    settings = load_settings()
    settings.require("database_url")
    assert settings.database_url is not None
    water_bucket, rain_bucket = buckets_for(start, end)
    log.info("report window %s – %s, scenario %s", show(start), show(end), scenario)
    data = load_report_data(settings.database_url, start, end, water_bucket=water_bucket, rain_bucket=rain_bucket,
                            air_metrics=AQI_METRICS)
    path = write_report(data, out_dir, lang=cast(Lang, lang), label=label, generated_at=datetime.now(UTC))
    console = Console()
    if data.empty:
        console.print(f"[yellow]no readings and no alerts between {show(start)} and {show(end)}[/]; "
                      f"the report says so: {path}")
    else:
        console.print(f"report {show(start)} – {show(end)}: {data.readings:,} readings, {len(data.alerts)} alerts "
                      f"→ {path}")
