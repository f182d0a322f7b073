"""mqtts:// with a CA file from settings: the same client code the bridge and publishers use."""

from __future__ import annotations

import asyncio
import queue
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ioc.mqtt_client import connect, make_client
from ioc.settings import Settings
from ioc.stack.process import free_port, spawn, stop_pid, tcp_open, wait_until
from ioc.stack.services import MOSQUITTO_BIN
from streams.mqtt_loop import AckToken, MqttLoop

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Mosquitto with a TLS listener, a throwaway CA and a password file."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=ioc-test-ca", cwd=tmp_path)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.ext", cwd=tmp_path)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.crt",
             "-days", "1", "-subj", "/CN=someone-else", cwd=tmp_path)
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(tmp_path / "passwd"), "ioc", "tls-secret"], check=True)
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\ncafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\n"
        f"keyfile {tmp_path}/server.key\nallow_anonymous false\npassword_file {tmp_path}/passwd\nuser root\n"
    )
    proc = spawn([str(MOSQUITTO_BIN), "-c", str(conf)], tmp_path / "m.log")
    wait_until("mosquitto-tls", lambda: tcp_open("127.0.0.1", port), proc=proc, log_path=tmp_path / "m.log",
               timeout_s=20)
    try:
        yield port, tmp_path
    finally:
        stop_pid(proc.pid)


def test_round_trip_over_tls_with_the_configured_ca(tls_broker) -> None:  # type: ignore[no-untyped-def]
    port, d = tls_broker
    url = f"mqtts://ioc:tls-secret@127.0.0.1:{port}"
    got: queue.Queue[bytes] = queue.Queue()
    sub, t, p = make_client(url, ca_file=d / "ca.crt")
    sub.on_connect = lambda c, u, f, rc, pr: c.subscribe("khanhhoa/v1/#", qos=1)
    sub.on_message = lambda c, u, m: got.put(m.payload)
    connect(sub, t, p)
    sub.loop_start()
    pub, t2, p2 = make_client(url, ca_file=d / "ca.crt")
    connect(pub, t2, p2)
    pub.loop_start()
    try:
        time.sleep(0.5)
        pub.publish("khanhhoa/v1/rain/R1", b"over-tls", qos=1).wait_for_publish(10)
        assert got.get(timeout=10) == b"over-tls"
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()


def test_a_server_certificate_from_another_ca_is_refused(tls_broker) -> None:  # type: ignore[no-untyped-def]
    port, d = tls_broker
    client, t, p = make_client(f"mqtts://ioc:tls-secret@127.0.0.1:{port}", ca_file=d / "other.crt")
    with pytest.raises(ssl.SSLError):
        connect(client, t, p)


def test_the_bridge_loop_reads_a_whole_burst_over_tls_on_its_event_loop(tls_broker) -> None:  # type: ignore[no-untyped-def]
    """The bridge's MQTT loop runs paho on the asyncio loop: a burst of QoS 1 messages over TLS is
    read whole (more than one read burst, and in well under the 30 s keepalive that a stalled read
    would wait for), every message is handled on the loop's own thread, and all of them are acked."""
    port, d = tls_broker
    url = f"mqtts://ioc:tls-secret@127.0.0.1:{port}"
    settings = Settings(mqtt_url=url, mqtt_ca_file=d / "ca.crt", bridge_id="tls-burst-test")
    n = 400

    async def scenario() -> tuple[int, set[int], int]:
        got: list[AckToken] = []
        threads: set[int] = set()
        loop = MqttLoop(settings, lambda topic, payload, token: (got.append(token), threads.add(threading.get_ident())))
        task = asyncio.create_task(loop.run())
        try:
            for _ in range(200):
                if loop.subscribed.is_set():
                    break
                await asyncio.sleep(0.05)
            assert loop.subscribed.is_set()
            pub, t, p = make_client(url, ca_file=d / "ca.crt")
            connect(pub, t, p)
            pub.loop_start()
            try:
                infos = [pub.publish(f"khanhhoa/v1/rain/R{i}", b"x" * 200, qos=1) for i in range(n)]
                await asyncio.to_thread(lambda: [i.wait_for_publish(10) for i in infos])
                for _ in range(100):  # 5 s: far less than the 30 s keepalive
                    if len(got) >= n:
                        break
                    await asyncio.sleep(0.05)
                acked = loop.ack(got)
            finally:
                pub.loop_stop()
                pub.disconnect()
            return len(got), threads, acked
        finally:
            await loop.stop()
            task.cancel()

    received, threads, acked = asyncio.run(scenario())
    assert received == n and acked == n
    assert threads == {threading.get_ident()}  # asyncio.run's thread: no hand-over between threads
