"""Configured secrets never appear in any output: every `ioc` command, valid and broken settings.

The commands are enumerated from the click group, so a new command is covered without editing
this file (it gets generated arguments unless ARGS names better ones). Each runs as a real
process against the real stack, with:

- valid settings: a PostgreSQL role whose password is distinctive, the stack's MQTT and Kafka;
- a wrong password for PostgreSQL and MQTT;
- unreachable hosts;
- malformed URLs (unencoded special characters, a bad port, no scheme separator).

stdout, stderr and every file the command leaves under its data directory are scanned for each
secret in plain and URL-encoded form, and for the distinctive core of the password, so that a
fragment (a password cut at one of its special characters) is caught too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit

import click
import psycopg
import pytest
from psycopg import sql

from ioc.composition.cli import cli
from ioc.stack.process import free_port
from ioc.storage.migrate import migrate
from tests.conftest import stack_env

pytestmark = pytest.mark.integration

CORE = "Q7LEAK"  # every fragment of every secret below between special characters carries it
PASSWORD = f"{CORE}a#b@{CORE}c w/{CORE}d%{CORE}e?"
WRONG_PASSWORD = f"{CORE}wrong:{CORE}x@y"
GRAFANA_TOKEN = f"glsa_{CORE}token_0123456789abcdef"
WEBHOOK_SECRET = f"{CORE}-webhook-signing-secret"
WEBHOOK_TOKEN = f"T0{CORE}/B1/hooktoken"

#: Arguments that make a command do real work; other commands get generated ones.
ARGS: dict[str, list[str]] = {
    "alerts ack": ["1", "--by", "tester"],
    "db migrate": [],
    "demo": ["--duration", "5"],
    "detect-file": ["{tmp}/in.csv", "--out", "{tmp}/out.csv"],
    "record": ["--out", "{tmp}/rec.jsonl", "--duration", "3"],
    "replay": ["{tmp}/missing.jsonl"],
    "score": ["--scenario", "demo"],
    "simulate": ["--scenario", "demo", "--speed", "200"],
    "train": ["--from-db", "--sensor", "HYD_DONG_TRANG", "--out", "{tmp}/model.json"],
}
#: Commands that run until stopped (or for long): stopped with SIGINT after this many seconds.
RUN_S = 12.0
SECRET_FILES = {"env", "state.json"}  # the stack's own credential files (mode 0600), by design


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def _generated_args(cmd: click.Command) -> list[str]:
    """Plausible values for required parameters of a command ARGS does not know."""
    out: list[str] = []
    for p in cmd.params:
        if not p.required:
            continue
        value = "1" if isinstance(p.type, click.types.IntParamType | click.types.FloatParamType) else (
            "{tmp}/generated" if isinstance(p.type, click.Path) else "x")
        if isinstance(p, click.Argument):
            out.append(value)
        elif isinstance(p, click.Option):
            out += [p.opts[0], value]
    return out


COMMANDS = [(" ".join(path), list(path) + ARGS.get(" ".join(path), _generated_args(cmd))) for path, cmd in _commands(cli)]


def _needles(*secrets: str) -> set[str]:
    out = {CORE}
    for s in secrets:
        out |= {s, quote(s, safe=""), quote(s), quote_plus(s)}
    return out


@dataclass
class Run:
    scenario: str
    command: str
    returncode: int | None
    output: str
    files: dict[str, bytes]


def _run(scenario: str, name: str, argv: list[str], env: dict[str, str], tmp: Path) -> Run:
    data = tmp / f"{scenario}-{name.replace(' ', '_')}"
    data.mkdir(parents=True)
    (data / "in.csv").write_text("ts,value\n")
    argv = [a.replace("{tmp}", str(data)) for a in argv]
    env = {**env, "IOC_DATA_DIR": str(data / "ioc"), "IOC_STACK_ENV": str(data / "no-stack-env"),
           "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}
    with open(data / "stdout", "wb") as out, open(data / "stderr", "wb") as err:
        p = subprocess.Popen([sys.executable, "-m", "ioc.composition.cli", "--log-level", "DEBUG", *argv], env=env, cwd=data,
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            p.wait(RUN_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGINT)  # what an operator does; the demo stops its children
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    output = (data / "stdout").read_text("utf-8", "replace") + (data / "stderr").read_text("utf-8", "replace")
    files = {}
    for f in data.rglob("*"):
        if f.is_file() and f.name not in ("stdout", "stderr"):
            if f.name in SECRET_FILES and f.parent.name == "stack":
                assert f.stat().st_mode & 0o077 == 0, f"{f} holds credentials and must be private"
                continue
            files[str(f.relative_to(data))] = f.read_bytes()
    return Run(scenario, name, p.returncode, output, files)


@pytest.fixture(scope="module")
def leaky_role(pg_url: str) -> Iterator[str]:
    """A PostgreSQL role whose password has every URL special character, owning a migrated database."""
    role, db = f"leak_{uuid.uuid4().hex[:6]}", f"leak_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(role)))
    server = urlsplit(pg_url)
    url = f"postgresql://{role}:{quote(PASSWORD, safe='')}@{server.hostname}:{server.port}/{db}"
    migrate(url)
    yield url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _scenarios(stack, leaky_url: str) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    mqtt = urlsplit(stack.urls["IOC_MQTT_URL"])
    db = urlsplit(leaky_url)
    user = db.username or "ioc"
    dead = free_port()
    common = {
        "IOC_GRAFANA_URL": f"http://127.0.0.1:{free_port()}", "IOC_GRAFANA_TOKEN": GRAFANA_TOKEN,
        "IOC_WEBHOOK_URLS": f"http://127.0.0.1:{free_port()}/services/{WEBHOOK_TOKEN}",
        "IOC_WEBHOOK_SECRET": WEBHOOK_SECRET, "IOC_TOPIC_PREFIX": f"leak-{uuid.uuid4().hex[:6]}",
        "IOC_APP_ID": f"leak-{uuid.uuid4().hex[:6]}", "IOC_BRIDGE_ID": f"leak-{uuid.uuid4().hex[:6]}",
        "IOC_SHARE_GROUP": f"leak{uuid.uuid4().hex[:6]}", "IOC_BRIDGE_RETIRE_ON_EXIT": "true",
    }
    enc, wrong = quote(PASSWORD, safe=""), quote(WRONG_PASSWORD, safe="")
    return {
        "valid": {**common, "IOC_DATABASE_URL": leaky_url},
        "wrong_password": {**common,
                           "IOC_DATABASE_URL": f"postgresql://{user}:{wrong}@{db.hostname}:{db.port}{db.path}",
                           "IOC_MQTT_URL": f"mqtt://ioc:{wrong}@{mqtt.hostname}:{mqtt.port}"},
        "unreachable": {**common, "IOC_DATABASE_URL": f"postgresql://{user}:{enc}@127.0.0.1:{dead}/ioc",
                        "IOC_MQTT_URL": f"mqtt://ioc:{enc}@127.0.0.1:{dead}",
                        "IOC_KAFKA_URL": f"kafka://127.0.0.1:{dead}"},
        "malformed": {**common, "IOC_DATABASE_URL": f"postgresql://{user}:{PASSWORD}@{db.hostname}:{db.port}{db.path}",
                      "IOC_MQTT_URL": f"mqtt//ioc:{PASSWORD}@{mqtt.hostname}:{mqtt.port}"},
        "bad_port": {**common, "IOC_DATABASE_URL": f"postgresql://{user}:{enc}@{db.hostname}:notaport/ioc",
                     "IOC_MQTT_URL": f"mqtt://ioc:{enc}@{mqtt.hostname}:99999"},
    }


def test_the_enumeration_finds_every_command() -> None:
    names = {n for n, _ in COMMANDS}
    assert {"bridge", "worker", "config", "db migrate", "deadletters replay", "demo", "stack up"} <= names
    assert len(names) >= 15


def test_no_command_shows_a_secret(stack, leaky_role: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack_secrets = [p for p in (urlsplit(u).password for u in stack.urls.values()) if p]
    needles = _needles(PASSWORD, WRONG_PASSWORD, GRAFANA_TOKEN, WEBHOOK_SECRET, WEBHOOK_TOKEN, *stack_secrets)
    jobs = [(scenario, name, argv, stack_env(stack, **env))
            for scenario, env in _scenarios(stack, leaky_role).items()
            for name, argv in [*COMMANDS, *[(f"{n} --help", [*a[:len(n.split())], "--help"]) for n, a in COMMANDS]]
            if scenario == "valid" or not name.endswith("--help")]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda j: _run(j[0], j[1], j[2], j[3], tmp_path), jobs))
    leaks = []
    for r in runs:
        for needle in needles:
            if needle in r.output:
                at = r.output.index(needle)
                leaks.append(f"[{r.scenario}] ioc {r.command}: output shows {needle!r}: "
                             f"...{r.output[max(0, at - 150):at + 60]!r}")
            for fname, content in r.files.items():
                if needle.encode() in content:
                    leaks.append(f"[{r.scenario}] ioc {r.command}: file {fname} holds {needle!r}")
    assert leaks == [], "\n".join(sorted(set(leaks)))
    # the runs did real work: broken settings were named, valid ones got through
    by = {(r.scenario, r.command): r for r in runs}
    assert by[("valid", "config")].returncode == 0
    assert "IOC_DATABASE_URL" in by[("malformed", "config")].output
    assert by[("valid", "deadletters list")].returncode == 0, by[("valid", "deadletters list")].output[-2000:]
    assert "PostgreSQL" in by[("unreachable", "alerts list")].output
    assert "password authentication failed" in by[("wrong_password", "alerts list")].output
    print(f"{len(runs)} runs in {time.monotonic() - t0:.0f} s")
