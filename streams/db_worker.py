"""One database connection per agent, used from a worker thread, with retry that never gives up.

While the database is down the agent waits here, so Faust stops fetching once its buffers are
full: that is the back-pressure. Nothing is acknowledged until the write committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psycopg

from ioc.errors import ServiceUnavailable
from ioc.retry import Backoff
from ioc.settings import mask_url
from ioc.storage.db import connect

log = logging.getLogger(__name__)
R = TypeVar("R")


class DbWorker:
    """Serialises one agent's DB calls onto one thread and one connection."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self._conn: psycopg.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{name}")
        self.failures = 0

    def _call(self, fn: Callable[[psycopg.Connection], R]) -> R:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, autocommit=True)  # explicit transaction() blocks commit
        return fn(self._conn)

    def _reset(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - the connection is broken anyway
                pass
        self._conn = None

    async def run(self, fn: Callable[[psycopg.Connection], R], what: str) -> R:
        """Run ``fn(conn)`` until it succeeds; transient errors back off (capped, jittered)."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(base_s=0.2, cap_s=5.0)
        while True:
            try:
                return await loop.run_in_executor(self._pool, self._call, fn)
            except (psycopg.OperationalError, psycopg.InterfaceError, ServiceUnavailable) as e:
                self.failures += 1
                await loop.run_in_executor(self._pool, self._reset)
                delay = backoff.next()
                log.warning("%s: database %s unavailable during %s (%s); retry in %.2f s",
                            self.name, mask_url(self.url), what, str(e).splitlines()[0][:200], delay)
                await asyncio.sleep(delay)

    def close(self) -> None:
        self._pool.submit(self._reset).result(timeout=10)
        self._pool.shutdown(wait=False)
