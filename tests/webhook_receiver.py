"""A local webhook receiver for tests: what a partner system behind IOC_WEBHOOK_URLS would run.

A real HTTP server (stdlib ``http.server`` in a daemon thread on a free loopback port). Every
POST is checked with ``ioc.alerting.signing.verify``; a bad or stale signature gets 401 and is
not recorded. Accepted notifications are deduplicated by ``X-IOC-Notification-Id``, as the
issue asks of receivers: a repeat is answered 200 and counted, but not stored again.

Fault injection: ``fail_next(n, status=500)`` answers the next n requests with that status
before looking at them; ``delay_next(n, seconds)`` holds them first (a slow receiver); ``down()`` closes the listening socket (connections are refused) and
``up()`` listens again on the same port.

Usage::

    with WebhookReceiver(secret="...") as rx:
        channel = WebhookChannel(rx.url, "...")
        ...
        assert list(rx.notifications) == [notification_id]
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ioc.alerting.signing import NOTIFICATION_ID_HEADER, SignatureRejected, verify

__all__ = ["Received", "WebhookReceiver"]


@dataclass(frozen=True)
class Received:
    notification_id: str
    content_type: str
    body: bytes
    headers: dict[str, str]


class WebhookReceiver:
    def __init__(self, secret: str, *, path: str = "/hooks/ioc", host: str = "127.0.0.1",
                 tolerance_s: float = 300) -> None:
        self.secret = secret
        self.path = path
        self.tolerance_s = tolerance_s
        self._host = host
        self._port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._faults: list[int] = []
        self._delays: list[float] = []
        self.notifications: dict[str, Received] = {}  # first accepted copy per id, in arrival order
        self.duplicates = 0
        self.rejected: list[str] = []  # SignatureRejected.reason of each refused request
        self.attempts = 0  # every request that reached the handler, faults included

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}{self.path}"

    def up(self) -> WebhookReceiver:
        if self._server is not None:
            return self
        owner = self

        class Handler(_Handler):
            receiver = owner

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening: new connections are refused until ``up()``."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ------------------------------------------------------------------ control
    def fail_next(self, n: int, status: int = 500) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            self._faults.extend([status] * n)

    def delay_next(self, n: int, seconds: float) -> None:
        """Hold the next n requests this long before answering (a slow or hung receiver)."""
        with self._lock:
            self._delays.extend([seconds] * n)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.notifications)

    # ------------------------------------------------------------------ handling
    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self._lock:
            self.attempts += 1
            delay = self._delays.pop(0) if self._delays else 0.0
        if delay:
            time.sleep(delay)
        with self._lock:
            if self._faults:
                return self._faults.pop(0), b"injected failure"
        if path != self.path:
            return 404, b"no such hook"
        try:
            verify(body, headers, self.secret, datetime.now(UTC), self.tolerance_s)
        except SignatureRejected as e:
            with self._lock:
                self.rejected.append(e.reason)
            return 401, str(e).encode()
        nid = next((v for k, v in headers.items() if k.lower() == NOTIFICATION_ID_HEADER.lower()), "")
        if not nid:
            return 400, b"missing notification id"
        with self._lock:
            if nid in self.notifications:
                self.duplicates += 1
                return 200, b"duplicate"
            ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
            self.notifications[nid] = Received(nid, ctype, body, dict(headers))
        return 200, b"ok"


class _Handler(BaseHTTPRequestHandler):
    receiver: WebhookReceiver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the receiver records what matters."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload = self.receiver._handle(self.path, dict(self.headers.items()), body)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
