"""Sức khỏe hệ thống / Pipeline health: ingest, lag, latency, dead letters, silent sensors, delivery backlog.

The worker and the bridge write per-stage counters to ``pipeline_metrics`` (``streams.pipeline_stats``):
rates as ``<name>_per_s``, latency quantiles as ``e2e_latency_ms_p50|p99``, the consumer lag as
``consumer_lag_envelopes``. Each worker writes its own rows, so rates are averaged per worker and
interval first, then summed over workers. Every bridge writes the MQTT broker's dropped messages as
stage ``mqtt_broker`` with the broker as its worker, so several bridges average into one series.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common as cm

from dashboards.common import SENSOR_FILTER, Lang, base_dashboard, grid, prop, tr
from dashboards.panels import series_panel, sql_panel, table_panel
from ioc.domain import KINDS

UID = "ioc-pipeline-health"


def _per_worker(where: str, series: str, combine: str) -> str:
    return f"""
SELECT "time", metric, {combine}(v) AS value
FROM (
  SELECT $__timeGroupAlias(ts, $__interval), {series} AS metric, worker, avg(value) AS v
  FROM pipeline_metrics
  WHERE {where} AND $__timeFilter(ts)
  GROUP BY 1, 2, 3
) w
GROUP BY 1, 2
ORDER BY 1, 2
"""


INGEST_SQL = _per_worker(
    "((stage = 'bridge' AND metric IN ('received_per_s', 'rejected_per_s'))"
    " OR (stage = 'sink' AND metric IN ('readings_per_s', 'rows_inserted_per_s'))"
    " OR (stage = 'mqtt_broker' AND metric = 'dropped_per_s'))",
    "stage || ' ' || replace(metric, '_per_s', '')", "sum",
)
LAG_SQL = _per_worker("metric = 'consumer_lag_envelopes'", "stage", "sum")
LATENCY_SQL = _per_worker(
    "metric IN ('e2e_latency_ms_p50', 'e2e_latency_ms_p99')",
    "stage || ' ' || replace(metric, 'e2e_latency_ms_', '')", "max",
)

DEADLETTERS_SQL = """
SELECT reason, sum(occurrences) AS dead_letters
FROM deadletters
WHERE coalesce(last_seen_at, received_at) >= $__timeFrom()::timestamptz AND received_at <= $__timeTo()::timestamptz
GROUP BY reason
ORDER BY dead_letters DESC, reason
"""

#: A sensor is silent at the end of the range when it has an open silence alert, or nothing
#: arrived for three of its reporting intervals (or ever). The last reading per metric comes
#: from the roll-up's primary key (sensor_id, metric, bucket), one index probe each.
SILENT_SQL = f"""
SELECT s.sensor_id, s.name, s.kind, s.district, l.last_seen,
       extract(epoch FROM $__timeTo()::timestamptz - l.last_seen) AS silent_for_s,
       s.interval_s, (a.alert_id IS NOT NULL) AS alert_open
FROM sensors s
LEFT JOIN LATERAL (
  SELECT max(m.bucket) + interval '1 minute' AS last_seen
  FROM jsonb_object_keys(s.metrics) AS k (metric)
  CROSS JOIN LATERAL (
    SELECT r.bucket FROM readings_1m r
    WHERE r.sensor_id = s.sensor_id AND r.metric = k.metric AND r.bucket <= $__timeTo()::timestamptz
    ORDER BY r.bucket DESC LIMIT 1
  ) m
) l ON true
LEFT JOIN alerts a ON a.sensor_id = s.sensor_id AND a.rule = 'sensor_silent' AND a.state <> 'resolved'
WHERE s.retired_at IS NULL AND {SENSOR_FILTER}
  AND (a.alert_id IS NOT NULL OR l.last_seen IS NULL
       OR l.last_seen < $__timeTo()::timestamptz - 3 * make_interval(secs => coalesce(s.interval_s, 300)))
ORDER BY l.last_seen NULLS FIRST, s.sensor_id
"""

#: Notifications waiting, and given up, per channel (alert_outbox) as of the end of the range.
OUTBOX_SQL = """
SELECT channel,
       count(*) FILTER (WHERE (delivered_at IS NULL OR delivered_at > $__timeTo()::timestamptz)
                        AND (failed_at IS NULL OR failed_at > $__timeTo()::timestamptz)) AS pending,
       count(*) FILTER (WHERE (delivered_at IS NULL OR delivered_at > $__timeTo()::timestamptz)
                        AND (failed_at IS NULL OR failed_at > $__timeTo()::timestamptz) AND attempts > 0) AS retrying,
       count(*) FILTER (WHERE failed_at <= $__timeTo()::timestamptz) AS failed,
       max(extract(epoch FROM $__timeTo()::timestamptz - created_at))
         FILTER (WHERE (delivered_at IS NULL OR delivered_at > $__timeTo()::timestamptz)
                 AND (failed_at IS NULL OR failed_at > $__timeTo()::timestamptz)) AS oldest_pending_s,
       count(*) FILTER (WHERE $__timeFilter(delivered_at)) AS delivered_in_range,
       (array_agg(last_error ORDER BY created_at DESC) FILTER (WHERE last_error IS NOT NULL AND last_error <> ''))[1]
         AS last_error
FROM alert_outbox
WHERE created_at <= $__timeTo()::timestamptz
GROUP BY channel
ORDER BY pending DESC, channel
"""


def dashboard(lang: Lang) -> dash.Dashboard:
    d = base_dashboard(UID, tr(lang, "Sức khỏe hệ thống", "Pipeline health"), lang, KINDS, time_from="now-6h")
    ingest = series_panel(1, tr(lang, "Tốc độ tiếp nhận (bản ghi/giây)", "Ingest rate (records/s)"), INGEST_SQL,
                          grid(0, 0, 12, 8)).unit("reqps")
    lag = series_panel(2, tr(lang, "Độ trễ hàng đợi Kafka (envelope)", "Consumer lag (envelopes)"), LAG_SQL,
                       grid(12, 0, 12, 8)).unit("short")
    latency = series_panel(3, tr(lang, "Độ trễ đầu-cuối p50/p99 theo tầng", "End-to-end latency p50/p99 per stage"),
                           LATENCY_SQL, grid(0, 8, 12, 8)).unit("ms")
    dead = (
        sql_panel(barchart.Panel(), 4, tr(lang, "Bản tin lỗi theo lý do", "Dead letters by reason"), DEADLETTERS_SQL,
                  grid(12, 8, 12, 8))
        .orientation(cm.VizOrientation.HORIZONTAL)
        .x_field("reason")
        .show_value(cm.VisibilityMode.AUTO)
        .fill_opacity(80)
        .gradient_mode(cm.GraphGradientMode.NONE)
        .line_width(1)
    )
    silent = (
        table_panel(5, tr(lang, "Cảm biến mất tín hiệu", "Silent sensors"), SILENT_SQL, grid(0, 16, 14, 10),
                    description=tr(lang, "Có cảnh báo im lặng, hoặc không có dữ liệu trong 3 chu kỳ báo cáo",
                                   "An open silence alert, or no data for three reporting intervals"))
        .override_by_name("silent_for_s", [prop("unit", "s")])
        .override_by_name("interval_s", [prop("unit", "s")])
    )
    backlog = (
        table_panel(6, tr(lang, "Hàng đợi gửi cảnh báo", "Alert-delivery backlog"), OUTBOX_SQL, grid(14, 16, 10, 10),
                    description=tr(lang, "Thông báo chưa gửi theo kênh (bảng alert_outbox)",
                                   "Undelivered notifications per channel (alert_outbox)"))
        .override_by_name("oldest_pending_s", [prop("unit", "s")])
    )
    for p in (ingest, lag, latency, dead, silent, backlog):
        d = d.with_panel(p)
    return d
