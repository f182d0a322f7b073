"""`ioc stack up|down|status` starts real services and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from ioc.errors import StackError
from ioc.stack.children import child_env
from ioc.stack.process import pid_alive, tcp_open
from ioc.stack.services import DEPLOY_ACL, local_acl
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
        # Mosquitto runs with the compose ACL and its role accounts, each URL kept for the pipeline
        for role, user in (("BRIDGE", "ioc-bridge"), ("WORKER", "ioc-worker"), ("OPERATOR", "operator"),
                           ("SIM", "ioc-sim"), ("OBSERVER", "ioc")):
            assert f"IOC_STACK_MQTT_{role}_URL=mqtt://{user}:" in env, role
        acl = Path(state.services["mosquitto"].data_dir) / "acl"
        assert acl.read_text().startswith(DEPLOY_ACL.read_text().rstrip("\n") + "\n")
        assert f"acl_file {acl}" in (acl.parent / "mosquitto.conf").read_text()
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


def test_the_local_acl_is_the_deploy_acl_and_must_name_every_role_account(tmp_path: Path) -> None:
    text = local_acl()
    assert text.startswith(DEPLOY_ACL.read_text()) and text.rstrip().endswith("user ioc\ntopic readwrite #")
    drifted = tmp_path / "acl"
    drifted.write_text(DEPLOY_ACL.read_text().replace("user ioc-sim\n", "user ioc-simulator\n"))
    with pytest.raises(StackError, match="ioc-sim"):
        local_acl(drifted)
    with pytest.raises(StackError, match="missing"):
        local_acl(tmp_path / "nope")


def test_children_run_under_their_role_account_only_on_the_stacks_own_url() -> None:
    stack = {"IOC_MQTT_URL": "mqtt://ioc:o@127.0.0.1:1", "IOC_STACK_MQTT_OBSERVER_URL": "mqtt://ioc:o@127.0.0.1:1",
             "IOC_STACK_MQTT_BRIDGE_URL": "mqtt://ioc-bridge:b@127.0.0.1:1",
             "IOC_STACK_MQTT_WORKER_URL": "mqtt://ioc-worker:w@127.0.0.1:1",
             "IOC_STACK_MQTT_SIM_URL": "mqtt://ioc-sim:s@127.0.0.1:1"}
    assert child_env(stack, "bridge")["IOC_MQTT_URL"] == stack["IOC_STACK_MQTT_BRIDGE_URL"]
    assert child_env(stack, "worker")["IOC_MQTT_URL"] == stack["IOC_STACK_MQTT_WORKER_URL"]
    assert child_env(stack, "simulate")["IOC_MQTT_URL"] == stack["IOC_STACK_MQTT_SIM_URL"]
    assert child_env(stack, "replay")["IOC_MQTT_URL"] == stack["IOC_STACK_MQTT_SIM_URL"]
    # other commands keep the observer; a configured URL (another broker, a test's wrong password) is kept
    assert child_env(stack, "deadletters")["IOC_MQTT_URL"] == stack["IOC_MQTT_URL"]
    for configured in ("mqtt://ioc:wrong@127.0.0.1:1", "mqtts://ioc-bridge:x@broker.example:8883"):
        assert child_env({**stack, "IOC_MQTT_URL": configured}, "bridge")["IOC_MQTT_URL"] == configured
    external = {"IOC_MQTT_URL": "mqtt://ioc-bridge:x@mosquitto:1883"}  # no Mosquitto of the stack's own
    assert child_env(external, "bridge") == external
