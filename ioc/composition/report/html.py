"""The report page: static HTML with inline CSS and PNGs as data URIs, so one file opens offline.

Every string that came from the database (sensor names, messages, who acknowledged) or from a
scenario file goes through :func:`esc` before it touches the markup; the page carries no script.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Final

from ioc.composition.report.i18n import Lang, duration, label, number, t, when
from ioc.storage.report_queries import AlertRow, SensorRow

_CSS: Final = """
body{font-family:"DejaVu Sans","Noto Sans",Arial,sans-serif;margin:2em auto;max-width:1060px;color:#1b1b1b;
line-height:1.4;padding:0 1em}
header{border-bottom:3px solid #1f4e9a;margin-bottom:1.2em}
h1{margin:0 0 .2em;color:#1f4e9a}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.sub{color:#555;margin:0 0 .6em}dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}
dl.meta dt{font-weight:bold}dl.meta dd{margin:0}
.kpis{display:flex;gap:1em;flex-wrap:wrap}.kpi{border:1px solid #ddd;border-radius:6px;padding:.5em 1em}
.kpi b{display:block;font-size:1.5em}
figure{margin:1em 0;page-break-inside:avoid}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
table{border-collapse:collapse;width:100%;font-size:.85em}th,td{border:1px solid #ccc;padding:.3em .4em;
vertical-align:top;text-align:left}th{background:#f0f3f8}
tr.sev-critical td.sev{background:#f8d0d0}tr.sev-warning td.sev{background:#ffe3c2}tr.sev-info td.sev{background:#fff6c2}
.empty{padding:1em;background:#f7f7f7;border-left:4px solid #999}.num{text-align:right;white-space:nowrap}
footer{margin-top:2em;font-size:.85em;color:#555}
@media print{body{margin:0;max-width:none}h2{page-break-after:avoid}}
"""


def esc(value: object) -> str:
    """Text safe inside an element or a quoted attribute.

    >>> esc('<script>alert("x")</script> & co')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co'
    """
    return escape(str(value), quote=True)


@dataclass(frozen=True)
class Chart:
    """One PNG with its caption; ``key`` names it in the page (``data-chart``)."""

    key: str
    caption: str
    alt: str
    png: bytes


@dataclass(frozen=True)
class Page:
    """What the page shows, already computed: the renderer only formats and escapes."""

    lang: Lang
    start: datetime
    end: datetime
    generated_at: datetime
    readings: int
    sensors_reporting: int
    sensors: Mapping[str, SensorRow]
    alerts: Sequence[AlertRow]
    faults: Sequence[AlertRow]
    gauges: Sequence[Chart] = ()
    gauges_note: str | None = None
    rain: Chart | None = None
    aqi: Chart | None = None
    scenario: str | None = None
    scenario_description: str | None = None
    alerts_truncated: int | None = None
    notes: Sequence[str] = field(default_factory=tuple)


def _img(chart: Chart) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    return (
        f'<figure data-chart="{esc(chart.key)}"><img src="data:image/png;base64,{data}" alt="{esc(chart.alt)}">'
        f"<figcaption>{esc(chart.caption)}</figcaption></figure>"
    )


def _empty(text: str) -> str:
    return f'<p class="empty">{esc(text)}</p>'


def _sensor_cell(sensors: Mapping[str, SensorRow], sensor_id: str) -> str:
    s = sensors.get(sensor_id)
    if s is None or s.name == sensor_id:
        return f"<code>{esc(sensor_id)}</code>"
    district = f", {esc(s.district)}" if s.district else ""
    return f"{esc(s.name)}{district}<br><code>{esc(sensor_id)}</code>"


def _alert_sensor_cell(page: Page, a: AlertRow) -> str:
    cell = _sensor_cell(page.sensors, a.sensor_id)
    others = [m for m in a.members if m != a.sensor_id]
    if others:
        names = ", ".join(esc(page.sensors[m].name if m in page.sensors else m) for m in others)
        cell += f"<br><small>{esc(t(page.lang, 'members'))}: {names}</small>"
    return cell


def _message(a: AlertRow, lang: Lang) -> str:
    return a.message_en if lang == "en" and a.message_en else a.message


def _row(cells: Iterable[tuple[str, str]], attrs: str) -> str:
    return f"<tr {attrs}>" + "".join(f'<td class="{cls}">{html}</td>' for cls, html in cells) + "</tr>"


def _table(headers: Sequence[str], rows: Sequence[str], table_id: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _alerts_table(page: Page) -> str:
    lang = page.lang
    headers = [t(lang, k) for k in ("col_id", "col_sensor", "col_kind", "col_severity", "col_state", "col_opened",
                                    "col_ack", "col_resolved", "col_value", "col_predicted", "col_lead",
                                    "col_message")]
    rows = []
    for a in page.alerts:
        ack = when(a.acknowledged_at, lang)
        if a.acknowledged_at is not None and a.acknowledged_by:
            ack += f" ({t(lang, 'by')} {a.acknowledged_by})"
        resolved = when(a.resolved_at, lang) if a.resolved_at else t(lang, "still_open")
        kind = f"{esc(label(lang, 'kind', a.kind))}<br><small>{esc(label(lang, 'rule', a.rule))}</small>"
        cells = [
            ("num", esc(a.alert_id)),
            ("sensor", _alert_sensor_cell(page, a)),
            ("kind", kind),
            ("sev", esc(label(lang, "sev", a.peak_severity))),
            ("state", esc(label(lang, "state", a.state))),
            ("time", esc(when(a.opened_at, lang))),
            ("time", esc(ack)),
            ("time", esc(resolved)),
            ("num", f"{esc(number(a.value, lang))} / {esc(number(a.threshold, lang))}"),
            ("time", esc(when(a.predicted_crossing_at, lang))),
            ("num lead", esc(duration(a.lead_time_s, lang))),
            ("msg", esc(_message(a, lang))),
        ]
        rows.append(_row(cells, f'class="sev-{esc(a.peak_severity)}" data-alert-id="{esc(a.alert_id)}"'))
    return _table(headers, rows, "alerts")


def _faults_table(page: Page) -> str:
    lang = page.lang
    headers = [t(lang, k) for k in ("col_id", "col_sensor", "col_rule", "col_severity", "col_opened",
                                    "col_resolved", "col_duration", "col_message")]
    rows = []
    for a in page.faults:
        end = a.resolved_at
        lasted = ((end or page.end) - a.opened_at).total_seconds()
        cells = [
            ("num", esc(a.alert_id)),
            ("sensor", _sensor_cell(page.sensors, a.sensor_id)),
            ("rule", esc(label(lang, "rule", a.rule))),
            ("sev", esc(label(lang, "sev", a.peak_severity))),
            ("time", esc(when(a.opened_at, lang))),
            ("time", esc(when(end, lang) if end else t(lang, "still_open"))),
            ("num", esc(duration(lasted, lang)) + ("" if end else "+")),
            ("msg", esc(_message(a, lang))),
        ]
        rows.append(_row(cells, f'class="sev-{esc(a.peak_severity)}" data-alert-id="{esc(a.alert_id)}"'))
    return _table(headers, rows, "faults")


def render_page(page: Page) -> str:
    """The whole HTML document."""
    lang = page.lang
    parts: list[str] = [
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(t(lang, 'title'))}{esc(' – ' + page.scenario) if page.scenario else ''}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{esc(t(lang, 'title'))}</h1><p class=\"sub\">{esc(t(lang, 'subtitle'))}</p>",
        '<dl class="meta">',
        f"<dt>{esc(t(lang, 'period'))}</dt><dd>{esc(when(page.start, lang))} – {esc(when(page.end, lang))}</dd>",
    ]
    if page.scenario:
        desc = f" — {esc(page.scenario_description)}" if page.scenario_description else ""
        parts.append(f"<dt>{esc(t(lang, 'scenario'))}</dt><dd><b>{esc(page.scenario)}</b>{desc}</dd>")
    parts.append(f"<dt>{esc(t(lang, 'generated'))}</dt><dd>{esc(when(page.generated_at, lang))}</dd></dl></header>")

    parts.append(f"<section id=\"summary\"><h2>{esc(t(lang, 'summary'))}</h2>")
    if page.readings == 0 and not page.alerts and not page.faults:
        parts.append(_empty(t(lang, "no_data")))
    kpis = [(page.readings, "readings"), (page.sensors_reporting, "sensors_reporting"),
            (len(page.alerts), "alerts_total"), (len(page.faults), "faults_total")]
    sep = "." if lang == "vi" else ","  # thousands: 12.345 in Vietnamese, 12,345 in English
    parts.append('<div class="kpis">' + "".join(
        f'<div class="kpi" data-kpi="{key}"><b>{f"{n:,}".replace(",", sep)}</b>{esc(t(lang, key))}</div>'
        for n, key in kpis) + "</div></section>")

    parts.append(f"<section id=\"gauges\"><h2>{esc(t(lang, 'gauges'))}</h2>")
    if page.gauges_note:
        parts.append(f"<p>{esc(page.gauges_note)}</p>")
    parts.extend(_img(c) for c in page.gauges)
    if not page.gauges:
        parts.append(_empty(t(lang, "gauges_none")))
    parts.append("</section>")

    parts.append(f"<section id=\"rain-aqi\"><h2>{esc(t(lang, 'rain_aqi'))}</h2>")
    parts.append(_img(page.rain) if page.rain else _empty(t(lang, "rain_none")))
    parts.append(_img(page.aqi) if page.aqi else _empty(t(lang, "aqi_none")))
    parts.append("</section>")

    parts.append(f"<section id=\"alert-list\"><h2>{esc(t(lang, 'alerts'))}</h2>")
    if page.alerts_truncated:
        parts.append(f"<p>{esc(t(lang, 'alerts_truncated', n=page.alerts_truncated))}</p>")
    parts.append(_alerts_table(page) if page.alerts else _empty(t(lang, "alerts_none")))
    parts.append("</section>")

    parts.append(f"<section id=\"fault-list\"><h2>{esc(t(lang, 'faults'))}</h2>")
    parts.append(_faults_table(page) if page.faults else _empty(t(lang, "faults_none")))
    parts.append("</section>")

    parts.append(f"<footer><h2>{esc(t(lang, 'notes'))}</h2><ul>")
    parts.extend(f"<li>{esc(n)}</li>" for n in page.notes)
    parts.append("</ul></footer></body></html>\n")
    return "".join(parts)
