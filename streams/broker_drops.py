"""Messages the MQTT broker dropped: loss that happens before the bridge, made loud.

Mosquitto drops a QoS 1 message meant for a subscriber once that subscriber's queue holds
``max_queued_messages`` (a bridge that fell that far behind under overload, or whose process was
down that long), writes one line to its own log, and still acknowledges the sensor's publish. The
bridge never sees those readings, so nothing downstream can count them. Mosquitto does count
them, in ``$SYS/broker/publish/messages/dropped``, published every ``sys_interval``; the bridge
reads that counter and reports each rise (an error in its log, ``pipeline_metrics`` for the
health board).

>>> d = BrokerDrops()
>>> d.observe(b"7"), d.observe(b"7"), d.observe(b"12"), d.observe(b"3"), d.observe(b"junk")
(0, 0, 5, 3, 0)
>>> d.at_start, d.dropped
(7, 8)
"""

from __future__ import annotations

SYS_DROPPED = "$SYS/broker/publish/messages/dropped"


class BrokerDrops:
    """Rises of the broker's dropped-message counter, as one bridge sees them."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.at_start: int | None = None  # the counter when first seen: drops before this bridge looked
        self.dropped = 0  # rises seen since

    def observe(self, payload: bytes) -> int:
        """Messages dropped since the last value. The first value is the baseline (reported apart,
        as ``at_start``); a lower value means the broker restarted and counts from zero again."""
        try:
            value = int(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return 0  # not Mosquitto's counter: nothing to learn from it
        if value < 0:
            return 0
        last, self.last = self.last, value
        if last is None:
            self.at_start = value
            return 0
        rise = value if value < last else value - last
        self.dropped += rise
        return rise
