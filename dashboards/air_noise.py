"""Không khí & tiếng ồn / Air and noise: VN_AQI in its official bands, pollutants, noise vs QCVN 26.

Noise limits are QCVN 26:2010/BTNMT (day 06–21 h, night 21–06 h local time) from
:mod:`detectors.noise`; a limit line is drawn only for the area classes of the selected sensors.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models import common as cm

from dashboards import aqi
from dashboards.common import (
    SENSOR_FILTER,
    TIMEZONE,
    Lang,
    base_dashboard,
    grid,
    prop,
    thresholds,
    tiered,
    tr,
)
from dashboards.panels import dashed_line, series_panel
from detectors.noise import DAY_START_H, NIGHT_START_H, QCVN26_2010_LIMITS
from detectors.vn_aqi import POLLUTANT_NAMES

UID = "ioc-air-noise"
KINDS = ("air", "noise")
PM = ("pm25", "pm10")
GASES = ("no2", "so2", "o3", "co")


def _label_case(metrics: tuple[str, ...]) -> str:
    whens = " ".join(f"WHEN '{m}' THEN '{POLLUTANT_NAMES[m]}'" for m in metrics)
    return f"s.name || ' · ' || CASE r.metric {whens} END"


PM_SQL = tiered(PM, "mean", _label_case(PM), kinds=("air",))
GAS_SQL = tiered(GASES, "mean", _label_case(GASES), kinds=("air",))
NOISE_SQL = tiered(["laeq_dba"], "mean", "s.name", kinds=("noise",))


def noise_limit_sql(lang: Lang) -> str:
    """Hourly step lines of the day/night limit for each area class among the selected sensors."""
    branches = []
    for area, (day, night) in sorted(QCVN26_2010_LIMITS.items()):
        label = tr(lang, f"Giới hạn QCVN 26 ({'khu vực đặc biệt' if area == 'special' else 'khu vực thông thường'})",
                   f"QCVN 26 limit ({area} area)")
        branches.append(f"""
  SELECT h AS "time", '{label}' AS metric,
         CASE WHEN extract(hour FROM h AT TIME ZONE '{TIMEZONE}') >= {DAY_START_H}
               AND extract(hour FROM h AT TIME ZONE '{TIMEZONE}') < {NIGHT_START_H}
              THEN {day} ELSE {night} END AS value
  FROM generate_series(date_trunc('hour', $__timeFrom()::timestamptz), $__timeTo()::timestamptz,
                       interval '1 hour') AS h
  WHERE EXISTS (SELECT 1 FROM sensors s WHERE s.kind = 'noise' AND s.extra->>'area' = '{area}'
                AND s.retired_at IS NULL AND {SENSOR_FILTER})""")
    return "SELECT * FROM (" + "\n  UNION ALL".join(branches) + "\n) t\nORDER BY 1, 2"


def aqi_series(lang: Lang) -> timeseries.Panel:
    return (
        series_panel(1, tr(lang, "VN_AQI theo giờ", "Hourly VN_AQI"), aqi.AQI_SERIES_SQL, grid(0, 0, 16, 10),
                     description=tr(
                         lang, "QĐ 1459/QĐ-TCMT; màu theo các mức chính thức; tối đa 31 ngày cuối của khoảng",
                         "QĐ 1459/QĐ-TCMT; official band colours; at most the last 31 days of the range"))
        .min(0)
        .decimals(0)
        .thresholds(thresholds(aqi.aqi_thresholds()))
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.AREA))
        .line_interpolation(cm.LineInterpolation.STEP_AFTER)
    )


def pm_panel(lang: Lang) -> timeseries.Panel:
    return series_panel(3, tr(lang, "Bụi PM2.5 và PM10", "PM2.5 and PM10"), PM_SQL, grid(0, 10, 12, 9)).unit("conµgm3")


def gas_panel(lang: Lang) -> timeseries.Panel:
    return (
        series_panel(4, tr(lang, "Khí NO2, SO2, O3, CO", "Gases NO2, SO2, O3, CO"), GAS_SQL, grid(12, 10, 12, 9),
                     description=tr(lang, "CO ở trục phải (µg/m³)", "CO on the right axis (µg/m³)"))
        .unit("conµgm3")
        .override_by_regexp(".*· CO$", [prop("custom.axisPlacement", "right")])
    )


def noise_panel(lang: Lang) -> timeseries.Panel:
    return (
        series_panel(5, tr(lang, "Tiếng ồn LAeq so với QCVN 26:2010/BTNMT", "Noise LAeq vs QCVN 26:2010/BTNMT"),
                     [NOISE_SQL, noise_limit_sql(lang)], grid(0, 19, 24, 10),
                     description=tr(lang, "Ngày 06–21 h, đêm 21–06 h (giờ Việt Nam)",
                                    "Day 06–21 h, night 21–06 h (local time)"))
        .unit("dB")
        .override_by_regexp(".*QCVN 26.*", [
            dashed_line(),
            prop("custom.lineInterpolation", "stepAfter"),
            prop("color", {"fixedColor": "red", "mode": "fixed"}),
        ])
    )


def dashboard(lang: Lang) -> dash.Dashboard:
    d = base_dashboard(UID, tr(lang, "Không khí & tiếng ồn", "Air and noise"), lang, KINDS)
    now = aqi.aqi_now_panel(lang, panel_id=2, pos=grid(16, 0, 8, 10))
    for p in (aqi_series(lang), now, pm_panel(lang), gas_panel(lang), noise_panel(lang)):
        d = d.with_panel(p)
    return d
