"""Score the detectors against labelled scenarios, in-process, through the stream stage's own code.

``ioc score`` simulates a scenario with :mod:`sensors_sim`, registers every simulated sensor the
way ``ioc db migrate --seed`` would (but with the *reporting* interval of a profile, so silence and
rate detectors expect hourly data from an hourly gauge), and feeds the well-formed messages, in
the order the simulator sends them, in envelopes of at most 500 readings, to
:class:`streams.detection.DetectorBank` — the worker's detector stage. Malformed payloads never
get there (the bridge dead-letters them). The silence timer runs on the virtual clock every
``TIMER_S`` seconds of simulated time (the worker's default period) with ``now`` = the simulated time.

**Alerts.** Findings become alert episodes per (sensor, rule) exactly as the alerts table keeps
them: an episode opens on the first finding with a severity, escalates or de-escalates when the
severity changes, and resolves on a finding with severity None; one still open at the end of the
run ends there. A flood episode is split per BĐ level k into the spans where its band is >= k:
``flood_alarm_level`` gives the alerts of the kinds ``flood_bd1..3``, ``flood_projection`` the
forecasts (``flood_forecast``) of level k.

**Truth.** Labels first (see :mod:`sensors_sim.labels`), completed where the detectors legitimately
report what the labels do not cover. Computed truths use the values the scenario really contains
(``SensorSeries.values``: the reported series, minus lost or spiked reports) and the *official*
thresholds the detectors use, never a detector's state:

- ``flood_bdK``: every run of reports at or above BĐ K (runs less than ``FLOOD_MERGE_S`` apart
  merge). The labels give only the first crossing per level; a second wave that re-crosses a level
  is truth too. A run whose start is the labelled crossing is marked as labelled.
- ``heavy_rain``: labels (>= 100 mm/24 h) plus runs of the 24 h total >= 50 mm (KTTV "mưa to",
  where the detector's ``info`` starts; >= 80 mm/3 h implies it).
- ``air_quality``: labels plus clock hours whose hourly VN_AQI (QĐ 1459: NowCast PM, 1 h means of
  the gases, via the pure functions of :mod:`detectors.vn_aqi`) is >= 101 ("Kém").
- ``noise``: no labels exist; local clock hours whose energy-mean LAeq exceeds the QCVN 26:2010
  limit of that hour's period (day 06–21 h, night 21–06 h) for the sensor's area.
- ``congestion``: incident labels plus spans where the trailing 15-minute mean speed is below 0.5 of
  free flow or 10 km/h (the operator levels "heavy"/"jam").
- ``fault_silent``: dropout labels plus gaps of >= 3 reporting intervals between *valid* readings
  (consecutive malformed payloads leave the pipeline without data just as lost reports do).
- ``fault_range``: runs of delivered values outside the physical range the range detector uses.
- ``fault_stuck``, ``fault_spike``, ``fault_clock_skew``, ``fault_drift``, ``storm_wind``: labels
  only. Faults labelled ``expected_alert = "none"`` (duplicates, out-of-order delivery) and
  malformed payloads are not events any detector should report; an alert they cause is false.

A computed truth that overlaps a label of the same kind and sensor is dropped (the label stands
for it). Computed truths count for recall as well as precision: they are events that happened.

**Matching.** An alert matches a truth of its kind on the same sensor (and BĐ level) when its span
overlaps ``[start - before, end + after]`` (:data:`KINDS` holds the tolerances): no slack before a
level crossing (a gauge cannot be above a level before its first report above it), 6 h before it
for a forecast, 1 h around the windowed hazards (rain, air, noise, traffic: window alignment), and
for faults 5 min plus 3 reporting intervals after the end (a spike is seen at the next reading, a
silence after k intervals). A truth is detected when such an alert reaches the label's
``min_severity`` inside the window (a rain label peaking at 200 mm needs ``critical``); its delay
is the first moment such an alert is open inside the window minus the truth's start, never below 0
(an alert already open when the event starts has delay 0). A spike is also detected by a range alert,
a drift by an anomaly, range or spike alert on the drifting metric (no detector is named
``sensor_drift``). Anomaly alerts have no truth of their own: one is correct when it overlaps any
truth or label of its sensor (1 h before, 6 h after) or a storm of the scenario; its recall is not
defined. Precision = matched alerts / alerts; recall = detected truths / truths; false alerts per
sensor-day = unmatched alerts / (sensors × days of the scenario). A false hazard alert raised while
a health alert of the same sensor is open is also counted as *muted*. Findings pass through the
alerts stage's rules first (:class:`ioc.alerting.conditions.CountedConditions`: severity mapping,
and inhibition, which takes a sensor's hazards out while it has a health fault), so only what
would page someone is scored.

Scoring every bundled scenario takes about 1.5–2 minutes on one core, most of it in the detectors
themselves (each envelope writes every touched sensor's state, as the worker does).

**Lead time.** For a crossing of BĐ K at time T, the warnings are the forecasts of level >= K and
the level-K alarm itself that are in force at some point of ``[T - 6 h, T + after]``; the lead is
T minus the start of the earliest. A forecast gives a positive lead, the alarm alone 0 (or less,
when it came late), a crossing without either has none (missed).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detectors.noise import QCVN26_2010_LIMITS, laeq, period_of
from detectors.vn_aqi import HOURLY_COLUMN, PM_METRICS, hourly_aqi, nowcast
from ioc.alerting.conditions import CountedConditions
from ioc.alerting.rules import load_rules
from ioc.domain import SEVERITIES
from ioc.models import Finding, Reading
from ioc.settings import Settings
from ioc.storage.sensors_store import SensorEntry
from sensors_sim.encode import message_order
from sensors_sim.engine import Simulation, simulate
from sensors_sim.faults import Delivery
from sensors_sim.scenario import SensorFault, Storm, available
from streams.detection import DetectorBank, build_detectors

RESULT_VERSION = 1
#: Virtual silence timer period and envelope size: the worker's and the bridge's defaults
#: (``IOC_SILENCE_CHECK_S``, ``IOC_ENVELOPE_MAX_READINGS``), so a silence is raised as late as the worker's.
TIMER_S = float(Settings.model_fields["silence_check_s"].default)
ENVELOPE_READINGS = int(Settings.model_fields["envelope_max_readings"].default)
#: Runs of a BĐ level closer than this are one flood (a dip of a few hours is not a new flood).
FLOOD_MERGE_S = 6 * 3600.0
#: The realistic variants that ``all`` must include (they are bundled scenario files too).
REALISTIC = ("flood_2025_11_national", "typhoon_damrey_national")
#: Scenarios whose BĐ III crossings must be warned at least ``BD3_LEAD_TARGET_S`` ahead.
LEAD_SCENARIOS = ("typhoon_damrey", "flood_2025_11", "typhoon_damrey_national", "flood_2025_11_national")
BD3_LEAD_TARGET_S = 3600.0
SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}
HEALTH_RULES = frozenset({"sensor_silent", "sensor_stuck", "sensor_spike", "sensor_range", "clock_skew"})
RULE_KIND = {
    "heavy_rain": "heavy_rain", "air_quality": "air_quality", "noise_limit": "noise",
    "traffic_congestion": "congestion", "sensor_silent": "fault_silent", "sensor_stuck": "fault_stuck",
    "sensor_spike": "fault_spike", "sensor_range": "fault_range", "clock_skew": "fault_clock_skew",
}
FAULT_KIND = {"sensor_silent": "fault_silent", "sensor_stuck": "fault_stuck", "sensor_spike": "fault_spike",
              "sensor_drift": "fault_drift", "clock_skew": "fault_clock_skew"}
LABEL_KIND = {"heavy_rain": "heavy_rain", "storm_wind": "storm_wind", "traffic_incident": "congestion",
              "pollution_episode": "air_quality"}
RAIN_INFO_24H_MM = 50.0  # KTTV "mưa to": the heavy-rain detector's info level
AQI_ALERT = 101  # VN_AQI "Kém": the air-quality detector's first alerting band
CONGESTION_RATIO, JAM_KMH = 0.5, 10.0
TRAFFIC_WINDOW_S = 900.0  # congestion truth: a 15-minute mean below the bound, the usual traffic-report step
SILENT_GAP_INTERVALS = 3.0  # strictly between the 2 and 4 intervals the simulator's labels leave open
H = 3600.0


# ---------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Tolerance:
    """How far an alert may lie outside a truth's span and still match it."""

    before_s: float
    after_s: float
    after_intervals: float = 0.0  # plus this many of the sensor's reporting intervals

    def window(self, t: Truth) -> tuple[float, float]:
        return t.start - self.before_s, t.end + self.after_s + self.after_intervals * t.interval_s


@dataclass(frozen=True)
class KindSpec:
    kind: str
    title: str
    tol: Tolerance
    detected_by: tuple[str, ...]  # alert kinds that detect this kind's truths
    group: str  # flood, hazard, fault, anomaly
    in_recall: bool = True  # counts in the overall recall (not forecasts: they re-score the crossings)
    note: str = ""


_HAZARD_TOL = Tolerance(H, H, 1.0)
_FAULT_TOL = Tolerance(0.0, 300.0, 3.0)
KINDS: tuple[KindSpec, ...] = (
    *(KindSpec(f"flood_bd{k}", f"BĐ {'I' * k} crossing", Tolerance(0.0, 0.0, 1.0), (f"flood_bd{k}",), "flood")
      for k in (1, 2, 3)),
    KindSpec("flood_forecast", "BĐ forecast", Tolerance(6 * H, 0.0, 1.0), ("flood_forecast",), "flood",
             in_recall=False, note="recall = crossings with a forecast in force 0-6 h before"),
    KindSpec("heavy_rain", "heavy rain", _HAZARD_TOL, ("heavy_rain",), "hazard"),
    KindSpec("air_quality", "air quality", _HAZARD_TOL, ("air_quality",), "hazard"),
    KindSpec("noise", "noise (QCVN 26)", _HAZARD_TOL, ("noise",), "hazard", note="truth computed, no labels"),
    KindSpec("congestion", "congestion", _HAZARD_TOL, ("congestion",), "hazard"),
    KindSpec("storm_wind", "storm wind", _HAZARD_TOL, ("storm_wind",), "hazard", in_recall=False,
             note="no wind detector: not scored in the overall line"),
    KindSpec("fault_silent", "fault: silent", _FAULT_TOL, ("fault_silent",), "fault"),
    KindSpec("fault_stuck", "fault: stuck", _FAULT_TOL, ("fault_stuck",), "fault"),
    KindSpec("fault_spike", "fault: spike", _FAULT_TOL, ("fault_spike", "fault_range"), "fault"),
    KindSpec("fault_range", "fault: range", _FAULT_TOL, ("fault_range",), "fault", note="truth computed"),
    KindSpec("fault_clock_skew", "fault: clock skew", _FAULT_TOL, ("fault_clock_skew",), "fault"),
    KindSpec("fault_drift", "fault: drift", Tolerance(0.0, H, 1.0), ("anomaly", "fault_range", "fault_spike"),
             "fault", note="no drift rule: anomaly/range/spike on the metric"),
    KindSpec("anomaly", "anomaly", Tolerance(H, 6 * H, 0.0), ("anomaly",), "anomaly", in_recall=False,
             note="correct if it overlaps any event of its sensor or a storm"),
)
SPEC = {k.kind: k for k in KINDS}
ALARM_KINDS = ("flood_bd1", "flood_bd2", "flood_bd3")
FAULT_KINDS = tuple(k.kind for k in KINDS if k.group == "fault")
HAZARD_KINDS = frozenset(k.kind for k in KINDS if k.group in ("flood", "hazard"))


@dataclass(frozen=True)
class Episode:
    """One alert as the alerts table holds it: ``steps`` are (ts, severity rank, band) at open and each change."""

    sensor_id: str
    rule: str
    family: str
    metric: str
    start: float
    end: float | None  # None: still open when the run ended
    steps: tuple[tuple[float, int, int | None], ...]


@dataclass(frozen=True)
class Alert:
    """What is matched: an episode, or the span of a flood episode at BĐ level >= ``level``."""

    kind: str
    sensor_id: str
    rule: str
    start: float
    end: float
    steps: tuple[tuple[float, int], ...] = ()  # (ts, severity rank); empty = rank 0 throughout
    level: int | None = None
    metric: str = ""

    def reached(self, lo: float, hi: float, min_rank: int) -> float | None:
        """First moment in [lo, hi] at which this alert is open with a severity rank >= ``min_rank``.

        >>> a = Alert("heavy_rain", "R", "heavy_rain", 10.0, 100.0, ((10.0, 0), (40.0, 1), (70.0, 0)))
        >>> a.reached(0.0, 200.0, 1), a.reached(50.0, 200.0, 1), a.reached(75.0, 200.0, 1), a.reached(0, 5, 0)
        (40.0, 50.0, None, None)
        """
        steps = self.steps or ((self.start, 0),)
        for i, (ts, rank) in enumerate(steps):
            until = steps[i + 1][0] if i + 1 < len(steps) else self.end
            a, b = max(ts, lo), min(until, hi)
            if rank >= min_rank and a <= b:
                return a
        return None


@dataclass(frozen=True)
class Truth:
    """One event that happened on one sensor: labelled, or computed from the generated series."""

    kind: str
    sensor_id: str
    start: float
    end: float
    event_id: str
    labelled: bool
    min_rank: int = 0  # the label's minimum severity, as a rank of ioc.domain.SEVERITIES
    level: int | None = None
    metric: str | None = None
    interval_s: float = 0.0


@dataclass
class KindScore:
    """Counts for one event kind (one scenario, or pooled over several)."""

    kind: str
    truths: int = 0
    labelled: int = 0
    detected: int = 0
    alerts: int = 0
    tp: int = 0
    fp: int = 0
    fp_muted: int = 0  # false hazard alerts raised while a health fault of the sensor was open
    sensor_days: float = 0.0
    delays_s: list[float] = field(default_factory=list)
    delays_iv: list[float] = field(default_factory=list)  # silences: intervals from the last reading to the alert
    leads_s: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_alerts: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return self.tp / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.truths if self.truths else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if r is None:
            return None
        if p is None or p + r == 0:
            return 0.0
        return 2 * p * r / (p + r)

    @property
    def fa_per_sensor_day(self) -> float | None:
        return self.fp / self.sensor_days if self.sensor_days else None

    def add(self, other: KindScore) -> None:
        for name in ("truths", "labelled", "detected", "alerts", "tp", "fp", "fp_muted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.sensor_days += other.sensor_days
        self.delays_s += other.delays_s
        self.delays_iv += other.delays_iv
        self.leads_s += other.leads_s
        self.missed += other.missed
        self.false_alerts += other.false_alerts

    def to_json(self, max_items: int = 50) -> dict[str, Any]:
        return {
            "truths": self.truths, "labelled": self.labelled, "detected": self.detected, "alerts": self.alerts,
            "tp": self.tp, "fp": self.fp, "fp_during_health_fault": self.fp_muted,
            "precision": _r(self.precision), "recall": _r(self.recall), "f1": _r(self.f1),
            "false_alerts_per_sensor_day": _r(self.fa_per_sensor_day),
            "delay_median_s": _r(quantile(self.delays_s, 0.5), 1), "delay_p90_s": _r(quantile(self.delays_s, 0.9), 1),
            "lead_median_s": _r(quantile(self.leads_s, 0.5), 1),
            "lead_min_s": _r(min(self.leads_s), 1) if self.leads_s else None,
            **({"intervals_since_last_reading_max": _r(max(self.delays_iv), 3)} if self.delays_iv else {}),
            "missed": self.missed[:max_items], "false_alerts": self.false_alerts[:max_items],
        }


@dataclass(frozen=True)
class Crossing:
    """One true BĐ crossing and its warning lead time."""

    scenario: str
    sensor_id: str
    level: int
    at: float
    labelled: bool
    lead_s: float | None  # None: no warning and no alarm in force near the crossing
    warned_by: str | None  # the rule of the earliest warning

    def to_json(self) -> dict[str, Any]:
        return {"sensor_id": self.sensor_id, "level": self.level, "crossing": _iso(self.at), "labelled": self.labelled,
                "lead_s": _r(self.lead_s, 1), "warned_by": self.warned_by}


@dataclass
class ScenarioScore:
    name: str
    duration_h: float
    sensors: int
    readings: int
    rejected: int
    findings: int
    seconds: float
    kinds: dict[str, KindScore]
    crossings: list[Crossing]

    @property
    def sensor_days(self) -> float:
        return self.sensors * self.duration_h / 24.0

    def overall(self) -> KindScore:
        return overall_of(self.kinds.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name, "duration_h": self.duration_h, "sensors": self.sensors,
            "sensor_days": round(self.sensor_days, 3), "readings": self.readings,
            "rejected": self.rejected, "findings": self.findings, "seconds": round(self.seconds, 2),
            "kinds": {k: s.to_json() for k, s in self.kinds.items()},
            "overall": self.overall().to_json(max_items=0),
            "crossings": [c.to_json() for c in self.crossings],
        }


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    goal: str
    met: bool | None  # None: nothing to judge (no such event in the scenarios scored)


@dataclass
class ScoreReport:
    scenarios: list[ScenarioScore]

    @property
    def sensor_days(self) -> float:
        return sum(s.sensor_days for s in self.scenarios)

    def pooled(self) -> dict[str, KindScore]:
        """Every kind summed over the scenarios; false alerts per sensor-day over all their sensor-days."""
        out: dict[str, KindScore] = {}
        for sc in self.scenarios:
            for k, s in sc.kinds.items():
                out.setdefault(k, KindScore(k)).add(s)
        for s in out.values():
            s.sensor_days = self.sensor_days
        return out

    def targets(self) -> list[Target]:
        return targets_of(self)

    def to_json(self) -> dict[str, Any]:
        pooled = self.pooled()
        return {
            "version": RESULT_VERSION,
            "method": {
                "timer_s": TIMER_S, "envelope_readings": ENVELOPE_READINGS, "flood_merge_s": FLOOD_MERGE_S,
                "tolerances": {k.kind: {"before_s": k.tol.before_s, "after_s": k.tol.after_s,
                                        "after_intervals": k.tol.after_intervals, "detected_by": list(k.detected_by)}
                               for k in KINDS},
            },
            "scenarios": [s.to_json() for s in self.scenarios],
            "total": {"kinds": {k: s.to_json(max_items=0) for k, s in pooled.items()},
                      "overall": overall_of(pooled.values()).to_json(max_items=0),
                      "seconds": round(sum(s.seconds for s in self.scenarios), 2)},
            "targets": [{"target": t.name, "value": t.value, "goal": t.goal, "met": t.met} for t in self.targets()],
        }


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default); None for no values.

    >>> quantile([0.0, 10.0, 20.0, 30.0], 0.5), quantile([0.0, 10.0, 20.0, 30.0], 0.9), quantile([], 0.5)
    (15.0, 27.0, None)
    """
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# ---------------------------------------------------------------------------------------- episodes


def counted(findings: Iterable[Finding]) -> list[Finding]:
    """What the alerts stage counts: the default rules' severity mapping and inhibition applied."""
    return CountedConditions(load_rules()).apply_all(findings)


def episodes(findings: Iterable[Finding]) -> list[Episode]:
    """Alert episodes per (sensor, rule), in the order the alerts table would apply the findings.

    >>> from datetime import timedelta
    >>> t0 = datetime(2025, 11, 1, tzinfo=UTC)
    >>> f = lambda m, sev: Finding("G", "flood_alarm_level", "flood", "water_level_m", t0 + timedelta(minutes=m), sev, 1.0)
    >>> [(e.start, e.end, [s[1] for s in e.steps]) for e in episodes(
    ...     [f(0, None), f(10, "info"), f(20, "info"), f(30, "critical"), f(40, None), f(50, "warning")])]
    [(1761955800.0, 1761957600.0, [0, 2]), (1761958200.0, None, [1])]
    """
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    done: list[Episode] = []
    for f in findings:
        key = (f.sensor_id, f.rule)
        ts = f.ts.timestamp()
        cur = open_.get(key)
        if f.severity is None:
            if cur is not None:
                done.append(_episode(key, cur, ts))
                del open_[key]
            continue
        rank = SEV_RANK.get(f.severity, 0)
        band = f.detail.get("band") if isinstance(f.detail.get("band"), int) else None
        if cur is None:
            open_[key] = {"family": f.family, "metric": f.metric, "start": ts, "steps": [(ts, rank, band)]}
        elif cur["steps"][-1][1] != rank:
            cur["steps"].append((ts, rank, band))
    done += [_episode(key, cur, None) for key, cur in open_.items()]
    done.sort(key=lambda e: (e.start, e.sensor_id, e.rule))
    return done


def _episode(key: tuple[str, str], cur: dict[str, Any], end: float | None) -> Episode:
    return Episode(key[0], key[1], cur["family"], cur["metric"], cur["start"], end, tuple(cur["steps"]))


def _band(step: tuple[float, int, int | None]) -> int:
    return step[2] if step[2] is not None else step[1] + 1  # BAND_SEVERITY: info = BĐ I, ... critical = BĐ III


def level_spans(ep: Episode, level: int, run_end: float) -> list[tuple[float, float]]:
    """Spans of a flood episode during which its band was >= ``level``.

    >>> e = Episode("G", "flood_alarm_level", "warning", "m", 0.0, 50.0, ((0.0, 0, 1), (10.0, 2, 3), (30.0, 1, 2)))
    >>> level_spans(e, 3, 99.0), level_spans(e, 2, 99.0), level_spans(e, 1, 99.0)
    ([(10.0, 30.0)], [(10.0, 50.0)], [(0.0, 50.0)])
    """
    end = ep.end if ep.end is not None else run_end
    spans: list[tuple[float, float]] = []
    since: float | None = None
    for i, step in enumerate(ep.steps):
        ts = step[0]
        if _band(step) >= level:
            if since is None:
                since = ts
        elif since is not None:
            spans.append((since, ts))
            since = None
        if i + 1 == len(ep.steps) and since is not None:
            spans.append((since, end))
    return spans


def alerts_of(eps: Iterable[Episode], run_end: float, levels: Mapping[str, Sequence[int]]) -> list[Alert]:
    """The alerts to match: one per episode, flood episodes split per BĐ level the gauge has."""
    out: list[Alert] = []
    for ep in eps:
        end = ep.end if ep.end is not None else run_end
        if ep.rule in ("flood_alarm_level", "flood_projection"):
            for k in levels.get(ep.sensor_id, (1, 2, 3)):
                kind = f"flood_bd{k}" if ep.rule == "flood_alarm_level" else "flood_forecast"
                out += [Alert(kind, ep.sensor_id, ep.rule, a, b, level=k, metric=ep.metric)
                        for a, b in level_spans(ep, k, run_end)]
            continue
        kind = RULE_KIND.get(ep.rule) or ("anomaly" if ep.family == "anomaly" else
                                          "fault_other" if ep.family == "health" else "other")
        out.append(Alert(kind, ep.sensor_id, ep.rule, ep.start, end, tuple((s[0], s[1]) for s in ep.steps),
                         metric=ep.metric))
    return out


# ---------------------------------------------------------------------------------------- matching


def overlaps(a: Alert, lo: float, hi: float) -> bool:
    return a.start <= hi and a.end >= lo


def _same_target(a: Alert, t: Truth) -> bool:
    if a.sensor_id != t.sensor_id:
        return False
    if a.level is not None and t.level is not None and a.level != t.level:
        return False
    return not (t.metric and a.metric not in ("", "ts") and a.metric != t.metric)


def match_kind(spec: KindSpec, alerts: Sequence[Alert], truths: Sequence[Truth], sensor_days: float,
               *, explain: Sequence[Truth] = (), storms: Sequence[tuple[float, float]] = (),
               health: Sequence[Alert] = ()) -> KindScore:
    """Precision, recall, delays and false alerts of one event kind.

    ``alerts`` and ``truths`` may hold every kind; only ``spec``'s are scored. ``explain`` are the
    truths an anomaly may overlap (every kind), ``storms`` the scenario's storm windows, ``health``
    the health alerts that would mute a hazard alert.

    >>> spec = KindSpec("x", "x", Tolerance(0.0, 10.0), ("x",), "hazard")
    >>> truths = [Truth("x", "S", 100.0, 200.0, "e1", True), Truth("x", "S", 500.0, 600.0, "e2", True)]
    >>> alerts = [Alert("x", "S", "r", 130.0, 150.0), Alert("x", "S", "r", 300.0, 320.0)]
    >>> s = match_kind(spec, alerts, truths, sensor_days=2.0)
    >>> s.precision, s.recall, s.delays_s, s.fa_per_sensor_day, s.missed
    (0.5, 0.5, [30.0], 0.5, ['S e2'])
    """
    own = [a for a in alerts if a.kind == spec.kind]
    mine = [t for t in truths if t.kind == spec.kind]
    score = KindScore(spec.kind, truths=len(mine), labelled=sum(t.labelled for t in mine), alerts=len(own),
                      sensor_days=sensor_days)
    by_sensor: dict[str, list[Truth]] = defaultdict(list)
    for t in (explain if spec.kind == "anomaly" else mine):
        by_sensor[t.sensor_id].append(t)
    for a in own:
        if spec.kind == "anomaly":
            ok = any(overlaps(a, *spec.tol.window(t)) for t in by_sensor.get(a.sensor_id, ())) or any(
                overlaps(a, lo - spec.tol.before_s, hi + spec.tol.after_s) for lo, hi in storms)
        else:
            ok = any(_same_target(a, t) and overlaps(a, *spec.tol.window(t)) for t in by_sensor.get(a.sensor_id, ()))
        if ok:
            score.tp += 1
            continue
        score.fp += 1
        score.false_alerts.append(f"{a.sensor_id} {a.rule}{'' if a.level is None else f' BĐ{a.level}'} {_iso(a.start)}")
        if spec.kind in HAZARD_KINDS and any(h.sensor_id == a.sensor_id and h.start <= a.start <= h.end for h in health):
            score.fp_muted += 1
    detectors = [a for a in alerts if a.kind in spec.detected_by]
    for t in mine:
        lo, hi = spec.tol.window(t)
        near = [a for a in detectors if _same_target(a, t) and overlaps(a, lo, hi)]
        if any(a.reached(lo, hi, t.min_rank) is not None for a in near):
            score.detected += 1
            first = min(x for a in near if (x := a.reached(lo, hi, 0)) is not None)
            score.delays_s.append(max(0.0, first - t.start))
        else:
            score.missed.append(f"{t.sensor_id} {t.event_id}")
    return score


def crossing_lead(t: Truth, warnings: Sequence[Alert], lookback_s: float = 6 * H,
                  after_s: float | None = None) -> tuple[float | None, str | None]:
    """Lead of the earliest warning for ``t``'s level in force within [T - lookback, T + after].

    >>> t = Truth("flood_bd3", "G", 10_000.0, 20_000.0, "e", True, level=3, interval_s=3600.0)
    >>> fc = Alert("flood_forecast", "G", "flood_projection", 4_000.0, 10_500.0, level=3)
    >>> alarm = Alert("flood_bd3", "G", "flood_alarm_level", 10_000.0, 30_000.0, level=3)
    >>> crossing_lead(t, [alarm, fc]), crossing_lead(t, [alarm])
    ((6000.0, 'flood_projection'), (0.0, 'flood_alarm_level'))
    """
    hi = t.start + (t.interval_s if after_s is None else after_s)
    cands = [a for a in warnings if a.sensor_id == t.sensor_id and a.level is not None and t.level is not None
             and a.level == t.level
             and overlaps(a, t.start - lookback_s, hi)]
    if not cands:
        return None, None
    first = min(cands, key=lambda a: (a.start, a.kind != "flood_forecast"))
    return t.start - first.start, first.rule


def overall_of(kinds: Iterable[KindScore]) -> KindScore:
    """Every alert counts for precision; recall over the kinds with ``in_recall``."""
    out = KindScore("overall")
    for s in kinds:
        spec = SPEC.get(s.kind)
        out.alerts += s.alerts
        out.tp += s.tp
        out.fp += s.fp
        out.fp_muted += s.fp_muted
        out.sensor_days = max(out.sensor_days, s.sensor_days)
        if spec is None or spec.in_recall:
            out.truths += s.truths
            out.labelled += s.labelled
            out.detected += s.detected
            out.delays_s += s.delays_s
    return out


# ---------------------------------------------------------------------------------------- running


def sensor_entries(sim: Simulation) -> dict[str, SensorEntry]:
    """The registry as the worker would load it; a reporting profile's interval replaces the native one."""
    return {
        s.spec.sensor_id: SensorEntry(
            s.spec.sensor_id, s.spec.kind, s.spec.name, tuple(sorted(s.spec.metrics)), float(s.spec.interval_s),
            dict(s.spec.alarm_levels) if s.spec.alarm_levels else None, dict(s.spec.extra),
        )
        for s in sim.series
    }


@dataclass
class Run:
    """One scenario through the detector stage: what ``score_run`` and the plots need."""

    sim: Simulation
    sensors: dict[str, SensorEntry]
    findings: list[Finding]
    readings: int
    rejected: int
    seconds: float


def run_detectors(sim: Simulation, *, timer_s: float = TIMER_S, envelope: int = ENVELOPE_READINGS) -> Run:
    """Feed the scenario's valid messages in send order through a DetectorBank, timer on the virtual clock."""
    began = time.perf_counter()
    sensors = sensor_entries(sim)
    sidx, ridx, emit = message_order(sim)
    per = [(d.spec.sensor_id, d.spec.kind, d.spec.metric_names, d.ts.tolist(), d.seq.tolist(), d.values.tolist(),
            d.bad.tolist()) for d in sim.deliveries]
    readings: list[Reading] = []
    emits: list[float] = []
    rejected = 0
    for s, r, e in zip(sidx.tolist(), ridx.tolist(), emit.tolist(), strict=True):
        sid, kind, names, tss, seqs, vals, bad = per[s]
        if bad[r] or not all(math.isfinite(v) for v in vals[r]):
            rejected += 1  # the bridge dead-letters it: it never reaches a detector
            continue
        readings.append(Reading(sid, kind, datetime.fromtimestamp(tss[r], UTC), seqs[r], dict(zip(names, vals[r], strict=True))))
        emits.append(e)
    bank = DetectorBank(sensors)
    table: dict[str, Any] = {}
    found: list[Finding] = []
    t0, t1 = sim.scenario.t0, sim.scenario.t1
    tick = math.floor(t0 / timer_s) * timer_s + timer_s
    i = 0
    while tick <= t1:
        j = bisect_right(emits, tick, lo=i)
        for lo in range(i, j, envelope):
            found += bank.process(readings[lo:min(j, lo + envelope)], table)
        i = j
        found += bank.check_silence(list(table), table, datetime.fromtimestamp(tick, UTC), None)
        tick += timer_s
    for lo in range(i, len(readings), envelope):  # late deliveries after the scenario's end
        found += bank.process(readings[lo:lo + envelope], table)
    return Run(sim, sensors, found, len(readings), rejected, time.perf_counter() - began)


# ---------------------------------------------------------------------------------------- truth


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [a, b] of True values.

    >>> _runs(np.array([0, 1, 1, 0, 1], dtype=bool))
    [(1, 2), (4, 4)]
    """
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))


def _merge(spans: list[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    """Merge spans (sorted by start) that are less than ``gap_s`` apart.

    >>> _merge([(0.0, 10.0), (15.0, 20.0), (50.0, 60.0)], 10.0)
    [(0.0, 20.0), (50.0, 60.0)]
    """
    out: list[tuple[float, float]] = []
    for a, b in spans:
        if out and a - out[-1][1] < gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _valid(s: Any) -> np.ndarray:
    return s.transmission.valid if s.transmission is not None else np.ones(len(s.t), dtype=bool)


def flood_truths(sim: Simulation) -> list[Truth]:
    """Every run of valid reports at or above each BĐ level; runs starting at a labelled crossing are labelled."""
    labelled: dict[tuple[str, int], float] = {}
    for lab in sim.labels:
        for sid, cr in lab.get("crossings", {}).items():
            for key, ts in cr.items():
                labelled[(sid, int(key[2:]))] = float(ts)
    out: list[Truth] = []
    t1 = sim.scenario.t1
    for s in sim.series:
        levels = s.spec.alarm_levels or {}
        if s.spec.kind != "water_level" or "water_level_m" not in s.values:
            continue
        v = np.where(_valid(s), s.values["water_level_m"], -np.inf)
        t = s.t.astype(np.float64)
        sid, step = s.spec.sensor_id, float(s.spec.interval_s)
        for k in (1, 2, 3):
            lvl = levels.get(f"bd{k}")
            if lvl is None:
                continue
            spans = [(float(t[a]), float(t[b]) if b + 1 < len(t) else t1) for a, b in _runs(v >= lvl)]
            lab_at = labelled.get((sid, k))
            for a, b in _merge(spans, FLOOD_MERGE_S):
                is_lab = lab_at is not None and abs(a - lab_at) <= step
                out.append(Truth(f"flood_bd{k}", sid, a, b, f"{'label' if is_lab else 'computed'}:BĐ{k}@{_iso(a)}",
                                 is_lab, level=k, interval_s=step))
            if lab_at is not None and not any(abs(x.start - lab_at) <= step for x in out
                                               if x.sensor_id == sid and x.level == k):
                out.append(Truth(f"flood_bd{k}", sid, lab_at, lab_at, f"label:BĐ{k}@{_iso(lab_at)}", True, level=k,
                                 interval_s=step))
    return out


def label_truths(sim: Simulation) -> list[Truth]:
    """Per-sensor truths from the labels (floods are handled by :func:`flood_truths`)."""
    metric_of = {ev.id: ev.metric for ev in sim.scenario.events if isinstance(ev, SensorFault)}
    interval = {s.spec.sensor_id: float(s.spec.interval_s) for s in sim.series}
    out: list[Truth] = []
    for lab in sim.labels:
        if lab["kind"] == "sensor_fault":
            kind = FAULT_KIND.get(lab["expected_alert"])
        else:
            kind = LABEL_KIND.get(lab["kind"])
        if kind is None:
            continue  # floods (computed), malformed payloads, faults that expect no alert
        metric = lab.get("metric") or metric_of.get(lab["event_id"])
        for sid in lab["sensors"]:
            if sid in interval:
                out.append(Truth(kind, sid, float(lab["start"]), float(lab["end"]), str(lab["event_id"]), True,
                                 min_rank=SEV_RANK.get(lab.get("min_severity", "info"), 0),
                                 metric=metric if kind in ("fault_spike", "fault_drift") else None,
                                 interval_s=interval[sid]))
    return out


def computed_truths(run: Run) -> list[Truth]:
    """Events the labels do not cover, from the generated series and the official thresholds."""
    sim = run.sim
    out: list[Truth] = []
    deliveries = {d.spec.sensor_id: d for d in sim.deliveries}
    for s in sim.series:
        sid, kind, step = s.spec.sensor_id, s.spec.kind, float(s.spec.interval_s)
        valid = _valid(s)
        t = s.t.astype(np.float64)

        def add(k: str, spans: list[tuple[float, float]], what: str, sid: str = sid, step: float = step) -> None:
            out.extend(Truth(k, sid, a, b, f"computed:{what}@{_iso(a)}", False, interval_s=step) for a, b in spans)

        if kind == "rain" and "rain_mm" in s.values:
            per = max(1, int(86400 // step))
            c = np.concatenate([[0.0], np.cumsum(np.where(valid, s.values["rain_mm"], 0.0))])
            idx = np.arange(1, len(t) + 1)
            total = c[idx] - c[np.maximum(idx - per, 0)]
            add("heavy_rain", _merge([(t[a], t[b]) for a, b in _runs(total >= RAIN_INFO_24H_MM - 1e-9)], H),
                ">=50mm/24h")
        elif kind == "air" and set(PM_METRICS) & set(s.values):
            add("air_quality", _aqi_spans(t[valid], {m: v[valid] for m, v in s.values.items()}), "VN_AQI>=101")
        elif kind == "noise" and "laeq_dba" in s.values:
            limits = QCVN26_2010_LIMITS.get(str(s.spec.extra.get("area", "normal")), QCVN26_2010_LIMITS["normal"])
            add("noise", _noise_spans(t[valid], s.values["laeq_dba"][valid], limits), "LAeq>QCVN26")
        elif kind == "traffic" and "speed_kmh" in s.values and s.spec.extra.get("free_flow_kmh"):
            add("congestion", _congestion_spans(t[valid], s.values["speed_kmh"][valid],
                                                float(s.spec.extra["free_flow_kmh"])), "speed<0.5ff")
        d = deliveries.get(sid)
        if d is not None:
            add("fault_silent", _silent_spans(d, step), "no valid data")
            add("fault_range", _range_spans(d, run.sensors[sid]), "out of range")
    return out


def _aqi_spans(t: np.ndarray, values: Mapping[str, np.ndarray]) -> list[tuple[float, float]]:
    if not len(t):
        return []
    hours = np.floor(t / H).astype(np.int64)
    uniq, inv = np.unique(hours, return_inverse=True)
    means: dict[str, dict[int, float]] = {}
    for m, v in values.items():
        if m not in HOURLY_COLUMN:
            continue
        ok = np.isfinite(v)
        sums = np.bincount(inv[ok], weights=v[ok], minlength=len(uniq))
        counts = np.bincount(inv[ok], minlength=len(uniq))
        means[m] = {int(h): float(sv / n) for h, sv, n in zip(uniq, sums, counts, strict=True) if n}
    bad: list[tuple[float, float]] = []
    for h in uniq.tolist():
        conc: dict[str, float | None] = {}
        for m, by_hour in means.items():
            if m in PM_METRICS:
                conc[m] = nowcast([by_hour.get(h - i) for i in range(12)])
            else:
                conc[m] = by_hour.get(h)
        res = hourly_aqi(conc)
        if res is not None and res.aqi >= AQI_ALERT:
            bad.append((h * H, (h + 1) * H))
    return _merge(bad, 1.0)


def _noise_spans(t: np.ndarray, v: np.ndarray, limits: tuple[float, float]) -> list[tuple[float, float]]:
    hours: dict[int, list[float]] = defaultdict(list)
    for ts, x in zip(t.tolist(), v.tolist(), strict=True):
        if math.isfinite(x):
            hours[math.floor(ts / H)].append(x)
    bad = []
    for h in sorted(hours):
        day, _ = period_of(h * H + 1.0)
        if laeq(hours[h]) > (limits[0] if day else limits[1]):
            bad.append((h * H, (h + 1) * H))
    return _merge(bad, 1.0)


def _congestion_spans(t: np.ndarray, speed: np.ndarray, free_flow: float) -> list[tuple[float, float]]:
    """Spans where the trailing ``TRAFFIC_WINDOW_S`` mean speed is below 0.5 of free flow or 10 km/h.

    >>> t = np.arange(0.0, 3600.0, 60.0)
    >>> v = np.where((t >= 1200) & (t < 2400), 10.0, 40.0)  # 20 minutes at a quarter of free flow
    >>> [(a / 60, b / 60) for a, b in _congestion_spans(t, v, 40.0)]
    [(30.0, 43.0)]
    """
    if not len(t):
        return []
    c = np.concatenate([[0.0], np.cumsum(speed)])
    start = np.searchsorted(t, t - TRAFFIC_WINDOW_S, side="right")
    idx = np.arange(len(t))
    mean = (c[idx + 1] - c[start]) / (idx + 1 - start)
    full = t - t[0] >= TRAFFIC_WINDOW_S - 1e-9  # a whole window of data behind it
    heavy = full & ((mean < CONGESTION_RATIO * free_flow) | (mean < JAM_KMH))
    return _merge([(float(t[a]), float(t[b])) for a, b in _runs(heavy)], 1.0)


def _silent_spans(d: Delivery, step: float) -> list[tuple[float, float]]:
    ts = np.unique(d.ts[d.bad == 0]).astype(np.float64)
    if len(ts) < 2:
        return []
    gaps = np.flatnonzero(np.diff(ts) >= SILENT_GAP_INTERVALS * step - 1e-6)
    return [(float(ts[i] + step), float(ts[i + 1])) for i in gaps.tolist()]


def _range_spans(d: Delivery, entry: SensorEntry) -> list[tuple[float, float]]:
    limits = next((getattr(x, "limits", {}) for x in build_detectors(entry) if x.rule == "sensor_range"), {})
    ok = d.bad == 0
    out = np.zeros(len(d.ts), dtype=bool)
    for col, m in enumerate(d.spec.metric_names):
        if m in limits:
            lo, hi = limits[m]
            out |= (d.values[:, col] < lo) | (d.values[:, col] > hi)
    out &= ok
    order = np.argsort(d.ts, kind="stable")
    ts, out = d.ts[order].astype(np.float64), out[order]
    return _merge([(float(ts[a]), float(ts[b])) for a, b in _runs(out)], 3 * float(entry.interval_s))


def truths_of(run: Run) -> list[Truth]:
    """Labels, flood runs and computed truths; a computed truth overlapping a label of its kind is dropped."""
    labels = label_truths(run.sim)
    out = flood_truths(run.sim) + labels
    by_key: dict[tuple[str, str], list[Truth]] = defaultdict(list)
    for t in labels:
        by_key[(t.kind, t.sensor_id)].append(t)
    for t in computed_truths(run):
        spec = SPEC[t.kind]
        lo, hi = t.start - spec.tol.before_s, t.end + spec.tol.after_s
        if not any(lab.start <= hi and lab.end >= lo for lab in by_key.get((t.kind, t.sensor_id), ())):
            out.append(t)
    return out


# ---------------------------------------------------------------------------------------- scoring


def score_run(run: Run, name: str | None = None) -> ScenarioScore:
    """Match a run's alerts against its truths, per event kind, plus the lead of every BĐ crossing."""
    sim = run.sim
    t0, t1 = sim.scenario.t0, sim.scenario.t1
    sensor_days = len(sim.series) * (t1 - t0) / 86400.0
    levels = {sid: [k for k in (1, 2, 3) if (e.alarm_levels or {}).get(f"bd{k}") is not None]
              for sid, e in run.sensors.items()}
    alerts = alerts_of(episodes(counted(run.findings)), t1, levels)
    truths = truths_of(run)
    storms = [(ev.start.timestamp(), ev.end.timestamp()) for ev in sim.scenario.events if isinstance(ev, Storm)]
    health = [a for a in alerts if a.rule in HEALTH_RULES]
    explain = truths + [
        Truth("label", sid, float(lab["start"]), float(lab["end"]), str(lab["event_id"]), True)
        for lab in sim.labels if lab["kind"] != "malformed" and lab.get("expected_alert") != "none"
        for sid in lab["sensors"]
    ]
    flood = [t for t in truths if t.kind in ALARM_KINDS]
    forecast_truths = [Truth("flood_forecast", t.sensor_id, t.start, t.end, t.event_id, t.labelled, level=t.level,
                             interval_s=t.interval_s) for t in flood]
    kinds: dict[str, KindScore] = {}
    present = {a.kind for a in alerts} | {t.kind for t in truths}
    for spec in KINDS:
        pool = forecast_truths if spec.kind == "flood_forecast" else truths
        kinds[spec.kind] = match_kind(spec, alerts, pool, sensor_days, explain=explain, storms=storms, health=health)
    for kind in sorted(present - set(SPEC)):
        kinds[kind] = match_kind(KindSpec(kind, kind, _FAULT_TOL, (kind,), "other"), alerts, truths, sensor_days,
                                 health=health)
    kinds["fault_silent"].delays_iv = silence_after_last_reading(run, truths, alerts)
    warnings = [a for a in alerts if a.kind == "flood_forecast" or a.kind in ALARM_KINDS]
    crossings: list[Crossing] = []
    scenario = name or sim.scenario.name
    for t in sorted(flood, key=lambda x: (x.start, x.sensor_id, x.level or 0)):
        lead, by = crossing_lead(t, warnings)
        crossings.append(Crossing(scenario, t.sensor_id, t.level or 0, t.start, t.labelled, lead, by))
        if lead is not None:
            kinds[t.kind].leads_s.append(lead)
    return ScenarioScore(scenario, (t1 - t0) / H, len(sim.series), run.readings, run.rejected, len(run.findings),
                         run.seconds, kinds, crossings)


def silence_after_last_reading(run: Run, truths: Sequence[Truth], alerts: Sequence[Alert]) -> list[float]:
    """For each detected silence: reporting intervals from the last valid reading before it to the alert."""
    spec = SPEC["fault_silent"]
    valid_ts = {d.spec.sensor_id: np.unique(d.ts[d.bad == 0]).astype(np.float64) for d in run.sim.deliveries}
    out: list[float] = []
    for t in truths:
        if t.kind != "fault_silent" or t.interval_s <= 0:
            continue
        lo, hi = spec.tol.window(t)
        starts = [a.start for a in alerts if a.kind == "fault_silent" and a.sensor_id == t.sensor_id
                  and overlaps(a, lo, hi)]
        ts = valid_ts.get(t.sensor_id)
        if not starts or ts is None:
            continue
        k = int(np.searchsorted(ts, t.start, side="right"))
        if k:
            out.append((min(starts) - float(ts[k - 1])) / t.interval_s)
    return out


def scenario_names(which: str) -> list[str]:
    """``all`` = every bundled scenario file (the realistic variants are among them), else ``which`` itself."""
    if which != "all":
        return [which]
    names = list(available())
    return names + [n for n in REALISTIC if n not in names]


def score(names: Sequence[str], *, seed: int | None = None, plot_dir: Path | None = None,
          progress: Callable[[str, ScenarioScore | None], None] | None = None) -> ScoreReport:
    """Simulate and score each scenario in turn (one at a time: the big ones hold ~400k readings)."""
    out: list[ScenarioScore] = []
    for name in names:
        if progress is not None:
            progress(name, None)
        began = time.perf_counter()
        sim = simulate(name, seed)
        run = run_detectors(sim)
        sc = score_run(run, name)
        if plot_dir is not None:
            plot_events(run, plot_dir / name.replace("@", "_"))
        sc.seconds = time.perf_counter() - began
        out.append(sc)
        if progress is not None:
            progress(name, sc)
    return ScoreReport(out)


# ---------------------------------------------------------------------------------------- targets


def targets_of(report: ScoreReport) -> list[Target]:
    """The issue's targets, judged on the scenarios in ``report``."""
    pooled = report.pooled()

    def group(kinds: Iterable[str]) -> KindScore:
        g = KindScore("group")
        for k in kinds:
            if k in pooled:
                g.add(pooled[k])
        return g

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"

    out: list[Target] = []
    for title, kinds in (("alarm-level crossings", ALARM_KINDS), ("sensor faults", FAULT_KINDS)):
        g = group(kinds)
        out.append(Target(f"recall, {title}", f"{pct(g.recall)} ({g.detected}/{g.truths})", ">= 0.95",
                          None if g.recall is None else g.recall >= 0.95))
        out.append(Target(f"precision, {title}", f"{pct(g.precision)} ({g.tp}/{g.alerts})", ">= 0.9",
                          None if g.precision is None else g.precision >= 0.9))
    total = overall_of(pooled.values())
    out.append(Target("precision, every alert", f"{pct(total.precision)} ({total.tp}/{total.alerts})", ">= 0.9",
                      None if total.precision is None else total.precision >= 0.9))
    for sc in report.scenarios:
        if sc.name == "normal_day":
            o = sc.overall()
            fa = o.fa_per_sensor_day
            out.append(Target("false alerts per sensor-day, normal_day",
                              f"{'—' if fa is None else f'{fa:.3f}'} ({o.fp} in {sc.sensor_days:.0f} sensor-days)",
                              "<= 0.1", None if fa is None else fa <= 0.1))
    for sc in report.scenarios:
        if sc.name not in LEAD_SCENARIOS and sc.name.replace("@", "_") not in LEAD_SCENARIOS:
            continue
        bd3 = [c for c in sc.crossings if c.level == 3 and c.labelled]
        leads = [c.lead_s for c in bd3]
        ok = sum(1 for x in leads if x is not None and x >= BD3_LEAD_TARGET_S)
        worst = min((x if x is not None else -math.inf) for x in leads) if leads else None
        shown = "—" if worst is None else ("missed" if worst == -math.inf else f"{worst / 60:.0f} min")
        out.append(Target(f"BĐ III lead >= 60 min, {sc.name}", f"{ok}/{len(bd3)} crossings; worst {shown}",
                          ">= 60 min each", None if not bd3 else ok == len(bd3)))
    silent = pooled.get("fault_silent")
    if silent is not None and silent.delays_iv:
        ok = sum(1 for x in silent.delays_iv if x <= 3.0 + 1e-9)
        out.append(Target("silence raised within 3 intervals of the last reading",
                          f"{ok}/{len(silent.delays_iv)}; worst {max(silent.delays_iv):.2f} intervals",
                          "every silence", ok == len(silent.delays_iv)))
    others = group(k for k in FAULT_KINDS if k != "fault_silent")
    if others.delays_s:
        slow = [f"{SPEC[k].title.removeprefix('fault: ')} {fmt_duration(max(pooled[k].delays_s))}"
                for k in FAULT_KINDS if k != "fault_silent" and k in pooled and pooled[k].delays_s
                and max(pooled[k].delays_s) > 300.0]
        worst = max(others.delays_s)
        out.append(Target("other faults raised within 5 min", f"worst {fmt_duration(worst)}"
                          + (f" ({', '.join(slow)})" if slow else ""), "<= 5 min each", worst <= 300.0))
    return out


def fmt_duration(seconds: float | None) -> str:
    """Short human duration: ``0 s``, ``45 s``, ``12 min``, ``3.5 h``; negative means late.

    >>> fmt_duration(0), fmt_duration(45), fmt_duration(720), fmt_duration(12600), fmt_duration(-600), fmt_duration(None)
    ('0 s', '45 s', '12 min', '3.5 h', '-10 min', '—')
    """
    if seconds is None:
        return "—"
    sign, s = ("-" if seconds < 0 else ""), abs(seconds)
    if s < 90:
        return f"{sign}{s:.0f} s"
    if s < 2 * H:
        return f"{sign}{s / 60:.0f} min"
    return f"{sign}{s / H:.1f} h"


# ---------------------------------------------------------------------------------------- plots

ICT_OFFSET_S = 7 * 3600  # plots use Nha Trang local time
RULE_COLOUR = {"flood_alarm_level": "#d00000", "flood_projection": "#ff7e00", "heavy_rain": "#1f77b4",
               "air_quality": "#8f3f97", "noise_limit": "#7f7f7f", "traffic_congestion": "#e377c2",
               "sensor_silent": "#000000", "sensor_stuck": "#8c564b", "sensor_spike": "#2ca02c",
               "sensor_range": "#17becf", "clock_skew": "#bcbd22"}
_PLOT_METRIC = {"water_level": "water_level_m", "rain": "rain_mm", "traffic": "speed_kmh", "air": "pm25",
                "noise": "laeq_dba", "weather": "wind_speed_ms", "tide": "sea_level_m"}


def _local(ts: Iterable[float]) -> list[datetime]:
    return [datetime.fromtimestamp(x + ICT_OFFSET_S, UTC).replace(tzinfo=None) for x in ts]


def plot_events(run: Run, out_dir: Path) -> list[Path]:
    """One PNG per labelled event: each labelled sensor's series as delivered (and as it truly was),
    the thresholds, the label's span and crossings, and a line where each of its findings fired."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = run.sim
    out_dir.mkdir(parents=True, exist_ok=True)
    series = {s.spec.sensor_id: s for s in sim.series}
    deliveries = {d.spec.sensor_id: d for d in sim.deliveries}
    metric_of = {ev.id: ev.metric for ev in sim.scenario.events if isinstance(ev, SensorFault)}
    by_sensor: dict[str, list[Finding]] = defaultdict(list)
    for f in run.findings:
        by_sensor[f.sensor_id].append(f)
    written: list[Path] = []
    for i, lab in enumerate(sim.labels):
        sensors = [sid for sid in lab["sensors"] if sid in series][:4]
        if lab["kind"] == "malformed" or not sensors:
            continue
        pad = max(6 * H, 8 * max(float(series[sid].spec.interval_s) for sid in sensors))
        lo, hi = max(sim.scenario.t0, float(lab["start"]) - pad), min(sim.scenario.t1, float(lab["end"]) + pad)
        fig, axes = plt.subplots(len(sensors), 1, figsize=(11, 3.3 * len(sensors)), sharex=True, squeeze=False)
        for ax, sid in zip(axes[:, 0], sensors, strict=True):
            metric = lab.get("metric") or metric_of.get(lab["event_id"]) or _PLOT_METRIC.get(series[sid].spec.kind)
            _panel(ax, lab, series[sid], deliveries[sid], by_sensor[sid], lo, hi, metric or "")
        axes[-1, 0].set_xlabel("local time (UTC+7)")
        fig.suptitle(f"{sim.scenario.name}: {lab['event_id']} ({lab['kind']}, expects {lab['expected_alert']})",
                     fontsize=10)
        fig.tight_layout()
        path = out_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{i:03d}_{lab['event_id']}") + ".png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def _panel(ax: Any, lab: Mapping[str, Any], s: Any, d: Delivery, findings: Sequence[Finding], lo: float,
           hi: float, metric: str) -> None:
    spec = s.spec
    names = list(spec.metric_names)
    if metric not in names:
        metric = names[0]
    col = names.index(metric)
    ok = d.bad == 0
    order = np.argsort(d.ts[ok], kind="stable")
    dts, dv = d.ts[ok][order].astype(np.float64), d.values[ok][order][:, col]
    tv, vv = s.t.astype(np.float64), np.where(_valid(s), s.values[metric], np.nan)
    ylabel = f"{spec.sensor_id} {metric}"
    if metric == "rain_mm":  # the category is on the 24 h total
        per = max(1, int(86400 // spec.interval_s))
        vv = np.convolve(np.nan_to_num(vv), np.ones(per))[: len(vv)]
        dv = np.convolve(dv, np.ones(per))[: len(dv)]
        ylabel = f"{spec.sensor_id} rain, 24 h total (mm)"
    keep_t, keep_d = (tv >= lo) & (tv <= hi), (dts >= lo) & (dts <= hi)
    ax.plot(_local(tv[keep_t]), vv[keep_t], color="#bbbbbb", lw=2.5, label="true (valid reports)")
    ax.plot(_local(dts[keep_d]), dv[keep_d], color="#1f3b73", lw=0.9, marker=".", ms=2, label="delivered")
    for value, text, colour in _thresholds(spec, metric):
        ax.axhline(value, color=colour, ls="--", lw=0.8)
        ax.annotate(text, (0.005, value), xycoords=("axes fraction", "data"), fontsize=7, color=colour, va="bottom")
    a, b = float(lab["start"]), float(lab["end"])
    if b > a:
        ax.axvspan(*_local([a, b]), color="#ffd54f", alpha=0.25, label="label span")
    else:
        ax.axvline(_local([a])[0], color="#ffb300", lw=3, alpha=0.5, label="label")
    for key, ts in lab.get("crossings", {}).get(spec.sensor_id, {}).items():
        ax.axvline(_local([float(ts)])[0], color="#d00000", ls=":", lw=1.2)
        ax.annotate(f"true {key.upper()}", (_local([float(ts)])[0], 0.98), xycoords=("data", "axes fraction"),
                    fontsize=7, color="#d00000", rotation=90, va="top")
    seen: set[str] = set()
    for f in findings:
        ts = f.ts.timestamp()
        if not lo <= ts <= hi:
            continue
        tag = f"{f.rule} {f.severity or 'cleared'}"
        ax.axvline(_local([ts])[0], color=RULE_COLOUR.get(f.rule, "#9467bd"), lw=1.0,
                   ls="-" if f.severity else (0, (2, 2)), alpha=0.9 if f.severity else 0.5,
                   label=None if tag in seen else tag)
        seen.add(tag)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3)


def _thresholds(spec: Any, metric: str) -> list[tuple[float, str, str]]:
    if metric == "water_level_m" and spec.alarm_levels:
        colours = {"bd1": "#e6b800", "bd2": "#ff7e00", "bd3": "#d00000"}
        return [(float(v), f"BĐ {'I' * int(k[2])}", colours[k]) for k, v in spec.alarm_levels.items() if v is not None]
    if metric == "rain_mm":
        return [(50.0, "mưa to 50 mm", "#1f77b4"), (100.0, "mưa rất to 100 mm", "#ff7e00"),
                (200.0, "200 mm", "#d00000")]
    if metric == "speed_kmh" and spec.extra.get("free_flow_kmh"):
        ff = float(spec.extra["free_flow_kmh"])
        return [(0.5 * ff, "heavy (0.5 × free flow)", "#ff7e00"), (0.3 * ff, "jam (0.3 × free flow)", "#d00000")]
    if metric == "pm25":
        return [(50.0, "PM2.5 at AQI 100", "#ff7e00"), (80.0, "PM2.5 at AQI 150", "#d00000")]
    if metric == "wind_speed_ms":
        return [(17.2, "Beaufort 8", "#ff7e00"), (32.7, "Beaufort 12", "#d00000")]
    if metric == "laeq_dba":
        day, night = QCVN26_2010_LIMITS.get(str(spec.extra.get("area", "normal")), QCVN26_2010_LIMITS["normal"])
        return [(day, f"QCVN 26 day {day:.0f}", "#ff7e00"), (night, f"QCVN 26 night {night:.0f}", "#d00000")]
    return []
