"""Push the wall to a running Grafana over its HTTP API (grafana-client), idempotently.

Order: the folder (created when ``GET /api/folders/:uid`` says 404), the data source (created
when ``GET /api/datasources/name/:name`` says 404, otherwise updated by uid only when it
differs), then each dashboard by uid, written only when its content differs from what Grafana
has (so a second push changes nothing and leaves every version number as it was).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from ioc.errors import IocError

log = logging.getLogger(__name__)

#: Fields Grafana sets on a saved dashboard, ignored when deciding whether to write.
_SERVER_FIELDS = ("id", "version")
#: Data source fields Grafana returns but does not take as configuration.
_DS_COMPARED = ("name", "type", "uid", "access", "url", "user", "database", "isDefault", "jsonData")


class GrafanaPushError(IocError):
    """Grafana refused or could not be reached; the message says what to fix."""


@dataclass
class PushReport:
    folder_created: bool = False
    datasource: str = "unchanged"  # created, updated or unchanged
    dashboards: dict[str, str] = field(default_factory=dict)  # uid -> created, updated, unchanged


def _status(e: GrafanaException) -> int:
    return int(getattr(e, "status_code", 0) or 0)


def _strip(dashboard: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in _SERVER_FIELDS}


def push(
    api: GrafanaApi,
    dashboards: Mapping[str, Mapping[str, Any]],
    *,
    folder_uid: str,
    folder_title: str,
    datasource: Mapping[str, Any],
) -> PushReport:
    """Make Grafana hold exactly these dashboards, folder and data source; see the module docstring."""
    report = PushReport()
    try:
        report.folder_created = _ensure_folder(api, folder_uid, folder_title)
        report.datasource = _ensure_datasource(api, datasource)
        for uid, data in dashboards.items():
            report.dashboards[uid] = _ensure_dashboard(api, uid, data, folder_uid)
    except GrafanaUnauthorizedError as e:
        raise GrafanaPushError(
            "Grafana rejected the token (401): set IOC_GRAFANA_TOKEN to a service-account token with the "
            "Editor role (Admin to create data sources)"
        ) from e
    except GrafanaClientError as e:
        raise GrafanaPushError(f"Grafana refused the request ({_status(e)}): {e.response or e}") from e
    except GrafanaException as e:
        raise GrafanaPushError(f"Grafana failed: {e}") from e
    except OSError as e:  # connection refused, DNS, TLS
        raise GrafanaPushError(f"Grafana is unreachable: {e}") from e
    return report


def _ensure_folder(api: GrafanaApi, uid: str, title: str) -> bool:
    try:
        api.folder.get_folder(uid)
        return False
    except GrafanaClientError as e:
        if _status(e) != 404:
            raise
    api.folder.create_folder(title, uid=uid)
    log.info("grafana: folder %s created", uid)
    return True


def _ensure_datasource(api: GrafanaApi, ds: Mapping[str, Any]) -> str:
    try:
        current = api.datasource.get_datasource_by_name(ds["name"])
    except GrafanaClientError as e:
        if _status(e) != 404:
            raise
        api.datasource.create_datasource(dict(ds))
        log.info("grafana: data source %s created", ds["uid"])
        return "created"
    want = {k: ds.get(k) for k in _DS_COMPARED}
    have = {k: current.get(k) for k in _DS_COMPARED}
    if want == have and not ds.get("secureJsonData"):
        return "unchanged"
    if want == have and all(current.get("secureJsonFields", {}).get(k) for k in ds.get("secureJsonData") or {}):
        return "unchanged"  # Grafana never returns secrets; it has one for every field we set
    api.datasource.update_datasource_by_uid(current.get("uid") or ds["uid"], dict(ds))
    log.info("grafana: data source %s updated", ds["uid"])
    return "updated"


def _ensure_dashboard(api: GrafanaApi, uid: str, data: Mapping[str, Any], folder_uid: str) -> str:
    try:
        current = api.dashboard.get_dashboard(uid)
    except GrafanaClientError as e:
        if _status(e) != 404:
            raise
        current = None
    if current is not None:
        same = _strip(current.get("dashboard") or {}) == _strip(data)
        if same and (current.get("meta") or {}).get("folderUid") == folder_uid:
            return "unchanged"
    body = {"dashboard": {**_strip(data), "id": None}, "folderUid": folder_uid, "overwrite": True,
            "message": "ioc dashboards push"}
    api.dashboard.update_dashboard(body)
    log.info("grafana: dashboard %s %s", uid, "updated" if current is not None else "created")
    return "updated" if current is not None else "created"
