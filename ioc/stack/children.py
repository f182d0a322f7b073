"""`ioc` child processes (worker, bridge) started by the demo and the tests, stopped by pid.

On the local stack each child connects to Mosquitto with its least-privilege account of
``deploy/mosquitto/acl``: the bridge as ``ioc-bridge``, the worker as ``ioc-worker``, the
simulator's ``simulate`` and ``replay`` as ``ioc-sim``. That happens only while the child's
IOC_MQTT_URL is still the stack's own observer URL; a URL configured otherwise is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ioc.errors import StackError
from ioc.stack.process import log_tail, stop_pid
from ioc.stack.services import MQTT_OBSERVER_ENV, mqtt_role_env

#: `ioc` command -> the MQTT role (account of deploy/mosquitto/acl) it runs as on the local stack
COMMAND_ROLES: dict[str, str] = {"bridge": "bridge", "worker": "worker", "simulate": "sim", "replay": "sim"}


def child_env(env: dict[str, str], command: str) -> dict[str, str]:
    """``env`` with IOC_MQTT_URL switched to ``command``'s role account when the local stack has one.

    Only when IOC_MQTT_URL is the stack's observer URL: an explicitly configured broker or
    account (docker compose, production, a test's wrong password) is kept as it is.
    """
    role = COMMAND_ROLES.get(command)
    role_url = env.get(mqtt_role_env(role)) if role else None
    observer = env.get(MQTT_OBSERVER_ENV)
    if role_url and observer and env.get("IOC_MQTT_URL") == observer:
        return {**env, "IOC_MQTT_URL": role_url}
    return env


@dataclass
class ChildProcesses:
    """Named ``python -m ioc.composition.cli …`` children, each logging to ``<logdir>/<name>.log``."""

    env: dict[str, str]
    logdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with open(self.logdir / f"{name}.log", "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "ioc.composition.cli", *args],
                env=child_env({**self.env, **(extra_env or {})}, args[0] if args else ""),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.procs[name] = p
        return p

    def start_pipeline(self, ready_file: Path, timeout_s: float = 60.0) -> None:
        """A worker and a bridge; returns once the bridge has subscribed (it writes ``ready_file``)."""
        ready_file.unlink(missing_ok=True)
        self.start("worker", "worker")
        self.start("bridge", "bridge", "--ready-file", str(ready_file))
        deadline = time.monotonic() + timeout_s
        while not ready_file.exists():
            self.check()
            if time.monotonic() > deadline:
                raise StackError(f"bridge did not subscribe within {timeout_s:.0f} s")
            time.sleep(0.1)

    def log(self, name: str, lines: int = 40) -> str:
        return log_tail(self.logdir / f"{name}.log", lines)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def check(self) -> None:
        """Raise with the log tail of the first child that exited."""
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise StackError(f"{name} exited with {p.returncode}:\n{self.log(name)}")

    def kill(self, name: str, sig: int) -> None:
        os.killpg(self.procs[name].pid, sig)
        self.procs[name].wait(30)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            stop_pid(p.pid, timeout_s=20)
