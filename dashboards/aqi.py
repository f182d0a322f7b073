"""Hourly VN_AQI (QĐ 1459/QĐ-TCMT) in SQL, generated from the breakpoints in :mod:`detectors.vn_aqi`.

For each clock hour ``h`` and air station: gases use their mean of hour ``h``; PM2.5 and PM10 use
the NowCast over the 12 hours ending at ``h`` (w = max(Cmin/Cmax, ½), weights w^k for k hours
back, valid with 2 of the latest 3 hours). Each pollutant's sub-index interpolates Bảng 2 (capped
at 500 above the top breakpoint); the AQI is the largest, rounded half up, and needs a PM
sub-index. This is the same calculation as :func:`detectors.vn_aqi.hourly_aqi`, so the wall and
the detector never disagree on a category.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import SENSOR_FILTER, Lang, thresholds, tr
from dashboards.panels import tiles_panel
from detectors.vn_aqi import BREAKPOINTS, CATEGORIES, HOURLY_COLUMN, INDEX_BREAKPOINTS, PM_METRICS


def _breakpoint_rows() -> str:
    """(metric, bp_lo, bp_hi, i_lo, i_hi) for the hourly columns; the last band is open above."""
    rows = []
    for metric, column in sorted(HOURLY_COLUMN.items()):
        bps = BREAKPOINTS[column]
        for k in range(len(bps) - 1):
            lo, hi = bps[k], bps[k + 1]
            if lo is None or hi is None:
                continue
            rows.append(f"('{metric}', {float(lo)}, {float(hi)}, {INDEX_BREAKPOINTS[k]}, {INDEX_BREAKPOINTS[k + 1]})")
    return ",\n    ".join(rows)


def _nowcast_sql() -> str:
    """NowCast from columns c0 (this hour) .. c11 (11 hours back) and weight base ``wt``."""
    num = " + ".join(f"coalesce(power(wt, {k}) * c{k}, 0)" for k in range(12))
    den = " + ".join(f"(c{k} IS NOT NULL)::int * power(wt, {k})" for k in range(12))
    recent = " + ".join(f"(c{k} IS NOT NULL)::int" for k in range(3))
    return f"CASE WHEN {recent} >= 2 THEN ({num}) / ({den}) END"


def hourly_aqi_cte(first_hour: str, last_hour: str) -> str:
    """CTEs ending in ``aqi(h, sensor_id, name, aqi)`` for the clock hours ``first_hour`` .. ``last_hour``.

    Both bounds are SQL expressions of Grafana's time macros only, so PostgreSQL sees constants
    and pushes the bucket range into ``readings_1h`` (a view on plain PostgreSQL).

    Each station and pollutant gets a complete hour grid (missing hours NULL), and ``lag()`` brings
    the previous 11 hours onto each row, so the cost is linear in the number of hours.
    """
    metrics = ", ".join(f"('{m}')" for m in sorted(HOURLY_COLUMN))
    pm = ", ".join(f"'{m}'" for m in PM_METRICS)
    cs = ", ".join(f"c{k}" for k in range(12))
    lags = ",\n         ".join(f"lag(f.mean, {k}) OVER w AS c{k}" for k in range(1, 12))
    return f"""
WITH hours AS (SELECT generate_series({first_hour}, {last_hour}, interval '1 hour') AS h),
span AS (SELECT {first_hour} - interval '11 hours' AS lo, {last_hour} AS hi),
bp (metric, bp_lo, bp_hi, i_lo, i_hi) AS (VALUES
    {_breakpoint_rows()}
),
filled AS (
  SELECT g.h, s.sensor_id, m.metric, r.mean
  FROM span
  CROSS JOIN LATERAL generate_series(span.lo, span.hi, interval '1 hour') AS g (h)
  CROSS JOIN sensors s
  CROSS JOIN (VALUES {metrics}) AS m (metric)
  LEFT JOIN (
    SELECT r1.bucket, r1.sensor_id, r1.metric, r1.mean FROM readings_1h r1
    WHERE r1.bucket >= {first_hour} - interval '11 hours' AND r1.bucket <= {last_hour}
  ) r ON r.sensor_id = s.sensor_id AND r.metric = m.metric AND r.bucket = g.h
  WHERE s.kind = 'air' AND s.retired_at IS NULL AND {SENSOR_FILTER}
),
lagged AS (
  SELECT f.h, f.sensor_id, f.metric, f.mean AS c0,
         {lags}
  FROM filled f
  WINDOW w AS (PARTITION BY f.sensor_id, f.metric ORDER BY f.h)
),
conc AS (
  SELECT h, sensor_id, metric,
         CASE WHEN metric IN ({pm}) THEN {_nowcast_sql()} ELSE c0 END AS c
  FROM (SELECT l.*, greatest(least({cs}) / nullif(greatest({cs}), 0), 0.5) AS wt FROM lagged l) x
  WHERE h IN (SELECT h FROM hours)
),
sub AS (
  SELECT c.h, c.sensor_id, c.metric,
         CASE WHEN c.c > (SELECT max(b2.bp_hi) FROM bp b2 WHERE b2.metric = c.metric) THEN 500.0
              ELSE (SELECT (b.i_hi - b.i_lo) / (b.bp_hi - b.bp_lo) * (c.c - b.bp_lo) + b.i_lo
                    FROM bp b WHERE b.metric = c.metric AND c.c >= b.bp_lo AND c.c <= b.bp_hi
                    ORDER BY b.bp_lo LIMIT 1) END AS si
  FROM conc c WHERE c.c IS NOT NULL AND c.c >= 0
),
aqi AS (
  SELECT u.h, u.sensor_id, s.name, floor(max(u.si) + 0.5 + 1e-9)::int AS aqi
  FROM sub u JOIN sensors s ON s.sensor_id = u.sensor_id
  GROUP BY u.h, u.sensor_id, s.name
  HAVING bool_or(u.metric IN ({pm}) AND u.si IS NOT NULL)
)"""


#: The hourly series covers at most the last 31 days of the range: hourly points beyond that are
#: unreadable on a wall, and the NowCast grid grows with every hour.
MAX_SERIES_SPAN = "31 days"
FIRST_HOUR = (
    "date_trunc('hour', greatest($__timeFrom()::timestamptz, "
    f"$__timeTo()::timestamptz - interval '{MAX_SERIES_SPAN}'))"
)
LAST_HOUR = "date_trunc('hour', $__timeTo()::timestamptz)"

AQI_SERIES_SQL = hourly_aqi_cte(FIRST_HOUR, LAST_HOUR) + """
SELECT h AS "time", name AS metric, aqi AS value FROM aqi ORDER BY 1, 2
"""



def category_case(lang: Lang, expr: str) -> str:
    """SQL CASE naming the official category of an integer AQI ``expr``."""
    whens = " ".join(f"WHEN {expr} <= {c.max} THEN '{tr(lang, c.vi, c.en)}'" for c in CATEGORIES[:-1])
    return f"CASE {whens} ELSE '{tr(lang, CATEGORIES[-1].vi, CATEGORIES[-1].en)}' END"


def aqi_now_sql(lang: Lang) -> str:
    """Per station: the AQI of the current hour, named with its category."""
    return hourly_aqi_cte(LAST_HOUR, LAST_HOUR) + f"""
SELECT name || ' · ' || {category_case(lang, "aqi")} AS metric, aqi AS value FROM aqi ORDER BY aqi DESC, name
"""


def aqi_thresholds() -> list[tuple[float | None, str]]:
    """The official band colours (Bảng 1 of QĐ 1459), from the domain data."""
    return [(None if i == 0 else float(c.min), c.hex) for i, c in enumerate(CATEGORIES)]


def aqi_now_panel(lang: Lang, *, panel_id: int, pos: dm.GridPos) -> stat.Panel:
    return (
        tiles_panel(panel_id, tr(lang, "VN_AQI hiện tại", "VN_AQI now"), aqi_now_sql(lang), pos,
                    description=tr(lang, "Giờ hiện tại; PM theo NowCast 12 giờ (QĐ 1459/QĐ-TCMT)",
                                   "Current hour; PM by 12-hour NowCast (QĐ 1459/QĐ-TCMT)"))
        .thresholds(thresholds(aqi_thresholds()))
        .decimals(0)
    )
