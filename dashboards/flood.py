"""Lũ lụt / Flood: levels per gauge with BĐ I/II/III lines, rainfall, predicted crossings and lead time.

The alarm levels come from each gauge's ``alarm_levels`` in the sensor registry (QĐ 05/2020/QĐ-TTg
values from the domain data), so a gauge added to the registry gets its lines without a dashboard
change. One level panel repeats per gauge (the hidden ``gauge`` variable).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (
    SENSOR_FILTER,
    Lang,
    base_dashboard,
    grid,
    prop,
    query_variable,
    thresholds,
    tiered,
    tr,
)
from dashboards.panels import dashed_line, series_panel, table_panel
from detectors.rain import CATEGORIES_24H

UID = "ioc-flood"
KINDS = ("water_level", "rain", "tide")
ALARM_COLORS = {"I": "yellow", "II": "orange", "III": "red"}

GAUGE_VARIABLE_SQL = (
    "SELECT sensor_id AS __value, name AS __text FROM sensors WHERE kind = 'water_level' AND retired_at IS NULL "
    "AND alarm_levels IS NOT NULL AND district IN ($district) AND sensor_id IN ($sensor) ORDER BY sensor_id"
)

LEVEL_SQL = tiered(["water_level_m"], "max", "s.name", kinds=("water_level",),
                   where=f"{SENSOR_FILTER} AND s.sensor_id IN ($gauge)")

#: Flat BĐ lines across the range (two points each), from the registry.
ALARM_LINES_SQL = f"""
SELECT t.time AS "time", s.name || ' · BĐ ' || l.level AS metric, (s.alarm_levels->>l.key)::float AS value
FROM sensors s
CROSS JOIN (VALUES ('bd1', 'I'), ('bd2', 'II'), ('bd3', 'III')) AS l (key, level)
CROSS JOIN (VALUES ($__timeFrom()::timestamptz), ($__timeTo()::timestamptz)) AS t (time)
WHERE s.kind = 'water_level' AND s.sensor_id IN ($gauge) AND s.alarm_levels->>l.key IS NOT NULL
  AND {SENSOR_FILTER}
ORDER BY 1, 2
"""

RAIN_SQL = tiered(["rain_mm"], "sum", "s.name", kinds=("rain",))


def _window(hours: int) -> str:
    return (f"sum(r.mean * r.n) FILTER (WHERE r.bucket > $__timeTo()::timestamptz - interval '{hours} hours')"
            f" AS mm_{hours}h")


#: Totals ending at the end of the range, from the 1-minute roll-up (exact sums: mean * n).
RAIN_TOTALS_SQL = f"""
SELECT s.name AS station, s.district,
       {_window(1)}, {_window(3)}, {_window(6)}, {_window(24)},
       sum(r.mean * r.n) FILTER (WHERE $__timeFilter(r.bucket)) AS mm_range
FROM sensors s JOIN readings_1m r ON r.sensor_id = s.sensor_id
WHERE s.kind = 'rain' AND r.metric = 'rain_mm' AND {SENSOR_FILTER}
  AND r.bucket > least($__timeFrom()::timestamptz, $__timeTo()::timestamptz - interval '24 hours')
  AND r.bucket <= $__timeTo()::timestamptz
GROUP BY s.sensor_id, s.name, s.district
ORDER BY mm_24h DESC NULLS LAST, station
"""

#: Early warnings and alarm-level alerts that carry a projection, overlapping the range.
CROSSINGS_SQL = f"""
SELECT a.alert_id, s.name AS gauge, a.rule, a.severity, a.state, a.threshold,
       a.predicted_crossing_at, a.lead_time_s, a.opened_at, a.resolved_at, a.message
FROM alerts a JOIN sensors s ON s.sensor_id = a.sensor_id
WHERE a.kind = 'flood' AND (a.predicted_crossing_at IS NOT NULL OR a.lead_time_s IS NOT NULL)
  AND a.opened_at <= $__timeTo()::timestamptz
  AND coalesce(a.resolved_at, $__timeTo()::timestamptz) >= $__timeFrom()::timestamptz
  AND {SENSOR_FILTER}
ORDER BY a.predicted_crossing_at NULLS LAST, a.opened_at
"""


def gauge_variable(lang: Lang) -> dash.QueryVariable:
    return query_variable("gauge", tr(lang, "Trạm thủy văn", "River gauge"), GAUGE_VARIABLE_SQL,
                          hide=dm.VariableHide.HIDE_VARIABLE)


def level_panel(lang: Lang) -> timeseries.Panel:
    p = (
        series_panel(1, tr(lang, "Mực nước: ${gauge}", "Water level: ${gauge}"), [LEVEL_SQL, ALARM_LINES_SQL],
                     grid(0, 0, 12, 9),
                     description=tr(lang, "Mực nước cao nhất mỗi khoảng; đường BĐ I/II/III theo QĐ 05/2020/QĐ-TTg",
                                    "Highest level per interval; BĐ I/II/III alarm levels (QĐ 05/2020/QĐ-TTg)"))
        .repeat("gauge")
        .repeat_direction("h")
        .unit("lengthm")
        .line_width(2)
    )
    for level, color in ALARM_COLORS.items():
        p = p.override_by_regexp(f".* · BĐ {level}$", [
            dashed_line(),
            prop("custom.lineWidth", 1),
            prop("color", {"fixedColor": color, "mode": "fixed"}),
        ])
    return p


def rain_panel(lang: Lang) -> timeseries.Panel:
    return (
        series_panel(2, tr(lang, "Lượng mưa theo khoảng", "Rainfall per interval"), RAIN_SQL, grid(0, 18, 14, 9))
        .unit("lengthmm")
        .draw_style(cm.GraphDrawStyle.BARS)
        .fill_opacity(80)
    )


def rain_totals_panel(lang: Lang) -> table.Panel:
    steps: list[tuple[float | None, str]] = [(None, "transparent")]
    for (bound, _vi, _en), color in zip(CATEGORIES_24H[1:], ("blue", "yellow", "orange", "red"), strict=True):
        steps.append((bound, color))
    names = {"mm_1h": "1 h", "mm_3h": "3 h", "mm_6h": "6 h", "mm_24h": "24 h",
             "mm_range": tr(lang, "cả khoảng", "range")}
    p = (
        table_panel(3, tr(lang, "Lượng mưa tích lũy (mm)", "Rainfall accumulation (mm)"), RAIN_TOTALS_SQL,
                    grid(14, 18, 10, 9),
                    description=tr(lang, "Màu cột 24 h theo phân cấp mưa KTTV: 6/15/50/100 mm",
                                   "24 h colour by the KTTV rain classes: 6/15/50/100 mm"))
        .unit("lengthmm")
        .decimals(1)
        .override_by_name("mm_24h", [prop("thresholds", thresholds(steps).build()),
                                     prop("custom.cellOptions", {"type": "color-background"})])
    )
    for col, name in names.items():
        p = p.override_by_name(col, [prop("displayName", name)])
    return p


def crossings_panel(lang: Lang) -> table.Panel:
    return (
        table_panel(4, tr(lang, "Dự báo vượt ngưỡng và thời gian báo trước", "Predicted crossings and lead time"),
                    CROSSINGS_SQL, grid(0, 27, 24, 8))
        .override_by_name("lead_time_s", [prop("unit", "s"), prop("displayName", tr(lang, "báo trước", "lead time"))])
        .override_by_name("predicted_crossing_at", [prop("displayName", tr(lang, "dự báo vượt", "predicted crossing"))])
        .sort_by([cb.TableSortByFieldState().display_name("predicted_crossing_at").desc(False)])
    )


def dashboard(lang: Lang) -> dash.Dashboard:
    d = base_dashboard(UID, tr(lang, "Lũ lụt", "Flood"), lang, KINDS).with_variable(gauge_variable(lang))
    for p in (level_panel(lang), rain_panel(lang), rain_totals_panel(lang), crossings_panel(lang)):
        d = d.with_panel(p)
    return d
