"""From loaded report data to the page: choose the gauges, compute VN_AQI, draw, render, write.

The CLI loads :class:`~ioc.storage.report_queries.ReportData` and calls :func:`write_report`; the
time of generation is passed in (no clock read here), so the same data renders the same page.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from ioc.composition.report.aqi import aqi_series
from ioc.composition.report.charts import BD_STYLE, aqi_png, gauge_png, marks_for, rain_png
from ioc.composition.report.html import Chart, Page, render_page
from ioc.composition.report.i18n import Lang, number, t, when
from ioc.domain import SEVERITIES
from ioc.storage.report_queries import AlertRow, Point, ReportData, SensorRow

#: Charts per section; beyond these a page gets too long to print, and the tables still list everything.
MAX_GAUGES: Final = 24
MAX_RAIN_GAUGES: Final = 8
MAX_AIR_STATIONS: Final = 8
#: Points per gauge line: enough for a 1000 px chart, few enough for a month-long window.
_GAUGE_POINTS: Final = 1500
HEALTH_KIND: Final = "health"
REPORT_FILE: Final = "index.html"
_RANK: Final = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class ReportLabel:
    """What the event was, for the header: a scenario's name and description, or an operator's title."""

    name: str
    description: str = ""


def buckets_for(start: datetime, end: datetime) -> tuple[timedelta, timedelta]:
    """(water-level bucket, rain bucket) for a window: whole minutes, and hourly or daily rain.

    >>> from datetime import UTC
    >>> t0 = datetime(2025, 12, 4, tzinfo=UTC)
    >>> buckets_for(t0, t0 + timedelta(hours=16))
    (datetime.timedelta(seconds=60), datetime.timedelta(seconds=3600))
    >>> buckets_for(t0, t0 + timedelta(days=30))
    (datetime.timedelta(seconds=1740), datetime.timedelta(days=1))
    """
    span = (end - start).total_seconds()
    water = timedelta(minutes=max(1, math.ceil(span / _GAUGE_POINTS / 60)))
    rain = timedelta(hours=1) if span <= 7 * 86400 else timedelta(days=1)
    return water, rain


def bands_reached(levels: dict[str, float | None] | None, peak: float | None) -> int:
    """How many of BĐ I/II/III a peak level reached (0 without alarm levels or data).

    >>> bands_reached({"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}, 9.6), bands_reached(None, 3.0)
    (2, 0)
    """
    if not levels or peak is None:
        return 0
    return sum(1 for v in levels.values() if v is not None and peak >= v)


def _gauge_order(data: ReportData) -> list[str]:
    """Gauges with data or with a flood alert: the highest BĐ reached first, then the worst alert, then by id."""
    flood = [a for a in data.alerts if a.kind == "flood"]
    ids = set(data.water_levels) | {
        sid for a in flood for sid in (a.sensor_id, *a.members)
        if sid in data.sensors and data.sensors[sid].kind == "water_level"
    }

    def key(sid: str) -> tuple[int, int, str]:
        pts = data.water_levels.get(sid)
        sensor = data.sensors.get(sid)
        bands = bands_reached(sensor.alarm_levels if sensor else None, max(p.value for p in pts) if pts else None)
        worst = max((_RANK.get(a.peak_severity, 0) + 1 for a in flood if a.concerns(sid)), default=0)
        return (-bands, -worst, sid)

    return sorted(ids, key=key)


def _name(data: ReportData, sensor_id: str) -> str:
    s = data.sensors.get(sensor_id)
    return s.name if s is not None else sensor_id


def _gauge_caption(sensor: SensorRow, points: list[Point], lang: Lang) -> str:
    """'Name (ID): peak 11,62 m at 10:05 04/12/2025, reached BĐ III' — what staff report upwards."""
    head = f"{sensor.name} ({sensor.sensor_id})"
    if not points:
        return head
    peak = max(points, key=lambda p: (p.value, -p.ts.timestamp()))  # the first time the peak was reached
    text = f"{head}: {t(lang, 'gauge_peak', peak=number(peak.value, lang), at=when(peak.ts, lang))}"
    if sensor.alarm_levels:
        reached = [k for k, v in sorted(sensor.alarm_levels.items()) if k in BD_STYLE and v is not None
                   and peak.value >= v]  # bd1 < bd2 < bd3: the last one reached is the highest
        name = BD_STYLE[reached[-1]][0] if reached else None
        text += ", " + (t(lang, "gauge_band", band=name) if name else t(lang, "gauge_below"))
    return text


def _gauge_charts(data: ReportData, lang: Lang) -> tuple[list[Chart], str | None]:
    order = _gauge_order(data)
    charts: list[Chart] = []
    for sid in order[:MAX_GAUGES]:
        sensor = data.sensors.get(sid)
        if sensor is None:  # readings from a sensor no longer in the registry: draw it bare
            sensor = SensorRow(sid, "water_level", sid, "", None, None, True)
        marks = marks_for(sid, data.alerts, data.events, data.start, data.end)
        predictions = [(a.predicted_crossing_at, a.threshold) for a in data.alerts
                       if a.sensor_id == sid and a.predicted_crossing_at is not None and a.threshold is not None]
        points = data.water_levels.get(sid, [])
        png = gauge_png(sensor, points, marks, predictions, data.start, data.end, lang)
        charts.append(Chart(f"gauge:{sid}", _gauge_caption(sensor, points, lang),
                            t(lang, "chart_alt_gauge", name=sensor.name), png))
    note = t(lang, "gauges_more", shown=MAX_GAUGES, total=len(order)) if len(order) > MAX_GAUGES else None
    return charts, note


def _rain_chart(data: ReportData, lang: Lang) -> Chart | None:
    totals = {sid: sum(p.value for p in pts) for sid, pts in data.rain.items()}
    top = sorted(totals, key=lambda sid: (-totals[sid], sid))[:MAX_RAIN_GAUGES]
    if not top:
        return None
    series: dict[str, list[Point]] = {_name(data, sid): data.rain[sid] for sid in sorted(top)}
    unit = t(lang, "bucket_h" if data.rain_bucket <= timedelta(hours=1) else "bucket_d")
    png = rain_png(series, data.rain_bucket, data.start, data.end, lang)
    return Chart("rain", t(lang, "rain"), t(lang, "chart_alt_rain", bucket=unit), png)


def _aqi_chart(data: ReportData, lang: Lang) -> Chart | None:
    per_station = {sid: aqi_series(by_metric, data.start, data.end) for sid, by_metric in data.air_hourly.items()}
    per_station = {sid: pts for sid, pts in per_station.items() if pts}
    if not per_station:
        return None
    top = sorted(per_station, key=lambda sid: (-max(p.aqi for p in per_station[sid]), sid))[:MAX_AIR_STATIONS]
    series = {_name(data, sid): per_station[sid] for sid in sorted(top)}
    return Chart("aqi", t(lang, "aqi"), t(lang, "chart_alt_aqi"), aqi_png(series, data.start, data.end, lang))


def _split(alerts: list[AlertRow]) -> tuple[list[AlertRow], list[AlertRow]]:
    hazards = [a for a in alerts if a.kind != HEALTH_KIND]
    faults = [a for a in alerts if a.kind == HEALTH_KIND]
    return hazards, faults


def render_report(data: ReportData, *, lang: Lang = "vi", label: ReportLabel | None = None,
                  generated_at: datetime) -> str:
    """The HTML of one report (charts inlined)."""
    gauges, gauges_note = _gauge_charts(data, lang)
    hazards, faults = _split(data.alerts)
    unit = t(lang, "bucket_h") if data.water_bucket <= timedelta(hours=1) else t(lang, "bucket_d")
    minutes = int(data.water_bucket.total_seconds() // 60)
    bucket = unit if minutes == 60 else (f"{minutes} {t(lang, 'minutes')}" if minutes > 1 else t(lang, "minutes"))
    notes = [t(lang, "note_tz"), t(lang, "note_bd"), t(lang, "note_marks"), t(lang, "note_levels", bucket=bucket)]
    if any(not e.event_time_known for e in data.events):
        notes.append(t(lang, "note_recorded"))
    notes.extend(data.notes)
    page = Page(
        lang=lang, start=data.start, end=data.end, generated_at=generated_at, readings=data.readings,
        sensors_reporting=data.sensors_reporting, sensors=data.sensors, alerts=hazards, faults=faults,
        gauges=gauges, gauges_note=gauges_note, rain=_rain_chart(data, lang), aqi=_aqi_chart(data, lang),
        scenario=label.name if label else None, scenario_description=label.description if label else None,
        alerts_truncated=len(data.alerts) if data.alerts_truncated else None, notes=notes,
    )
    return render_page(page)


def write_report(data: ReportData, out_dir: Path, *, lang: Lang = "vi", label: ReportLabel | None = None,
                 generated_at: datetime) -> Path:
    """Write ``out_dir/index.html`` atomically (a reader never sees half a report) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_report(data, lang=lang, label=label, generated_at=generated_at), encoding="utf-8")
    os.replace(tmp, path)
    return path
