from __future__ import annotations

import pytest
from pydantic import ValidationError

from ioc.errors import ConfigError
from ioc.settings import Settings, load_settings, mask_url


def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_KAFKA_PARTITIONS", "0")
    monkeypatch.setenv("IOC_DATABASE_URL", "mysql://x@y/z")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "IOC_KAFKA_PARTITIONS" in str(e.value) and "IOC_DATABASE_URL" in str(e.value)


def test_settings_are_frozen_and_secrets_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_DATABASE_URL", "postgresql://ioc:hunter2@db:5432/ioc")
    monkeypatch.setenv("IOC_GRAFANA_TOKEN", "glsa_secret")
    s = load_settings()
    with pytest.raises(ValidationError):
        s.kafka_partitions = 3  # type: ignore[misc]
    masked = s.masked()
    assert "hunter2" not in str(masked) and "glsa_secret" not in str(masked)
    assert masked["database_url"] == "postgresql://ioc:***@db:5432/ioc"


def test_missing_urls_are_named() -> None:
    s = load_settings(mqtt_url=None, kafka_url=None)
    with pytest.raises(ConfigError, match="IOC_MQTT_URL, IOC_KAFKA_URL"):
        s.require("mqtt_url", "kafka_url")


def test_environment_beats_the_stack_env_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    env = tmp_path / "env"
    env.write_text("IOC_KAFKA_URL=kafka://127.0.0.1:1111\nIOC_MQTT_URL=mqtt://127.0.0.1:2222\n")
    monkeypatch.setenv("IOC_STACK_ENV", str(env))
    monkeypatch.setenv("IOC_KAFKA_URL", "kafka://broker:9092")
    s = load_settings()
    assert s.kafka_url == "kafka://broker:9092"
    assert s.mqtt_url == "mqtt://127.0.0.1:2222"


def test_mask_url_leaves_passwordless_urls_alone() -> None:
    assert mask_url("kafka://h:9092") == "kafka://h:9092"


def test_the_readme_lists_every_setting() -> None:
    """The configuration table is what deployers read: a setting missing from it does not exist for them."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [f"IOC_{name.upper()}" for name in Settings.model_fields if f"`IOC_{name.upper()}`" not in readme]
    assert missing == []
