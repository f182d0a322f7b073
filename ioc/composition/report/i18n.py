"""The report's words in Vietnamese (default) and English, and number/time/duration formats.

Vietnamese writes decimals with a comma and dates day-first; both languages show Vietnam time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from ioc.composition.report.times import ICT

Lang = Literal["vi", "en"]
LANGS: Final[tuple[str, ...]] = ("vi", "en")

TEXT: Final[dict[str, dict[str, str]]] = {
    "vi": {
        "title": "Báo cáo sự kiện",
        "subtitle": "Trung tâm Giám sát, điều hành đô thị thông minh (IOC) tỉnh Khánh Hòa",
        "period": "Thời gian",
        "scenario": "Kịch bản",
        "generated": "Lập lúc",
        "summary": "Tóm tắt",
        "readings": "số đo đã lưu",
        "sensors_reporting": "cảm biến có dữ liệu",
        "alerts_total": "cảnh báo",
        "faults_total": "lỗi/mất tín hiệu cảm biến",
        "no_data": "Không có dữ liệu trong khoảng thời gian này: không có số đo và không có cảnh báo.",
        "gauges": "Mực nước tại các trạm thủy văn",
        "gauges_none": "Không có số đo mực nước trong khoảng thời gian này.",
        "gauges_more": "Chỉ hiển thị {shown} trong số {total} trạm (các trạm có cảnh báo trước).",
        "rain_aqi": "Mưa và chất lượng không khí",
        "rain": "Lượng mưa",
        "rain_none": "Không có số đo mưa trong khoảng thời gian này.",
        "aqi": "Chỉ số chất lượng không khí VN_AQI (theo giờ, QĐ 1459/QĐ-TCMT)",
        "aqi_none": "Không đủ số đo bụi PM2.5/PM10 để tính VN_AQI trong khoảng thời gian này.",
        "alerts": "Cảnh báo",
        "alerts_none": "Không có cảnh báo nào trong khoảng thời gian này.",
        "alerts_truncated": "Danh sách bị cắt: chỉ hiển thị {n} cảnh báo đầu tiên.",
        "faults": "Cảm biến lỗi hoặc mất tín hiệu",
        "faults_none": "Không có cảm biến nào bị lỗi hoặc mất tín hiệu.",
        "col_id": "Mã",
        "col_sensor": "Cảm biến",
        "col_kind": "Loại",
        "col_rule": "Quy tắc",
        "col_severity": "Mức cao nhất",
        "col_state": "Trạng thái",
        "col_opened": "Mở",
        "col_ack": "Xác nhận",
        "col_resolved": "Kết thúc",
        "col_value": "Giá trị / ngưỡng",
        "col_predicted": "Dự báo vượt ngưỡng",
        "col_lead": "Thời gian báo trước",
        "col_message": "Nội dung",
        "col_duration": "Kéo dài",
        "still_open": "chưa kết thúc",
        "level_axis": "Mực nước (m)",
        "rain_axis": "Mưa (mm/{bucket})",
        "rain_cum_axis": "Mưa lũy kế (mm)",
        "aqi_axis": "VN_AQI",
        "time_axis": "Giờ Việt Nam (UTC+7)",
        "mark_opened": "mở cảnh báo",
        "mark_escalated": "nâng mức",
        "mark_deescalated": "hạ mức",
        "mark_acknowledged": "xác nhận",
        "mark_resolved": "kết thúc",
        "mark_predicted": "dự báo vượt ngưỡng",
        "bucket_h": "giờ",
        "bucket_d": "ngày",
        "notes": "Ghi chú",
        "note_tz": "Mọi thời điểm theo giờ Việt Nam (UTC+7).",
        "note_bd": "BĐ I/II/III: mức báo động lũ theo QĐ 05/2020/QĐ-TTg, lấy từ danh mục cảm biến.",
        "note_marks": "Dấu trên biểu đồ: ▲ mở, ◆ nâng mức, ▼ hạ mức, ■ xác nhận, ● kết thúc cảnh báo (màu theo mức: vàng thông tin, cam cảnh báo, đỏ nguy hiểm); × thời điểm dự báo vượt ngưỡng.",
        "note_recorded": "Các dấu có viền rỗng dùng thời điểm ghi nhận (không có thời điểm sự kiện).",
        "note_levels": "Mực nước: giá trị lớn nhất mỗi {bucket}.",
        "state_open": "đang mở",
        "state_acknowledged": "đã xác nhận",
        "state_resolved": "đã kết thúc",
        "sev_info": "thông tin",
        "sev_warning": "cảnh báo",
        "sev_critical": "nguy hiểm",
        "rule_flood_alarm_level": "mức báo động lũ",
        "rule_flood_projection": "dự báo vượt mức báo động",
        "rule_heavy_rain": "mưa lớn",
        "rule_air_quality": "chất lượng không khí",
        "rule_noise_limit": "vượt giới hạn tiếng ồn",
        "rule_traffic_congestion": "ùn tắc giao thông",
        "rule_sensor_silent": "mất tín hiệu",
        "rule_sensor_stuck": "kẹt giá trị",
        "rule_sensor_range": "ngoài dải đo vật lý",
        "rule_sensor_spike": "thay đổi bất thường",
        "rule_clock_skew": "lệch đồng hồ",
        "kind_flood": "lũ",
        "kind_rain": "mưa",
        "kind_air": "không khí",
        "kind_noise": "tiếng ồn",
        "kind_traffic": "giao thông",
        "kind_health": "tình trạng cảm biến",
        "kind_anomaly": "bất thường",
        "by": "bởi",
        "members": "cùng sự cố",
        "minutes": "phút",
        "hours": "giờ",
        "days": "ngày",
        "chart_alt_gauge": "Biểu đồ mực nước {name} với các mức báo động và các mốc cảnh báo",
        "gauge_peak": "Đỉnh {peak} m lúc {at}",
        "gauge_band": "đạt {band}",
        "gauge_below": "dưới BĐ I",
        "chart_alt_rain": "Biểu đồ lượng mưa theo {bucket} và lũy kế",
        "chart_alt_aqi": "Biểu đồ VN_AQI theo giờ tại các trạm quan trắc không khí",
    },
    "en": {
        "title": "Incident report",
        "subtitle": "Khánh Hòa Intelligent Operations Centre (IOC)",
        "period": "Period",
        "scenario": "Scenario",
        "generated": "Generated",
        "summary": "Summary",
        "readings": "readings stored",
        "sensors_reporting": "sensors with data",
        "alerts_total": "alerts",
        "faults_total": "sensor faults / silences",
        "no_data": "No data in this period: no readings and no alerts.",
        "gauges": "Water levels at the gauges",
        "gauges_none": "No water-level readings in this period.",
        "gauges_more": "Showing {shown} of {total} gauges (gauges with alerts first).",
        "rain_aqi": "Rain and air quality",
        "rain": "Rainfall",
        "rain_none": "No rain readings in this period.",
        "aqi": "VN_AQI air-quality index (hourly, Decision 1459/QĐ-TCMT)",
        "aqi_none": "Not enough PM2.5/PM10 readings to compute VN_AQI in this period.",
        "alerts": "Alerts",
        "alerts_none": "No alerts in this period.",
        "alerts_truncated": "List truncated: only the first {n} alerts are shown.",
        "faults": "Sensors that faulted or went silent",
        "faults_none": "No sensor faulted or went silent.",
        "col_id": "ID",
        "col_sensor": "Sensor",
        "col_kind": "Kind",
        "col_rule": "Rule",
        "col_severity": "Peak severity",
        "col_state": "State",
        "col_opened": "Opened",
        "col_ack": "Acknowledged",
        "col_resolved": "Resolved",
        "col_value": "Value / threshold",
        "col_predicted": "Predicted crossing",
        "col_lead": "Lead time",
        "col_message": "Message",
        "col_duration": "Duration",
        "still_open": "still open",
        "level_axis": "Water level (m)",
        "rain_axis": "Rain (mm/{bucket})",
        "rain_cum_axis": "Cumulative rain (mm)",
        "aqi_axis": "VN_AQI",
        "time_axis": "Vietnam time (UTC+7)",
        "mark_opened": "opened",
        "mark_escalated": "escalated",
        "mark_deescalated": "de-escalated",
        "mark_acknowledged": "acknowledged",
        "mark_resolved": "resolved",
        "mark_predicted": "predicted crossing",
        "bucket_h": "hour",
        "bucket_d": "day",
        "notes": "Notes",
        "note_tz": "All times are Vietnam time (UTC+7).",
        "note_bd": "BĐ I/II/III: flood alarm levels per Decision 05/2020/QĐ-TTg, from the sensor registry.",
        "note_marks": "Chart marks: ▲ opened, ◆ escalated, ▼ de-escalated, ■ acknowledged, ● resolved (coloured by severity: yellow info, orange warning, red critical); × predicted crossing time.",
        "note_recorded": "Hollow marks use the time the transition was recorded (no event time was stored).",
        "note_levels": "Water level: the maximum of each {bucket}.",
        "state_open": "open",
        "state_acknowledged": "acknowledged",
        "state_resolved": "resolved",
        "sev_info": "info",
        "sev_warning": "warning",
        "sev_critical": "critical",
        "rule_flood_alarm_level": "flood alarm level",
        "rule_flood_projection": "flood projection",
        "rule_heavy_rain": "heavy rain",
        "rule_air_quality": "air quality",
        "rule_noise_limit": "noise limit",
        "rule_traffic_congestion": "traffic congestion",
        "rule_sensor_silent": "silent",
        "rule_sensor_stuck": "stuck / flat-line",
        "rule_sensor_range": "out of physical range",
        "rule_sensor_spike": "implausible rate of change",
        "rule_clock_skew": "clock skew",
        "kind_flood": "flood",
        "kind_rain": "rain",
        "kind_air": "air",
        "kind_noise": "noise",
        "kind_traffic": "traffic",
        "kind_health": "sensor health",
        "kind_anomaly": "anomaly",
        "by": "by",
        "members": "same incident",
        "minutes": "min",
        "hours": "h",
        "days": "d",
        "chart_alt_gauge": "Water level at {name} with the alarm levels and the alert marks",
        "gauge_peak": "Peak {peak} m at {at}",
        "gauge_band": "reached {band}",
        "gauge_below": "below BĐ I",
        "chart_alt_rain": "Rainfall per {bucket} and cumulative",
        "chart_alt_aqi": "Hourly VN_AQI at the air-quality stations",
    },
}


def t(lang: Lang, key: str, **kw: object) -> str:
    """The text for ``key``; placeholders filled with ``kw``.

    >>> t("vi", "gauges_more", shown=2, total=5)
    'Chỉ hiển thị 2 trong số 5 trạm (các trạm có cảnh báo trước).'
    """
    text = TEXT[lang][key]
    return text.format(**kw) if kw else text


def label(lang: Lang, prefix: str, value: str) -> str:
    """A translated vocabulary word (``kind_flood``), or the raw value when there is none.

    >>> label("en", "kind", "flood"), label("en", "kind", "volcano")
    ('flood', 'volcano')
    """
    return TEXT[lang].get(f"{prefix}_{value}", value)


def number(x: float | None, lang: Lang, digits: int = 2) -> str:
    """A number with the language's decimal mark; '–' for missing.

    >>> number(8.25, "vi"), number(8.25, "en"), number(None, "vi")
    ('8,25', '8.25', '–')
    """
    if x is None:
        return "–"
    s = f"{x:.{digits}f}"
    return s.replace(".", ",") if lang == "vi" else s


def when(ts: datetime | None, lang: Lang) -> str:
    """A moment in Vietnam time, day-first in Vietnamese.

    >>> from datetime import UTC
    >>> ts = datetime(2025, 12, 4, 3, 5, tzinfo=UTC)
    >>> when(ts, "vi"), when(ts, "en"), when(None, "en")
    ('10:05 04/12/2025', '2025-12-04 10:05', '–')
    """
    if ts is None:
        return "–"
    local = ts.astimezone(ICT)
    return local.strftime("%H:%M %d/%m/%Y") if lang == "vi" else local.strftime("%Y-%m-%d %H:%M")


def duration(seconds: float | None, lang: Lang) -> str:
    """A duration rounded to minutes: '2 giờ 35 phút' / '2 h 35 min'.

    >>> duration(9300, "vi"), duration(9300, "en"), duration(50, "en"), duration(2 * 86400 + 3600, "en")
    ('2 giờ 35 phút', '2 h 35 min', '1 min', '2 d 1 h')
    >>> duration(None, "vi"), duration(-600, "en")
    ('–', '–')
    """
    if seconds is None or seconds < 0:
        return "–"
    minutes = max(1, round(seconds / 60))
    d, rem = divmod(minutes, 24 * 60)
    h, m = divmod(rem, 60)
    w = TEXT[lang]
    if d:
        return f"{d} {w['days']} {h} {w['hours']}" if h else f"{d} {w['days']}"
    if h:
        return f"{h} {w['hours']} {m} {w['minutes']}" if m else f"{h} {w['hours']}"
    return f"{m} {w['minutes']}"
