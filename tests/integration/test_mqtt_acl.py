"""The local stack's Mosquitto enforces the production accounts and topic rights (deploy/mosquitto/acl).

Against the session stack's real broker, with the accounts the stack created and a sensor account
added the way the stack adds one (username = sensor id): a sensor publishes only to its own topic,
only the bridge (and the local observer ``ioc``) read sensor topics, only operators acknowledge,
the simulator publishes readings and nothing else, anonymous clients are refused.

Mosquitto drops a denied publish (MQTT v5 PUBACK reason 135, no error) and grants every
subscription, checking read rights per message delivered; so every "never arrives" here comes
after a control message that the same client, or a client with the right, did receive.
"""

from __future__ import annotations

import queue
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ioc.mqtt_client import connect, make_client
from ioc.stack.services import MQTT_OBSERVER_ENV, Service, add_mqtt_account
from ioc.stack.stack import StackState
from tests.conftest import mqtt_account_url

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 135  # MQTT v5 reason code (PUBACK, CONNACK)
REFUSED = {134, 135}  # CONNACK: bad user name or password / not authorized (Mosquitto 2.0 sends 135)
ACK_TOPIC = "khanhhoa/v1/alerts/ack"
# Acknowledgements here are not valid ones: the session pipeline's worker, which also takes this
# topic, logs and drops them.


class Probe:
    """An MQTT v5 client on one account that records what it receives and its PUBACK reason codes."""

    def __init__(self, url: str, name: str) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.seen: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        connacks: queue.Queue[int] = queue.Queue()
        self.user = urlsplit(url).username or ""
        self.client, target, props = make_client(url, client_id=f"acl-{name}-{uuid.uuid4().hex[:6]}")
        self.client.on_connect = lambda c, u, f, rc, p: connacks.put(rc.value)
        self.client.on_message = lambda c, u, m: self.got.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([rc.value for rc in rcs])
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc.value)
        connect(self.client, target, props)
        self.client.loop_start()
        assert connacks.get(timeout=10) == 0, f"{name} could not log in"

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert self.subacks.get(timeout=10)[0] < 128, topic

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """The broker's PUBACK reason code: 0 accepted, 135 not authorized (and dropped)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        deadline = time.monotonic() + 10
        while info.mid not in self.pubacks:
            assert time.monotonic() < deadline, f"no PUBACK for {topic}"
            time.sleep(0.01)
        return self.pubacks[info.mid]

    def _take(self) -> None:
        while not self.got.empty():
            self.seen.append(self.got.get_nowait())

    def wait_for(self, topic: str, payload: bytes, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while (topic, payload) not in self.seen:
            assert time.monotonic() < deadline, f"{(topic, payload)} never arrived; got {self.seen[-5:]}"
            time.sleep(0.02)
            self._take()

    def received(self, tag: str, settle_s: float = 0.0) -> list[tuple[str, bytes]]:
        """What arrived so far on topics or payloads carrying ``tag`` (the broker is shared)."""
        time.sleep(settle_s)
        self._take()
        return [(t, p) for t, p in self.seen if tag in t or tag.encode() in p]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def mosquitto(stack: StackState) -> Service:
    if "mosquitto" not in stack.services:
        pytest.skip("IOC_MQTT_URL is configured: the ACL under test is the local stack's Mosquitto")
    return stack.services["mosquitto"]


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8].upper()


@pytest.fixture
def probes(stack: StackState, mosquitto: Service) -> Iterator[dict[str, Probe]]:
    """One client per account: the observer, the four role accounts and two fresh sensor accounts."""
    urls = {"ioc": stack.urls["IOC_MQTT_URL"]}
    urls |= {role: mqtt_account_url(stack.urls, role) for role in ("bridge", "worker", "operator", "sim")}
    assert len({urlsplit(u).username for u in urls.values()}) == 5, "the stack must give every role its own account"
    sensor_tag = uuid.uuid4().hex[:6].upper()
    for name in ("sensor_a", "sensor_b"):
        sid = f"ACL_{name[-1].upper()}_{sensor_tag}"
        urls[name] = add_mqtt_account(mosquitto, sid)
        assert urlsplit(urls[name]).username == sid
    made: dict[str, Probe] = {}
    try:
        for name, url in urls.items():
            made[name] = Probe(url, name)
        yield made
    finally:
        for p in made.values():
            p.close()


def test_a_sensor_publishes_only_to_its_own_topic(probes: dict[str, Probe], tag: str) -> None:
    bridge, a, b = probes["bridge"], probes["sensor_a"].user, probes["sensor_b"].user
    bridge.subscribe(f"$share/acl{tag}/khanhhoa/v1/+/+")  # how the bridge subscribes
    probes["ioc"].subscribe("khanhhoa/v1/alerts/#")  # the observer would see forged alerts and acks
    forged = f"forged-{tag}".encode()
    # another sensor's topic, under its kind and under another, an acknowledgement, an alert: dropped
    forgeries = [f"khanhhoa/v1/water_level/{b}", f"khanhhoa/v1/rain/{b}", ACK_TOPIC, f"khanhhoa/v1/alerts/info/flood/{a}"]
    codes = [probes["sensor_a"].publish(topic, forged) for topic in forgeries]
    # positive control, published after the forgeries: each sensor's own topic reaches the bridge
    mine = f"mine-{tag}".encode()
    assert probes["sensor_a"].publish(f"khanhhoa/v1/water_level/{a}", mine) == 0
    bridge.wait_for(f"khanhhoa/v1/water_level/{a}", mine)
    assert probes["sensor_b"].publish(f"khanhhoa/v1/water_level/{b}", mine) == 0
    bridge.wait_for(f"khanhhoa/v1/water_level/{b}", mine)
    assert bridge.received(tag) == [(f"khanhhoa/v1/water_level/{a}", mine), (f"khanhhoa/v1/water_level/{b}", mine)]
    assert probes["ioc"].received(tag, settle_s=0.5) == []
    assert codes == [NOT_AUTHORIZED] * len(forgeries)  # and the broker said so (MQTT v5)


def test_only_the_bridge_and_the_local_observer_read_sensor_topics(probes: dict[str, Probe], tag: str) -> None:
    readers, others = ("bridge", "ioc"), ("worker", "operator", "sim", "sensor_a", "sensor_b")
    for name in readers + others:
        probes[name].subscribe("khanhhoa/v1/+/+")  # Mosquitto grants it; delivery is what the ACL decides
    topic, reading = f"khanhhoa/v1/water_level/ACL_SIM_{tag}", f"reading-{tag}".encode()
    assert probes["sim"].publish(topic, reading) == 0
    for name in readers:
        probes[name].wait_for(topic, reading)
    # the worker and operators do read other topics through the same broker: the alert arrives ...
    alert, body = f"khanhhoa/v1/alerts/info/acltest/{tag}", b'{"acl_probe": "%s"}' % tag.encode()
    for name in ("worker", "operator"):
        probes[name].subscribe("khanhhoa/v1/alerts/+/+/+")
    assert probes["worker"].publish(alert, body) == 0
    for name in ("worker", "operator"):
        probes[name].wait_for(alert, body)
    # ... but the reading, published before it, never reached them, nor the sim or the sensors
    for name in others:
        assert (topic, reading) not in probes[name].received(tag, settle_s=0.5 if name == others[0] else 0), name


def test_only_operators_acknowledge(probes: dict[str, Probe], tag: str) -> None:
    worker, ioc = probes["worker"], probes["ioc"]
    worker.subscribe(f"$share/acl{tag}-ack/{ACK_TOPIC}")  # as the worker takes acknowledgements
    ioc.subscribe(ACK_TOPIC)
    others = ("sim", "bridge", "worker", "sensor_a")
    codes = [probes[name].publish(ACK_TOPIC, b'{"acl_probe": "%s", "from": "%s"}' % (tag.encode(), name.encode()))
             for name in others]
    ok = b'{"acl_probe": "%s", "from": "operator"}' % tag.encode()
    assert probes["operator"].publish(ACK_TOPIC, ok) == 0  # published last: the control
    worker.wait_for(ACK_TOPIC, ok)
    ioc.wait_for(ACK_TOPIC, ok)
    assert worker.received(tag) == [(ACK_TOPIC, ok)]
    assert ioc.received(tag) == [(ACK_TOPIC, ok)]
    assert codes == [NOT_AUTHORIZED] * len(others)


def test_operators_read_alerts_but_not_readings_and_cannot_forge_alerts(probes: dict[str, Probe], tag: str) -> None:
    operator, worker = probes["operator"], probes["worker"]
    operator.subscribe("khanhhoa/v1/#")  # everything it may see
    reading_topic, reading = f"khanhhoa/v1/rain/ACL_OPS_{tag}", f"reading-{tag}".encode()
    assert probes["sim"].publish(reading_topic, reading) == 0
    forged_code = operator.publish(f"khanhhoa/v1/alerts/critical/flood/{tag}F", b'{"acl_probe": "forged"}')
    # the worker publishes an alert retained and clears it (as it does when an alert resolves)
    alert, body = f"khanhhoa/v1/alerts/warning/acltest/{tag}", b'{"acl_probe": "%s"}' % tag.encode()
    try:
        assert worker.publish(alert, body, retain=True) == 0
        operator.wait_for(alert, body)
    finally:
        assert worker.publish(alert, b"", retain=True) == 0
    operator.wait_for(alert, b"")
    assert operator.received(tag) == [(alert, body), (alert, b"")]  # neither the reading nor the forgery
    assert forged_code == NOT_AUTHORIZED


def test_the_simulator_publishes_readings_of_every_kind_and_nothing_else(probes: dict[str, Probe], tag: str) -> None:
    from ioc.domain import KINDS

    ioc = probes["ioc"]
    ioc.subscribe("khanhhoa/v1/#")
    denied = [ACK_TOPIC, f"khanhhoa/v1/alerts/info/acltest/{tag}", f"khanhhoa/v1/{tag}", f"khanhhoa/v1/a/{tag}/x"]
    codes = [probes["sim"].publish(topic, f"sim-{tag}".encode()) for topic in denied]
    for kind in KINDS:
        assert probes["sim"].publish(f"khanhhoa/v1/{kind}/SIM_{tag}", f"sim-{tag}".encode()) == 0, kind
        ioc.wait_for(f"khanhhoa/v1/{kind}/SIM_{tag}", f"sim-{tag}".encode())
    assert sorted(t for t, _ in ioc.received(tag)) == sorted(f"khanhhoa/v1/{k}/SIM_{tag}" for k in KINDS)
    assert codes == [NOT_AUTHORIZED] * len(denied)


def _connack(url: str) -> int:
    """The CONNACK reason code for this URL's credentials (none: anonymous)."""
    client, target, _ = make_client(url, client_id=f"acl-login-{uuid.uuid4().hex[:6]}")
    codes: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: codes.append(rc.value)
    try:
        client.connect(target.host, target.port)
        deadline = time.monotonic() + 10
        while not codes and time.monotonic() < deadline:
            client.loop(0.05)
    finally:
        client.disconnect()
    assert codes, "no CONNACK"
    return codes[0]


def test_anonymous_clients_and_wrong_passwords_are_refused(stack: StackState, mosquitto: Service) -> None:
    url = urlsplit(stack.urls["IOC_MQTT_URL"])
    bridge = urlsplit(mqtt_account_url(stack.urls, "bridge"))
    assert _connack(url.geturl()) == 0 and _connack(bridge.geturl()) == 0  # controls: the right passwords
    assert _connack(f"mqtt://{url.hostname}:{url.port}") in REFUSED
    assert _connack(f"mqtt://ioc-bridge:wrong@{url.hostname}:{url.port}") in REFUSED
    assert _connack(f"mqtt://healthcheck:x@{url.hostname}:{url.port}") in REFUSED  # in the ACL, no account here


def test_the_pipeline_runs_under_its_role_accounts(pipeline: dict[str, str], mosquitto: Service) -> None:
    """The session pipeline's bridge and worker (ChildProcesses) log in as ioc-bridge and ioc-worker;
    the end-to-end tests then show every one of their MQTT actions is allowed."""
    log = Path(mosquitto.log)

    def user_of(client_id: str) -> str | None:
        found = re.findall(rf" as {client_id} \(p\d, c\d, k\d+, u'([^']*)'\)", log.read_text(errors="replace"))
        return found[-1] if found else None

    assert user_of(re.escape(f"{pipeline['IOC_BRIDGE_ID']}-0")) == "ioc-bridge"
    assert user_of(re.escape(pipeline["IOC_APP_ID"]) + r"-ack-[0-9a-f]{8}") == "ioc-worker"  # takes acknowledgements
    assert pipeline["IOC_MQTT_URL"] == pipeline[MQTT_OBSERVER_ENV]  # what tests publish with: the observer
