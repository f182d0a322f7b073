"""Tổng quan / Overview: the map of every sensor by status, the open alerts and three KPIs.

Sensor status, worst first (a faulty or silent sensor's own hazard readings are not trusted,
as the alert stage's inhibition does): ``silent`` (an open ``sensor_silent`` alert), ``fault``
(any other open health alert), ``alarm`` (an open critical alert), ``warning`` (an open warning
or info alert), else ``ok``.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import geomap, stat, table
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import geomap as gm

from dashboards import aqi
from dashboards.common import (
    SENSOR_FILTER,
    Lang,
    Sql,
    base_dashboard,
    ds,
    grid,
    prop,
    thresholds,
    tr,
    value_map,
)
from ioc.domain import KINDS

UID = "ioc-overview"

#: status -> (vi, en, colour); the order is the precedence in STATUS_SQL.
STATUSES: dict[str, tuple[str, str, str]] = {
    "silent": ("Mất tín hiệu", "Silent", "#8e8e8e"),
    "fault": ("Lỗi cảm biến", "Fault", "purple"),
    "alarm": ("Báo động", "Alarm", "red"),
    "warning": ("Cảnh báo", "Warning", "orange"),
    "ok": ("Bình thường", "OK", "green"),
}

STATUS_SQL = f"""
SELECT s.sensor_id, s.name, s.kind, s.district, s.lat AS latitude, s.lon AS longitude,
       CASE WHEN bool_or(a.rule = 'sensor_silent') THEN 'silent'
            WHEN bool_or(a.kind = 'health') THEN 'fault'
            WHEN bool_or(a.severity = 'critical') THEN 'alarm'
            WHEN bool_or(a.severity IN ('warning', 'info')) THEN 'warning'
            ELSE 'ok' END AS status,
       count(a.alert_id) AS open_alerts
FROM sensors s
LEFT JOIN alerts a ON a.sensor_id = s.sensor_id AND a.state <> 'resolved'
WHERE s.retired_at IS NULL AND s.lat IS NOT NULL AND s.lon IS NOT NULL AND {SENSOR_FILTER}
GROUP BY s.sensor_id
ORDER BY s.sensor_id
"""

SEVERITY_ORDER = "CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END"

OPEN_ALERTS_SQL = f"""
SELECT a.alert_id, a.severity, a.peak_severity, a.state, a.kind, s.name AS sensor, a.sensor_id, s.district,
       a.opened_at, a.updated_at, a.value, a.threshold, a.message
FROM alerts a JOIN sensors s ON s.sensor_id = a.sensor_id
WHERE a.state <> 'resolved' AND {SENSOR_FILTER}
ORDER BY {SEVERITY_ORDER}, a.opened_at DESC
LIMIT 500
"""

ALERTS_BY_SEVERITY_SQL = f"""
SELECT v.severity AS metric, count(x.alert_id) AS value
FROM (VALUES ('critical', 0), ('warning', 1), ('info', 2)) AS v (severity, ord)
LEFT JOIN (
  SELECT a.alert_id, a.severity FROM alerts a JOIN sensors s ON s.sensor_id = a.sensor_id
  WHERE a.state <> 'resolved' AND {SENSOR_FILTER}
) x ON x.severity = v.severity
GROUP BY v.severity, v.ord
ORDER BY v.ord
"""

#: Per worker, the mean rate in each interval; then summed over workers.
READINGS_PER_S_SQL = """
SELECT "time", sum(v) AS "readings/s"
FROM (
  SELECT $__timeGroupAlias(ts, $__interval), worker, avg(value) AS v
  FROM pipeline_metrics
  WHERE stage = 'sink' AND metric = 'readings_per_s' AND $__timeFilter(ts)
  GROUP BY 1, 2
) w
GROUP BY 1
ORDER BY 1
"""


def status_mappings(lang: Lang) -> list[dm.ValueMapping]:
    return [value_map({k: (tr(lang, vi, en), c) for k, (vi, en, c) in STATUSES.items()})]


def severity_mappings(lang: Lang) -> list[dm.ValueMapping]:
    return [value_map({
        "critical": (tr(lang, "Nghiêm trọng", "Critical"), "red"),
        "warning": (tr(lang, "Cảnh báo", "Warning"), "orange"),
        "info": (tr(lang, "Thông tin", "Info"), "blue"),
    })]


def sensor_map(lang: Lang) -> geomap.Panel:
    markers = (
        cb.MapLayerOptions()
        .type("markers")
        .name(tr(lang, "Cảm biến", "Sensors"))
        .location(cb.FrameGeometrySource().mode(cm.FrameGeometrySourceMode.COORDS)
                  .latitude("latitude").longitude("longitude"))
        .tooltip(True)
        .config({
            "showLegend": True,
            "style": {
                "color": {"field": "status", "fixed": "green"},
                "opacity": 0.9,
                "size": {"fixed": 7, "max": 12, "min": 4},
                "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
            },
        })
    )
    return (
        geomap.Panel()
        .id(1)
        .title(tr(lang, "Bản đồ cảm biến theo trạng thái", "Sensors by status"))
        .description(tr(lang, "Im lặng > lỗi > báo động > cảnh báo > bình thường",
                        "Silent > fault > alarm > warning > ok"))
        .datasource(ds())
        .with_target(Sql(STATUS_SQL))
        .grid_pos(grid(0, 5, 14, 16))
        .view(geomap.MapViewConfig().id("coords").lat(12).lon(109).zoom(9))
        .basemap(cb.MapLayerOptions().type("default").name("Basemap"))
        .layers([markers])
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(False).show_attribution(True))
        .tooltip(geomap.TooltipOptions().mode(gm.TooltipMode.DETAILS))
        .mappings(status_mappings(lang))
    )


def open_alerts(lang: Lang) -> table.Panel:
    return (
        table.Panel()
        .id(2)
        .show_header(True)
        .title(tr(lang, "Cảnh báo đang mở (theo mức độ)", "Open alerts (by severity)"))
        .datasource(ds())
        .with_target(Sql(OPEN_ALERTS_SQL))
        .grid_pos(grid(14, 5, 10, 16))
        .override_by_name("severity", [prop("mappings", [m.to_json() for m in severity_mappings(lang)]),
                                       prop("custom.cellOptions", {"type": "color-background"})])
        .override_by_name("peak_severity", [prop("mappings", [m.to_json() for m in severity_mappings(lang)])])
    )


def readings_rate(lang: Lang) -> stat.Panel:
    return (
        stat.Panel()
        .id(3)
        .title(tr(lang, "Bản ghi/giây", "Readings/s"))
        .datasource(ds())
        .with_target(Sql(READINGS_PER_S_SQL, format="time_series"))
        .grid_pos(grid(0, 0, 6, 5))
        .unit("reqps")
        .decimals(1)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds([(None, "blue")]))
    )


def alerts_by_severity(lang: Lang) -> stat.Panel:
    return (
        stat.Panel()
        .id(4)
        .title(tr(lang, "Cảnh báo đang mở theo mức độ", "Open alerts by severity"))
        .datasource(ds())
        .with_target(Sql(ALERTS_BY_SEVERITY_SQL))
        .grid_pos(grid(6, 0, 9, 5))
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(True).fields("/^value$/"))
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .thresholds(thresholds([(None, "green"), (1, "orange")]))
        .override_by_name("metric", [prop("mappings", [m.to_json() for m in severity_mappings(lang)])])
    )


def aqi_now(lang: Lang) -> stat.Panel:
    return aqi.aqi_now_panel(lang, panel_id=5, pos=grid(15, 0, 9, 5))


def dashboard(lang: Lang) -> dash.Dashboard:
    d = base_dashboard(UID, tr(lang, "Tổng quan", "Overview"), lang, KINDS, time_from="now-6h")
    for p in (readings_rate(lang), alerts_by_severity(lang), aqi_now(lang), sensor_map(lang), open_alerts(lang)):
        d = d.with_panel(p)
    return d
