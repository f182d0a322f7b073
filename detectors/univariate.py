"""The general-purpose univariate streaming anomaly score, for any series: ``ioc detect-file``.

Each value gets a *surprise* ``s = -log10 p`` from one or more component scorers (the largest
wins), then an alarm policy turns it into ``anomaly_score`` in [0, 1]:

* ``score = min(1, s / 10)``: 0.3 is a 1-in-1000 event, 0.6 one in a million, 1.0 one in 10^10 or
  rarer. One threshold therefore means the same false-alarm rate on every series.
* An *alarm* is a value with ``s >= alarm_surprise`` outside the refractory period of the previous
  alarm. For ``refractory`` values after an alarm (3 % of the values seen, within [20, 500]) scores
  are capped just below the alarm level, so one incident raises one alarm, not a run of them.
* The first ``warmup`` values only teach the scorers and score 0.

Methods (``METHODS``): ``knn-range`` (default) is the shape novelty of :mod:`detectors.shingle_knn`
together with the new-extreme rule of :mod:`detectors.range_novelty`; ``knn`` is the shape novelty
alone; ``windowed-gaussian`` is the classic z-score baseline of :mod:`detectors.windowed_gaussian`.
On the NAB v1.1 corpus (58 labelled real and artificial series, one threshold for all files,
scored by ``bench/nab_eval.py``) ``knn-range`` scores 68.7 standard / 56.3 low-FP / 74.6 low-FN,
``knn`` 65.2 / 53.4 / 70.9 and ``windowed-gaussian`` 41.1 / 21.5 / 53.8; published: HTM 70.1,
CAD-OSE 69.9, KNN-CAD 58.0, Random Cut Forest 51.7, ARTime 74.9 (standard). Unlike HTM, CAD-OSE,
KNN-CAD and ARTime as NAB runs them, these methods never see a file's length, minimum or maximum.

:class:`UnivariateAnomalyDetector` wraps the score in the :class:`detectors.base.Detector`
protocol: one ``family="anomaly"`` finding per alarm, and a clearing finding once the refractory
period passes quietly. Pure: no I/O, no clock, versioned JSON state.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from detectors.common import check_version, from_iso, iso, make_finding, require
from detectors.range_novelty import RangeNoveltyScorer
from detectors.shingle_knn import ShingleKnnScorer
from detectors.windowed_gaussian import WindowedGaussianScorer
from ioc.models import Finding, Reading

STATE_VERSION = 1


class SurpriseScorer(Protocol):
    """A component: ``surprise(value) -> -log10 p`` (None while warming up), with JSON state."""

    def surprise(self, value: float) -> float | None: ...

    def to_state(self) -> dict[str, Any]: ...

    def from_state(self, state: dict[str, Any]) -> None: ...

    def reset(self) -> None: ...


#: name -> (one-line description, component factories). The first is the default.
METHODS: dict[str, tuple[str, tuple[Callable[[], SurpriseScorer], ...]]] = {
    "knn-range": ("shape novelty (k-NN over recent windows) + new-extreme rule (default)",
                  (ShingleKnnScorer, RangeNoveltyScorer)),
    "knn": ("shape novelty (k-NN over recent windows) alone", (ShingleKnnScorer,)),
    "windowed-gaussian": ("z-score against the last 1000 values (NAB's simple baseline)", (WindowedGaussianScorer,)),
}
DEFAULT_METHOD = next(iter(METHODS))


class UnivariateAnomalyScorer:
    """Streaming ``anomaly_score`` in [0, 1] for one series: ``score(ts, value)`` scores, then learns.

    Values are taken in the order given (``ts`` is not used by these methods; it is part of the
    interface for time-aware scorers). A missing or non-finite value scores 0 and teaches nothing.

    >>> s = UnivariateAnomalyScorer(warmup=50)
    >>> calm = [s.score(float(i), 10.0 + (i % 7) * 0.3 + ((i * 37) % 11) * 0.01) for i in range(400)]
    >>> max(calm) < 0.25, s.score(400.0, 30.0) >= 0.6, s.alarm
    (True, True, True)
    """

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        *,
        warmup: int = 150,  # values learned before scoring; fewer = earlier but noisier first alarms
        alarm_surprise: float = 2.5,  # -log10 p of an alarm; higher = fewer alarms, later detection
        refractory_share: float = 0.03,  # refractory after an alarm, as a share of values seen
        min_refractory: int = 20,
        max_refractory: int = 500,  # so a sensor running for months still re-alarms within a day or so
        score_scale: float = 10.0,  # surprise that maps to score 1 (p = 1e-10)
    ) -> None:
        require(method in METHODS, f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        require(warmup >= 0, f"warmup must be >= 0, got {warmup}")
        require(0 < alarm_surprise < score_scale, f"need 0 < alarm_surprise < score_scale, got {alarm_surprise}")
        require(0 <= refractory_share < 1 and 0 <= min_refractory <= max_refractory,
                "need 0 <= refractory_share < 1 and 0 <= min_refractory <= max_refractory")
        self.method = method
        self.warmup = warmup
        self.alarm_surprise = alarm_surprise
        self.refractory_share = refractory_share
        self.min_refractory = min_refractory
        self.max_refractory = max_refractory
        self.score_scale = score_scale
        self.components: list[SurpriseScorer] = [make() for make in METHODS[method][1]]
        self.reset()

    def reset(self) -> None:
        for c in self.components:
            c.reset()
        self.n = 0  # finite values seen
        self.last_alarm_n: int | None = None
        self.surprise = 0.0  # of the last value scored (for findings)
        self.source = -1  # index of the component that gave it
        self.alarm = False  # whether the last value raised an alarm

    @property
    def ready(self) -> bool:
        return self.n > self.warmup

    def refractory(self) -> int:
        """Values after an alarm during which no new alarm is raised."""
        return min(self.max_refractory, max(self.min_refractory, int(self.refractory_share * self.n)))

    @property
    def in_refractory(self) -> bool:
        return self.last_alarm_n is not None and self.n - self.last_alarm_n <= self.refractory()

    def score(self, ts: float, value: float | None) -> float:
        """``anomaly_score`` of ``value`` given every earlier value (causal), then learn it."""
        self.alarm = False
        if value is None or not math.isfinite(value):
            return 0.0
        self.n += 1
        best, src = 0.0, -1
        for i, c in enumerate(self.components):  # every component sees every value
            s = c.surprise(value)
            if s is not None and s > best:
                best, src = s, i
        self.surprise, self.source = best, src
        if self.n <= self.warmup:
            return 0.0
        level = min(1.0, best / self.score_scale)
        if best >= self.alarm_surprise and not self.in_refractory:
            self.alarm = True
            self.last_alarm_n = self.n
            return level
        return min(level, 0.9 * self.alarm_surprise / self.score_scale)

    def to_state(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "method": self.method,
            "n": self.n,
            "last_alarm_n": self.last_alarm_n,
            "components": [c.to_state() for c in self.components],
        }

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "UnivariateAnomalyScorer")
        if state["method"] != self.method:
            raise ValueError(f"state is for method {state['method']!r}, this scorer runs {self.method!r}: "
                             "drop the state to start cold")
        self.reset()
        for c, s in zip(self.components, state["components"], strict=True):
            c.from_state(s)
        self.n = int(state["n"])
        self.last_alarm_n = None if state["last_alarm_n"] is None else int(state["last_alarm_n"])


_SOURCE_EN = {"ShingleKnnScorer": "shape", "RangeNoveltyScorer": "new extreme", "WindowedGaussianScorer": "z-score"}
_SOURCE_VI = {"ShingleKnnScorer": "hình dạng chuỗi", "RangeNoveltyScorer": "giá trị vượt mọi mức đã thấy",
              "WindowedGaussianScorer": "độ lệch chuẩn"}


class UnivariateAnomalyDetector:
    """The univariate score as a pipeline detector for one metric of one sensor.

    Raises ``anomaly_univariate`` (family ``anomaly``) at each alarm and clears it once the
    refractory period passes without one. Duplicate, late and non-finite readings are skipped.

    >>> from datetime import UTC, datetime, timedelta
    >>> d = UnivariateAnomalyDetector("AIR_1", "pm25", warmup=50)
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> vals = [20.0 + (i % 7) * 0.3 + ((i * 37) % 11) * 0.01 for i in range(400)] + [90.0] + [20.0] * 40
    >>> r = lambda i, v: Reading("AIR_1", "air", t0 + timedelta(minutes=i), i, {"pm25": v})
    >>> [(i, f.severity) for i, v in enumerate(vals) for f in d.update(r(i, v))]
    [(400, 'warning'), (421, None)]
    """

    rule = "anomaly_univariate"

    def __init__(
        self,
        sensor_id: str,
        metric: str,
        *,
        method: str = DEFAULT_METHOD,
        warmup: int = 150,
        alarm_surprise: float = 2.5,
        warning_score: float = 0.6,  # alarms at or above this score are "warning", below "info"
    ) -> None:
        require(bool(sensor_id) and bool(metric), "give the sensor id and the metric to watch")
        require(0 <= warning_score <= 1, f"warning_score must be in [0, 1], got {warning_score}")
        self.sensor_id = sensor_id
        self.metric = metric
        self.warning_score = warning_score
        self.scorer = UnivariateAnomalyScorer(method, warmup=warmup, alarm_surprise=alarm_surprise)
        self.reset()

    def __copy__(self) -> UnivariateAnomalyDetector:
        """A scorer of its own: a shallow copy (:mod:`detectors.templates`) would share its windows."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__, scorer=copy.deepcopy(self.scorer))
        return new

    def reset(self) -> None:
        self.scorer.reset()
        self.open = False
        self.last_ts: datetime | None = None

    @property
    def ready(self) -> bool:
        return self.scorer.ready

    def update(self, reading: Reading) -> list[Finding]:
        if self.last_ts is not None and reading.ts <= self.last_ts:
            return []  # duplicate or late: the score already reflects newer data
        raw = reading.metrics.get(self.metric)
        if raw is None or not math.isfinite(raw):
            return []
        self.last_ts = reading.ts
        value = float(raw)
        score = self.scorer.score(reading.ts.timestamp(), value)
        sc = self.scorer
        if sc.alarm:
            self.open = True
            name = type(sc.components[sc.source]).__name__ if sc.source >= 0 else ""
            surprise = round(min(sc.surprise, 300.0), 3)
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=self.metric,
                ts=reading.ts, severity="warning" if score >= self.warning_score else "info", value=value,
                threshold=None, score=score,
                message=f"{self.sensor_id}: {self.metric} = {value:g} bất thường "
                        f"({_SOURCE_VI.get(name, 'chuỗi')}, xác suất ≈ 1e-{surprise:.1f})",
                message_en=f"{self.sensor_id}: {self.metric} = {value:g} is anomalous "
                           f"({_SOURCE_EN.get(name, 'series')}, p ≈ 1e-{surprise:.1f})",
                detail={"surprise": surprise, "source": _SOURCE_EN.get(name, "")},
            )]
        if self.open and not sc.in_refractory:
            self.open = False
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=self.metric,
                ts=reading.ts, severity=None, value=value, threshold=None, score=0.0,
                message=f"{self.sensor_id}: {self.metric} đã trở lại bình thường",
                message_en=f"{self.sensor_id}: {self.metric} is back to normal",
            )]
        return []

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "scorer": self.scorer.to_state(), "open": self.open,
                "last_ts": iso(self.last_ts)}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "UnivariateAnomalyDetector")
        self.scorer.from_state(state["scorer"])
        self.open = bool(state["open"])
        self.last_ts = from_iso(state.get("last_ts"))
