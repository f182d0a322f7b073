"""`ioc stack up|down|status` starts real services and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from ioc.stack.process import pid_alive, tcp_open
from ioc.stack.stack import down, status, up

pytestmark = pytest.mark.integration


def test_up_status_down_leaves_nothing_running(tmp_path: Path) -> None:
    state = up(tmp_path / "s", environ={})
    try:
        st = status(state.base)
        assert set(st) == {"mosquitto", "tansu", "postgres"}
        assert all(info["alive"] for info in st.values())
        env = (state.base / "env").read_text()
        assert "IOC_MQTT_URL=mqtt://ioc:" in env and "IOC_KAFKA_URL=kafka://127.0.0.1:" in env
        with psycopg.connect(state.urls["IOC_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert up(state.base, environ={}).services == state.services  # idempotent: reuses the running stack
    finally:
        stopped = down(state.base)
    assert set(stopped) == {"mosquitto", "tansu", "postgres"}
    for svc in state.services.values():
        assert not pid_alive(svc.pid), svc.name
    port = int(state.services["tansu"].url.rsplit(":", 1)[1])
    assert not tcp_open("127.0.0.1", port)
    assert not (state.base / "env").exists()


def test_configured_urls_are_used_and_nothing_is_started_for_them(tmp_path: Path) -> None:
    external = {"IOC_DATABASE_URL": "postgresql://u:p@db.example:5432/ioc"}
    state = up(tmp_path / "s", environ=external)
    try:
        assert "postgres" not in state.services
        assert state.urls["IOC_DATABASE_URL"] == external["IOC_DATABASE_URL"]
    finally:
        down(state.base)
