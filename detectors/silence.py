"""Sensor health: a silent sensor, raised by a timer rather than by the next reading.

A :class:`SilenceDetector` per sensor remembers when the sensor was last heard from (its state,
versioned JSON like every detector, so it survives a worker restart in the changelogged table).
Readings only move that time forward and clear a raised silence. The stream stage calls
:func:`check_silence` from a timer with an injected ``now``; it returns the sensors that are silent
and a finding for each one that just went silent. Nothing here reads a clock.

After a worker restart, pass ``resumed_at`` (when the worker started consuming): a sensor is then
only judged once ``k × interval`` has passed since the restart as well, so the backlog that Kafka
still holds is read before anyone is called silent. A sensor that went quiet while the worker was
down is still raised, just after that grace.

A sensor whose readings have lately arrived late (out-of-order delivery, a slow gateway) gets that
delay added to its threshold, decaying over an hour and capped at ``max_slack_intervals``: late
data is not silence, and a sensor that delivers on time is judged on ``k × interval`` alone. The
delay is ``received - ts`` when the ingest time is given; without it, a reading older than the
newest one already seen proves the path delivered it at least ``newest - ts`` late (a lower bound:
the ingest time, in event-clock terms, gives the full delay).

If no timer ran while a sensor was quiet (the in-process scorer, or a timer that lagged), the next
reading backfills the missed finding, stamped at the moment the silence began to count, then clears
it, so no silence is ever lost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from detectors.common import check_version, from_iso, iso, make_finding, require
from ioc.models import Finding, Reading

STATE_VERSION = 1
_SLACK_TAU_S = 3600.0  # how fast learned delivery slack is forgotten


class SilenceDetector:
    """Silence for one sensor: raised by :meth:`check` (the timer), cleared by the next reading.

    >>> from datetime import UTC
    >>> d = SilenceDetector("AIR_CHO_DAM", interval_s=300, k=2.5)
    >>> t0 = datetime(2025, 10, 10, 3, 0, tzinfo=UTC)
    >>> d.update(Reading("AIR_CHO_DAM", "air", t0, 1, {"pm25": 12.0}))
    []
    >>> d.check(t0 + timedelta(seconds=700)), [f.severity for f in d.check(t0 + timedelta(seconds=760))]
    ([], ['warning'])
    >>> d.check(t0 + timedelta(seconds=900))  # raised once, not on every tick
    []
    >>> [f.severity for f in d.update(Reading("AIR_CHO_DAM", "air", t0 + timedelta(seconds=1000), 2, {"pm25": 12.0}))]
    [None]
    """

    rule = "sensor_silent"

    def __init__(
        self,
        sensor_id: str,
        interval_s: float,
        *,
        k: float = 2.5,  # intervals without data before "silent"; the target is raised within 3 intervals
        min_silence_s: float = 30.0,  # floor for very fast sensors, so batching latency is not silence
        max_slack_intervals: float = 3.0,  # cap on the learned delivery slack, in intervals
        backfill: bool = True,
        severity: str = "warning",
    ) -> None:
        require(interval_s > 0, f"{sensor_id}: interval_s must be > 0 (the registry's reporting interval)")
        require(k >= 1.0, f"k must be >= 1 interval, got {k}")
        require(min_silence_s >= 0 and max_slack_intervals >= 0, "min_silence_s and max_slack_intervals must be >= 0")
        self.sensor_id = sensor_id
        self.interval_s = float(interval_s)
        self.k = float(k)
        self.base_after_s = max(self.k * self.interval_s, float(min_silence_s))
        self.max_slack_s = max_slack_intervals * self.interval_s
        self.backfill = backfill
        self.severity = severity
        self.reset()

    def reset(self) -> None:
        self.last_seen: datetime | None = None
        self.silent = False
        self.slack_s = 0.0  # recent worst delivery delay (received - ts), decaying; only with ingest times
        self._after_slack = math.nan  # the slack ``_after`` was built for (not state: derived)
        self._after = timedelta(0)

    @property
    def after(self) -> timedelta:
        """Silence threshold: k intervals plus the delivery delay this sensor has shown lately."""
        if self.slack_s != self._after_slack:  # built once per slack value, not once per reading
            self._after_slack = self.slack_s
            self._after = timedelta(seconds=self.base_after_s + min(self.slack_s, self.max_slack_s))
        return self._after

    @property
    def ready(self) -> bool:
        return self.last_seen is not None

    def deadline(self, resumed_at: datetime | None = None) -> datetime | None:
        """When this sensor becomes silent if nothing arrives (None if it was never heard from)."""
        if self.last_seen is None:
            return None
        base = self.last_seen if resumed_at is None else max(self.last_seen, resumed_at)
        return base + self.after

    def check(self, now: datetime, *, resumed_at: datetime | None = None) -> list[Finding]:
        """The timer: a finding if the sensor has just gone silent, else nothing."""
        due = self.deadline(resumed_at)
        if self.silent or due is None or now < due:
            return []
        self.silent = True
        return [self._raised(now)]

    def _raised(self, at: datetime) -> Finding:
        assert self.last_seen is not None
        gap = (at - self.last_seen).total_seconds()
        return make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric="ts", ts=at,
            severity=self.severity, value=gap, threshold=self.after.total_seconds(),
            score=1.0,  # no data for k intervals is a fact, not an estimate
            message=f"{self.sensor_id}: không nhận được dữ liệu từ {self.last_seen:%H:%M %d/%m} UTC ({gap / 60:.0f} phút)",
            message_en=f"{self.sensor_id}: no data since {self.last_seen:%H:%M %d/%m} UTC ({gap / 60:.0f} min)",
            detail={"last_seen": iso(self.last_seen), "interval_s": self.interval_s},
        )

    def update(self, reading: Reading, received: datetime | None = None) -> list[Finding]:
        """Record that the sensor spoke (at ``received`` when given, else at its own timestamp)."""
        seen = received if received is not None else reading.ts
        out: list[Finding] = []
        if self.last_seen is not None and (received is not None or self.slack_s > 0.0 or seen < self.last_seen):
            # a reading that arrives late shows this sensor's delivery can lag: widen the threshold by
            # that much, decaying with an hour's time constant, so delayed data is not called silence.
            # Without an ingest time, a reading older than one already seen arrived at least that late.
            late = ((received - reading.ts) if received is not None else (self.last_seen - seen)).total_seconds()
            held = (seen - self.last_seen).total_seconds()
            decayed = self.slack_s * math.exp(-max(held, 0.0) / _SLACK_TAU_S)
            slack = late if late > decayed else decayed
            self.slack_s = slack if slack >= 1.0 else 0.0
        elif received is not None:
            self.slack_s = max(0.0, (received - reading.ts).total_seconds())
        if self.last_seen is not None and seen <= self.last_seen:
            return out  # late or duplicate: says nothing about silence now
        if not self.silent and self.backfill and self.last_seen is not None and seen - self.last_seen >= self.after:
            out.append(self._raised(min(self.last_seen + self.after, reading.ts)))
            self.silent = True
        self.last_seen = seen
        if self.silent:
            self.silent = False
            out.append(make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric="ts",
                ts=reading.ts, severity=None, value=0.0, threshold=None, score=0.0,
                message=f"{self.sensor_id}: đã nhận dữ liệu trở lại",
                message_en=f"{self.sensor_id}: data is arriving again",
            ))
        return out

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "last_seen": iso(self.last_seen), "silent": self.silent,
                "slack_s": self.slack_s}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "SilenceDetector")
        self.last_seen = from_iso(state.get("last_seen"))
        self.silent = bool(state["silent"])
        self.slack_s = float(state.get("slack_s", 0.0))


def check_silence(
    detectors: Iterable[SilenceDetector], now: datetime, *, resumed_at: datetime | None = None
) -> tuple[list[str], list[Finding]]:
    """Run the silence timer over many sensors: (every silent sensor id, findings for the new ones).

    The caller writes back the state of the sensors that have a finding (their ``silent`` flag
    changed) and sends the findings to ``ioc.findings``.

    >>> from datetime import UTC
    >>> t0 = datetime(2025, 10, 10, tzinfo=UTC)
    >>> a, b = SilenceDetector("A", 60), SilenceDetector("B", 300)
    >>> _ = a.update(Reading("A", "traffic", t0, 1, {})), b.update(Reading("B", "air", t0, 1, {}))
    >>> ids, found = check_silence([a, b], t0 + timedelta(seconds=200))
    >>> ids, [f.sensor_id for f in found]
    (['A'], ['A'])
    >>> check_silence([a, b], t0 + timedelta(seconds=200))[1]
    []
    """
    silent: list[str] = []
    findings: list[Finding] = []
    for d in detectors:
        findings.extend(d.check(now, resumed_at=resumed_at))
        if d.silent:
            silent.append(d.sensor_id)
    return silent, findings
