"""The report page escapes every string from the database and computes VN_AQI as the detector does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from detectors.vn_aqi import VnAqiDetector
from ioc.composition.report.aqi import aqi_series
from ioc.composition.report.build import ReportLabel, render_report
from ioc.models import Reading
from ioc.storage.report_queries import AlertEvent, AlertRow, Point, ReportData, SensorRow

T0 = datetime(2025, 12, 4, tzinfo=UTC)
EVIL_NAME = "<script>alert(1)</script>"
EVIL_MSG = '<img src=x onerror="alert(2)">'
EVIL_BY = '"><svg onload=alert(3)>'


class _Tags(HTMLParser):
    """Every start tag and its attributes, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _data() -> ReportData:
    gauge = SensorRow("G_1", "water_level", EVIL_NAME, "Nha Trang <b>", {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}, 300,
                      False)
    levels = [Point(T0 + timedelta(minutes=5 * i), 7.0 + 0.05 * i) for i in range(100)]
    alert = AlertRow(1, "G_1", "flood_alarm_level", "flood", "water_level_m", "warning", "critical", "acknowledged",
                     T0 + timedelta(hours=1), T0 + timedelta(hours=2), EVIL_BY, None, 9.6, 9.5,
                     T0 + timedelta(hours=5), 3 * 3600.0, EVIL_MSG, "", ("G_1", "G_<i>2"))
    fault = AlertRow(2, "G_1", "sensor_silent", "health", "ts", "warning", "warning", "resolved",
                     T0 + timedelta(hours=3), None, None, T0 + timedelta(hours=4), None, None, None, None,
                     f"{EVIL_NAME} silent", "", ())
    events = [AlertEvent(1, "opened", T0 + timedelta(hours=1), True, "info", None),
              AlertEvent(1, "escalated", T0 + timedelta(hours=1, minutes=30), True, "warning", None),
              AlertEvent(1, "acknowledged", T0 + timedelta(hours=2), True, None, EVIL_BY)]
    return ReportData(
        start=T0, end=T0 + timedelta(hours=10), sensors={"G_1": gauge}, water_levels={"G_1": levels},
        water_bucket=timedelta(minutes=1), rain={}, rain_bucket=timedelta(hours=1), air_hourly={},
        alerts=[alert, fault], events=events, readings=100, sensors_reporting=1,
    )


def test_database_strings_reach_the_page_as_text_never_as_markup() -> None:
    page = render_report(_data(), lang="vi", label=ReportLabel("x</title><script>", EVIL_NAME),
                         generated_at=T0)
    assert EVIL_NAME not in page and EVIL_MSG not in page and EVIL_BY not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert "&quot;&gt;&lt;svg onload=alert(3)&gt;" in page
    assert "G_&lt;i&gt;2" in page and "Nha Trang &lt;b&gt;" in page
    parser = _Tags()
    parser.feed(page)
    tags = {tag for tag, _ in parser.tags}
    assert "script" not in tags and "svg" not in tags and "i" not in tags
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert (attrs["src"] or "").startswith("data:image/png;base64,")
    # the escaped strings are where they belong: the alert row and the fault row
    assert page.count('data-alert-id="1"') == 1 and page.count('data-alert-id="2"') == 1


def test_english_page_uses_english_words_and_the_english_message() -> None:
    data = _data()
    en = AlertRow(**{**data.alerts[0].__dict__, "message_en": "Water level above BĐ II"})
    data = ReportData(**{**data.__dict__, "alerts": [en, data.alerts[1]]})
    page = render_report(data, lang="en", generated_at=T0)
    assert '<html lang="en">' in page and "Incident report" in page and "Water level above BĐ II" in page
    assert "3 h" in page  # the lead time, in English units


def test_report_aqi_equals_the_live_detector_hour_by_hour() -> None:
    """The report reuses detectors.vn_aqi: its hourly series gives the detector's alert values."""
    pm25 = [12.0] * 4 + [45.0] * 3 + [90.0] * 4 + [160.0] * 5 + [30.0] * 6
    pm10 = [30.0] * 10 + [220.0] * 6 + [40.0] * 6
    det = VnAqiDetector("AIR_X")
    findings = []
    hourly: dict[str, dict[datetime, float]] = {"pm25": {}, "pm10": {}}
    for h, (a, b) in enumerate(zip(pm25, pm10, strict=True)):
        hour = T0 + timedelta(hours=h)
        for minute in (0, 20, 40):
            findings += det.update(Reading("AIR_X", "air", hour + timedelta(minutes=minute), 3 * h + minute,
                                           {"pm25": a, "pm10": b}))
        hourly["pm25"][hour], hourly["pm10"][hour] = a, b
    series = {p.hour: p for p in aqi_series(hourly, T0, T0 + timedelta(hours=len(pm25)))}
    assert findings, "the episode must raise air-quality findings"
    for f in findings:
        closed = f.ts.replace(minute=0) - timedelta(hours=1)  # a finding comes with the next hour's first reading
        assert series[closed].aqi == int(f.value)
        assert series[closed].category.vi == f.detail["category"]
