"""The Grafana double answers as Grafana's documented HTTP API does (driven by the real grafana-client)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from grafana_client import GrafanaApi, TokenAuth
from grafana_client.client import (
    GrafanaBadInputError,
    GrafanaClientError,
    GrafanaServerError,
    GrafanaUnauthorizedError,
)

from tests.grafana_double import GrafanaDouble

pytestmark = pytest.mark.integration

TOKEN = "glsa_double_test"


@pytest.fixture
def g() -> Iterator[GrafanaDouble]:
    with GrafanaDouble(token=TOKEN) as double:
        yield double


@pytest.fixture
def api(g: GrafanaDouble) -> GrafanaApi:
    return GrafanaApi.from_url(g.url, credential=TokenAuth(TOKEN))


def test_health_is_public_and_everything_else_needs_the_bearer_token(g: GrafanaDouble, api: GrafanaApi) -> None:
    anon = GrafanaApi.from_url(g.url, credential=TokenAuth("nope"))
    assert anon.health.check()["version"] == "11.2.0"
    with pytest.raises(GrafanaUnauthorizedError):
        anon.folder.get_all_folders()
    with pytest.raises(GrafanaUnauthorizedError):
        anon.annotations.add_annotation(text="x")
    assert api.folder.get_all_folders() == []
    assert [r.authorized for r in g.requests() if r.path == "/api/folders"] == [False, True]


def test_folder_and_datasource_conflicts_and_not_found(api: GrafanaApi) -> None:
    f = api.folder.create_folder("Khánh Hòa IOC", uid="khanhhoa-ioc")
    assert f["url"] == "/dashboards/f/khanhhoa-ioc/khanh-hoa-ioc" and f["version"] == 1
    with pytest.raises(GrafanaClientError) as e:
        api.folder.create_folder("Other", uid="khanhhoa-ioc")
    assert e.value.status_code == 409
    with pytest.raises(GrafanaClientError) as e:
        api.folder.get_folder("missing")
    assert e.value.status_code == 404
    with pytest.raises(GrafanaClientError) as e:
        api.datasource.get_datasource_by_name("pg")
    assert e.value.status_code == 404 and "Data source not found" in str(e.value)
    created = api.datasource.create_datasource({"name": "pg", "type": "grafana-postgresql-datasource", "uid": "pg",
                                                "secureJsonData": {"password": "p"}})
    assert created["message"] == "Datasource added" and created["datasource"]["secureJsonFields"] == {"password": True}
    assert "secureJsonData" not in api.datasource.get_datasource_by_name("pg")
    with pytest.raises(GrafanaClientError) as e:
        api.datasource.create_datasource({"name": "pg", "type": "grafana-postgresql-datasource"})
    assert e.value.status_code == 409


def test_dashboard_save_rules(api: GrafanaApi) -> None:
    saved = api.dashboard.update_dashboard({"dashboard": {"uid": "d1", "title": "Lũ lụt"}, "overwrite": False})
    assert saved == {"id": saved["id"], "uid": "d1", "url": "/d/d1/lu-lut", "status": "success", "version": 1,
                     "slug": "lu-lut", "folderUid": ""}
    with pytest.raises(GrafanaClientError) as e:  # same uid without overwrite
        api.dashboard.update_dashboard({"dashboard": {"uid": "d1", "title": "Lũ lụt"}})
    assert e.value.status_code == 412 and e.value.response["status"] == "name-exists"
    with pytest.raises(GrafanaClientError) as e:  # stale version
        api.dashboard.update_dashboard({"dashboard": {"uid": "d1", "id": saved["id"], "title": "x", "version": 7}})
    assert e.value.status_code == 412 and e.value.response["status"] == "version-mismatch"
    again = api.dashboard.update_dashboard({"dashboard": {"uid": "d1", "title": "Flood"}, "overwrite": True})
    assert again["version"] == 2 and again["id"] == saved["id"]
    got = api.dashboard.get_dashboard("d1")
    assert got["dashboard"]["title"] == "Flood" and got["meta"]["slug"] == "flood"
    with pytest.raises(GrafanaBadInputError):
        api.dashboard.update_dashboard({"dashboard": {"uid": "d2", "title": "x"}, "folderUid": "missing"})
    assert [h["uid"] for h in api.search.search_dashboards(query="flo", type_="dash-db")] == ["d1"]


def test_annotations_create_find_patch_put_delete(g: GrafanaDouble, api: GrafanaApi) -> None:
    api.dashboard.update_dashboard({"dashboard": {"uid": "ov", "title": "Tổng quan"}, "overwrite": True})
    a = api.annotations.add_annotation(dashboard_uid="ov", panel_id=2, time_from=1_000, time_to=5_000,
                                       tags=["flood", "critical"], text="BĐ III")
    assert a["message"] == "Annotation added"
    b = api.annotations.add_annotation(time_from=2_000, tags=["rain"], text="org-wide")
    assert b["id"] != a["id"]
    found = api.annotations.find_annotations(dashboard_uid="ov")
    assert [x["id"] for x in found] == [a["id"]] and found[0]["dashboardUID"] == "ov"
    assert [x["id"] for x in api.annotations.find_annotations(tags=["flood", "critical"])] == [a["id"]]
    assert {x["id"] for x in api.annotations.find_annotations(time_from=4_000, time_to=9_000)} == {a["id"]}
    assert [x["id"] for x in api.annotations.find_annotations(time_from=0, time_to=9_000)] == [b["id"], a["id"]]
    with pytest.raises(GrafanaBadInputError):
        api.annotations.find_annotations(dashboard_uid="missing")

    assert api.annotations.partial_update_annotation(a["id"], text="BĐ III, resolved", tags=["flood"]) == {
        "message": "Annotation patched"}
    (one,) = [x for x in g.annotations() if x["id"] == a["id"]]
    assert one["text"] == "BĐ III, resolved" and one["tags"] == ["flood"] and one["timeEnd"] == 5_000
    assert api.annotations.update_annotation(a["id"], time_from=1_500, text="replaced") == {
        "message": "Annotation updated"}
    (one,) = [x for x in g.annotations() if x["id"] == a["id"]]
    assert (one["time"], one["timeEnd"], one["text"], one["tags"]) == (1_500, 0, "replaced", [])

    with pytest.raises(GrafanaBadInputError):
        api.annotations.add_annotation(time_from=1, text="")
    assert api.annotations.delete_annotations_by_id(a["id"]) == {"message": "Annotation deleted"}
    with pytest.raises(GrafanaClientError) as e:
        api.annotations.delete_annotations_by_id(a["id"])
    assert e.value.status_code == 404


def test_injected_failures_hit_only_matching_requests(g: GrafanaDouble, api: GrafanaApi) -> None:
    g.fail_next(503, method="POST", path="/api/annotations", times=2)
    for _ in range(2):
        with pytest.raises(GrafanaServerError):
            api.annotations.add_annotation(text="x", time_from=1)
    assert api.folder.get_all_folders() == []  # other routes unaffected
    assert api.annotations.add_annotation(text="x", time_from=1)["message"] == "Annotation added"
    assert len(g.annotations()) == 1
