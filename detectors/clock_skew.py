"""Sensor health: the sensor's clock is wrong.

Two estimates, in one detector because they answer one question:

* **Against the ingest clock** (preferred): pass ``received`` (when the bridge or the worker got the
  reading, aware UTC) to :meth:`ClockSkewDetector.update`. Delivery delay only ever makes
  ``ts - received`` more negative, so over the last ``window`` readings the *largest* offset bounds
  how far behind the clock is and the *smallest* offset how far ahead it is: a clock ahead by more
  than ``tolerance_s`` is certain, and one behind by more than ``lag_tolerance_s`` even for the
  freshest reading is too.
* **From the sensor's own cadence** (no ingest time): consecutive sequence numbers should be
  ``interval_s`` apart. A jump of the timestamp that the sequence does not explain is a clock step;
  the steps add up to the offset from where the clock was when the detector started. A sequence
  restart (device reboot) re-anchors and forgets the offset, as a reboot re-synchronises the clock.
  The registry's interval can be wrong (a 10 Hz sensor, or one registered without an interval and
  taken as 60 s): every step would then look like a clock step, and every such sensor raise a
  fault. So nothing is judged before ``CADENCE_LEARN`` steps are seen, and once the sensor's recent
  steps (``_typical``) disagree with the registry, they are the cadence (and what was summed
  against the wrong one is dropped). A single clock step does not move them.

The fault needs ``window`` (ingest time) or ``persist`` (cadence) skewed readings in a row and clears
after ``clear_after`` good ones.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from detectors.common import calm_long_enough, check_version, excess_score, make_finding, require
from ioc.models import Finding, Reading

STATE_VERSION = 1
#: Per-sequence time steps the sensor's own cadence is taken from (``_typical``), and how many
#: must be seen before any step is judged.
CADENCE_STEPS = 5
CADENCE_LEARN = 3


class ClockSkewDetector:
    """Raises ``clock_skew`` when a sensor's timestamps are off by more than ``tolerance_s``.

    >>> from datetime import UTC, timedelta
    >>> d = ClockSkewDetector("WX", interval_s=300, persist=2, clear_after=1)
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> skew = [0] * 3 + [240] * 4 + [0] * 2
    >>> rs = [Reading("WX", "weather", t0 + timedelta(seconds=300 * i + s), i, {"t": 1.0}) for i, s in enumerate(skew)]
    >>> [(i, f.severity) for i, r in enumerate(rs) for f in d.update(r)]
    [(4, 'warning'), (7, None)]
    >>> d.reset()
    >>> [(i, f.severity) for i, r in enumerate(rs) for f in d.update(r, received=t0 + timedelta(seconds=300 * i + 1))]
    [(5, 'warning'), (7, None)]
    """

    rule = "clock_skew"

    def __init__(
        self,
        sensor_id: str,
        interval_s: float,
        *,
        tolerance_s: float = 90.0,  # clock ahead / step size tolerated; below ~60 s NTP-less devices flap
        lag_tolerance_s: float = 900.0,  # behind: the freshest reading still this late; delivery backlogs are legit
        window: int = 3,  # readings over which ingest-time offsets are bounded (this is their persistence)
        persist: int = 2,  # cadence mode: skewed readings in a row before raising
        clear_after: int = 2,  # good readings in a row before the all-clear
        max_seq_gap: int = 100_000,  # a larger sequence jump is treated as a restart
        severity: str = "warning",
    ) -> None:
        require(interval_s > 0, f"{sensor_id}: interval_s must be > 0 (the registry's reporting interval)")
        require(tolerance_s > 0 and lag_tolerance_s > 0, "tolerance_s and lag_tolerance_s must be > 0")
        require(window >= 1 and persist >= 1 and clear_after >= 1 and max_seq_gap >= 1,
                "window, persist, clear_after and max_seq_gap must be >= 1")
        self.sensor_id = sensor_id
        self.interval_s = float(interval_s)
        self.tolerance_s = float(tolerance_s)
        self.lag_tolerance_s = float(lag_tolerance_s)
        self.window = window
        self.persist = persist
        self.clear_after = clear_after
        self.max_seq_gap = max_seq_gap
        self.severity = severity
        self.reset()

    def reset(self) -> None:
        self.offsets: deque[float] = deque(maxlen=self.window)  # ts - received, newest last
        self.anchor: tuple[int, float] | None = None  # (seq, ts) of the last reading
        self.steps: deque[float] = deque(maxlen=CADENCE_STEPS)  # recent seconds per sequence number
        self.learned = False  # the registry's interval disagreed with the sensor: its own steps rule
        self.cadence_offset = 0.0
        self.bad_run = 0
        self.ok_run = 0
        self.active = False

    @property
    def ready(self) -> bool:
        return self.anchor is not None or bool(self.offsets)

    def _cadence(self, seq: int, t: float) -> float | None:
        """Offset implied by the cadence, or None if this reading says nothing new (duplicate)."""
        if self.anchor is None:
            self.anchor = (seq, t)
            return self.cadence_offset
        a_seq, a_t = self.anchor
        d = seq - a_seq
        if d == 0:
            return None  # duplicate delivery (or a sensor without sequence numbers)
        if (d < 0 and t > a_t) or abs(d) > self.max_seq_gap:
            self.anchor = (seq, t)  # the device restarted its sequence: re-anchor, clock presumed re-synced
            self.cadence_offset = 0.0
            return 0.0
        self.steps.append((t - a_t) / d)
        interval = self._interval()
        step = (t - a_t) - d * interval
        if abs(step) > min(self.tolerance_s, 0.5 * interval):
            whole = round(step / interval)
            if not (whole >= 1 and abs(step - whole * interval) <= 0.1 * interval):
                self.cadence_offset += step  # a whole number of missed intervals is a gap, not a clock step
        self.anchor = (seq, t)
        return self.cadence_offset if len(self.steps) >= CADENCE_LEARN else None

    def _interval(self) -> float:
        """The cadence steps are judged against: the registry's, until the sensor shows it is wrong."""
        if self.learned:
            return self._typical()
        if len(self.steps) >= CADENCE_LEARN:
            typical = self._typical()
            if abs(typical - self.interval_s) > min(self.tolerance_s, 0.5 * self.interval_s):
                self.learned = True
                self.cadence_offset = 0.0  # summed against the wrong interval: not a clock step
                return typical
        return self.interval_s

    def _typical(self) -> float:
        """The recent steps without the longest and the shortest (a clock step, a gap), averaged:
        a median would pick one side of a sensor whose steps alternate long and short."""
        ordered = sorted(self.steps)
        middle = ordered[1:-1] if len(ordered) >= 3 else ordered
        return sum(middle) / len(middle)

    def update(self, reading: Reading, received: datetime | None = None) -> list[Finding]:
        t = reading.ts.timestamp()
        if received is not None:
            self.offsets.append(t - received.timestamp())
            ahead, behind = min(self.offsets), max(self.offsets)
            offset = ahead if ahead > self.tolerance_s else (behind if behind < -self.lag_tolerance_s else 0.0)
            limit = self.tolerance_s if offset >= 0 else self.lag_tolerance_s
            self._cadence(reading.seq, t)  # keep the anchor current for readings without ingest time
        else:
            got = self._cadence(reading.seq, t)
            if got is None:
                return []
            offset, limit = got, self.tolerance_s
        skewed = abs(offset) > limit
        if skewed:
            self.ok_run = 0
            self.bad_run += 1
            if self.active or self.bad_run < (1 if received is not None else self.persist):
                return []
            self.active = True
            way_vi, way_en = ("nhanh", "ahead") if offset > 0 else ("chậm", "behind")
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric="ts",
                ts=reading.ts, severity=self.severity, value=offset, threshold=limit,
                score=excess_score(offset, limit),
                message=f"{self.sensor_id}: đồng hồ cảm biến {way_vi} khoảng {abs(offset):.0f} s",
                message_en=f"{self.sensor_id}: sensor clock is about {abs(offset):.0f} s {way_en}",
            )]
        self.bad_run = 0
        if not calm_long_enough(self):
            return []
        return [make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="health", family="health", metric="ts",
            ts=reading.ts, severity=None, value=offset, threshold=None, score=0.0,
            message=f"{self.sensor_id}: đồng hồ cảm biến đã đúng trở lại",
            message_en=f"{self.sensor_id}: sensor clock is back in step",
        )]

    def to_state(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "offsets": list(self.offsets),
            "anchor": list(self.anchor) if self.anchor else None,
            "cadence_offset": self.cadence_offset,
            "steps": list(self.steps),
            "learned": self.learned,
            "bad_run": self.bad_run,
            "ok_run": self.ok_run,
            "active": self.active,
        }

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "ClockSkewDetector")
        self.offsets = deque((float(x) for x in state["offsets"]), maxlen=self.window)
        a = state.get("anchor")
        self.anchor = (int(a[0]), float(a[1])) if a else None
        self.cadence_offset = float(state["cadence_offset"])
        # Absent from states written before the cadence was learned: such a detector has been judging
        # steps against the registry's interval, so it goes on from as many steps of that interval.
        seen = state.get("steps", [self.interval_s] * CADENCE_LEARN if self.anchor else [])
        self.steps = deque((float(x) for x in seen), maxlen=CADENCE_STEPS)
        self.learned = bool(state.get("learned", False))
        self.bad_run = int(state["bad_run"])
        self.ok_run = int(state["ok_run"])
        self.active = bool(state["active"])
