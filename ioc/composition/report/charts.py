"""PNG charts of a report, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Each function takes plain data and returns PNG bytes, so it is pure and safe in any thread.
Times are drawn in Vietnam time. Alert transitions become marks along the top of a gauge's
chart, coloured by the severity they reached.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, DateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from detectors.vn_aqi import CATEGORIES
from ioc.composition.report.aqi import AqiPoint
from ioc.composition.report.i18n import Lang, number, t
from ioc.composition.report.times import ICT
from ioc.storage.report_queries import AlertEvent, AlertRow, Point, SensorRow

SEVERITY_COLOURS: Final = {"info": "#d4a017", "warning": "#ff7e00", "critical": "#d62728"}
BD_STYLE: Final = {"bd1": ("BĐ I", "#d4a017"), "bd2": ("BĐ II", "#ff7e00"), "bd3": ("BĐ III", "#d62728")}
MARKERS: Final = {"opened": "^", "escalated": "D", "deescalated": "v", "acknowledged": "s", "resolved": "o"}
_RESOLVED_COLOUR: Final = "#2ca02c"
_ACK_COLOUR: Final = "#1f77b4"
_SERIES_COLOURS: Final = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
_SIZE: Final = (10.0, 3.8)  # inches at 100 dpi: 1000 px wide, readable on A4 and on a screen
_DPI: Final = 100


@dataclass(frozen=True)
class Mark:
    """One alert transition to draw: when, what, at which severity, and whether ``at`` is event time."""

    alert_id: int
    at: datetime
    event: str
    severity: str | None
    recorded: bool = False  # True: the time the transition was written, not when it happened


def marks_for(sensor_id: str, alerts: Iterable[AlertRow], events: Iterable[AlertEvent],
              start: datetime, end: datetime) -> list[Mark]:
    """The transitions of the alerts about one sensor (its own, or an incident it is a member of)
    inside [start, end], oldest first.

    An ``opened`` event carries the severity it opened at; escalations the one they reached;
    later events the alert's severity as it then stood.

    >>> from datetime import UTC
    >>> t0 = datetime(2025, 12, 4, tzinfo=UTC)
    >>> a = AlertRow(7, "G", "flood_alarm_level", "flood", "water_level_m", "warning", "warning", "resolved",
    ...              t0, None, None, t0 + timedelta(hours=3), 9.6, 9.5, None, None, "msg")
    >>> ev = [AlertEvent(7, "opened", t0, True, "info", None), AlertEvent(7, "escalated", t0 + timedelta(hours=1),
    ...       False, "warning", None), AlertEvent(7, "resolved", t0 + timedelta(hours=3), True, None, None),
    ...       AlertEvent(7, "acknowledged", t0 + timedelta(days=9), False, None, "ops")]
    >>> [(m.event, m.severity, m.recorded) for m in marks_for("G", [a], ev, t0, t0 + timedelta(hours=6))]
    [('opened', 'info', False), ('escalated', 'warning', True), ('resolved', 'warning', False)]
    """
    mine = {a.alert_id: a for a in alerts if a.concerns(sensor_id)}
    current: dict[int, str | None] = {}
    out: list[Mark] = []
    for ev in sorted((e for e in events if e.alert_id in mine), key=lambda e: (e.at, e.alert_id)):
        if ev.event in ("opened", "escalated", "deescalated") and ev.severity:
            current[ev.alert_id] = ev.severity
        sev = current.get(ev.alert_id) or mine[ev.alert_id].severity
        if start <= ev.at <= end:
            out.append(Mark(ev.alert_id, ev.at, ev.event, sev, recorded=not ev.event_time_known))
    return out


def _x(ts: datetime) -> float:
    """Matplotlib's date number (days) for an aware datetime: typed, and unambiguous about zones."""
    return float(date2num(ts))


def _xs(stamps: Iterable[datetime]) -> list[float]:
    return [_x(ts) for ts in stamps]


def _days(d: timedelta) -> float:
    return d.total_seconds() / 86400.0


def _figure(height: float = _SIZE[1]) -> Figure:
    fig = Figure(figsize=(_SIZE[0], height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _time_axis(ax: Axes, start: datetime, end: datetime) -> None:
    locator = AutoDateLocator(tz=ICT, minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    span = end - start
    fmt = "%H:%M\n%d/%m" if span <= timedelta(days=3) else "%d/%m"
    ax.xaxis.set_major_formatter(DateFormatter(fmt, tz=ICT))
    ax.set_xlim(_x(start), _x(end))
    ax.grid(True, alpha=0.3)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No creation date or software version in the file: the same data gives the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def gauge_png(sensor: SensorRow, points: Sequence[Point], marks: Sequence[Mark],
              predictions: Sequence[tuple[datetime, float]], start: datetime, end: datetime, lang: Lang) -> bytes:
    """A gauge's level with its BĐ I/II/III lines, alert marks along the top and predicted crossings."""
    fig = _figure()
    ax = fig.add_subplot()
    handles: list[Line2D] = []
    if points:
        (line,) = ax.plot(_xs(p.ts for p in points), [p.value for p in points], color="#1f4e9a", lw=1.6,
                          label=t(lang, "level_axis"))
        handles.append(line)
    for key, (name, colour) in BD_STYLE.items():
        level = (sensor.alarm_levels or {}).get(key)
        if level is None:
            continue
        ln = ax.axhline(level, color=colour, lw=1.2, ls="--", label=f"{name} {number(level, lang)} m")
        handles.append(ln)
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for m in marks:
        colour = {"resolved": _RESOLVED_COLOUR, "acknowledged": _ACK_COLOUR}.get(
            m.event, SEVERITY_COLOURS.get(m.severity or "", "#555555"))
        ax.axvline(_x(m.at), color=colour, lw=0.8, alpha=0.5, ls=":" if m.recorded else "-")
        ax.plot([_x(m.at)], [1.0], transform=top, marker=MARKERS.get(m.event, "o"), ms=8, ls="none",
                markerfacecolor="none" if m.recorded else colour, markeredgecolor=colour, clip_on=False)
    shown = [(at, level) for at, level in predictions if start <= at <= end]
    for at, level in shown:
        ax.plot([_x(at)], [level], marker="x", ms=9, mew=2, color="#7f0000", ls="none")
    for event in MARKERS:
        if any(m.event == event for m in marks):
            handles.append(Line2D([], [], marker=MARKERS[event], ls="none", color="#444444",
                                  label=t(lang, f"mark_{event}")))
    if shown:
        handles.append(Line2D([], [], marker="x", ls="none", color="#7f0000", label=t(lang, "mark_predicted")))
    ax.set_title(f"{sensor.name} ({sensor.sensor_id})", fontsize=11, loc="left", pad=12)  # room for the marks
    ax.margins(y=0.08)
    ax.set_ylabel(t(lang, "level_axis"))
    ax.set_xlabel(t(lang, "time_axis"))
    _time_axis(ax, start, end)
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=8, ncols=2, framealpha=0.85)
    return _png(fig)


def rain_png(series: Mapping[str, Sequence[Point]], bucket: timedelta, start: datetime, end: datetime,
             lang: Lang) -> bytes:
    """Rain per bucket (bars side by side per gauge) above the cumulative rain of each gauge."""
    fig = _figure(height=6.2)
    ax_bar, ax_cum = fig.subplots(2, 1, sharex=True, height_ratios=[1.2, 1.0])
    n = max(1, len(series))
    width = _days(bucket) / n * 0.9
    unit = t(lang, "bucket_h" if bucket <= timedelta(hours=1) else "bucket_d")
    for i, (name, pts) in enumerate(series.items()):
        colour = _SERIES_COLOURS[i % len(_SERIES_COLOURS)]
        xs = _xs(p.ts + i * (bucket / n) for p in pts)
        ax_bar.bar(xs, [p.value for p in pts], width=width, align="edge", color=colour, label=name)
        total = 0.0
        cum_x, cum_y = [start], [0.0]
        for p in pts:
            total += p.value
            cum_x.append(p.ts + bucket)
            cum_y.append(total)
        ax_cum.plot(_xs(cum_x), cum_y, color=colour, lw=1.6, drawstyle="steps-post", label=f"{name}: {number(total, lang, 1)} mm")
    ax_bar.set_ylabel(t(lang, "rain_axis", bucket=unit))
    ax_bar.set_title(t(lang, "rain"), fontsize=11, loc="left")
    ax_cum.set_ylabel(t(lang, "rain_cum_axis"))
    ax_cum.set_xlabel(t(lang, "time_axis"))
    for ax in (ax_bar, ax_cum):
        _time_axis(ax, start, end)
    fig.legend(loc="outside lower center", fontsize=8, ncols=2, handles=ax_cum.get_lines())
    return _png(fig)


def aqi_png(series: Mapping[str, Sequence[AqiPoint]], start: datetime, end: datetime, lang: Lang) -> bytes:
    """Hourly VN_AQI per station over the official category bands and colours."""
    fig = _figure()
    ax = fig.add_subplot()
    peak = max((p.aqi for pts in series.values() for p in pts), default=0)
    ymax = max(160.0, peak * 1.15)
    for cat in CATEGORIES:
        if cat.min > ymax:
            break
        ax.axhspan(cat.min, cat.max + 1, color=cat.hex, alpha=0.18, lw=0)
        ax.text(1.005, (cat.min + min(cat.max + 1, ymax)) / 2, cat.vi if lang == "vi" else cat.en,
                transform=blended_transform_factory(ax.transAxes, ax.transData), fontsize=7, va="center")
    for i, (name, pts) in enumerate(series.items()):
        colour = _SERIES_COLOURS[i % len(_SERIES_COLOURS)]
        if pts:
            xs = _xs([p.hour for p in pts] + [pts[-1].hour + timedelta(hours=1)])
            ys = [p.aqi for p in pts] + [pts[-1].aqi]
            ax.plot(xs, ys, color=colour, lw=1.6, drawstyle="steps-post", label=name)
    ax.set_ylim(0, ymax)
    ax.set_ylabel(t(lang, "aqi_axis"))
    ax.set_xlabel(t(lang, "time_axis"))
    ax.set_title(t(lang, "aqi"), fontsize=11, loc="left")
    _time_axis(ax, start, end)
    ax.legend(loc="best", fontsize=8, ncols=2, framealpha=0.85)
    return _png(fig)
