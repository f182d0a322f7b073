"""Start-up errors name the service and its URL, quickly; bad CLI use shows usage."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ioc.stack.process import free_port
from tests.conftest import stack_env

pytestmark = pytest.mark.integration


def _ioc(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ioc.composition.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_unknown_option_shows_usage() -> None:
    res = _ioc(["--no-such-option"], {})
    assert res.returncode == 2
    assert "Usage: ioc" in res.stderr and "No such option" in res.stderr


def test_unreachable_database_is_named_with_its_url(stack) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = stack_env(stack, IOC_DATABASE_URL=f"postgresql://ioc:secret@127.0.0.1:{port}/ioc")
    t0 = time.monotonic()
    res = _ioc(["worker"], env)
    assert res.returncode == 2, res.stderr
    assert "PostgreSQL is unreachable" in res.stderr and f"127.0.0.1:{port}" in res.stderr
    assert "secret" not in res.stderr  # the password is masked
    assert time.monotonic() - t0 < 30


def test_unreachable_kafka_is_named_with_its_url(stack, db_url: str) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = stack_env(stack, IOC_DATABASE_URL=db_url, IOC_KAFKA_URL=f"kafka://127.0.0.1:{port}")
    t0 = time.monotonic()
    res = _ioc(["bridge"], env)
    assert res.returncode == 2, res.stderr
    assert "Kafka is unreachable" in res.stderr and f"kafka://127.0.0.1:{port}" in res.stderr
    assert time.monotonic() - t0 < 40


def test_invalid_setting_is_named_at_start_up() -> None:
    res = _ioc(["config"], {"IOC_KAFKA_PARTITIONS": "zero", "IOC_MQTT_URL": "http://nope"})
    assert res.returncode == 2
    assert "IOC_KAFKA_PARTITIONS" in res.stderr and "IOC_MQTT_URL" in res.stderr


def test_refused_mqtt_credentials_stop_the_bridge(stack, db_url: str) -> None:  # type: ignore[no-untyped-def]
    url = stack.urls["IOC_MQTT_URL"]
    bad = url.replace("mqtt://ioc:", "mqtt://ioc:wrong", 1)
    env = stack_env(stack, IOC_DATABASE_URL=db_url, IOC_MQTT_URL=bad, IOC_BRIDGE_ID="bad-creds")
    res = _ioc(["bridge"], env)
    assert res.returncode == 2
    assert "refused the credentials" in res.stderr
