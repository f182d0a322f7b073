"""One frozen settings model per process, read from ``IOC_*`` environment variables.

The local stack writes its URLs to ``.ioc/stack/env``; that file is read as a fallback, so
URLs set in the real environment (docker compose, production) always win.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ioc.errors import ConfigError
from ioc.logging_setup import remember_values

log = logging.getLogger(__name__)

STACK_ENV_FILE = Path(".ioc/stack/env")


def _check_scheme(url: str, schemes: tuple[str, ...], what: str) -> str:
    # Errors quote only _shown(url): a malformed URL is exactly the one whose password we cannot find.
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{what} must look like {schemes[0]}://host:port, got {_shown(url)}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ValueError(f"{what} has an invalid port: {_shown(url)}") from e
    return url


def _shown(url: str) -> str:
    """What an error message may quote of a URL: its scheme and host, never credentials or paths.

    >>> print(_shown("postgresql://ioc:pa ss@db.local:5432/ioc"))
    'postgresql://db.local:5432/…'
    >>> print(_shown("postgres//ioc:pw@h/db"))
    a value without a scheme (not shown: it may hold a password)
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not parts.scheme or "://" not in url:
        return "a value without a scheme (not shown: it may hold a password)"
    if host is None or ("@" in url and "@" not in parts.netloc):  # a password with '/', '?' or '#' in it
        return f"'{parts.scheme}://…' (rest not shown: it may hold a password)"
    return repr(f"{parts.scheme}://{host}{f':{port}' if port else ''}/…")


class Settings(BaseSettings):
    """Process configuration. Every field maps to ``IOC_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="IOC_", frozen=True, extra="ignore", env_file_encoding="utf-8"
    )

    mqtt_url: str | None = Field(
        None, description="MQTT broker, mqtt://user:pass@host:1883 or mqtts:// for TLS"
    )
    mqtt_ca_file: Path | None = Field(None, description="CA bundle for mqtts://")
    kafka_url: str | None = Field(None, description="Kafka bootstrap, kafka://host:9092[,host2:9092]")
    database_url: str | None = Field(None, description="PostgreSQL, postgresql://user:pass@host/db")
    grafana_url: str | None = Field(None, description="Grafana base URL, http(s)://host:3000")
    grafana_token: SecretStr | None = Field(None, description="Grafana service-account token")
    lang: Literal["vi", "en"] = Field("vi", description="language of dashboards and reports: vi or en")
    kafka_partitions: int = Field(8, ge=1, le=1024, description="partitions per ioc.* topic")
    deadletter_partitions: int = Field(
        1, ge=1, le=1024, description="partitions of a new dead-letter topic: letters are rare, and each partition a"
        " worker is assigned is one more the broker reads on every fetch"
    )
    data_dir: Path = Field(Path(".ioc"), description="where the stack, recordings and models live")
    envelope_max_readings: int = Field(500, ge=1, le=100_000, description="bridge: readings per envelope")
    envelope_max_ms: int = Field(75, ge=1, le=60_000, description="bridge: max envelope age in ms")
    max_payload_bytes: int = Field(4096, ge=64, le=1_048_576, description="MQTT payload size limit")
    max_future_s: float = Field(300.0, ge=0, description="reject readings further in the future")
    late_bound_s: float = Field(
        7 * 86400.0, gt=0, description="reject readings older than this (seconds)"
    )
    auto_register: bool = Field(False, description="accept readings from unknown sensors")
    worker_web_port: int | None = Field(None, description="Faust web port; None disables it")
    metrics_interval_s: float = Field(10.0, gt=0, description="pipeline_metrics write interval")
    topic_prefix: str = Field("ioc", pattern=r"^[A-Za-z0-9._-]{1,100}$", description="Kafka topic prefix")
    app_id: str = Field("ioc-worker", pattern=r"^[A-Za-z0-9._-]{1,100}$", description="Faust app id / consumer group")
    bridge_id: str = Field(
        "ioc-bridge-1", pattern=r"^[A-Za-z0-9._-]{1,100}$", description="MQTT client id (persistent session)"
    )
    mqtt_shared_subscription: bool = Field(
        True,
        description="bridge subscribes via $share/<group>/ so several bridges split the load; Mosquitto 2.0 does"
        " not restore shared subscriptions after a broker restart, so a single bridge may set false",
    )
    bridge_retire_on_exit: bool = Field(
        False,
        description="bridge: on a clean stop, leave the subscription and end the MQTT session (scale-down);"
        " by default the session survives so a restart loses nothing",
    )
    bridge_retire_drain_s: float = Field(
        300.0, gt=0, le=86400,
        description="bridge, retiring: how long to forward what its session still holds before ending it;"
        " past this the session is kept (nothing is lost) and the bridge says so",
    )
    share_group: str = Field("ioc", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="MQTT shared-subscription group")
    registry_refresh_s: float = Field(
        10.0, gt=0, description="how often bridge and worker check the registry (reloaded only when it changed)"
    )
    retention_days: int = Field(365, ge=1, description="TimescaleDB retention of raw readings")
    compress_after_days: int = Field(7, ge=1, description="TimescaleDB compression age")
    offset_check_s: float = Field(
        5.0, gt=0, le=600, description="worker: how often the offset ledger is compared with each partition's end"
    )
    silence_check_s: float = Field(15.0, gt=0, le=3600, description="worker: how often silent sensors are looked for")
    detectors_enabled: bool = Field(
        True, description="worker: run the detectors (false only to measure their cost: no findings, no alerts)"
    )
    sink_group_max: int = Field(
        64, ge=1, le=10_000, description="worker: most envelopes written in one transaction (group commit of what"
        " queued up while the previous one ran; 1 = a transaction per envelope)"
    )
    table_standby_replicas: int = Field(
        0, ge=0, le=8, description="worker: standby copies of each detector-state partition kept by other workers"
        " (a takeover skips reading the changelog; each copy costs every worker reading the others' changelogs)"
    )
    detector_checkpoint_s: float = Field(
        2.0, ge=0, le=300, description="worker: how often each partition's detector state is checkpointed to the"
        " changelog (a takeover replays the readings since; 0 = every envelope)"
    )
    require_timescale: bool = Field(
        False, description="`ioc db migrate` stops unless TimescaleDB is installed and preloaded"
    )
    consumer_fetch_max_wait_ms: int = Field(
        100, ge=1, le=10_000, description="worker: longest a Kafka fetch may wait for data (latency vs idle polling)"
    )
    broker_session_timeout_s: float = Field(10.0, gt=0, description="Kafka group session timeout")
    # --- alerts (issue 9): rules as code and the notification outbox.
    alert_rules: Path | None = Field(None, description="alert rules TOML; the shipped defaults when unset")
    dispatch_poll_s: float = Field(
        1.0, gt=0, le=60, description="worker: how often the outbox is polled for due retries (new ones go at once)"
    )
    notify_give_up_s: float = Field(
        86400.0, gt=0, description="worker: a notification is retried with backoff this long, then marked failed"
    )
    notify_retry_cap_s: float = Field(30.0, gt=0, le=3600, description="worker: longest wait between retries")
    repeat_check_s: float = Field(
        30.0, gt=0, le=3600, description="worker: how often repeat notifications and ended silences are checked"
    )
    ack_topic: str = Field("khanhhoa/v1/alerts/ack", pattern=r"^[^#+]{1,200}$",
                           description="MQTT topic operators acknowledge alerts on (the broker's ACL limits who)")
    # --- edge abuse (issue 12): one sensor flooding must not starve the others or the database.
    # Real sensors report every 60 s or slower; the simulator compresses time (the demo's traffic
    # sensors reach ~20 Hz, short demos ~200 Hz within one burst) and a bridge restart delivers a
    # queued backlog at once, so both bounds are generous. 0 disables the limit (bulk back-fills).
    sensor_max_rate_hz: float = Field(
        50.0, ge=0, allow_inf_nan=False, description="bridge: sustained readings/s per sensor id before the excess is dead-lettered"
        " as rate_limited; 0 disables the limit"
    )
    sensor_rate_burst: int = Field(
        3000, ge=1, le=10_000_000, description="bridge: readings one sensor may send at once above that rate"
    )

    # --- alert delivery channels (issue 9): webhooks, CAP 1.2 files; Grafana uses grafana_url/token.
    # A webhook URL without a signing secret is refused at start-up: receivers must be able to
    # verify every request. URLs are logged as scheme://host/… only (paths often hold tokens).
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="alert webhooks, comma-separated or a JSON list of http(s) URLs; empty disables them",
    )
    webhook_secret: SecretStr | None = Field(
        None, validate_default=True, description="HMAC-SHA256 key for webhook signatures (at least 16 characters)"
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=300, description="webhook: seconds before a POST counts as failed")
    webhook_format: Literal["json", "cap"] = Field("json", description="webhook body: notification JSON or CAP 1.2 XML")
    cap_sender: str = Field(
        "ioc@khanhhoa.gov.vn", pattern=r"^[^\s,<&]+$", description="CAP <sender>: no spaces, commas, '<' or '&'"
    )
    cap_status: Literal["Actual", "Exercise", "System", "Test", "Draft"] = Field(
        "Actual", description="CAP <status>; Exercise or Test for drills"
    )
    cap_dir: Path | None = Field(None, description="write one CAP 1.2 file per notification here; unset disables")

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _webhook_urls_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError as e:
                    raise ValueError(f"not a valid JSON list: {e}") from e
            return [u.strip() for u in text.split(",") if u.strip()]
        return v

    @field_validator("webhook_urls")
    @classmethod
    def _webhook_urls(cls, v: list[str]) -> list[str]:
        return [_check_scheme(u, ("http", "https"), "each IOC_WEBHOOK_URLS entry") for u in v]

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("webhook_urls") and (v is None or not v.get_secret_value()):
            raise ValueError("required when IOC_WEBHOOK_URLS is set (receivers verify the HMAC signature)")
        if v is not None and v.get_secret_value() and len(v.get_secret_value()) < 16:
            raise ValueError("too short: use at least 16 random characters")
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt(cls, v: str | None) -> str | None:
        return None if v is None else _check_scheme(v, ("mqtt", "mqtts"), "IOC_MQTT_URL")

    @field_validator("kafka_url")
    @classmethod
    def _kafka(cls, v: str | None) -> str | None:
        if v is None:
            return None
        _check_scheme(v.split(",")[0], ("kafka",), "IOC_KAFKA_URL")
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str | None) -> str | None:
        if v is None:
            return None
        _check_scheme(v, ("postgresql", "postgres"), "IOC_DATABASE_URL")
        try:  # psycopg's own parser; its message quotes the bad part, which may be the password
            conninfo_to_dict(v)
        except psycopg.Error:
            raise ValueError(
                f"IOC_DATABASE_URL {_shown(v)} is not a valid PostgreSQL URL; percent-encode spaces and"
                " special characters in the user and password (e.g. %20 for a space, %40 for @)"
            ) from None
        return v

    @field_validator("grafana_url")
    @classmethod
    def _grafana(cls, v: str | None) -> str | None:
        return None if v is None else _check_scheme(v, ("http", "https"), "IOC_GRAFANA_URL")

    def require(self, *names: str) -> None:
        """Fail fast, naming every missing URL and how to provide it."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            envs = ", ".join(f"IOC_{n.upper()}" for n in missing)
            raise ConfigError(f"missing setting(s) {envs}: set them or run `ioc stack up`")

    def __repr_args__(self) -> Any:
        """repr() and str() mask like the start-up log: a Settings in a traceback leaks nothing."""
        masked = self.masked()
        for name, _ in super().__repr_args__():
            yield name, masked.get(name or "")

    def masked(self) -> dict[str, Any]:
        """Settings for the start-up log, with passwords in URLs and secrets masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else ""
            elif isinstance(value, str) and "://" in value:
                value = mask_url(value)
            elif isinstance(value, list):  # webhook URLs: paths and queries often carry tokens
                value = [_url_origin(v) if isinstance(v, str) and "://" in v else v for v in value]
            out[name] = value
        return out


def mask_url(url: str) -> str:
    """Hide the password part of a URL.

    >>> mask_url("postgresql://ioc:s3cret@127.0.0.1:5432/ioc")
    'postgresql://ioc:***@127.0.0.1:5432/ioc'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _url_origin(url: str) -> str:
    """Scheme, host and port of a URL, for logs.

    >>> _url_origin("https://hooks.example.org/services/T0/B1/token?x=1")
    'https://hooks.example.org/…'
    """
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one ConfigError naming each field."""
    env_file = os.environ.get("IOC_STACK_ENV", str(STACK_ENV_FILE))
    try:
        settings = Settings(_env_file=env_file if Path(env_file).exists() else None, **overrides)  # type: ignore[call-arg]
    except ValidationError as e:
        problems = "; ".join(
            f"IOC_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None  # the cause quotes the input
    remember_values(getattr(settings, name) for name in type(settings).model_fields)  # logs mask them
    return settings
