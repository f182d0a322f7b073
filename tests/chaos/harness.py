"""One chaos run: a labelled flood streamed through a private pipeline, a fault, and the checks.

The flood is a sensors_sim scenario (``demo`` by default: 16 h, 19 sensors, ~7.5k messages with
some malformed ones) encoded once per session with the same rebase ``ioc score --e2e`` uses
(aligned to a week, so every run of the session has the same timestamps). A run publishes it
with a persistent MQTT session that resends what the broker did not acknowledge, so a broker
restart loses nothing on the publisher's side, and checks at the end:

- readings: the set of (sensor, metric, ts, value) stored equals the valid messages sent, and
  ``readings_1m`` equals a GROUP BY over ``readings`` (a roll-up applied twice shows here, the
  unique key on ``readings`` hides nothing else);
- findings: the findings topic, shifted back to scenario time, agrees with the in-process run
  (:func:`ioc.composition.score_e2e.compare`, after the alert rules' severity mapping and inhibition);
- alerts: the alerts equal those of a fault-free reference run (every transition of a per-sensor
  alert; peak and members of a grouped incident), and no transition is recorded twice in
  ``alert_events``;
- notifications: every outbox row delivered, every MQTT one seen by a subscriber by id and
  every webhook one by the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from ioc.composition.score_e2e import Agreement, compare
from ioc.composition.score_e2e import read_findings as read_topic
from ioc.composition.scoring import counted, run_detectors
from ioc.domain import SEVERITIES
from ioc.models import Finding
from ioc.mqtt_client import connect as mqtt_connect
from ioc.mqtt_client import make_client
from ioc.stack.process import pid_alive
from ioc.stack.stack import StackState
from ioc.storage.db import connect as db_connect
from ioc.storage.migrate import migrate
from ioc.storage.sensors_store import upsert_sensors
from sensors_sim.clock import live_offset
from sensors_sim.encode import iter_chunks
from sensors_sim.engine import Simulation, simulate
from tests.support import Pipeline, SteadyPublisher, scalar, start_pipeline, wait_for
from tests.webhook_receiver import WebhookReceiver

ALIGN_S = 7 * 86400  # as ioc score --e2e: hour-of-week baselines see the scenario's own clock
TICK_S = 15  # the worker's silence tick (IOC_SILENCE_CHECK_S) and the in-process timer's period
SESSION_TIMEOUT_S = 10.0  # IOC_BROKER_SESSION_TIMEOUT_S, the settings' default
#: publishing takes about this long; a fault lands while the flood is still arriving
FIT_S = float(os.environ.get("IOC_CHAOS_FIT_S", "40"))
SCENARIO = os.environ.get("IOC_CHAOS_SCENARIO", "demo")
SECRET = "chaos-webhook-secret-0123456789"
NOT_WARMUP = "sensor_id NOT LIKE 'WARMUP%%'"
_enc = msgspec.json.Encoder()

GROUP_BY_1M = f"""
SELECT date_trunc('minute', ts), sensor_id, metric, count(*)::integer, avg(value), min(value), max(value),
       (array_agg(value ORDER BY ts DESC))[1]
FROM readings WHERE {NOT_WARMUP} GROUP BY 1, 2, 3 ORDER BY 2, 3, 1
"""
ROLLUP_1M = f"SELECT bucket, sensor_id, metric, n, mean, min, max, last FROM readings_1m WHERE {NOT_WARMUP} ORDER BY 2, 3, 1"
DISTINCT_STORED = f"SELECT count(*) FROM (SELECT DISTINCT sensor_id, ts FROM readings WHERE {NOT_WARMUP}) d"


@dataclass(frozen=True)
class Flood:
    """A simulated flood, encoded for publishing, with what a correct pipeline must end with."""

    name: str
    sim: Simulation
    offset_s: int
    msgs: list[tuple[str, bytes]]
    keys: list[tuple[str, datetime] | None]  # per message: (sensor, ts) of a valid one, None if malformed
    rows: frozenset[tuple[str, str, datetime, float]]
    inprocess: list[Finding]  # counted, in scenario time
    end: datetime  # the scenario's end, in scenario time

    @property
    def valid(self) -> int:
        return len({k for k in self.keys if k is not None})

    @property
    def malformed(self) -> int:
        return sum(1 for k in self.keys if k is None)


@lru_cache(maxsize=2)
def build_flood(name: str = SCENARIO, fit_s: float = FIT_S) -> Flood:
    sim = simulate(name)
    sc = sim.scenario
    offset = live_offset(sc.t0, sc.t1, (sc.t1 - sc.t0) / fit_s, time.time())
    offset -= offset % ALIGN_S
    msgs: list[tuple[str, bytes]] = []
    keys: list[tuple[str, datetime] | None] = []
    rows: set[tuple[str, str, datetime, float]] = set()
    for chunk in iter_chunks(sim, offset):
        for topic, payload, bad in zip(chunk.topics, chunk.payloads, chunk.malformed, strict=True):
            msgs.append((topic, payload))
            if bad:
                keys.append(None)
                continue
            doc = msgspec.json.decode(payload)
            ts = datetime.fromisoformat(doc["ts"])
            keys.append((doc["sensor_id"], ts))
            rows.update((doc["sensor_id"], m, ts, float(v)) for m, v in doc["metrics"].items())
    inproc = counted(run_detectors(sim).findings)
    return Flood(name, sim, offset, msgs, keys, frozenset(rows), inproc, datetime.fromtimestamp(sc.t1, UTC))


class NotificationSubscriber:
    """An operator's MQTT client on ``khanhhoa/v1/alerts/#``: a persistent session, subscribed in
    on_connect, so it keeps receiving across a broker restart. Collects notification ids."""

    def __init__(self, mqtt_url: str) -> None:
        self.ids: set[str] = set()
        self._lock = threading.Lock()
        self.client, self.target, self.props = make_client(
            mqtt_url, client_id=f"chaos-ops-{uuid.uuid4().hex[:8]}", clean_start=False, session_expiry_s=3600)
        self.client.reconnect_delay_set(0.2, 2)
        self.client.on_connect = lambda c, u, f, rc, pr: c.subscribe("khanhhoa/v1/alerts/#", qos=1)
        self.client.on_message = self._on_message

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if not msg.payload:
            return  # a cleared retained alert
        with contextlib.suppress(ValueError, KeyError, TypeError):
            nid = json.loads(msg.payload)["notification_id"]
            with self._lock:
                self.ids.add(str(nid))

    def start(self) -> NotificationSubscriber:
        mqtt_connect(self.client, self.target, self.props)
        self.client.loop_start()
        return self

    def seen(self) -> set[str]:
        with self._lock:
            return set(self.ids)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Outcome:
    """What a run ended with, for the checks and the results table."""

    stored_rows: int = 0
    missing_rows: int = 0
    unexpected_rows: int = 0
    rollup_mismatches: int = 0
    findings: Agreement | None = None
    findings_reemitted: int = 0
    alerts: list[tuple[Any, ...]] = field(default_factory=list)
    duplicate_transitions: list[tuple[Any, ...]] = field(default_factory=list)
    incidents: dict[str, int] = field(default_factory=dict)
    outbox: int = 0
    undelivered: list[str] = field(default_factory=list)
    mqtt_unseen: list[str] = field(default_factory=list)
    webhook_unseen: list[str] = field(default_factory=list)


class ChaosRun:
    """A private pipeline (own database, topics, consumer group, MQTT ids) fed by one flood."""

    def __init__(self, stack: StackState, flood: Flood, workdir: Path, *, db: str | None = None,
                 **extra_env: str) -> None:
        self.stack = stack
        self.flood = flood
        self.db = db or new_database(stack.urls["IOC_DATABASE_URL"])
        with db_connect(self.db) as conn:
            upsert_sensors(conn, [s.spec for s in flood.sim.series])
        self.receiver = WebhookReceiver(SECRET).up()
        env = {
            # Mosquitto 2.0 does not restore a shared subscription after a restart (pinned in
            # test_delivery_failures); an exclusive one is. Retire on a clean exit only.
            "IOC_MQTT_SHARED_SUBSCRIPTION": "false", "IOC_BRIDGE_RETIRE_ON_EXIT": "true",
            "IOC_LATE_BOUND_S": str(ALIGN_S + 8 * 86400), "IOC_SILENCE_CHECK_S": str(TICK_S),
            "IOC_WEBHOOK_URLS": self.receiver.url, "IOC_WEBHOOK_SECRET": SECRET,
            "IOC_NOTIFY_RETRY_CAP_S": "2", "IOC_DISPATCH_POLL_S": "0.5",
            "IOC_BROKER_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
        }
        env.update(extra_env)
        self.p: Pipeline = start_pipeline(stack.urls, self.db, workdir, **env)
        self.ops = NotificationSubscriber(stack.urls["IOC_MQTT_URL"]).start()
        self.pub: SteadyPublisher | None = None

    # ------------------------------------------------------------------ driving
    def warm_up(self) -> None:
        self.p.warm_up()

    def stream(self) -> SteadyPublisher:
        self.pub = SteadyPublisher(self.p.env["IOC_MQTT_URL"], self.flood.msgs, duration_s=FIT_S).start()
        return self.pub

    def stored(self) -> int:
        """Distinct valid messages stored (one per sensor and timestamp)."""
        return int(scalar(self.db, DISTINCT_STORED))

    def wait_stored(self, fraction: float, timeout_s: float = 180) -> int:
        want = int(fraction * self.flood.valid)
        return int(wait_for(lambda: (n := self.stored()) >= want and n, timeout_s, f"{fraction:.0%} stored",
                            interval_s=0.2))

    def acked_valid(self) -> int:
        """Distinct valid messages the broker has acknowledged so far."""
        assert self.pub is not None
        acked = {idx for idx, info in list(self.pub.infos) if SteadyPublisher._acked(info)}
        return len({k for i in acked if (k := self.flood.keys[i]) is not None})

    def mark(self) -> tuple[float, int, int]:
        """(monotonic now, messages handed to the broker so far, valid ones it acknowledged):
        taken at a restart or resume, for :meth:`recovery`."""
        assert self.pub is not None
        return time.monotonic(), self.pub.sent, self.acked_valid()

    def recovery(self, mark: tuple[float, int, int], timeout_s: float = 240) -> dict[str, float | None]:
        """Seconds from the mark to the first reading committed *from a message published after
        it* (the path works end to end again), and to the store holding everything the broker had
        acknowledged at the mark (the backlog is gone); None when not within the timeout."""
        since, sent, acked = mark
        before = [k[1] for k in self.flood.keys[:sent] if k is not None]
        cut = max(before) if before else datetime.min.replace(tzinfo=UTC)
        newer = f"SELECT EXISTS (SELECT 1 FROM readings WHERE ts > %s AND {NOT_WARMUP})"
        first: float | None = None
        caught: float | None = None
        deadline = since + timeout_s
        while time.monotonic() < deadline and (first is None or caught is None):
            if caught is None and self.stored() >= acked:
                caught = time.monotonic() - since
            if first is None and sent < len(self.flood.keys) and scalar(self.db, newer, (cut,)):
                first = time.monotonic() - since
            if sent >= len(self.flood.keys):  # nothing published after the mark: only the backlog counts
                first = first if first is not None else caught
            time.sleep(0.1)
        return {"first_row_s": first, "caught_up_s": caught}

    def alive(self) -> bool:
        return all(self.p.procs.alive(n) for n in self.p.procs.procs)

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {n}\n{self.p.procs.log(n, lines)}" for n in self.p.procs.procs)

    def pause_worker(self) -> None:
        os.killpg(self.p.procs.procs["worker0"].pid, signal.SIGSTOP)

    def resume_worker(self) -> None:
        os.killpg(self.p.procs.procs["worker0"].pid, signal.SIGCONT)

    # ------------------------------------------------------------------ ending
    def finish(self, *, drain_timeout_s: float = 300, stall_s: float = 60) -> None:
        """Every message acknowledged by the broker; then wait for the store to settle."""
        assert self.pub is not None
        acked = self.pub.finish(timeout_s=240)
        assert acked == len(self.flood.msgs), f"the broker acknowledged {acked} of {len(self.flood.msgs)}"
        deadline, last, stalled_at = time.monotonic() + drain_timeout_s, -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.stored()
            if n >= self.flood.valid:
                break
            if n != last:
                last, stalled_at = n, time.monotonic()
            elif time.monotonic() - stalled_at > stall_s:  # nothing new for a minute: the rest is not coming
                break
            time.sleep(0.5)

    def read_findings(self, idle_s: float = 10.0, timeout_s: float = 300) -> tuple[list[Finding], int]:
        """Findings on ``<prefix>.findings`` in scenario time, and how many were exact re-emissions."""
        topic = f"{self.p.env['IOC_TOPIC_PREFIX']}.findings"
        per = asyncio.run(read_topic(self.stack.urls["IOC_KAFKA_URL"], topic, idle_s=idle_s, done=lambda: True,
                                       timeout_s=timeout_s))
        offset = timedelta(seconds=self.flood.offset_s)
        out: list[Finding] = []
        reemitted = 0
        for part in per:
            seen: set[bytes] = set()
            for f in part:
                if f.sensor_id.startswith("WARMUP"):
                    continue
                key = _enc.encode(f)
                if key in seen:  # at-least-once on the internal topic: the alerts stage absorbs it
                    reemitted += 1
                    continue
                seen.add(key)
                g = msgspec.structs.replace(f, ts=f.ts - offset, predicted_crossing_at=None
                                            if f.predicted_crossing_at is None else f.predicted_crossing_at - offset)
                if g.rule == "sensor_silent" and g.ts > self.flood.end:
                    continue  # the live timer keeps going after the last reading; not an event
                out.append(g)
        out.sort(key=lambda f: f.ts)  # each partition is in order; a stable sort keeps ties per partition
        return out, reemitted

    def wait_notifications(self, timeout_s: float = 120) -> None:
        """Alerts settled (no new transition for 5 s) and the outbox drained."""
        last, since = -1, time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = int(scalar(self.db, "SELECT count(*) FROM alert_events"))
            pending = int(scalar(self.db, "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL"))
            if n != last:
                last, since = n, time.monotonic()
            elif pending == 0 and time.monotonic() - since >= 5:
                break
            time.sleep(0.5)
        time.sleep(2)  # the subscriber's last QoS 1 messages

    def outcome(self, *, with_findings: bool = True) -> Outcome:
        out = Outcome()
        stored = _rows(self.db, f"SELECT sensor_id, metric, ts, value FROM readings WHERE {NOT_WARMUP}")
        got = {(s, m, ts, float(v)) for s, m, ts, v in stored}
        out.stored_rows = len(stored)
        out.missing_rows = len(self.flood.rows - got)
        out.unexpected_rows = len(got - self.flood.rows)
        out.rollup_mismatches = _rollup_mismatches(_rows(self.db, ROLLUP_1M), _rows(self.db, GROUP_BY_1M))
        if with_findings:
            findings, out.findings_reemitted = self.read_findings()
            out.findings = compare(self.flood.inprocess, counted(findings), silence_tolerance_s=2 * TICK_S)
        self.wait_notifications()
        out.alerts = alert_transitions(self.db, self.flood)
        out.duplicate_transitions = _rows(self.db, DUPLICATE_TRANSITIONS)
        out.incidents = incidents_per_key(self.db)
        outbox = _rows(self.db, "SELECT notification_id, channel, delivered_at FROM alert_outbox")
        out.outbox = len(outbox)
        out.undelivered = [nid for nid, _c, at in outbox if at is None]
        seen_mqtt, seen_hook = self.ops.seen(), set(self.receiver.ids())
        out.mqtt_unseen = [nid for nid, c, _at in outbox if c == "mqtt" and nid not in seen_mqtt]
        out.webhook_unseen = [nid for nid, c, _at in outbox if c == "webhook" and nid not in seen_hook]
        return out

    def probe(self, timeout_s: float = 90) -> float:
        """One new reading end to end, after everything: the pipeline runs without a manual step."""
        from ioc.wire import encode_payload
        from tests.support import publish

        sid = self.flood.sim.series[0].spec.sensor_id
        kind = self.flood.sim.series[0].spec.kind
        metric = self.flood.sim.series[0].spec.metric_names[0]
        ts = datetime.now(UTC).replace(microsecond=0)
        t0 = time.monotonic()
        assert publish(self.p.env["IOC_MQTT_URL"], [(f"khanhhoa/v1/{kind}/{sid}",
                                                    encode_payload(sid, ts, 10**6, {metric: 1.0}))]) == 1
        wait_for(lambda: scalar(self.db, "SELECT count(*) FROM readings WHERE sensor_id = %s AND ts = %s",
                                (sid, ts)) == 1, timeout_s, "a probe reading after the fault")
        return time.monotonic() - t0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.pub is not None and self.pub.thread.is_alive():
                self.pub.client.loop_stop()
        for name, proc in self.p.procs.procs.items():  # a paused worker cannot stop on SIGTERM
            if proc.poll() is None and name.startswith("worker"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)
        self.p.stop()
        self.ops.stop()
        self.receiver.down()


# One transition recorded twice: same alert, same event, same event time and severity.
DUPLICATE_TRANSITIONS = """
SELECT alert_id, event, detail->>'ts', coalesce(detail->>'to', detail->>'severity'), count(*)
FROM alert_events WHERE event IN ('opened', 'escalated', 'deescalated', 'resolved')
GROUP BY 1, 2, 3, 4 HAVING count(*) > 1
"""


def _grouped_prefixes() -> tuple[str, ...]:
    from ioc.alerting.rules import load_rules

    return tuple(f"{r.kind}:{r.group_by}:" for r in load_rules().rules if r.group_by and r.kind)


def alert_transitions(db: str, flood: Flood) -> list[tuple[Any, ...]]:
    """What must match a fault-free run, sorted.

    A per-sensor alert: every transition in scenario time, (key, kind, event, severity, ts). An
    incident grouped over several sensors (a river, a road): per group key, (key, kind,
    "incidents", highest peak, every member). Its members' findings come from different
    partitions, and the order in which the alerts stage sees them decides which member moves the
    incident at which step, and even whether two members' overlapping conditions make one
    incident or two in a row; so that differs between two runs without any fault (see README),
    and is recorded by :func:`incidents_per_key`, not compared. Transitions after the scenario's
    end are left out: the live silence timer keeps going after the last reading, and what it
    finds depends on how long a run drains."""
    from ioc.storage.alerts_store import alert_history

    offset = timedelta(seconds=flood.offset_s)
    grouped = _grouped_prefixes()
    out: list[tuple[Any, ...]] = []
    groups: dict[str, tuple[str, set[str]]] = {}
    kinds: dict[str, str] = {}
    with db_connect(db) as conn:
        hist = alert_history(conn)
    for a in hist:
        if any(m.startswith("WARMUP") for m in a.members) or "WARMUP" in a.alert_key:
            continue
        steps = []
        for _at, event, detail in a.events:
            raw = detail.get("ts")
            if not isinstance(raw, str) or event not in ("opened", "escalated", "deescalated", "resolved"):
                continue
            ts = datetime.fromisoformat(raw) - offset
            if ts <= flood.end:
                steps.append((a.alert_key, a.kind, event, detail.get("to") or detail.get("severity"), ts.isoformat()))
        if not steps:
            continue
        if a.alert_key.startswith(grouped):
            peak, members = groups.get(a.alert_key, (a.peak_severity, set()))
            groups[a.alert_key] = (max(peak, a.peak_severity, key=SEVERITIES.index), members | set(a.members))
            kinds[a.alert_key] = a.kind
        else:
            out += steps
    out += [(k, kinds[k], "incidents", peak, ",".join(sorted(m))) for k, (peak, m) in groups.items()]
    return sorted(out, key=repr)


def incidents_per_key(db: str) -> dict[str, int]:
    """How many incidents each group key had (a figure for the results: it varies with ordering)."""
    grouped = _grouped_prefixes()
    rows = _rows(db, "SELECT alert_key, count(*) FROM alerts WHERE alert_key NOT LIKE '%%WARMUP%%' GROUP BY 1")
    return {k: int(n) for k, n in rows if k.startswith(grouped)}


def transitions_diff(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> tuple[list[Any], list[Any]]:
    """(missing, extra) as multisets: a duplicated transition shows as extra."""
    g, w = Counter(got), Counter(want)
    return sorted((w - g).elements(), key=repr), sorted((g - w).elements(), key=repr)


def new_database(pg_url: str, tablespace: str | None = None) -> str:
    from psycopg import sql

    from ioc.storage.db import database_url_for

    name = f"chaos_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        q = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if tablespace:
            q = sql.SQL("{} TABLESPACE {}").format(q, sql.Identifier(tablespace))
        conn.execute(q)
    url = database_url_for(pg_url, name)
    migrate(url)
    return url


def group_members(kafka_url: str, group: str) -> list[str]:
    """Member ids of a consumer group, as the broker sees them."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.topics import bootstrap_servers

    async def describe() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(kafka_url))
        await admin.start()
        try:
            resp = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        return [str(m[0]) for r in resp for g in r.groups for m in g[5]]

    return asyncio.run(describe())


def kill_service(pid: int) -> None:
    """SIGKILL a stack service this process started, and reap it."""
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    wait_for(lambda: not pid_alive(pid), 10, f"pid {pid} gone")


def _rows(db: str, q: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(q, params).fetchall()


def _rollup_mismatches(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> int:
    import math

    def same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) if isinstance(x, float) or isinstance(y, float)
                   else x == y for x, y in zip(a, b, strict=True))

    keyed_got = {r[:3]: r for r in got}
    keyed_want = {r[:3]: r for r in want}
    bad = len(set(keyed_got) ^ set(keyed_want))
    bad += sum(1 for k in set(keyed_got) & set(keyed_want) if not same(keyed_got[k], keyed_want[k]))
    return bad


