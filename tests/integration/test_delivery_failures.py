"""Nothing is lost and nothing is doubled when a worker, PostgreSQL or Mosquitto fails mid-stream.

This module runs its own Mosquitto and PostgreSQL (it restarts them) and shares only Tansu.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ioc.stack.process import stop_pid
from ioc.stack.services import pg_ctl, restart_mosquitto
from ioc.stack.stack import StackState, down, up
from tests.conftest import fresh_db
from tests.support import (
    Pipeline,
    SteadyPublisher,
    mqtt_session,
    reading_msgs,
    register_sensors,
    scalar,
    start_pipeline,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_stack(kafka_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    base = tmp_path_factory.mktemp("failstack")
    state = up(base, environ={"IOC_KAFKA_URL": kafka_url})
    try:
        yield state
    finally:
        down(base)


@pytest.fixture(scope="module")
def fpipe(own_stack: StackState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    # One bridge with an exclusive subscription: Mosquitto 2.0 restores those after a restart,
    # but not shared ones (see test_shared_subscription_is_not_restored_after_a_broker_restart).
    p = start_pipeline(own_stack.urls, fresh_db(own_stack.urls["IOC_DATABASE_URL"]), tmp_path_factory.mktemp("fp"),
                       IOC_MQTT_SHARED_SUBSCRIPTION="false")
    try:
        p.warm_up()
        yield p
    finally:
        p.stop()


def _sensors(n: int) -> tuple[list[str], str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"F{tag}_{i:03d}" for i in range(n)], f"F{tag}_%"


def _stream(p: Pipeline, n_sensors: int, per_sensor: int, duration_s: float) -> tuple[SteadyPublisher, int, str]:
    """Register fresh sensors and start publishing their readings at a steady pace."""
    sensors, like = _sensors(n_sensors)
    register_sensors(p.db, [(s, "water_level", None) for s in sensors])
    time.sleep(2)  # the bridge reloads its registry every second in tests
    msgs = reading_msgs(sensors, per_sensor)
    return SteadyPublisher(p.env["IOC_MQTT_URL"], msgs, duration_s=duration_s).start(), len(msgs), like


def _count(p: Pipeline, like: str) -> int:
    return int(scalar(p.db, "SELECT count(*) FROM readings WHERE sensor_id LIKE %s", (like,)))


def _assert_exactly(p: Pipeline, like: str, n: int, timeout_s: float) -> None:
    wait_for(lambda: _count(p, like) >= n, timeout_s, f"{n} rows", interval_s=1)
    time.sleep(3)
    assert _count(p, like) == n
    assert scalar(p.db, "SELECT sum(n) FROM readings_1m WHERE sensor_id LIKE %s", (like,)) == n


def test_sigkill_of_the_worker_mid_stream_still_gives_exactly_once(fpipe: Pipeline) -> None:
    pub, n, like = _stream(fpipe, 40, 500, duration_s=12)  # 20k readings
    pub.wait_progress(0.35)
    wait_for(lambda: _count(fpipe, like) > 0, 60, "the worker storing part of the stream")
    fpipe.procs.kill("worker0", signal.SIGKILL)
    stored_at_kill = _count(fpipe, like)
    fpipe.start_worker(0)  # same group: resumes from the last committed offset
    assert pub.finish() == n
    assert stored_at_kill < n
    _assert_exactly(fpipe, like, n, timeout_s=240)


def test_postgres_down_for_20s_mid_stream_recovers_exactly(fpipe: Pipeline, own_stack: StackState) -> None:
    pub, n, like = _stream(fpipe, 40, 400, duration_s=15)  # 16k readings
    pub.wait_progress(0.3)
    pg = own_stack.services["postgres"]
    pg_ctl(pg, "stop")
    try:
        time.sleep(20)
        assert all(fpipe.procs.alive(name) for name in fpipe.procs.procs), "a process crashed during the outage"
    finally:
        pg_ctl(pg, "start")
    assert pub.finish() == n
    _assert_exactly(fpipe, like, n, timeout_s=180)
    assert all(fpipe.procs.alive(name) for name in fpipe.procs.procs)


def test_mosquitto_restart_mid_stream_loses_no_qos1_reading(fpipe: Pipeline, own_stack: StackState) -> None:
    pub, n, like = _stream(fpipe, 40, 400, duration_s=12)
    pub.wait_progress(0.4)
    old = own_stack.services["mosquitto"]
    stop_pid(old.pid)  # SIGTERM: Mosquitto writes its persistence file on the way out
    time.sleep(1)
    own_stack.services["mosquitto"] = restart_mosquitto(old)
    own_stack.save()
    assert pub.finish() == n
    _assert_exactly(fpipe, like, n, timeout_s=180)


def test_two_bridges_and_two_workers_give_the_same_exact_result(
    own_stack: StackState, kafka_url: str, tmp_path: Path
) -> None:
    db = fresh_db(own_stack.urls["IOC_DATABASE_URL"])
    p = start_pipeline(own_stack.urls, db, tmp_path, workers=2, bridges=2)
    try:
        p.warm_up()
        pub, n, like = _stream(p, 60, 300, duration_s=8)  # 18k readings
        assert pub.finish() == n
        _assert_exactly(p, like, n, timeout_s=240)
        # both bridges took a share of the subscription
        time.sleep(2)
        with psycopg.connect(db) as conn:
            per_bridge = dict(conn.execute(
                "SELECT worker, max(value) FROM pipeline_metrics WHERE stage = 'bridge' AND metric = 'valid_total'"
                " GROUP BY worker"
            ).fetchall())
        assert len(per_bridge) == 2 and all(v > 0 for v in per_bridge.values()), per_bridge
    finally:
        p.stop()


def test_shared_subscription_is_not_restored_after_a_broker_restart(tmp_path: Path) -> None:
    """Pins the Mosquitto 2.0 behaviour the README documents: after a restart a persistent session
    gets its exclusive subscriptions back, but not its shared ones, until it subscribes again.
    If this starts failing, Mosquitto fixed it and the single-bridge advice can go."""
    from ioc.mqtt_client import connect, make_client
    from ioc.stack.services import start_mosquitto
    from tests.support import publish

    svc = start_mosquitto(tmp_path)
    url = svc.url  # the restart keeps port and credentials
    try:
        results = {}
        for name, topic in (("exclusive", "t/x"), ("shared", "$share/g/t/x")):
            got: list[bytes] = []
            cid = f"sub-{name}"

            def session(subscribe: bool, cid: str = cid, topic: str = topic, got: list[bytes] = got):  # type: ignore[no-untyped-def]
                c, t, p = make_client(url, client_id=cid, clean_start=False, session_expiry_s=3600)
                c.on_message = lambda _c, _u, m: got.append(m.payload)
                if subscribe:
                    c.on_subscribe = lambda *a: None
                    c.on_connect = lambda c_, *a: c_.subscribe(topic, qos=1)
                connect(c, t, p)
                c.loop_start()
                time.sleep(0.5)
                return c

            c = session(True)
            c.loop_stop()
            c.disconnect()
            stop_pid(svc.pid)
            time.sleep(0.3)
            svc = restart_mosquitto(svc)
            assert publish(url, [("t/x", f"after-restart-{name}".encode())]) == 1
            c = session(False)
            time.sleep(1)
            c.loop_stop()
            c.disconnect()
            results[name] = got
        assert results == {"exclusive": [b"after-restart-exclusive"], "shared": []}
    finally:
        stop_pid(svc.pid)


def test_a_retired_bridge_leaves_the_shared_subscription(own_stack: StackState, tmp_path: Path) -> None:
    """Scale-down: a bridge stopped with IOC_BRIDGE_RETIRE_ON_EXIT ends its session, so the broker
    stops routing its share to it. Without that, about half of what follows would wait in the dead
    session until it expired (and then be dropped)."""
    db = fresh_db(own_stack.urls["IOC_DATABASE_URL"])
    p = start_pipeline(own_stack.urls, db, tmp_path, workers=1, bridges=0)
    try:
        p.start_bridge(0, IOC_BRIDGE_RETIRE_ON_EXIT="true")
        p.start_bridge(1)
        p.warm_up()
        stop_pid(p.procs.procs["bridge0"].pid)  # SIGTERM: a clean, retiring stop
        assert p.procs.procs["bridge0"].returncode == 0 or p.procs.procs["bridge0"].poll() is not None
        pub, n, like = _stream(p, 20, 100, duration_s=2)  # 2k readings
        assert pub.finish() == n
        _assert_exactly(p, like, n, timeout_s=60)
    finally:
        p.stop()


def _retire(p: Pipeline, i: int, name: str, timeout_s: float = 120, **extra_env: str) -> tuple[int, str]:
    """`ioc bridge --retire` for bridge ``i``'s id; returns its exit code and log."""
    proc = p.procs.start(name, "bridge", "--retire", extra_env={"IOC_BRIDGE_ID": p.bridge_id(i), **extra_env})
    code = proc.wait(timeout_s)
    return code, p.procs.log(name, 60)


def test_retire_forwards_what_a_lost_bridges_session_holds_then_ends_it(own_stack: StackState, tmp_path: Path) -> None:
    """A bridge gone for good (SIGKILL: no clean stop) keeps its persistent session, and the broker
    goes on routing its share of the shared subscription into it. `ioc bridge --retire` with its id
    must forward every reading the session holds, then end it: afterwards the other bridge gets all.

    A drain limit too short to see the session empty must keep the session (exit 2), not end it
    with readings still queued in it."""
    db = fresh_db(own_stack.urls["IOC_DATABASE_URL"])
    p = start_pipeline(own_stack.urls, db, tmp_path, workers=1, bridges=2)
    url = own_stack.urls["IOC_MQTT_URL"]
    try:
        p.warm_up()
        p.procs.kill("bridge0", signal.SIGKILL)
        pub, n, like = _stream(p, 20, 500, duration_s=3)  # 10k readings, about half queued for bridge0
        assert pub.finish() == n
        wait_for(lambda: _count(p, like) > 0, 60, "bridge1 forwarding its share")
        time.sleep(3)
        stored = _count(p, like)
        assert 0 < stored < n, f"{stored} of {n}: the dead session should hold part of the readings"

        slow = {"IOC_ENVELOPE_MAX_READINGS": "1"}  # one reading per envelope: a drain of seconds
        code, log = _retire(p, 0, "retire-short", IOC_BRIDGE_RETIRE_DRAIN_S="0.5", **slow)
        assert code == 2 and "not drained" in log, log
        assert mqtt_session(url, p.bridge_id(0)), "a session not seen empty was ended"

        code, log = _retire(p, 0, "retire", **slow)
        assert code == 0, log
        _assert_exactly(p, like, n, timeout_s=90)
        assert not mqtt_session(url, p.bridge_id(0)), "the retired session is still there"

        pub, n2, like2 = _stream(p, 10, 50, duration_s=1)  # all of it now goes to bridge1
        assert pub.finish() == n2
        _assert_exactly(p, like2, n2, timeout_s=60)
    finally:
        p.stop()


def test_retire_refuses_to_fight_a_bridge_that_is_still_running(own_stack: StackState, tmp_path: Path) -> None:
    """`ioc bridge --retire` run with the id of a live bridge: each connection evicts the other
    (MQTT session take-over), so the retire must give up with a clear error instead of taking the
    session back for ever, and the live bridge must go on forwarding."""
    db = fresh_db(own_stack.urls["IOC_DATABASE_URL"])
    p = start_pipeline(own_stack.urls, db, tmp_path, workers=1, bridges=1)
    try:
        p.warm_up()
        code, log = _retire(p, 0, "retire-live", timeout_s=60)
        assert code == 2 and "still running" in log and "session is kept" in log, log
        assert p.procs.alive("bridge0"), p.procs.log("bridge0")
        time.sleep(3)  # the live bridge has reconnected and subscribed again
        pub, n, like = _stream(p, 10, 50, duration_s=1)
        assert pub.finish() == n
        _assert_exactly(p, like, n, timeout_s=60)
    finally:
        p.stop()
