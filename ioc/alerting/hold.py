"""``for`` and ``clear_after`` of the alert rules, applied in event time to one sensor's findings.

Detectors report transitions; a rule may ask that a condition hold for a while before it
counts (no page for a two-minute jam) and stay clear for a while before it resolves (no
flapping at a threshold). Both are measured on the sensor's own readings (event time), so a
replay at any speed, or a worker restarted from its changelog, decides exactly as live did.
The state is plain JSON and lives beside the detectors' state.

>>> from datetime import UTC, datetime, timedelta
>>> from ioc.alerting.rules import parse_rules
>>> from ioc.models import Finding
>>> rules = parse_rules('[[rule]]\\nmatch = { kind = "traffic" }\\nfor = "2m"\\n')
>>> t0 = datetime(2025, 11, 19, tzinfo=UTC)
>>> f = Finding("TRF_1", "congestion", "traffic", "speed_kmh", t0, "warning", 9.0)
>>> hold = HoldState()
>>> hold.feed(rules, f)
[]
>>> [g.severity for g in hold.tick(rules, t0 + timedelta(minutes=1))]
[]
>>> [g.severity for g in hold.tick(rules, t0 + timedelta(minutes=2))]
['warning']
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from ioc.alerting.rules import AlertRules
from ioc.domain import SEVERITIES
from ioc.models import Finding

STATE_VERSION = 1
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Finding)


def _epoch(ts: datetime) -> float:
    return ts.timestamp()


def _at(f: Finding, ts: datetime, since: float) -> Finding:
    """The held finding, stamped with the moment the rule let it through."""
    detail = dict(f.detail)
    detail["condition_since"] = datetime.fromtimestamp(since, UTC).isoformat()
    return msgspec.structs.replace(f, ts=ts, detail=detail)


class _Rule:
    __slots__ = ("confirmed", "pending", "clearing", "lowering")

    def __init__(self) -> None:
        self.confirmed: str | None = None  # the severity that has been let through
        self.pending: tuple[float, Finding] | None = None  # waiting for ``for``
        self.clearing: tuple[float, Finding] | None = None  # waiting for ``clear_after``
        self.lowering: tuple[float, Finding] | None = None  # a de-escalation waiting for ``clear_after``

    def idle(self) -> bool:
        return self.confirmed is None and self.pending is None


class HoldState:
    """One sensor's held conditions, one entry per detector rule."""

    def __init__(self) -> None:
        self._rules: dict[str, _Rule] = {}

    def _timing(self, rules: AlertRules, f: Finding) -> tuple[float, float]:
        r = rules.match(kind=f.kind, family=f.family, rule=f.rule, sensor_id=f.sensor_id)
        return r.for_s, r.clear_after_s

    def feed(self, rules: AlertRules, f: Finding) -> list[Finding]:
        """A detector's transition; returns what passes at once."""
        for_s, clear_s = self._timing(rules, f)
        st = self._rules.setdefault(f.rule, _Rule())
        t = _epoch(f.ts)
        if f.severity is None:
            st.pending = None
            st.lowering = None
            if st.confirmed is None:
                return []
            if clear_s <= 0:
                st.confirmed, st.clearing = None, None
                return [f]
            if st.clearing is None:
                st.clearing = (t, f)
            return []
        st.clearing = None
        if st.confirmed is None:
            if for_s <= 0:
                st.confirmed, st.pending = f.severity, None
                return [f]
            since = st.pending[0] if st.pending is not None else t
            st.pending = (since, f)
            return self._promote(st, t, f.ts, for_s)
        if _RANK[f.severity] > _RANK[st.confirmed]:
            st.confirmed, st.lowering = f.severity, None
            return [f]
        if f.severity == st.confirmed:
            st.lowering = None
            return []
        if clear_s <= 0:
            st.confirmed, st.lowering = f.severity, None
            return [f]
        since = st.lowering[0] if st.lowering is not None else t
        st.lowering = (since, f)
        return []

    def _promote(self, st: _Rule, t: float, ts: datetime, for_s: float) -> list[Finding]:
        if st.pending is not None and t - st.pending[0] >= for_s:
            since, f = st.pending
            st.confirmed, st.pending = f.severity, None
            return [_at(f, ts, since)]
        return []

    def tick(self, rules: AlertRules, ts: datetime) -> list[Finding]:
        """The sensor's event time moved to ``ts`` (a reading arrived): let through what has held."""
        out: list[Finding] = []
        t = _epoch(ts)
        for name in list(self._rules):
            st = self._rules[name]
            held = st.pending or st.clearing or st.lowering
            if held is None:
                continue
            for_s, clear_s = self._timing(rules, held[1])
            out += self._promote(st, t, ts, for_s)
            if st.clearing is not None and t - st.clearing[0] >= clear_s:
                since, f = st.clearing
                st.confirmed, st.clearing = None, None
                out.append(_at(f, ts, since))
            if st.lowering is not None and t - st.lowering[0] >= clear_s:
                since, f = st.lowering
                st.confirmed, st.lowering = f.severity, None
                out.append(_at(f, ts, since))
            if st.idle() and st.clearing is None and st.lowering is None:
                del self._rules[name]
        return out

    def forget(self, rule: str) -> None:
        """A detector that no longer exists (alarm levels removed) holds nothing."""
        self._rules.pop(rule, None)

    def rules(self) -> set[str]:
        return set(self._rules)

    def to_state(self) -> dict[str, Any]:
        def held(x: tuple[float, Finding] | None) -> list[Any] | None:
            return None if x is None else [x[0], _enc.encode(x[1]).decode()]

        return {
            "state_version": STATE_VERSION,
            "rules": {n: [st.confirmed, held(st.pending), held(st.clearing), held(st.lowering)]
                      for n, st in self._rules.items()},
        }

    def from_state(self, state: dict[str, Any]) -> None:
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"unsupported hold state_version {state.get('state_version')!r}")

        def held(x: Any) -> tuple[float, Finding] | None:
            return None if x is None else (float(x[0]), _dec.decode(x[1]))

        out: dict[str, _Rule] = {}
        for n, (confirmed, pending, clearing, lowering) in state["rules"].items():
            st = _Rule()
            if confirmed is not None and confirmed not in _RANK:
                raise ValueError(f"bad severity {confirmed!r} in hold state")
            st.confirmed, st.pending, st.clearing, st.lowering = confirmed, held(pending), held(clearing), held(lowering)
            out[n] = st
        self._rules = out
