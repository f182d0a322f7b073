"""Render one alert notification as an OASIS CAP 1.2 ``alert`` document (pure, no I/O).

CAP is what public-warning systems exchange, so the mapping follows the standard's meaning
rather than our internal names:

- ``msgType``: the first message of an alert is ``Alert``; escalation, de-escalation,
  acknowledgement and reminders are ``Update``; resolving is ``Cancel``. Updates and the
  cancel carry ``references`` to the first message. Its identifier and ``sent`` derive from
  ``alert_id`` and ``opened_at`` alone, so no state is needed to reference it, and every
  channel that renders the opening gets the same identifier.
- ``urgency`` and ``certainty``: a projected crossing (``predicted_crossing_at`` still ahead
  of the alert's last update) is ``Expected``/``Likely`` (``Future`` beyond an hour,
  ``Possible`` when the uncertainty is as large as the lead time); an observed crossing is
  ``Immediate``/``Observed``; a statistical anomaly is only ``Possible``.
- ``info`` blocks in ``vi-VN`` and ``en-US`` with the alert's own text, and an ``area`` with
  the sensor's name and district plus a ``circle`` when the coordinates are known.

Times are written in Vietnam's fixed offset (+07:00, no DST) with whole seconds, as the CAP
schema's dateTime pattern requires. The document is built with ElementTree, so any text is
escaped; characters that XML 1.0 cannot carry at all (control characters, lone surrogates)
are dropped.

>>> from datetime import datetime, timezone
>>> from ioc.alerting.notification import AlertView, Notification
>>> t = datetime(2025, 11, 20, 1, 0, tzinfo=timezone.utc)
>>> a = AlertView(alert_id=7, alert_key="k", state="open", severity="critical", peak_severity="critical",
...               previous_severity=None, kind="flood", family="warning", sensor_id="wl-dong-trang",
...               rule="flood_level", metric="water_level_m", opened_at=t, updated_at=t)
>>> xml = render_notification(Notification("n1", "cap", "opened", t, a), CapProfile())
>>> b"<msgType>Alert</msgType>" in xml and b"<sent>2025-11-20T08:00:00+07:00</sent>" in xml
True
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from ioc.alerting.notification import AlertView, Notification

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CONTENT_TYPE = "application/cap+xml"
# Khánh Hòa's civil time; Vietnam has no daylight saving, so a fixed offset is exact.
ICT = timezone(timedelta(hours=7), "ICT")
LANGUAGES = ("vi-VN", "en-US")
STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
# CAP recommends headlines under 160 characters (SMS-sized); longer text goes to description.
HEADLINE_MAX = 160

EVENTS = ("opened", "escalated", "deescalated", "acknowledged", "resolved", "repeat", "updated")
_MSG_TYPE = {e: "Update" for e in EVENTS} | {"opened": "Alert", "resolved": "Cancel"}

_CATEGORY = {"flood": "Met", "rain": "Met", "air": "Env", "noise": "Env", "traffic": "Transport",
             "health": "Infra"}
_SEVERITY = {"info": "Minor", "warning": "Moderate", "critical": "Severe"}

# (vi, en) per alert kind.
_KIND_TEXT = {
    "flood": ("Lũ", "Flood"),
    "rain": ("Mưa lớn", "Heavy rain"),
    "air": ("Ô nhiễm không khí", "Air pollution"),
    "noise": ("Tiếng ồn vượt ngưỡng", "Excessive noise"),
    "traffic": ("Ùn tắc giao thông", "Traffic congestion"),
    "health": ("Sự cố cảm biến", "Sensor fault"),
}
_SEVERITY_TEXT = {"info": ("thông tin", "advisory"), "warning": ("cảnh báo", "warning"),
                  "critical": ("nguy hiểm", "critical")}
_EVENT_TEXT = {
    "opened": ("Cảnh báo", "Alert"),
    "escalated": ("Nâng mức", "Escalated"),
    "deescalated": ("Hạ mức", "De-escalated"),
    "acknowledged": ("Đã tiếp nhận", "Acknowledged"),
    "repeat": ("Nhắc lại", "Reminder"),
    "updated": ("Cập nhật", "Update"),
    "resolved": ("Kết thúc", "All clear"),
}
_PROVINCE = "Khánh Hòa"

# XML 1.0 Char production: anything outside it cannot appear in a document, even escaped.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# CAP 1.2 §3.2.1: identifier and sender must not contain spaces, commas or < and &.
_CAP_TOKEN = re.compile(r"[^\s,<&]+")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def clean_text(text: str) -> str:
    """Drop characters XML 1.0 cannot represent; line ends become ``\\n`` as any XML parser reads them.

    >>> clean_text("a\\x00b\\x1bc <&>\\r\\nd\\re")
    'abc <&>\\nd\\ne'
    """
    return _NOT_XML_CHAR.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def _lang_index(lang: str) -> int:
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {lang!r}")
    return LANGUAGES.index(lang)


def cap_time(dt: datetime) -> str:
    """CAP dateTime: whole seconds with an explicit offset (``Z`` is not allowed).

    >>> cap_time(datetime(2025, 11, 20, 1, 2, 3, 999999, tzinfo=timezone.utc))
    '2025-11-20T08:02:03+07:00'
    """
    if dt.tzinfo is None:
        raise ValueError(f"CAP times must be timezone-aware, got naive {dt!r}")
    return dt.astimezone(ICT).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class CapProfile:
    """Who sends and how: the sender address, status, expiry and identifier namespace."""

    sender: str = "ioc@khanhhoa.gov.vn"
    status: str = "Actual"
    # An unchanged alert is re-sent (repeat) well within this, so consumers keep it while active.
    expires_after: timedelta = timedelta(hours=6)
    identifier_prefix: str = "vn.khanhhoa.ioc"
    sender_name_vi: str = "Trung tâm Giám sát, điều hành đô thị thông minh tỉnh Khánh Hòa (IOC)"
    sender_name_en: str = "Khánh Hòa Intelligent Operations Centre (IOC)"

    def __post_init__(self) -> None:
        for name in ("sender", "identifier_prefix"):
            value = getattr(self, name)
            if not _CAP_TOKEN.fullmatch(value) or clean_text(value) != value:
                raise ValueError(
                    f"CAP {name} {value!r} must be non-empty without spaces, commas, '<' or '&'"
                    " (set IOC_CAP_SENDER to an address such as ioc@khanhhoa.gov.vn)"
                )
        if self.status not in STATUSES:
            raise ValueError(f"CAP status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.expires_after <= timedelta(0):
            raise ValueError("expires_after must be positive")


def msg_type(event: str) -> str:
    """CAP msgType for a notification event.

    >>> [msg_type(e) for e in ("opened", "escalated", "resolved")]
    ['Alert', 'Update', 'Cancel']
    """
    try:
        return _MSG_TYPE[event]
    except KeyError:
        raise ValueError(f"unknown notification event {event!r}; expected one of {EVENTS}") from None


def original_identifier(alert: AlertView, profile: CapProfile) -> str:
    """Identifier of the alert's first (``Alert``) message, derived from id and opening time."""
    opened = alert.opened_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{profile.identifier_prefix}.alert.{alert.alert_id}.{opened}"


def original_reference(alert: AlertView, profile: CapProfile) -> str:
    """``sender,identifier,sent`` of the first message, as ``references`` lists it."""
    return f"{profile.sender},{original_identifier(alert, profile)},{cap_time(alert.opened_at)}"


def identifier(alert: AlertView, event: str, notification_id: str, profile: CapProfile) -> str:
    """Stable per notification; the opening message's is the alert's original identifier."""
    if msg_type(event) == "Alert":
        return original_identifier(alert, profile)
    safe = _ID_UNSAFE.sub("_", notification_id) or "_"
    return f"{profile.identifier_prefix}.alert.{alert.alert_id}.{safe}"


def is_projection(alert: AlertView) -> bool:
    """True while the crossing is only predicted: its time lies after the alert's last update."""
    return alert.predicted_crossing_at is not None and alert.predicted_crossing_at > alert.updated_at


def category(alert: AlertView) -> str:
    if alert.family == "health":
        return "Infra"
    return _CATEGORY.get(alert.kind, "Other")


def urgency(alert: AlertView, event: str) -> str:
    if event == "resolved" or alert.state == "resolved":
        return "Past"
    if alert.family == "health":
        return "Unknown"
    if is_projection(alert):
        assert alert.predicted_crossing_at is not None
        lead = alert.predicted_crossing_at - alert.updated_at
        return "Expected" if lead <= timedelta(hours=1) else "Future"
    return "Immediate"


def certainty(alert: AlertView) -> str:
    if alert.family == "anomaly":
        return "Possible"
    if alert.family != "health" and is_projection(alert):
        assert alert.predicted_crossing_at is not None
        lead_s = (alert.predicted_crossing_at - alert.updated_at).total_seconds()
        unc = alert.crossing_uncertainty_s
        return "Possible" if unc is not None and unc >= lead_s else "Likely"
    return "Observed"


def cap_severity(alert: AlertView) -> str:
    return _SEVERITY.get(alert.severity, "Unknown")


def event_name(alert: AlertView, lang: str) -> str:
    """Localised name of the hazard, e.g. ``Lũ`` / ``Flood``."""
    i = _lang_index(lang)
    pair = _KIND_TEXT.get(alert.kind)
    name = pair[i] if pair else clean_text(alert.kind)
    if alert.family == "anomaly":
        name = f"{name} (bất thường)" if i == 0 else f"{name} (anomaly)"
    elif alert.family == "health" and alert.kind != "health":
        name = f"{_KIND_TEXT['health'][i]}: {name}"
    return name


def place(alert: AlertView) -> str:
    """Human area description: sensor name (or id), district, province."""
    parts = [alert.sensor_name or alert.sensor_id, alert.district, _PROVINCE]
    return clean_text(", ".join(p for p in parts if p))


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def headline(alert: AlertView, event: str, lang: str) -> str:
    """Short text (at most 160 characters) for SMS-like consumers and annotation titles."""
    i = _lang_index(lang)
    ev = _EVENT_TEXT.get(event, (event, event))[i]
    sev = _SEVERITY_TEXT.get(alert.severity, (alert.severity, alert.severity))[i]
    text = f"{ev}: {event_name(alert, lang)} – {sev} – {place(alert)}"
    return _truncate(clean_text(text), HEADLINE_MAX)


def _num(x: float) -> str:
    return format(x, ".6g")


def description(alert: AlertView, lang: str) -> str:
    """The alert's own message in that language, or a factual fallback from value and threshold."""
    i = _lang_index(lang)
    text = (alert.message, alert.message_en)[i].strip()
    if not text:
        metric = alert.metric or alert.rule
        if alert.value is not None and alert.threshold is not None:
            text = (f"{metric} = {_num(alert.value)} (ngưỡng {_num(alert.threshold)})" if i == 0
                    else f"{metric} = {_num(alert.value)} (threshold {_num(alert.threshold)})")
        else:
            text = headline(alert, "updated", lang)
    if is_projection(alert) and alert.state != "resolved":
        assert alert.predicted_crossing_at is not None
        when = alert.predicted_crossing_at.astimezone(ICT).strftime("%H:%M %d/%m/%Y")
        text += (f"\nDự báo vượt ngưỡng lúc {when} (giờ Việt Nam)." if i == 0
                 else f"\nPredicted to cross the threshold at {when} (Vietnam time).")
    return clean_text(text)


def _parameters(alert: AlertView) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = [
        ("alert_id", str(alert.alert_id)),
        ("alert_key", alert.alert_key),
        ("sensor_id", alert.sensor_id),
        ("rule", alert.rule),
        ("severity", alert.severity),
        ("peak_severity", alert.peak_severity),
        ("state", alert.state),
    ]
    if alert.metric:
        out.append(("metric", alert.metric))
    if alert.value is not None:
        out.append(("value", _num(alert.value)))
    if alert.threshold is not None:
        out.append(("threshold", _num(alert.threshold)))
    if alert.predicted_crossing_at is not None:
        out.append(("predicted_crossing_at", cap_time(alert.predicted_crossing_at)))
    if alert.lead_time_s is not None:
        out.append(("lead_time_s", _num(alert.lead_time_s)))
    if alert.incident_key:
        out.append(("incident", alert.incident_key))
    if alert.members:
        out.append(("members", " ".join(alert.members)))
    return [(k, clean_text(v)) for k, v in out]


def circle(alert: AlertView) -> str | None:
    """``"lat,lon 0"`` (WGS 84, radius km) when the coordinates are known and plausible."""
    lat, lon = alert.lat, alert.lon
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return f"{lat:.6f},{lon:.6f} 0"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        el.text = clean_text(text)
    return el


def expires(alert: AlertView, event: str, profile: CapProfile) -> datetime:
    if event == "resolved" or alert.state == "resolved":
        return alert.resolved_at or alert.updated_at
    base = max(alert.updated_at, alert.predicted_crossing_at or alert.updated_at)
    return base + profile.expires_after


def render_alert(
    alert: AlertView, event: str, *, notification_id: str, sent: datetime, profile: CapProfile
) -> bytes:
    """One CAP 1.2 document (UTF-8 bytes with an XML declaration)."""
    mtype = msg_type(event)
    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", identifier(alert, event, notification_id, profile))
    _sub(root, "sender", profile.sender)
    _sub(root, "sent", cap_time(alert.opened_at if mtype == "Alert" else sent))
    _sub(root, "status", profile.status)
    _sub(root, "msgType", mtype)
    _sub(root, "scope", "Public")
    if event == "acknowledged":
        by = alert.acknowledged_by or "?"
        _sub(root, "note", f"Đã tiếp nhận bởi {by} / Acknowledged by {by}")
    elif mtype == "Cancel":
        _sub(root, "note", "Cảnh báo đã kết thúc / The alert has ended")
    if mtype != "Alert":
        _sub(root, "references", original_reference(alert, profile))
    if alert.incident_key:
        # incidents is a whitespace-separated list, so the key must not contain any.
        _sub(root, "incidents", re.sub(r"\s+", "_", alert.incident_key.strip()) or "_")
    onset = alert.predicted_crossing_at or alert.opened_at
    for lang in LANGUAGES:
        i = LANGUAGES.index(lang)
        info = _sub(root, "info")
        _sub(info, "language", lang)
        _sub(info, "category", category(alert))
        _sub(info, "event", event_name(alert, lang))
        _sub(info, "responseType", "AllClear" if mtype == "Cancel" else "Monitor")
        _sub(info, "urgency", urgency(alert, event))
        _sub(info, "severity", cap_severity(alert))
        _sub(info, "certainty", certainty(alert))
        _sub(info, "onset", cap_time(onset))
        _sub(info, "expires", cap_time(expires(alert, event, profile)))
        _sub(info, "senderName", (profile.sender_name_vi, profile.sender_name_en)[i])
        _sub(info, "headline", headline(alert, event, lang))
        _sub(info, "description", description(alert, lang))
        for name, value in _parameters(alert):
            p = _sub(info, "parameter")
            _sub(p, "valueName", name)
            _sub(p, "value", value)
        area = _sub(info, "area")
        _sub(area, "areaDesc", place(alert))
        if (c := circle(alert)) is not None:
            _sub(area, "circle", c)
    doc: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True, default_namespace=CAP_NS)
    return doc


def render_notification(n: Notification, profile: CapProfile) -> bytes:
    """The CAP document for one outbox notification; the same notification renders the same bytes."""
    return render_alert(n.alert, n.event, notification_id=n.notification_id, sent=n.created_at, profile=profile)
