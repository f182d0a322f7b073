"""`ioc stack up|down|status`: start the real services the pipeline needs, or use configured ones.

State (pids, URLs) is kept in ``<dir>/state.json``; URLs also go to ``<dir>/env`` which every
``ioc`` command reads as a fallback to its environment. ``down`` stops only pids it started.
A started Mosquitto enforces ``deploy/mosquitto/acl``: IOC_MQTT_URL is the all-rights local
observer account, and the role accounts' URLs are kept for the pipeline's processes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ioc.stack.process import pid_alive, stop_pid
from ioc.stack.services import (
    Service,
    remove_tree,
    start_mosquitto,
    start_postgres,
    start_tansu,
    stop_postgres,
)

log = logging.getLogger(__name__)

#: setting env var -> (service name, starter)
SERVICES: dict[str, tuple[str, Callable[[Path], Service]]] = {
    "IOC_MQTT_URL": ("mosquitto", start_mosquitto),
    "IOC_KAFKA_URL": ("tansu", start_tansu),
    "IOC_DATABASE_URL": ("postgres", start_postgres),
}


@dataclass
class StackState:
    base: Path
    services: dict[str, Service] = field(default_factory=dict)
    external: dict[str, str] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        """env var -> URL, for started and external services alike.

        A started Mosquitto adds its accounts' URLs under names Settings ignores
        (``IOC_STACK_MQTT_OBSERVER_URL``, ``IOC_STACK_MQTT_BRIDGE_URL``, …; see
        :mod:`ioc.stack.services`); ChildProcesses gives each pipeline process its own.
        """
        out = dict(self.external)
        for env, (name, _) in SERVICES.items():
            if name in self.services:
                out[env] = self.services[name].url
                out.update(self.services[name].role_urls)
        return out

    def save(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        state = {"services": {n: s.to_json() for n, s in self.services.items()}, "external": self.external}
        tmp = self.base / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.base / "state.json")
        env = self.base / "env"
        env.write_text("".join(f"{k}={v}\n" for k, v in sorted(self.urls.items())))
        env.chmod(0o600)

    @classmethod
    def load(cls, base: Path) -> StackState | None:
        path = base / "state.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        services = {n: Service(**s) for n, s in raw.get("services", {}).items()}
        return cls(base, services, dict(raw.get("external", {})))


def up(base: Path, environ: Mapping[str, str] | None = None) -> StackState:
    """Start every service whose URL is not configured; reuse a stack that is already running."""
    environ = os.environ if environ is None else environ
    existing = StackState.load(base)
    if existing is not None:
        dead = [n for n, s in existing.services.items() if not pid_alive(s.pid)]
        if not dead:
            return existing
        log.warning("stack in %s has dead services %s; restarting it", base, dead)
        down(base)
    state = StackState(base)
    try:
        for env, (name, start) in SERVICES.items():
            if environ.get(env):
                state.external[env] = environ[env]
                log.info("%s is configured (%s); not starting %s", env, env, name)
                continue
            state.services[name] = start(base)
            state.save()
    except BaseException:
        _stop_all(state)
        raise
    state.save()
    return state


def _stop_all(state: StackState) -> None:
    for name, svc in reversed(list(state.services.items())):
        if name == "postgres":
            stop_postgres(svc)
            stop_pid(svc.pid)
            remove_tree(svc.data_dir)
        else:
            stop_pid(svc.pid)


def down(base: Path) -> list[str]:
    """Stop the processes this stack started (by pid) and forget them."""
    state = StackState.load(base)
    if state is None:
        return []
    _stop_all(state)
    for f in ("state.json", "env"):
        (base / f).unlink(missing_ok=True)
    return list(state.services)


def status(base: Path) -> dict[str, dict[str, object]]:
    state = StackState.load(base)
    if state is None:
        return {}
    out: dict[str, dict[str, object]] = {}
    for name, svc in state.services.items():
        out[name] = {"pid": svc.pid, "alive": pid_alive(svc.pid), "url": svc.url, "log": svc.log}
    for env, url in state.external.items():
        out[env] = {"pid": None, "alive": None, "url": url, "log": None}
    return out


@contextmanager
def running_stack(base: Path, environ: Mapping[str, str] | None = None) -> Iterator[StackState]:
    """A stack for the duration of a block; stops only what it started itself."""
    already = StackState.load(base)
    if already is not None and all(pid_alive(s.pid) for s in already.services.values()):
        yield already
        return
    state = up(base, environ)
    try:
        yield state
    finally:
        down(base)

