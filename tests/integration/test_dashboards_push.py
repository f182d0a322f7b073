"""`ioc dashboards push` against a local HTTP double of Grafana's documented API.

Grafana cannot run on the CI machines; :class:`tests.grafana_double.GrafanaDouble` serves the
folder, data source, dashboard, search and annotation endpoints over real HTTP, so the real
grafana-client and the real CLI are exercised end to end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from grafana_client import GrafanaApi, TokenAuth

from dashboards.common import DATASOURCE_NAME, DATASOURCE_UID, FOLDER_UID
from dashboards.main import datasource_json, render
from dashboards.push import GrafanaPushError, push
from ioc.composition.cli import cli
from tests.grafana_double import GrafanaDouble

pytestmark = pytest.mark.integration

TOKEN = "glsa_test_token_0123456789"
DB_PASSWORD = "s3cret-grafana-reader-pw"
UIDS = ["ioc-overview", "ioc-traffic", "ioc-air-noise", "ioc-flood", "ioc-pipeline-health"]


@pytest.fixture
def grafana() -> Iterator[GrafanaDouble]:
    with GrafanaDouble(token=TOKEN) as g:
        yield g


def _env(g: GrafanaDouble, **extra: str) -> dict[str, str]:
    env = {
        "IOC_GRAFANA_URL": g.url,
        "IOC_GRAFANA_TOKEN": TOKEN,
        "IOC_GRAFANA_DB_HOST": "timescaledb:5432",
        "IOC_GRAFANA_DB_NAME": "ioc",
        "IOC_GRAFANA_DB_PASSWORD": DB_PASSWORD,
    }
    env.update(extra)
    return env


def _push(g: GrafanaDouble, *args: str, **env: str) -> str:
    res = CliRunner().invoke(cli, ["dashboards", "push", *args], env=_env(g, **env), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_push_twice_creates_everything_once_and_then_changes_nothing(grafana: GrafanaDouble) -> None:
    out1 = _push(grafana)
    assert grafana.count("POST", "/api/folders") == 1
    assert grafana.count("POST", "/api/datasources") == 1
    assert grafana.count("POST", "/api/dashboards/db") == 5
    folders = grafana.folders()
    assert [(f["uid"], f["title"]) for f in folders] == [(FOLDER_UID, "Khánh Hòa IOC")]
    (ds,) = grafana.datasources()
    assert ds["uid"] == DATASOURCE_UID and ds["name"] == DATASOURCE_NAME
    assert ds["url"] == "timescaledb:5432" and ds["user"] == "grafana_reader" and ds["database"] == "ioc"
    assert ds["jsonData"]["timescaledb"] is True
    assert ds["secureJsonData"] == {"password": DB_PASSWORD}  # the double keeps it; Grafana would encrypt it
    stored = grafana.dashboards()
    assert sorted(stored) == sorted(UIDS)
    assert {u: d["version"] for u, d in stored.items()} == dict.fromkeys(UIDS, 1)
    assert DB_PASSWORD not in out1 and TOKEN not in out1

    out2 = _push(grafana)
    assert grafana.count("POST", "/api/folders") == 1
    assert grafana.count("POST", "/api/datasources") == 1
    assert grafana.count("PUT", f"/api/datasources/uid/{DATASOURCE_UID}") == 0
    assert grafana.count("POST", "/api/dashboards/db") == 5
    assert {u: d["version"] for u, d in grafana.dashboards().items()} == dict.fromkeys(UIDS, 1)
    rows = [line for line in out2.splitlines() if "│" in line and ("dashboard" in line or "folder" in line
                                                                   or "data source" in line)]
    assert len(rows) == 7 and all("unchanged" in r for r in rows), rows

    # what Grafana serves back is exactly what we built
    api = GrafanaApi.from_url(grafana.url, credential=TokenAuth(TOKEN))
    built = render("vi")
    for uid in UIDS:
        got = api.dashboard.get_dashboard(uid)
        assert got["meta"]["folderUid"] == FOLDER_UID
        assert {k: v for k, v in got["dashboard"].items() if k not in ("id", "version")} == built[uid]
    hits = api.search.search_dashboards(type_="dash-db", folder_uids=[FOLDER_UID])
    assert sorted(h["uid"] for h in hits) == sorted(UIDS)


def test_a_changed_wall_updates_dashboards_by_uid(grafana: GrafanaDouble) -> None:
    _push(grafana)
    out = _push(grafana, "--lang", "en")
    stored = grafana.dashboards()
    assert sorted(stored) == sorted(UIDS)  # same uids, no duplicates
    assert stored["ioc-overview"]["title"] == "Overview" and stored["ioc-flood"]["title"] == "Flood"
    assert {u: d["version"] for u, d in stored.items()} == dict.fromkeys(UIDS, 2)
    assert grafana.count("POST", "/api/folders") == 1 and grafana.count("POST", "/api/datasources") == 1
    rows = [line for line in out.splitlines() if "dashboard ioc-" in line and "│" in line]
    assert len(rows) == 5 and all("updated" in r for r in rows), rows


def test_a_changed_datasource_is_updated_in_place(grafana: GrafanaDouble) -> None:
    _push(grafana)
    _push(grafana, "--no-timescaledb")
    assert grafana.count("PUT", f"/api/datasources/uid/{DATASOURCE_UID}") == 1
    (ds,) = grafana.datasources()
    assert ds["jsonData"]["timescaledb"] is False and ds["version"] == 2


def test_existing_folder_and_datasource_are_reused(grafana: GrafanaDouble) -> None:
    api = GrafanaApi.from_url(grafana.url, credential=TokenAuth(TOKEN))
    api.folder.create_folder("Khánh Hòa IOC", uid=FOLDER_UID)
    api.datasource.create_datasource(datasource_json(host="timescaledb:5432", database="ioc", user="grafana_reader",
                                                     password=DB_PASSWORD))
    report = push(api, render("vi"), folder_uid=FOLDER_UID, folder_title="Khánh Hòa IOC",
                  datasource=datasource_json(host="timescaledb:5432", database="ioc", user="grafana_reader",
                                             password=DB_PASSWORD))
    assert report.folder_created is False and report.datasource == "unchanged"
    assert report.dashboards == dict.fromkeys(UIDS, "created")
    assert grafana.count("POST", "/api/folders") == 1 and grafana.count("POST", "/api/datasources") == 1


def test_bad_token_is_a_clear_error(grafana: GrafanaDouble) -> None:
    api = GrafanaApi.from_url(grafana.url, credential=TokenAuth("wrong-token"))
    with pytest.raises(GrafanaPushError, match=r"rejected the token \(401\).*IOC_GRAFANA_TOKEN"):
        push(api, render("vi"), folder_uid=FOLDER_UID, folder_title="x", datasource=datasource_json())
    res = CliRunner().invoke(cli, ["dashboards", "push"], env=_env(grafana, IOC_GRAFANA_TOKEN="wrong-token"))
    assert res.exit_code != 0
    assert "rejected the token (401)" in str(res.exception) or "rejected the token (401)" in res.output
    assert grafana.folders() == [] and grafana.dashboards() == {}


def test_missing_grafana_settings_are_named(grafana: GrafanaDouble) -> None:
    res = CliRunner().invoke(cli, ["dashboards", "push"], env=_env(grafana, IOC_GRAFANA_TOKEN=""))
    assert res.exit_code != 0
    assert "IOC_GRAFANA_TOKEN" in (res.output + str(res.exception))


def test_unreachable_grafana_is_a_clear_error() -> None:
    with GrafanaDouble(token=TOKEN) as g:
        url = g.url  # a port that was free a moment ago and is closed now
    api = GrafanaApi.from_url(url, credential=TokenAuth(TOKEN), timeout=2.0)
    with pytest.raises(GrafanaPushError, match="unreachable|failed"):
        push(api, render("vi"), folder_uid=FOLDER_UID, folder_title="x", datasource=datasource_json())
