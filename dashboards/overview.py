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

from dashboards import aqi
from dashboards.common import SENSOR_FILTER, Lang, base_dashboard, grid, prop, thresholds, tr, value_map
from dashboards.panels import map_panel, marker_layer, sql_panel, table_panel, tiles_panel
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


def severity_prop(lang: Lang) -> dm.DynamicConfigValue:
    return prop("mappings", [m.to_json() for m in severity_mappings(lang)])


def sensor_map(lang: Lang) -> geomap.Panel:
    return (
        map_panel(1, tr(lang, "Bản đồ cảm biến theo trạng thái", "Sensors by status"), STATUS_SQL, grid(0, 5, 14, 16),
                  description=tr(lang, "Im lặng > lỗi > báo động > cảnh báo > bình thường",
                                 "Silent > fault > alarm > warning > ok"),
                  layer=marker_layer(tr(lang, "Cảm biến", "Sensors"), "status", 7), zoom=9)
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(False).show_attribution(True))
        .mappings(status_mappings(lang))
    )


def open_alerts(lang: Lang) -> table.Panel:
    return (
        table_panel(2, tr(lang, "Cảnh báo đang mở (theo mức độ)", "Open alerts (by severity)"), OPEN_ALERTS_SQL,
                    grid(14, 5, 10, 16))
        .override_by_name("severity", [severity_prop(lang), prop("custom.cellOptions", {"type": "color-background"})])
        .override_by_name("peak_severity", [severity_prop(lang)])
    )


def readings_rate(lang: Lang) -> stat.Panel:
    return (
        sql_panel(stat.Panel(), 3, tr(lang, "Bản ghi/giây", "Readings/s"), READINGS_PER_S_SQL, grid(0, 0, 6, 5),
                  format="time_series")
        .unit("reqps")
        .decimals(1)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds([(None, "blue")]))
    )


def alerts_by_severity(lang: Lang) -> stat.Panel:
    return (
        tiles_panel(4, tr(lang, "Cảnh báo đang mở theo mức độ", "Open alerts by severity"), ALERTS_BY_SEVERITY_SQL,
                    grid(6, 0, 9, 5))
        .thresholds(thresholds([(None, "green"), (1, "orange")]))
        .override_by_name("metric", [severity_prop(lang)])
    )


def aqi_now(lang: Lang) -> stat.Panel:
    return aqi.aqi_now_panel(lang, panel_id=5, pos=grid(15, 0, 9, 5))


def dashboard(lang: Lang) -> dash.Dashboard:
    d = base_dashboard(UID, tr(lang, "Tổng quan", "Overview"), lang, KINDS, time_from="now-6h")
    for p in (readings_rate(lang), alerts_by_severity(lang), aqi_now(lang), sensor_map(lang), open_alerts(lang)):
        d = d.with_panel(p)
    return d
