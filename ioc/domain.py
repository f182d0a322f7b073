"""Domain vocabulary shared by every package: sensor kinds, their metrics and units, topics.

The metric table is the single source of truth for edge validation and for the simulator.
"""

from __future__ import annotations

from typing import Final

#: kind -> metric -> unit. A payload may carry any subset of its kind's metrics.
KIND_METRICS: Final[dict[str, dict[str, str]]] = {
    "traffic": {"speed_kmh": "km/h", "flow_vph": "veh/h", "occupancy_pct": "%"},
    "air": {
        "pm25": "µg/m³",
        "pm10": "µg/m³",
        "no2": "µg/m³",
        "o3": "µg/m³",
        "co": "µg/m³",
        "so2": "µg/m³",
    },
    "noise": {"laeq_dba": "dBA"},
    "weather": {
        "temperature_c": "°C",
        "humidity_pct": "%",
        "wind_speed_ms": "m/s",
        "wind_gust_ms": "m/s",
        "wind_dir_deg": "°",
        "pressure_hpa": "hPa",
    },
    "water_level": {"water_level_m": "m"},
    "rain": {"rain_mm": "mm"},
    "tide": {"sea_level_m": "m"},
}

KINDS: Final[tuple[str, ...]] = tuple(KIND_METRICS)

#: MQTT topic prefix for readings: khanhhoa/v1/<kind>/<sensor_id>.
READINGS_TOPIC_PREFIX: Final = "khanhhoa/v1"
#: MQTT topic prefix for alerts: khanhhoa/v1/alerts/<severity>/<kind>/<alert_id>.
ALERTS_TOPIC_PREFIX: Final = "khanhhoa/v1/alerts"

#: Hard limit on one MQTT payload (design: at most 4 KiB).
MAX_PAYLOAD_BYTES: Final = 4096

SEVERITIES: Final[tuple[str, ...]] = ("info", "warning", "critical")


def reading_topic(kind: str, sensor_id: str) -> str:
    """MQTT topic of one sensor's readings.

    >>> reading_topic("water_level", "HYD_DONG_TRANG")
    'khanhhoa/v1/water_level/HYD_DONG_TRANG'
    """
    return f"{READINGS_TOPIC_PREFIX}/{kind}/{sensor_id}"


def alert_topic(severity: str, kind: str, alert_id: str) -> str:
    """MQTT topic of one alert; retained while active.

    >>> alert_topic("critical", "flood", "42")
    'khanhhoa/v1/alerts/critical/flood/42'
    """
    return f"{ALERTS_TOPIC_PREFIX}/{severity}/{kind}/{alert_id}"
