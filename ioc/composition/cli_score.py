"""``ioc score``: the detectors against labelled scenarios, in-process (see :mod:`ioc.composition.scoring`)."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ioc.composition.scoring import (
    KINDS,
    SPEC,
    Crossing,
    KindScore,
    ScenarioScore,
    ScoreReport,
    Target,
    fmt_duration,
    overall_of,
    quantile,
    scenario_names,
    score,
)

option = functools.partial(click.option, show_envvar=True)
ICT_S = 7 * 3600


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _row(title: str, s: KindScore) -> list[str]:
    truths = f"{s.truths} ({s.labelled})" if s.truths else "0"
    return [
        title, truths, str(s.alerts), str(s.tp), f"{s.fp} ({s.fp_muted})" if s.fp_muted else str(s.fp), _num(s.precision), _num(s.recall), _num(s.f1),
        _num(s.fa_per_sensor_day, 3), fmt_duration(quantile(s.delays_s, 0.5)), fmt_duration(quantile(s.delays_s, 0.9)),
        fmt_duration(quantile(s.leads_s, 0.5)), fmt_duration(min(s.leads_s) if s.leads_s else None),
    ]


def kinds_table(title: str, kinds: dict[str, KindScore], caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, caption_justify="left")
    for c in ("event kind", "truths (lab.)", "alerts", "TP", "FP (muted)", "P", "R", "F1", "FA/sensor-day",
              "delay p50", "delay p90", "lead p50", "lead min"):
        t.add_column(c, justify="left" if c == "event kind" else "right")
    order = [k.kind for k in KINDS] + sorted(set(kinds) - set(SPEC))
    for k in order:
        s = kinds.get(k)
        if s is None or (not s.truths and not s.alerts):
            continue
        spec = SPEC.get(k)
        t.add_row(*_row(spec.title if spec else k, s))
    t.add_section()
    t.add_row(*_row("overall", overall_of(kinds.values())), style="bold")
    return t


def scenarios_table(report: ScoreReport) -> Table:
    t = Table(title="per scenario")
    for c in ("scenario", "hours", "sensors", "readings", "alerts", "TP", "FP", "P", "R", "F1", "FA/sensor-day",
              "BĐ III lead min", "seconds"):
        t.add_column(c, justify="left" if c == "scenario" else "right")
    for sc in report.scenarios:
        o = sc.overall()
        bd3 = [c.lead_s for c in sc.crossings if c.level == 3 and c.labelled]
        worst = "—" if not bd3 else ("missed" if any(x is None for x in bd3) else fmt_duration(min(x for x in bd3 if x is not None)))
        t.add_row(sc.name, f"{sc.duration_h:g}", str(sc.sensors), str(sc.readings), str(o.alerts), str(o.tp), str(o.fp),
                  _num(o.precision), _num(o.recall), _num(o.f1), _num(o.fa_per_sensor_day, 3), worst,
                  f"{sc.seconds:.1f}")
    return t


def crossings_table(title: str, crossings: Iterable[Crossing], with_scenario: bool) -> Table:
    t = Table(title=title)
    cols = (["scenario"] if with_scenario else []) + ["gauge", "level", "true crossing (UTC+7)", "labelled",
                                                      "first warning", "lead"]
    for col in cols:
        t.add_column(col, justify="right" if col == "lead" else "left")
    for c in crossings:
        at = datetime.fromtimestamp(c.at + ICT_S, UTC).strftime("%d/%m %H:%M")
        row = ([c.scenario] if with_scenario else []) + [
            c.sensor_id, f"BĐ {'I' * c.level}", at, "yes" if c.labelled else "no (re-crossing)",
            c.warned_by or "none", "missed" if c.lead_s is None else fmt_duration(c.lead_s)]
        t.add_row(*row)
    return t


def targets_table(targets: list[Target]) -> Table:
    t = Table(title="targets (issue 8)")
    for c in ("target", "measured", "goal", "met"):
        t.add_column(c)
    for x in targets:
        met = "—" if x.met is None else ("[green]yes[/]" if x.met else "[red]no[/]")
        t.add_row(x.name, x.value, x.goal, met)
    return t


CAPTION = ("truths (lab.) = events to detect (of which labelled; the rest computed from the series with the "
           "official thresholds). An event counts as detected once a matching alert reaches the label's severity; "
           "delay = first matching alert − event start (0 if one was already open); lead = true crossing − first BĐ "
           "forecast/alarm in force within 6 h before. FA/sensor-day = unmatched alerts per sensor-day. Muted = false "
           "hazard alerts raised while a health alert of the same sensor was open (an inhibition stage would drop "
           "them). Storm wind has no detector and is left out of the overall recall.")


def render(report: ScoreReport, console: Console) -> None:
    if len(report.scenarios) == 1:
        sc = report.scenarios[0]
        console.print(kinds_table(
            f"ioc score --scenario {sc.name}: {sc.duration_h:g} h, {sc.sensors} sensors, {sc.readings} readings, "
            f"{sc.findings} findings, {sc.seconds:.1f} s", sc.kinds, CAPTION))
        if sc.crossings:
            console.print(crossings_table("BĐ crossings and warning lead", sc.crossings, with_scenario=False))
    else:
        pooled = report.pooled()
        total = sum(s.seconds for s in report.scenarios)
        console.print(kinds_table(
            f"ioc score --scenario all: {len(report.scenarios)} scenarios, "
            f"{sum(s.readings for s in report.scenarios)} readings, {report.sensor_days:.0f} sensor-days, "
            f"{total:.0f} s", pooled, CAPTION))
        console.print(scenarios_table(report))
        bd3 = [c for sc in report.scenarios for c in sc.crossings if c.level == 3 and c.labelled]
        if bd3:
            console.print(crossings_table("BĐ III crossings (labelled) and warning lead", bd3, with_scenario=True))
    console.print(targets_table(report.targets()))


@click.command("score")
@option("--scenario", "scenario", required=True, envvar="IOC_SCORE_SCENARIO",
        help="Scenario name (see `ioc scenarios`), NAME@PROFILE, a scenario TOML, or `all` (every bundled scenario, "
             "the realistic national variants included).")
@option("--json", "as_json", is_flag=True, default=False, envvar="IOC_SCORE_JSON",
        help="Print machine-readable results (JSON) instead of tables.")
@option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="IOC_SCORE_PLOT",
        help="Write one PNG per labelled event (series, thresholds, label, each finding) under DIR/<scenario>/.")
@option("--seed", type=int, default=None, envvar="IOC_SCORE_SEED",
        help="Override the scenarios' own seeds.")
@option("--e2e", is_flag=True, default=False, envvar="IOC_SCORE_E2E",
        help="Replay through the real pipeline (local stack, bridge, worker) and compare with the in-process run.")
@option("--seconds", type=click.FloatRange(5, 3600), default=120.0, show_default=True, envvar="IOC_SCORE_SECONDS",
        help="--e2e: how long publishing each scenario should take (the replay speed).")
def score_cmd(scenario: str, as_json: bool, plot_dir: Path | None, seed: int | None, e2e: bool,
              seconds: float) -> None:
    """Score the detectors against labelled scenarios, in-process through the worker's detector stage.

    Per event kind: precision, recall, F1, false alerts per sensor-day, median and p90 detection delay,
    and for BĐ crossings the warning lead time. No services are needed.
    """
    names = scenario_names(scenario)
    err = Console(stderr=True)
    out = Console(width=None if sys.stdout.isatty() else 200)
    if e2e:
        _score_e2e(names, seed, seconds, as_json, err, out)
        return
    began = time.perf_counter()
    with err.status("scoring…") as status:
        def progress(name: str, sc: ScenarioScore | None) -> None:
            if sc is None:
                status.update(f"scoring {name} ({names.index(name) + 1}/{len(names)})…")
            else:
                err.log(f"{name}: {sc.readings} readings, {sc.findings} findings, {sc.seconds:.1f} s")

        report = score(names, seed=seed, plot_dir=plot_dir, progress=progress)
    err.log(f"scored {len(names)} scenario(s) in {time.perf_counter() - began:.1f} s")
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=1))
    else:
        render(report, out)


def _score_e2e(names: list[str], seed: int | None, seconds: float, as_json: bool, err: Console,
               out: Console) -> None:
    from ioc.composition.score_e2e import count_events, incident_lines, run_e2e
    from ioc.composition.scoring import score_run

    results = []
    disagree = False
    for name in names:
        res = run_e2e(name, seconds=seconds, seed=seed, progress=err.log)
        e2e_score, inproc_score = score_run(res.run, name), score_run(res.inprocess, name)
        results.append((name, res, e2e_score, inproc_score))
        disagree |= not res.agreement.agree
    if as_json:
        click.echo(json.dumps([{
            "scenario": name, "e2e": e.to_json(), "in_process": i.to_json(), "agreement": r.agreement.to_json(),
            "published": r.published, "stored": r.stored, "deadlettered": r.deadlettered,
            "alert_events": dict(count_events(r.incidents)),
            "incidents": [dict(zip(("alert_id", "kind", "members", "peak", "timeline"), row, strict=True))
                          for row in incident_lines(r.incidents, r.offset_s)],
        } for name, r, e, i in results], ensure_ascii=False, indent=1, default=str))
    else:
        for name, r, e, _i in results:
            out.print(kinds_table(f"ioc score --e2e --scenario {name}: {r.published} published, {r.stored} stored, "
                                  f"{r.deadlettered} dead-lettered, {e.findings} findings", e.kinds, CAPTION))
            a = r.agreement
            verdict = "[green]agree[/]" if a.agree else "[red]DISAGREE[/]"
            out.print(f"in-process vs e2e: {verdict}: {a.matched} findings matched, {len(a.only_inprocess)} only "
                      f"in-process, {len(a.only_e2e)} only e2e (silence within {a.silence_tolerance_s:.0f} s)")
            for line in (a.only_inprocess[:10] + a.only_e2e[:10]):
                out.print(f"  {line}")
            t = Table(title=f"{name}: alerts the pipeline opened (scenario time)")
            for c in ("id", "kind", "members", "peak", "timeline"):
                t.add_column(c)
            for row in incident_lines(r.incidents, r.offset_s):
                t.add_row(*row)
            out.print(t)
    if disagree:
        raise click.exceptions.Exit(1)
