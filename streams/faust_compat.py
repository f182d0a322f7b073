"""Every use of Faust and aiokafka internals, in one place, checked at start-up.

Pinned versions that these were proven on: see ``constraints.txt``. ``check_internals()`` runs
when the app is built and in ``tests/unit/test_faust_compat.py``, so an upgrade that moves one
of them fails loudly instead of quietly changing delivery guarantees.

1. ``fetch_max_wait_ms``: Faust hard-codes 1.5 s and Tansu holds idle fetches that long.
2. Gap commits (issue 7). Faust's ``Consumer._drain_messages`` treats any jump in offsets
   between two delivered records as a *gap* (meant for compacted or transactional topics) and
   ``_new_offset`` later commits across it as if the gap had been acknowledged. After a
   restart, Faust seeks the stream partitions to their committed offsets only once table
   recovery has finished, but records aiokafka prefetched before that seek are still served
   after it: the first record then lies several envelopes past the committed offset, and the
   envelopes in between were committed without ever reaching an agent. That was the band of
   readings lost when a worker with detector state was restarted at once. Our topics are
   neither compacted nor transactional, so an offset jump is never a real gap: gap tracking is
   switched off for them, and ``commit_lost_range`` restores it for the one case where the
   broker truly no longer has the records (retention), which the caller reports as a loss.
3. ``Consumer._committed_offset``: read for the consumer-lag metric (no public accessor).
4. ``ProducerBuffer.size`` / ``max_messages``: table writes wait in this buffer, and Faust holds
   every stream while more than ``max_messages`` do (``wait_until_ebb``); the detector stage
   keeps its checkpoint writes within the room left (:func:`producer_room`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

_ORIGINAL_ADD_GAP: Any = None


class FaustInternalsChanged(RuntimeError):
    """An internal this project relies on moved: pin the versions in constraints.txt or adapt."""


def check_internals() -> None:
    import aiokafka
    from faust.transport.consumer import Consumer

    missing = [
        name
        for owner, name in (
            (Consumer, "_add_gap"), (Consumer, "_drain_messages"), (Consumer, "_new_offset"),
            (Consumer, "seek"), (Consumer, "earliest_offsets"), (aiokafka, "AIOKafkaConsumer"),
        )
        if not hasattr(owner, name)
    ]
    import inspect

    drain = inspect.getsource(Consumer._drain_messages)
    if "_add_gap" not in drain:
        missing.append("Consumer._drain_messages no longer calls _add_gap")
    if "_committed_offset" not in inspect.getsource(Consumer.ack):
        missing.append("Consumer.ack no longer uses _committed_offset")
    import faust.streams
    from faust.transport.producer import ProducerBuffer

    if not (hasattr(ProducerBuffer, "max_messages") and hasattr(ProducerBuffer, "size")):
        missing.append("ProducerBuffer.max_messages / size")
    elif "self.size > self.max_messages" not in inspect.getsource(ProducerBuffer.wait_until_ebb):
        missing.append("ProducerBuffer.wait_until_ebb no longer holds the stream above max_messages")
    if not hasattr(faust.streams, "_current_event"):
        missing.append("faust.streams._current_event")
    if missing:
        raise FaustInternalsChanged(f"Faust/aiokafka internals changed: {missing}; see streams/faust_compat.py")


def cap_fetch_wait(max_wait_ms: int) -> None:
    """Cap aiokafka's fetch wait for the consumer Faust creates in this (worker) process."""
    import aiokafka

    original = aiokafka.AIOKafkaConsumer
    if getattr(original, "_ioc_capped", False):
        return

    class CappedFetchConsumer(original):  # type: ignore[misc, valid-type]
        _ioc_capped = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = min(int(kwargs.get("fetch_max_wait_ms", 500)), max_wait_ms)
            super().__init__(*args, **kwargs)

    aiokafka.AIOKafkaConsumer = CappedFetchConsumer  # type: ignore[misc]


def disable_gap_commits() -> None:
    """Never commit across an offset jump (see the module docstring, point 2)."""
    global _ORIGINAL_ADD_GAP
    from faust.transport.consumer import Consumer

    if _ORIGINAL_ADD_GAP is not None:
        return
    _ORIGINAL_ADD_GAP = Consumer._add_gap

    async def _no_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        return None

    Consumer._add_gap = _no_gap  # type: ignore[method-assign]


async def commit_lost_range(consumer: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Let Faust commit past ``offset_from..offset_to`` (inclusive): records the broker deleted."""
    add_gap = _ORIGINAL_ADD_GAP or type(consumer)._add_gap
    await add_gap(consumer, tp, offset_from, offset_to)


def producer_room(app: Any) -> int:
    """Table writes the app's producer buffer takes before Faust holds the streams to drain it."""
    buffer = app.producer.buffer
    return int(buffer.max_messages) - int(buffer.size)


def committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    return consumer._committed_offset  # type: ignore[no-any-return]


@contextlib.contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Let code outside the agent's own iteration write a changelogged table as if handling ``event``.

    Faust sends a table write to the changelog partition of the stream's current event and refuses
    writes without one; the sink's group writer handles events after the agent has moved on.
    """
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
