"""Runs every detector of every sensor over an envelope; one table entry per sensor per envelope.

The detectors themselves are pure (``detectors/``); this module only decides which ones a
sensor gets from its registry entry, keeps them warm between envelopes, and stores their
versioned JSON state in the changelogged Faust table, so a restarted worker carries on where
the last one stopped (a flood projection keeps its window, a silence timer its last reading).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Hashable, Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from detectors.alarm_levels import AlarmLevelDetector
from detectors.flood_projection import FloodProjectionDetector
from detectors.noise import NoiseLimitDetector
from detectors.rain import RainAccumulationDetector
from detectors.sensor_set import sensor_detectors, silence_of, update_all
from detectors.silence import SilenceDetector
from detectors.templates import DetectorTemplates
from detectors.traffic import TrafficCongestionDetector
from detectors.vn_aqi import VnAqiDetector
from ioc.alerting.hold import HoldState
from ioc.alerting.rules import AlertRules, load_rules
from ioc.models import Finding, Reading
from ioc.storage.sensors_store import SensorEntry

log = logging.getLogger(__name__)
STATE_VERSION = 1
JOINED_MAX = 1 << 17  # sensors built and not yet taken by an index (see DetectorBank.joined)


def warning_detectors(s: SensorEntry) -> list[Any]:
    """The hazard (early-warning) detectors a sensor's kind and registry entry call for."""
    out: list[Any] = []
    if s.kind == "water_level" and s.alarm_levels and any(s.alarm_levels.get(f"bd{i}") for i in (1, 2, 3)):
        out += [AlarmLevelDetector(s.sensor_id, s.alarm_levels),
                FloodProjectionDetector(s.sensor_id, s.alarm_levels, name=s.name)]
    elif s.kind == "rain":
        out.append(RainAccumulationDetector(s.sensor_id, name=s.name))
    elif s.kind == "air" and {"pm25", "pm10"} & set(s.metrics):
        out.append(VnAqiDetector(s.sensor_id, name=s.name))
    elif s.kind == "noise":
        out.append(NoiseLimitDetector(s.sensor_id, area=str(s.extra.get("area", "normal")), name=s.name))
    elif s.kind == "traffic" and s.extra.get("free_flow_kmh"):
        out.append(TrafficCongestionDetector(s.sensor_id, float(s.extra["free_flow_kmh"]), name=s.name))
    return out


def build_detectors(s: SensorEntry) -> list[Any]:
    metrics = s.metrics or ()
    return sensor_detectors(s.sensor_id, s.kind, metrics, s.interval_s, alarm_levels=s.alarm_levels,
                            extra=s.extra) + warning_detectors(s)


def template_key(s: SensorEntry) -> Hashable:
    """Everything of an entry that parameterises its detectors: all of it but the id and name."""
    levels = tuple(sorted(s.alarm_levels.items())) if s.alarm_levels else None
    extra = json.dumps(s.extra, sort_keys=True, default=str) if s.extra else None
    return (s.kind, tuple(s.metrics or ()), float(s.interval_s), levels, extra)


class DetectorBank:
    """All detectors per sensor, built from the registry, warm in memory between envelopes."""

    def __init__(self, sensors: Mapping[str, SensorEntry], rules: AlertRules | None = None, *,
                 defer_writes: bool = False) -> None:
        self.sensors = dict(sensors)
        self.rules = rules if rules is not None else load_rules()
        self._live: dict[str, list[Any]] = {}
        #: Each live sensor's silence detector (None: it has none), found once at build: looking it
        #: up among ~10 detectors per reading, and per sensor at every tick, was a scan each time.
        self._silence: dict[str, SilenceDetector | None] = {}
        self._holds: dict[str, HoldState] = {}
        self._templates = DetectorTemplates()  # a city's first readings copy detectors, not rebuild them
        # With ``defer_writes`` the table is written by :meth:`flush` (a checkpoint), not per call;
        # the stage then replays what came after the checkpoint when it takes a partition over.
        self.defer_writes = defer_writes
        self.dirty: set[str] = set()
        self._carried: dict[str, bytes] = {}  # state of detectors rebuilt after a registry change
        self.built = 0  # sensors whose detectors were built, ever: the long-lived objects made
        # For an index of the live sensors kept up to date (``DetectorStage.partition_sensors``): the
        # sensors built since its owner last took them (at most JOINED_MAX; past it, it rebuilds),
        # the live sensors dropped ever, and the table keys this bank created.
        self.joined: list[str] = []
        self.left = 0
        self.keys_added = 0

    def update_registry(self, sensors: Mapping[str, SensorEntry]) -> None:
        """A changed entry gets fresh detectors (state kept for the rules it still has); a retired
        sensor, or a gauge whose alarm levels were removed, loses the detectors it no longer has."""
        for sensor_id in set(self._live):
            if sensors.get(sensor_id) != self.sensors.get(sensor_id):
                dets = self._live.pop(sensor_id)
                self._silence.pop(sensor_id, None)
                self.left += 1
                hold = self._holds.pop(sensor_id, None)
                if sensor_id in sensors:  # rebuilt from what it saw, not from the last checkpoint
                    self._carried[sensor_id] = encode_state(dets, hold)
        self.sensors = dict(sensors)

    def detectors(self, sensor_id: str, table: Mapping[str, Any]) -> list[Any] | None:
        dets = self._live.get(sensor_id)
        if dets is None:
            entry = self.sensors.get(sensor_id)
            if entry is None:
                return None
            dets = self._templates.copies(template_key(entry), sensor_id, entry.name,
                                          lambda: build_detectors(entry))
            raw = self._carried.pop(sensor_id, None)
            if raw is None and sensor_id in table:  # `in` first: a Faust table's miss raises inside get()
                raw = table.get(sensor_id)
            saved = decode_state(raw)
            rules = saved.get("rules", {}) if isinstance(saved, dict) and saved.get("state_version") == STATE_VERSION else {}
            for d in dets:
                if d.rule in rules:
                    try:
                        d.from_state(rules[d.rule])
                    except (ValueError, KeyError, TypeError) as e:  # an older layout: start that one afresh
                        log.warning("%s: %s state not restored (%s)", sensor_id, d.rule, e)
            hold = HoldState()
            if isinstance(saved, dict) and isinstance(saved.get("hold"), dict):
                try:
                    hold.from_state(saved["hold"])
                except (ValueError, KeyError, TypeError, msgspec.DecodeError) as e:
                    log.warning("%s: held alert conditions not restored (%s)", sensor_id, e)
            for gone in hold.rules() - {d.rule for d in dets}:
                hold.forget(gone)  # a removed alarm level holds no condition open
            self._holds[sensor_id] = hold
            self._live[sensor_id] = dets
            self._silence[sensor_id] = silence_of(dets)
            self.built += 1
            if len(self.joined) < JOINED_MAX:
                self.joined.append(sensor_id)
        return dets

    def process(self, readings: Iterable[Reading], table: MutableMapping[str, Any]) -> list[Finding]:
        """Feed readings in order; write each touched sensor's state back once."""
        findings: list[Finding] = []
        touched: dict[str, list[Any]] = {}
        for r in readings:
            dets = self.detectors(r.sensor_id, table)
            if dets is None:
                continue
            hold = self._holds[r.sensor_id]
            silence = self._silence[r.sensor_id]
            for f in update_all(dets, r):
                if not _sane(f):
                    continue
                if silence is not None and f.rule == silence.rule:
                    findings.append(f)  # unheld: its timer half cannot write held state (see check_silence)
                else:
                    findings.extend(hold.feed(self.rules, f))
            findings.extend(hold.tick(self.rules, r.ts))
            touched[r.sensor_id] = dets
        if self.defer_writes:
            self.dirty.update(touched)
        else:
            for sensor_id, dets in touched.items():
                self._write(table, sensor_id, encode_state(dets, self._holds[sensor_id]))
        return findings

    def flush(self, sensor_ids: Iterable[str], table: MutableMapping[str, Any], upto: int | None = None) -> int:
        """Write the state of these (dirty) sensors to the table; returns how many."""
        n = 0
        for sid in sensor_ids:
            dets = self._live.get(sid)
            if dets is not None:
                self._write(table, sid, encode_state(dets, self._holds[sid], upto))
                n += 1
            self.dirty.discard(sid)
        return n

    def check_silence(self, sensor_ids: Iterable[str], table: Mapping[str, Any], now: datetime,
                      resumed_at: datetime | None) -> list[Finding]:
        """The wall timer's half of silence: sensors (owned by this worker) that stopped reporting.

        Not held by the rules' ``for``/``clear_after``: the detector has already waited k
        intervals. A timer cannot write the changelogged table (Faust allows table writes only
        inside a stream), so this is for partitions that receive nothing at all; a partition with
        traffic is checked in event time by :meth:`silence_ticks`, which does write its state.
        """
        out: list[Finding] = []
        for sensor_id in sensor_ids:
            silence = self.silence_detector(sensor_id, table)
            if silence is not None:
                out.extend(silence.check(now, resumed_at=resumed_at))
        return out

    def silence_detector(self, sensor_id: str, table: Mapping[str, Any]) -> SilenceDetector | None:
        """The sensor's silence detector, its detectors built (restored from the table) if need be."""
        silence = self._silence.get(sensor_id)
        if silence is None and sensor_id not in self._silence and self.detectors(sensor_id, table) is not None:
            silence = self._silence[sensor_id]
        return silence

    def silence_ticks(self, sensor_ids: Iterable[str], table: MutableMapping[str, Any], upto: datetime,
                      tick_s: float, resumed_at: datetime | None) -> list[Finding]:
        """Run the silence timer at every ``tick_s`` boundary of event time up to ``upto``, as a timer
        ticking on the sensors' own clock would: a replay at any speed is judged as live was.

        Jumps from deadline to deadline instead of tick to tick, so a partition whose event time
        leaps a day costs one check per sensor that fell silent, not 5 760 timer runs. Each sensor's
        deadline is computed once per call and only the sensors due at a tick are checked (a check
        of any other changes nothing): a tick over 1,250 sensors took 25 ms, most of it recomputing
        every deadline at every step.
        """
        sil: dict[str, SilenceDetector] = {}
        deadlines: dict[str, datetime] = {}
        known, find = self._silence.get, self.silence_detector
        for sid in sensor_ids:
            d = known(sid) or find(sid, table)
            if d is not None and not d.silent and (dl := d.deadline(resumed_at)) is not None:
                sil[sid], deadlines[sid] = d, dl
        out: list[Finding] = []
        changed: set[str] = set()
        limit = upto.timestamp()
        while deadlines:
            t = math.ceil(min(deadlines.values()).timestamp() / tick_s) * tick_s
            if t > limit:
                break
            now = datetime.fromtimestamp(t, UTC)
            for sid in [sid for sid, dl in deadlines.items() if dl <= now]:
                found = sil[sid].check(now, resumed_at=resumed_at)
                if found:
                    out.extend(found)
                    changed.add(sid)
                del deadlines[sid]  # silent now: its deadline has passed for good
        if self.defer_writes:
            self.dirty.update(changed)
        else:
            for sid in changed:
                self._write(table, sid, encode_state(self._live[sid], self._holds[sid]))
        return out

    def _write(self, table: MutableMapping[str, Any], sensor_id: str, state: bytes) -> None:
        if sensor_id not in table:
            self.keys_added += 1
        table[sensor_id] = state  # reassign: reaches the changelog

    def live_sensors(self) -> set[str]:
        return set(self._live)

    def forget(self, sensor_id: str) -> None:
        if self._live.pop(sensor_id, None) is not None:
            self.left += 1
        self._silence.pop(sensor_id, None)
        self._holds.pop(sensor_id, None)
        self._carried.pop(sensor_id, None)
        self.dirty.discard(sensor_id)


_state_enc = msgspec.json.Encoder()


def encode_state(dets: Iterable[Any], hold: HoldState | None = None, upto: int | None = None) -> bytes:
    """The table value: JSON bytes by msgspec (the table's codec is raw). The stdlib encoder Faust
    would use cost as much CPU as every detector update together (float formatting). ``upto`` is
    the first input offset this state has not seen (checkpointed state; see the sink agent)."""
    st = state_of(dets, hold)
    if upto is not None:
        st["upto"] = upto
    return _state_enc.encode(st)


def decode_state(value: Any) -> dict[str, Any] | None:
    """A stored entry: JSON bytes, or a dict (an in-memory table, or a changelog written before
    the raw codec, whose JSON text arrives as bytes too)."""
    if value is None or isinstance(value, dict):
        return value
    try:
        out = msgspec.json.decode(value)
    except (msgspec.DecodeError, TypeError):
        log.warning("undecodable detector state ignored (%d bytes)", len(value) if hasattr(value, "__len__") else -1)
        return None
    return out if isinstance(out, dict) else None


def state_of(dets: Iterable[Any], hold: HoldState | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"state_version": STATE_VERSION, "rules": {d.rule: d.to_state() for d in dets}}
    if hold is not None and hold.rules():
        out["hold"] = hold.to_state()
    return out


def _sane(f: Finding) -> bool:
    """Never pass on a finding with a non-finite value or score (bad input must not become an alert)."""
    return math.isfinite(f.value) and math.isfinite(f.score)
