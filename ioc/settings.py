"""One frozen settings model per process, read from ``IOC_*`` environment variables.

The local stack writes its URLs to ``.ioc/stack/env``; that file is read as a fallback, so
URLs set in the real environment (docker compose, production) always win.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.errors import ConfigError

log = logging.getLogger(__name__)

STACK_ENV_FILE = Path(".ioc/stack/env")


def _check_scheme(url: str, schemes: tuple[str, ...], what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{what} must look like {schemes[0]}://host:port, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ValueError(f"{what} has an invalid port: {url!r}") from e
    return url


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
    kafka_partitions: int = Field(8, ge=1, le=1024, description="partitions per ioc.* topic")
    data_dir: Path = Field(Path(".ioc"), description="where the stack, recordings and models live")
    envelope_max_readings: int = Field(500, ge=1, le=100_000, description="bridge: readings per envelope")
    envelope_max_ms: int = Field(50, ge=1, le=60_000, description="bridge: max envelope age in ms")
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
    share_group: str = Field("ioc", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="MQTT shared-subscription group")
    registry_refresh_s: float = Field(10.0, gt=0, description="how often bridge and worker reload the registry")
    retention_days: int = Field(365, ge=1, description="TimescaleDB retention of raw readings")
    compress_after_days: int = Field(7, ge=1, description="TimescaleDB compression age")
    offset_check_s: float = Field(
        5.0, gt=0, le=600, description="worker: how often the offset ledger is compared with each partition's end"
    )
    silence_check_s: float = Field(15.0, gt=0, le=3600, description="worker: how often silent sensors are looked for")
    require_timescale: bool = Field(
        False, description="`ioc db migrate` stops unless TimescaleDB is installed and preloaded"
    )
    consumer_fetch_max_wait_ms: int = Field(
        100, ge=1, le=10_000, description="worker: longest a Kafka fetch may wait for data (latency vs idle polling)"
    )
    broker_session_timeout_s: float = Field(10.0, gt=0, description="Kafka group session timeout")

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
        return None if v is None else _check_scheme(v, ("postgresql", "postgres"), "IOC_DATABASE_URL")

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

    def masked(self) -> dict[str, Any]:
        """Settings for the start-up log, with passwords in URLs and secrets masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else ""
            elif isinstance(value, str) and "://" in value:
                value = mask_url(value)
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


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one ConfigError naming each field."""
    env_file = os.environ.get("IOC_STACK_ENV", str(STACK_ENV_FILE))
    try:
        settings = Settings(_env_file=env_file if Path(env_file).exists() else None, **overrides)  # type: ignore[call-arg]
    except ValidationError as e:
        problems = "; ".join(
            f"IOC_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from e
    return settings
