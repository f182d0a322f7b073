"""Giao thông / Traffic: speed and congestion per segment, and the congestion map.

Congestion is the speed as a share of the segment's free-flow speed (``extra.free_flow_kmh`` in
the registry), banded as the congestion detector does (:data:`detectors.traffic.LEVELS`).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import geomap, timeseries
from grafana_foundation_sdk.models import common as cm

from dashboards.common import SENSOR_FILTER, Lang, base_dashboard, grid, thresholds, tiered, tr
from dashboards.panels import map_panel, marker_layer, series_panel
from detectors.traffic import LEVELS

UID = "ioc-traffic"
KINDS = ("traffic",)
#: Colour per level, best first (same order as LEVELS).
LEVEL_COLORS = ("green", "yellow", "orange", "red")

SPEED_SQL = tiered(["speed_kmh"], "mean", "s.name", kinds=KINDS)

#: Mean speed / free flow, in %, per segment and interval (tiers as for every reading query).
CONGESTION_SQL = tiered(["speed_kmh"], "mean", "s.name", kinds=KINDS,
                        factor="(100.0 / nullif((s.extra->>'free_flow_kmh')::float, 0))")

#: The last 15 minutes of the range on each segment, from the 1-minute roll-up.
CONGESTION_MAP_SQL = f"""
SELECT s.sensor_id, s.name, s.lat AS latitude, s.lon AS longitude,
       (s.extra->>'free_flow_kmh')::float AS free_flow_kmh,
       sum(r.mean * r.n) / sum(r.n) AS speed_kmh,
       100.0 * (sum(r.mean * r.n) / sum(r.n)) / nullif((s.extra->>'free_flow_kmh')::float, 0) AS speed_pct
FROM sensors s JOIN readings_1m r ON r.sensor_id = s.sensor_id
WHERE s.kind = 'traffic' AND s.retired_at IS NULL AND s.lat IS NOT NULL AND {SENSOR_FILTER}
  AND r.metric = 'speed_kmh'
  AND r.bucket > $__timeTo()::timestamptz - interval '15 minutes' AND r.bucket <= $__timeTo()::timestamptz
GROUP BY s.sensor_id
ORDER BY s.sensor_id
"""


def level_thresholds() -> list[tuple[float | None, str]]:
    """Speed share (%) -> colour, worst band first as Grafana wants ascending steps."""
    steps: list[tuple[float | None, str]] = []
    for (_, _, bound), color in reversed(list(zip(LEVELS, LEVEL_COLORS, strict=True))):
        steps.append((None if not steps else bound * 100.0, color))
    return steps


def speed_panel(lang: Lang) -> timeseries.Panel:
    return (
        series_panel(1, tr(lang, "Tốc độ theo đoạn đường", "Speed per segment"), SPEED_SQL, grid(0, 0, 12, 10))
        .unit("velocitykmh")
        .line_width(1)
        .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE).placement(cm.LegendPlacement.RIGHT)
                .show_legend(True).calcs(["lastNotNull", "min"]))
    )


def congestion_panel(lang: Lang) -> timeseries.Panel:
    return (
        series_panel(2, tr(lang, "Mức ùn tắc: tốc độ so với tốc độ tự do", "Congestion: speed as % of free flow"),
                     CONGESTION_SQL, grid(12, 0, 12, 10))
        .unit("percent")
        .min(0)
        .thresholds(thresholds(level_thresholds()))
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE_AND_AREA))
    )


def congestion_map(lang: Lang) -> geomap.Panel:
    return (
        map_panel(3, tr(lang, "Bản đồ ùn tắc (15 phút gần nhất)", "Congestion map (last 15 minutes)"),
                  CONGESTION_MAP_SQL, grid(0, 10, 24, 14),
                  layer=marker_layer(tr(lang, "Đoạn đường", "Segments"), "speed_pct", 8), zoom=11)
        .unit("percent")
        .thresholds(thresholds(level_thresholds()))
    )


def dashboard(lang: Lang) -> dash.Dashboard:
    d = base_dashboard(UID, tr(lang, "Giao thông", "Traffic"), lang, KINDS, time_from="now-6h")
    for p in (speed_panel(lang), congestion_panel(lang), congestion_map(lang)):
        d = d.with_panel(p)
    return d
