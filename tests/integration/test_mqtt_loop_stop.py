"""What ``MqttLoop.stop(retire=True)`` reports must be what the broker did with the session.

`ioc bridge --retire` exits 0 on that report, and an operator then forgets the bridge: a session
reported ended but still there would keep its share of the shared subscription for a day.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from ioc.settings import Settings
from ioc.stack.stack import StackState
from streams.mqtt_loop import MqttLoop
from tests.conftest import mqtt_account_url
from tests.support import mqtt_session, publish

pytestmark = pytest.mark.integration


def _take_over(url: str, client_id: str) -> None:
    """Another client resumes the session (MQTT take-over: the broker closes the first connection),
    and leaves it as it found it. Blocking: the loop under test reads nothing meanwhile."""
    assert mqtt_session(url, client_id), "the take-over found no session to resume"
    time.sleep(0.2)  # the broker's DISCONNECT to the first connection is in its socket by now


def _stop(url: str, client_id: str, *, drop_first: bool = False, taken_over: bool = False,
          late: tuple[str, str] | None = None) -> bool:
    settings = Settings(mqtt_url=url, bridge_id=client_id, mqtt_shared_subscription=False)
    loop = MqttLoop(settings, lambda topic, payload, token: None)

    async def main() -> bool:
        run = asyncio.create_task(loop.run())
        for _ in range(200):
            if loop.subscribed.is_set():
                break
            await asyncio.sleep(0.05)
        assert loop.subscribed.is_set(), "no SUBACK within 10 s"
        if drop_first:
            # The connection is gone the moment the retire begins, before paho has noticed.
            sock = loop.client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)
        if taken_over:
            _take_over(url, client_id)
        if late is not None:  # a reading published after the drain was declared, unread in the socket
            sim_url, topic = late
            assert publish(sim_url, [(topic, b'{"late": true}')]) == 1
            time.sleep(0.2)
        ended = await loop.stop(retire=True)
        run.cancel()
        return ended

    return asyncio.run(main())


def test_stop_reports_the_session_ended_only_when_the_disconnect_left(stack: StackState) -> None:
    url = mqtt_account_url(stack.urls, "bridge")
    cid = f"stop-{uuid.uuid4().hex[:8]}"
    assert _stop(url, cid, drop_first=False) is True
    assert not mqtt_session(url, cid), "reported ended, but the broker still holds the session"


def test_stop_on_a_connection_already_lost_reports_the_session_kept(stack: StackState) -> None:
    url = mqtt_account_url(stack.urls, "bridge")
    cid = f"stop-lost-{uuid.uuid4().hex[:8]}"
    assert _stop(url, cid, drop_first=True) is False
    assert mqtt_session(url, cid, end=True), "the broker ended a session no DISCONNECT asked it to"


def test_stop_after_another_client_took_the_session_over_reports_it_kept(stack: StackState) -> None:
    """The broker already closed this connection (its DISCONNECT is unread in the socket): writing
    our DISCONNECT still succeeds, yet ends nothing."""
    url = mqtt_account_url(stack.urls, "bridge")
    cid = f"stop-taken-{uuid.uuid4().hex[:8]}"
    assert _stop(url, cid, taken_over=True) is False
    assert mqtt_session(url, cid, end=True), "the session should still be there"


def test_a_message_that_arrives_as_the_session_is_ended_keeps_it(stack: StackState) -> None:
    """Ending the session would drop what it holds: a message read at the last moment (not yet
    forwarded, not acknowledged) must keep the session, and the broker then still holds it."""
    url = mqtt_account_url(stack.urls, "bridge")
    cid = f"stop-late-{uuid.uuid4().hex[:8]}"
    topic = f"khanhhoa/v1/noise/late{uuid.uuid4().hex[:6]}"
    assert _stop(url, cid, late=(mqtt_account_url(stack.urls, "sim"), topic)) is False
    assert mqtt_session(url, cid, end=True), "the session holding an unacknowledged message was ended"
