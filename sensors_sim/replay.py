"""Publish a recording (or a simulated file) again, keeping its spacing scaled by the speed."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from ioc.errors import PayloadRejected
from ioc.wire import SensorInfo, ValidationPolicy, validate
from sensors_sim.clock import Pacer, live_offset
from sensors_sim.encode import Chunk
from sensors_sim.errors import RecordingError
from sensors_sim.fileio import Message, read
from sensors_sim.publisher import Counts, Publisher

_LENIENT = ValidationPolicy(max_future=timedelta(days=36500), late_bound=timedelta(days=36500), auto_register=True)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _unknown(_sid: str) -> SensorInfo | None:
    return None


def well_formed(topic: str, payload: bytes) -> bool:
    """Whether the pipeline's edge validation would accept this payload (ignoring time bounds)."""
    try:
        validate(topic, payload, sensors=_unknown, now=_EPOCH, policy=_LENIENT)
    except PayloadRejected:
        return False
    return True


def shift_ts(payload: bytes, offset_s: float) -> bytes:
    """The payload with its ``ts`` moved by ``offset_s``; payloads without a parseable ts are unchanged.

    >>> shift_ts(b'{"sensor_id":"A","ts":"2026-01-01T00:00:00Z","seq":1,"metrics":{"m":1.5}}', 60)
    b'{"sensor_id":"A","ts":"2026-01-01T00:01:00Z","seq":1,"metrics":{"m":1.5}}'
    """
    try:
        doc = msgspec.json.decode(payload)
        ts = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00"))
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
        return payload
    if ts.tzinfo is None:
        return payload
    doc["ts"] = ts.astimezone(UTC) + timedelta(seconds=offset_s)
    return msgspec.json.encode(doc)


def load(path: Path) -> list[Message]:
    msgs = list(read(path))
    if not msgs:
        raise RecordingError(f"{path}: recording is empty")
    return msgs


def replay(
    path: Path,
    url: str,
    *,
    speed: float | None = 1.0,
    rebase: bool = False,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    messages: list[Message] | None = None,
) -> Counts:
    """Publish ``path`` with the original inter-arrival times divided by ``speed`` (None = max)."""
    msgs = messages if messages is not None else load(path)
    t_first, t_last = msgs[0].t, max(m.t for m in msgs)
    offset = live_offset(t_first, t_last, speed, time.time()) if rebase else 0
    topics = [m.topic for m in msgs]
    payloads = [shift_ts(m.payload, offset) if offset else m.payload for m in msgs]
    chunk = Chunk(
        emit=[m.t for m in msgs],
        topics=topics,
        payloads=payloads,
        malformed=[not well_formed(t, p) for t, p in zip(topics, payloads, strict=True)],
    )
    publisher = Publisher(url)
    # A full collection over a loaded recording holds the GIL (150 ms for a million messages here),
    # long enough to bend the spacing; nothing loaded so far needs scanning again.
    gc.collect()
    gc.freeze()
    try:
        publisher.publish_chunks([chunk], Pacer(v0=t_first, speed=speed), stop=stop, progress=progress)
        publisher.finish()
        return publisher.counts
    finally:
        gc.unfreeze()
        publisher.close()
