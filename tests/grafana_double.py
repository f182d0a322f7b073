"""A local HTTP double of Grafana's documented HTTP API, for tests only.

Grafana cannot run on the CI machines, so the code that talks to it (``ioc dashboards push``,
an annotations alert channel, ...) is tested against this double instead. It is a real HTTP
server (stdlib ``http.server`` in a daemon thread, on a free loopback port), so the real
``grafana-client`` or any HTTP client is used unchanged. Shapes follow the legacy ``/api``
reference (https://grafana.com/docs/grafana/latest/developers/http_api/): folder, data source,
dashboard, search, health and annotations APIs, including their error statuses and messages
(401 without a valid Bearer token, 404 ``Data source not found``, 409 on duplicate names,
412 ``name-exists`` / ``version-mismatch`` when saving a dashboard without ``overwrite``,
400 ``Failed to save annotation`` for an empty text, ...).

Usage::

    with GrafanaDouble(token="secret") as g:        # starts on 127.0.0.1:<free port>
        client = GrafanaApi.from_url(g.url, credential=TokenAuth("secret"))
        ...
        assert g.count("POST", "/api/folders") == 1  # every request is recorded
        g.fail_next(503, method="POST", path="/api/annotations", times=2)  # fault injection

Constructor ``GrafanaDouble(token="test-token", *, version="11.2.0", host="127.0.0.1")``:

- ``token``: the only accepted ``Authorization: Bearer <token>``; anything else gets 401.
  ``/api/health`` and ``/api/frontend/settings`` need no token, as in Grafana.
- ``version``: reported by ``/api/health``.

State is kept in memory and is readable for assertions (copies, under a lock):
``folders()``, ``datasources()``, ``dashboards()`` (uid → stored dashboard JSON with ``id`` and
``version`` set), ``annotations()`` and ``requests()`` (``Request(method, path, query, body)``
in arrival order). ``reset()`` clears everything.

Routes: ``GET /api/health`` and ``GET /api/frontend/settings`` (``buildInfo`` only; both public); ``GET|POST /api/folders``, ``GET /api/folders/:uid``;
``GET|POST /api/datasources``, ``GET /api/datasources/name/:name``,
``GET|PUT|DELETE /api/datasources/uid/:uid``; ``POST /api/dashboards/db``,
``GET|DELETE /api/dashboards/uid/:uid``; ``GET /api/search``; ``POST|GET /api/annotations``,
``GET|PUT|PATCH|DELETE /api/annotations/:id``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["GrafanaDouble", "Request"]

JSON = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One request as the double received it (body parsed as JSON when it was JSON)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorized: bool


@dataclass
class _Fault:
    status: int
    method: str | None
    path: str | None
    times: int


class _ApiError(Exception):
    def __init__(self, status: int, body: JSON) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def _err(code: int, message: str, **extra: Any) -> _ApiError:
    return _ApiError(code, {"message": message, **extra})


def _slug(title: str) -> str:
    """Grafana's slugify: ASCII-folded, lower case, non-alphanumerics collapsed to '-'."""
    folded = unicodedata.normalize("NFKD", title.replace("đ", "d").replace("Đ", "D"))
    ascii_only = folded.encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_only.lower()).strip("-")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _State:
    folders: dict[str, JSON] = field(default_factory=dict)
    datasources: dict[str, JSON] = field(default_factory=dict)
    dashboards: dict[str, JSON] = field(default_factory=dict)
    dashboard_meta: dict[str, JSON] = field(default_factory=dict)
    annotations: dict[int, JSON] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class GrafanaDouble:
    """In-memory Grafana HTTP API on a free loopback port (routes and shapes: the module docstring).

    ``GrafanaDouble(token="test-token", *, version="11.2.0", host="127.0.0.1")``; use it as a
    context manager (or ``start()``/``stop()``), then point any client at ``.url`` with
    ``Authorization: Bearer <token>``. Inspect ``folders()``, ``datasources()``, ``dashboards()``,
    ``annotations()``, ``requests()`` and ``count(method, path)``; inject failures with
    ``fail_next(status, method=..., path=..., times=...)``; ``reset()`` clears all state.
    """

    def __init__(
        self, token: str = "test-token", *, version: str = "11.2.0", host: str = "127.0.0.1"
    ) -> None:
        if not token:
            raise ValueError("token must be non-empty: the double always checks Bearer auth")
        self.token = token
        self.version = version
        self._host = host
        self._lock = threading.RLock()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("GrafanaDouble is not started; call start() or use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GrafanaDouble:
        if self._server is not None:
            return self
        double = self

        class Handler(_Handler):
            owner = double

        self._server = ThreadingHTTPServer((self._host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="grafana-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> GrafanaDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection
    def folders(self) -> list[JSON]:
        with self._lock:
            return [json.loads(json.dumps(f)) for f in self._state.folders.values()]

    def datasources(self) -> list[JSON]:
        with self._lock:
            return [json.loads(json.dumps(d)) for d in self._state.datasources.values()]

    def dashboards(self) -> dict[str, JSON]:
        with self._lock:
            return json.loads(json.dumps(self._state.dashboards))  # type: ignore[no-any-return]

    def annotations(self) -> list[JSON]:
        with self._lock:
            return [json.loads(json.dumps(a)) for a in self._state.annotations.values()]

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._state.requests)

    def count(self, method: str, path: str) -> int:
        """How many authorized requests had this method and exact path (query excluded)."""
        with self._lock:
            return sum(
                1 for r in self._state.requests if r.method == method and r.path == path and r.authorized
            )

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    def fail_next(
        self, status: int, *, method: str | None = None, path: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` and a Grafana-shaped error body.

        ``path`` matches as a prefix (``/api/annotations`` also matches ``/api/annotations/7``).
        Faulted requests are recorded but change no state.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._state.faults.append(_Fault(status, method, path, times))

    # ------------------------------------------------------------------ dispatch
    def _take_fault(self, method: str, path: str) -> int | None:
        for f in self._state.faults:
            if (f.method is None or f.method == method) and (f.path is None or path.startswith(f.path)):
                f.times -= 1
                if f.times == 0:
                    self._state.faults.remove(f)
                return f.status
        return None

    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, auth: str | None
    ) -> tuple[int, Any]:
        authorized = auth == f"Bearer {self.token}"
        with self._lock:
            self._state.requests.append(Request(method, path, query, body, authorized))
            if path == "/api/health" and method == "GET":
                return 200, {"commit": "double", "database": "ok", "version": self.version}
            # public in Grafana; grafana-client's health.check() reads buildInfo from it
            if path == "/api/frontend/settings" and method == "GET":
                return 200, {
                    "buildInfo": {
                        "version": self.version,
                        "commit": "double",
                        "edition": "Open Source",
                        "env": "production",
                    }
                }
            if not authorized:
                if auth is None:
                    return 401, {"message": "Unauthorized"}
                return 401, {"message": "Invalid API key"}
            status = self._take_fault(method, path)
            if status is not None:
                return status, {"message": f"injected failure {status}", "status": "error"}
            try:
                return self._route(method, path, query, body)
            except _ApiError as e:
                return e.status, e.body

    def _route(self, method: str, path: str, q: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] != ["api"]:
            raise _err(404, "Not found")
        p = parts[1:]
        if p == ["folders"]:
            return self._folders(method, q, body)
        if len(p) == 2 and p[0] == "folders" and method == "GET":
            return 200, self._folder(p[1])
        if p == ["datasources"]:
            return self._datasources(method, body)
        if len(p) == 3 and p[:2] == ["datasources", "name"] and method == "GET":
            return 200, self._datasource_by_name(p[2])
        if len(p) == 3 and p[:2] == ["datasources", "uid"]:
            return self._datasource_uid(method, p[2], body)
        if p == ["dashboards", "db"] and method == "POST":
            return 200, self._save_dashboard(body)
        if len(p) == 3 and p[:2] == ["dashboards", "uid"]:
            return self._dashboard_uid(method, p[2])
        if p == ["search"] and method == "GET":
            return 200, self._search(q)
        if p == ["annotations"]:
            return self._annotations(method, q, body)
        if len(p) == 2 and p[0] == "annotations":
            return self._annotation(method, p[1], body)
        raise _err(404, "Not found")

    # ------------------------------------------------------------------ folders
    def _folder_json(self, f: JSON) -> JSON:
        return dict(f)

    def _folders(self, method: str, q: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        s = self._state
        if method == "GET":
            limit = int(q.get("limit", ["1000"])[0])
            rows = sorted(s.folders.values(), key=lambda f: f["title"].lower())[:limit]
            return 200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in rows]
        if method != "POST":
            raise _err(405, "Method not allowed")
        if not isinstance(body, dict) or not str(body.get("title", "")).strip():
            raise _err(400, "folder title cannot be empty")
        uid = str(body.get("uid") or uuid.uuid4().hex[:14])
        if len(uid) > 40 or not re.fullmatch(r"[A-Za-z0-9_-]+", uid):
            raise _err(400, "uid contains illegal characters or is too long")
        if uid in s.folders or uid in s.dashboards:
            raise _err(409, "a folder/dashboard with the same uid already exists")
        if any(f["title"] == body["title"] for f in s.folders.values()):
            raise _err(409, "a folder with the same name already exists")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        folder = {
            "id": s.new_id(),
            "uid": uid,
            "title": body["title"],
            "url": f"/dashboards/f/{uid}/{_slug(body['title'])}",
            "hasAcl": False,
            "canSave": True,
            "canEdit": True,
            "canAdmin": True,
            "createdBy": "service-account",
            "created": now,
            "updatedBy": "service-account",
            "updated": now,
            "version": 1,
        }
        s.folders[uid] = folder
        return 200, dict(folder)

    def _folder(self, uid: str) -> JSON:
        f = self._state.folders.get(uid)
        if f is None:
            raise _err(404, "folder not found")
        return dict(f)

    # ------------------------------------------------------------------ data sources
    @staticmethod
    def _public_ds(ds: JSON) -> JSON:
        """Secure fields are write-only in Grafana: GET shows only which ones are set."""
        out = {k: v for k, v in ds.items() if k != "secureJsonData"}
        out["secureJsonFields"] = {k: True for k in ds.get("secureJsonData", {}) or {}}
        return out

    def _datasources(self, method: str, body: Any) -> tuple[int, Any]:
        s = self._state
        if method == "GET":
            return 200, [
                self._public_ds(d) for d in sorted(s.datasources.values(), key=lambda d: d["name"].lower())
            ]
        if method != "POST":
            raise _err(405, "Method not allowed")
        if not isinstance(body, dict) or not body.get("name") or not body.get("type"):
            raise _err(400, "bad request data")
        if any(d["name"] == body["name"] for d in s.datasources.values()):
            raise _err(409, "data source with the same name already exists")
        uid = str(body.get("uid") or uuid.uuid4().hex[:14])
        if uid in s.datasources:
            raise _err(409, "data source with the same uid already exists")
        ds = self._ds_from_body(s.new_id(), uid, body, version=1)
        s.datasources[uid] = ds
        pub = self._public_ds(ds)
        return 200, {"datasource": pub, "id": ds["id"], "message": "Datasource added", "name": ds["name"]}

    @staticmethod
    def _ds_from_body(ds_id: int, uid: str, body: JSON, version: int) -> JSON:
        return {
            "id": ds_id,
            "uid": uid,
            "orgId": 1,
            "name": body["name"],
            "type": body["type"],
            "typeLogoUrl": "",
            "access": body.get("access", "proxy"),
            "url": body.get("url", ""),
            "user": body.get("user", ""),
            "database": body.get("database", ""),
            "basicAuth": bool(body.get("basicAuth", False)),
            "isDefault": bool(body.get("isDefault", False)),
            "jsonData": dict(body.get("jsonData") or {}),
            "secureJsonData": dict(body.get("secureJsonData") or {}),
            "readOnly": False,
            "version": version,
        }

    def _datasource_by_name(self, name: str) -> JSON:
        for d in self._state.datasources.values():
            if d["name"] == name:
                return self._public_ds(d)
        raise _err(404, "Data source not found")

    def _datasource_uid(self, method: str, uid: str, body: Any) -> tuple[int, Any]:
        s = self._state
        ds = s.datasources.get(uid)
        if ds is None:
            raise _err(404, "Data source not found")
        if method == "GET":
            return 200, self._public_ds(ds)
        if method == "DELETE":
            del s.datasources[uid]
            return 200, {"message": "Data source deleted", "id": ds["id"]}
        if method != "PUT":
            raise _err(405, "Method not allowed")
        if not isinstance(body, dict) or not body.get("name") or not body.get("type"):
            raise _err(400, "bad request data")
        if any(d["name"] == body["name"] and d["uid"] != uid for d in s.datasources.values()):
            raise _err(409, "data source with the same name already exists")
        new = self._ds_from_body(ds["id"], uid, body, version=int(ds["version"]) + 1)
        if not body.get("secureJsonData"):  # secure fields survive an update that omits them
            new["secureJsonData"] = ds.get("secureJsonData", {})
        s.datasources[uid] = new
        pub = self._public_ds(new)
        return 200, {"datasource": pub, "id": new["id"], "message": "Datasource updated", "name": new["name"]}

    # ------------------------------------------------------------------ dashboards
    def _save_dashboard(self, body: Any) -> JSON:
        s = self._state
        if not isinstance(body, dict) or not isinstance(body.get("dashboard"), dict):
            raise _err(400, "bad request data")
        dash = json.loads(json.dumps(body["dashboard"]))
        title = str(dash.get("title") or "").strip()
        if not title:
            raise _err(400, "Dashboard title cannot be empty")
        folder_uid = body.get("folderUid") or body.get("folderUID") or ""
        if folder_uid and folder_uid not in s.folders:
            raise _err(400, "folder not found")
        overwrite = bool(body.get("overwrite", False))
        uid = str(dash.get("uid") or uuid.uuid4().hex[:14])
        if len(uid) > 40:
            raise _err(400, "Dashboard UID too long")
        existing = s.dashboards.get(uid)
        if existing is not None and not overwrite:
            if dash.get("version") is not None and dash["version"] != existing["version"]:
                raise _err(412, "The dashboard has been changed by someone else", status="version-mismatch")
            if dash.get("id") is None:
                raise _err(412, "A dashboard with the same uid already exists", status="name-exists")
        same_name = [
            u
            for u, d in s.dashboards.items()
            if u != uid and d["title"] == title and s.dashboard_meta[u]["folderUid"] == folder_uid
        ]
        if same_name and not overwrite:
            raise _err(
                412, "A dashboard with the same name in the folder already exists", status="name-exists"
            )
        for u in same_name:  # overwrite replaces the same-named dashboard, as Grafana does
            del s.dashboards[u]
            del s.dashboard_meta[u]
        dash_id = existing["id"] if existing is not None else s.new_id()
        version = existing["version"] + 1 if existing is not None else 1
        dash.update({"id": dash_id, "uid": uid, "version": version})
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        slug = _slug(title)
        folder = s.folders.get(folder_uid)
        s.dashboards[uid] = dash
        s.dashboard_meta[uid] = {
            "type": "db",
            "canSave": True,
            "canEdit": True,
            "canAdmin": True,
            "canStar": True,
            "slug": slug,
            "url": f"/d/{uid}/{slug}",
            "expires": "0001-01-01T00:00:00Z",
            "created": existing and s.dashboard_meta.get(uid, {}).get("created") or now,
            "updated": now,
            "updatedBy": "service-account",
            "createdBy": "service-account",
            "version": version,
            "hasAcl": False,
            "isFolder": False,
            "folderId": folder["id"] if folder else 0,
            "folderUid": folder_uid,
            "folderTitle": folder["title"] if folder else "General",
            "folderUrl": folder["url"] if folder else "",
            "provisioned": False,
            "provisionedExternalId": "",
            "message": body.get("message", ""),
        }
        return {
            "id": dash_id,
            "uid": uid,
            "url": f"/d/{uid}/{slug}",
            "status": "success",
            "version": version,
            "slug": slug,
            "folderUid": folder_uid,
        }

    def _dashboard_uid(self, method: str, uid: str) -> tuple[int, Any]:
        s = self._state
        dash = s.dashboards.get(uid)
        if dash is None:
            raise _err(404, "Dashboard not found")
        if method == "GET":
            return 200, {"dashboard": json.loads(json.dumps(dash)), "meta": dict(s.dashboard_meta[uid])}
        if method == "DELETE":
            del s.dashboards[uid]
            del s.dashboard_meta[uid]
            return 200, {
                "title": dash["title"],
                "message": f"Dashboard {dash['title']} deleted",
                "id": dash["id"],
            }
        raise _err(405, "Method not allowed")

    def _search(self, q: dict[str, list[str]]) -> list[JSON]:
        s = self._state
        text = (q.get("query", [""])[0]).lower()
        kind = q.get("type", [""])[0]
        tags = set(q.get("tag", []))
        dash_uids = set(q.get("dashboardUIDs", []))
        folder_uids = set(q.get("folderUIDs", []))
        limit = int(q.get("limit", ["1000"])[0])
        hits: list[JSON] = []
        if kind in ("", "dash-folder") and not tags and not dash_uids:
            for f in s.folders.values():
                if text in f["title"].lower() and (not folder_uids or "" in folder_uids):
                    hits.append(
                        {
                            "id": f["id"],
                            "uid": f["uid"],
                            "title": f["title"],
                            "uri": f"db/{_slug(f['title'])}",
                            "url": f["url"],
                            "slug": "",
                            "type": "dash-folder",
                            "tags": [],
                            "isStarred": False,
                        }
                    )
        if kind in ("", "dash-db"):
            for uid, d in s.dashboards.items():
                m = s.dashboard_meta[uid]
                if text and text not in d["title"].lower():
                    continue
                if tags and not tags.issubset(set(d.get("tags") or [])):
                    continue
                if dash_uids and uid not in dash_uids:
                    continue
                if folder_uids and m["folderUid"] not in folder_uids:
                    continue
                hit: JSON = {
                    "id": d["id"],
                    "uid": uid,
                    "title": d["title"],
                    "uri": f"db/{m['slug']}",
                    "url": m["url"],
                    "slug": "",
                    "type": "dash-db",
                    "tags": list(d.get("tags") or []),
                    "isStarred": False,
                }
                if m["folderUid"]:
                    hit.update(
                        {
                            "folderId": m["folderId"],
                            "folderUid": m["folderUid"],
                            "folderTitle": m["folderTitle"],
                            "folderUrl": m["folderUrl"],
                        }
                    )
                hits.append(hit)
        hits.sort(key=lambda h: (h["type"] != "dash-folder", h["title"].lower()))
        return hits[:limit]

    # ------------------------------------------------------------------ annotations
    def _dashboard_id(self, uid: str) -> int | None:
        d = self._state.dashboards.get(uid)
        return None if d is None else int(d["id"])

    def _annotations(self, method: str, q: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        s = self._state
        if method == "POST":
            if not isinstance(body, dict):
                raise _err(400, "bad request data")
            if not body.get("text"):
                raise _err(400, "Failed to save annotation")
            dash_uid = body.get("dashboardUID") or ""
            dash_id = int(body.get("dashboardId") or 0)
            if dash_uid:
                # Grafana resolves the uid and silently keeps dashboardId 0 when it is unknown.
                dash_id = self._dashboard_id(dash_uid) or dash_id
            t = int(body.get("time") or _now_ms())
            t_end = int(body.get("timeEnd") or t)
            now = _now_ms()
            ann_id = s.new_id()
            s.annotations[ann_id] = {
                "id": ann_id,
                "alertId": 0,
                "alertName": "",
                "dashboardId": dash_id,
                "dashboardUID": dash_uid or None,
                "panelId": int(body.get("panelId") or 0),
                "userId": 1,
                "newState": "",
                "prevState": "",
                "created": now,
                "updated": now,
                "time": t,
                "timeEnd": t_end,
                "text": str(body["text"]),
                "tags": list(body.get("tags") or []),
                "login": "service-account",
                "email": "",
                "avatarUrl": "",
                "data": dict(body.get("data") or {}),
            }
            return 200, {"message": "Annotation added", "id": ann_id}
        if method != "GET":
            raise _err(405, "Method not allowed")
        items = list(s.annotations.values())

        def one(name: str) -> str | None:
            v = q.get(name)
            return v[0] if v else None

        if (dash_uid := one("dashboardUID")) is not None and dash_uid != "":
            did = self._dashboard_id(dash_uid)
            if did is None:
                raise _err(400, "Invalid dashboard UID in annotation request")
            items = [a for a in items if a["dashboardId"] == did]
        elif (dash_id := one("dashboardId")) is not None:
            items = [a for a in items if a["dashboardId"] == int(dash_id)]
        if (panel := one("panelId")) is not None:
            items = [a for a in items if a["panelId"] == int(panel)]
        if (user := one("userId")) is not None:
            items = [a for a in items if a["userId"] == int(user)]
        if (alert := one("alertId")) is not None:
            items = [a for a in items if a["alertId"] == int(alert)]
        if one("type") == "alert":
            items = [a for a in items if a["alertId"] != 0]
        elif one("type") == "annotation":
            items = [a for a in items if a["alertId"] == 0]
        if (t_from := one("from")) is not None:
            items = [a for a in items if a["timeEnd"] >= int(t_from)]
        if (t_to := one("to")) is not None:
            items = [a for a in items if a["time"] <= int(t_to)]
        want = q.get("tags", [])
        if want:
            match_any = (one("matchAny") or "false").lower() == "true"
            test = any if match_any else all
            items = [a for a in items if test(t in a["tags"] for t in want)]
        items.sort(key=lambda a: (-a["time"], -a["id"]))
        limit = int(one("limit") or 100)
        return 200, [dict(a) for a in items[:limit]]

    def _annotation(self, method: str, raw_id: str, body: Any) -> tuple[int, Any]:
        s = self._state
        try:
            ann_id = int(raw_id)
        except ValueError:
            raise _err(400, "annotationId is invalid") from None
        ann = s.annotations.get(ann_id)
        if ann is None:
            raise _err(404, "Annotation not found")
        if method == "GET":
            return 200, dict(ann)
        if method == "DELETE":
            del s.annotations[ann_id]
            return 200, {"message": "Annotation deleted"}
        if not isinstance(body, dict):
            raise _err(400, "bad request data")
        if method == "PUT":  # full update: absent fields become zero values, data is kept unless given
            ann.update(
                {
                    "time": int(body.get("time") or 0),
                    "timeEnd": int(body.get("timeEnd") or 0),
                    "text": str(body.get("text") or ""),
                    "tags": list(body.get("tags") or []),
                    "updated": _now_ms(),
                }
            )
            if body.get("data") is not None:
                ann["data"] = dict(body["data"])
            return 200, {"message": "Annotation updated"}
        if method == "PATCH":  # only the fields that are set and non-zero change
            if body.get("tags") is not None:
                ann["tags"] = list(body["tags"])
            if body.get("text"):
                ann["text"] = str(body["text"])
            if body.get("time"):
                ann["time"] = int(body["time"])
            if body.get("timeEnd"):
                ann["timeEnd"] = int(body["timeEnd"])
            if body.get("data") is not None:
                ann["data"] = dict(body["data"])
            ann["updated"] = _now_ms()
            return 200, {"message": "Annotation patched"}
        raise _err(405, "Method not allowed")


class _Handler(BaseHTTPRequestHandler):
    owner: GrafanaDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; requests are recorded on the double."""

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {"message": "bad request data"})
                return
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            status, payload = self.owner._handle(
                self.command, parts.path, query, body, self.headers.get("Authorization")
            )
        except Exception as e:  # noqa: BLE001 - a bug in the double must show up as a 500, not a reset
            status, payload = 500, {"message": f"grafana double error: {type(e).__name__}: {e}"}
        self._send(status, payload)

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(
            status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None
        )
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve
