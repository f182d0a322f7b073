"""docker-compose.yml is valid and refuses to start without its secrets (no default passwords)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"MQTT_PASSWORD": "m", "POSTGRES_PASSWORD": "p", "GRAFANA_ADMIN_PASSWORD": "g"}


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (v1) is needed to validate the compose file: apt-get install -y docker-compose"
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([exe, "config"], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_with_secrets_from_the_environment() -> None:
    res = _config(SECRETS)
    assert res.returncode == 0, res.stderr
    for service in ("mosquitto", "kafka", "timescaledb", "grafana", "migrate", "bridge", "worker"):
        assert f"  {service}:" in res.stdout
    assert "postgresql://ioc:p@timescaledb:5432/ioc" in res.stdout


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_each_secret_is_mandatory(missing: str) -> None:
    res = _config({k: v for k, v in SECRETS.items() if k != missing})
    assert res.returncode != 0
    assert missing in res.stderr
