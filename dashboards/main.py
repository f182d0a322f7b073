"""Compose the IOC wall: five dashboards with fixed uids, and the Grafana provisioning around them.

``write(out_dir, lang)`` produces (deterministically: sorted keys, no timestamps)::

    out_dir/dashboards/<uid>.json                    one per dashboard
    out_dir/provisioning/datasources/ioc.yaml        the PostgreSQL data source (TimescaleDB option)
    out_dir/provisioning/dashboards/ioc.yaml         the file provider and its folder
    out_dir/grafana.ini                              wall-screen viewer settings (anonymous Viewer, home)

The data source reads its address and the read-only role's credentials from Grafana's
environment (``GRAFANA_DB_HOST``, ``GRAFANA_DB_NAME``, ``GRAFANA_DB_USER``, ``GRAFANA_DB_PASSWORD``),
so no secret is ever written here; ``ioc dashboards db-role`` creates that role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards import air_noise, flood, health, overview, traffic
from dashboards.common import (
    DATASOURCE_NAME,
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    FOLDER_TITLE,
    FOLDER_UID,
    WALL_REFRESH,
    Lang,
    dumps,
    to_json,
)


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    build: Callable[[Lang], dash.Dashboard]


#: Wall order; the first is Grafana's home dashboard on the wall screens.
DASHBOARDS: tuple[DashboardSpec, ...] = (
    DashboardSpec(overview.UID, overview.dashboard),
    DashboardSpec(traffic.UID, traffic.dashboard),
    DashboardSpec(air_noise.UID, air_noise.dashboard),
    DashboardSpec(flood.UID, flood.dashboard),
    DashboardSpec(health.UID, health.dashboard),
)
HOME_UID = overview.UID
#: Where the provider reads the JSON inside the Grafana container.
CONTAINER_DASHBOARDS_DIR = "/var/lib/grafana/dashboards/khanhhoa-ioc"


def render(lang: Lang) -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON, in wall order."""
    out: dict[str, dict[str, Any]] = {}
    for spec in DASHBOARDS:
        data = to_json(spec.build(lang).build())
        if data.get("uid") != spec.uid:
            raise AssertionError(f"dashboard {spec.uid} built with uid {data.get('uid')!r}")
        out[spec.uid] = data
    return out


def wall_url(grafana_url: str, uid: str = HOME_UID) -> str:
    """Kiosk URL for a wall screen: no chrome, refreshed every 30 s.

    >>> wall_url("http://grafana:3000/")
    'http://grafana:3000/d/ioc-overview?kiosk&refresh=30s'
    """
    return f"{grafana_url.rstrip('/')}/d/{uid}?kiosk&refresh={WALL_REFRESH}"


def datasource_json(
    *,
    timescaledb: bool = True,
    host: str = "${GRAFANA_DB_HOST}",
    database: str = "${GRAFANA_DB_NAME}",
    user: str = "${GRAFANA_DB_USER}",
    password: str | None = "${GRAFANA_DB_PASSWORD}",
    sslmode: str = "disable",
) -> dict[str, Any]:
    """The data source as Grafana takes it. The defaults are ``${VAR}`` references that Grafana's
    provisioning expands from its environment; ``ioc dashboards push`` passes real values.
    ``sslmode`` "disable" suits the compose network; use require/verify-full across hosts.
    """
    out: dict[str, Any] = {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": host,
        "user": user,
        "database": database,
        "isDefault": True,
        "editable": False,
        "jsonData": {
            "database": database,
            "sslmode": sslmode,
            "postgresVersion": 1500,
            "timescaledb": timescaledb,
            "maxOpenConns": 10,
            "maxIdleConns": 10,
            "connMaxLifetime": 14400,
            "timeInterval": "10s",
        },
    }
    if password is not None:
        out["secureJsonData"] = {"password": password}
    return out


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """A tiny YAML emitter for provisioning files (dicts, lists, scalars; strings JSON-quoted)."""
    import json

    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            sub = _yaml(item, indent + 1)
            lines.append(f"{pad}- {sub[0].lstrip()}")
            lines.extend(sub[1:])
    else:
        lines.append(pad + json.dumps(value, ensure_ascii=False))
    return lines


def _scalar(v: Any) -> str:
    import json

    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return json.dumps(v, ensure_ascii=False)


def provisioning_files(lang: Lang, *, timescaledb: bool = True) -> dict[str, str]:
    """Relative path -> text of every provisioning file."""
    ds = {"apiVersion": 1, "datasources": [datasource_json(timescaledb=timescaledb)]}
    provider = {
        "apiVersion": 1,
        "providers": [{
            "name": "khanhhoa-ioc",
            "orgId": 1,
            "folder": FOLDER_TITLE[lang],
            "folderUid": FOLDER_UID,
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 30,
            "options": {"path": CONTAINER_DASHBOARDS_DIR, "foldersFromFilesStructure": False},
        }],
    }
    header = "# Generated by `ioc dashboards build`; do not edit (re-run the build).\n"
    ini = "\n".join([
        "; Generated by `ioc dashboards build`. Wall screens on the IOC's internal network:",
        "; anonymous read-only viewers, the overview as home, kiosk URLs such as",
        f";   {wall_url('http://grafana:3000')}",
        "; Do not enable anonymous access on a Grafana reachable from the internet.",
        "[auth.anonymous]",
        "enabled = true",
        "org_name = Main Org.",
        "org_role = Viewer",
        "hide_version = true",
        "",
        "[dashboards]",
        f"default_home_dashboard_path = {CONTAINER_DASHBOARDS_DIR}/{HOME_UID}.json",
        "min_refresh_interval = 10s",
        "",
        "[users]",
        "viewers_can_edit = false",
        "",
        "[analytics]",
        "reporting_enabled = false",
        "check_for_updates = false",
        "",
    ])
    return {
        "provisioning/datasources/ioc.yaml": header + "\n".join(_yaml(ds)) + "\n",
        "provisioning/dashboards/ioc.yaml": header + "\n".join(_yaml(provider)) + "\n",
        "grafana.ini": ini,
    }


def write(out_dir: Path, lang: Lang, *, timescaledb: bool = True) -> list[Path]:
    """Write dashboards and provisioning under ``out_dir``; returns the files written, sorted."""
    files: dict[str, str] = {f"dashboards/{uid}.json": dumps(data) for uid, data in render(lang).items()}
    files.update(provisioning_files(lang, timescaledb=timescaledb))
    written = []
    for rel, text in sorted(files.items()):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
