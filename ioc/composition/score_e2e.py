"""``ioc score --e2e``: replay a scenario through the real pipeline and score what it found.

The local stack (Mosquitto, Tansu, PostgreSQL) runs a bridge and a worker of their own (own
database, topics and consumer group). The simulator publishes the scenario over MQTT, rebased
so every timestamp is in the past and paced to take about ``seconds``. When every reading is
stored or dead-lettered and the findings stop coming, the findings the worker sent to
``<prefix>.findings`` are read back, shifted back to scenario time and scored by the same code
as the in-process mode. The in-process run of the same simulation is compared finding by
finding: the two must agree. The alert incidents the pipeline opened come from the database.

The worker runs the silence timer in event time, at the same 15 s ticks as the in-process
timer, but between the readings of each partition in timestamp order rather than in send
order; a sensor whose readings arrive late can therefore be judged one tick apart, so silence
findings agree within two ticks. The rebase is aligned to a week, so hour-of-week baselines and
hourly windows see the same clock as in-process.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ioc.composition.scoring import TIMER_S, Run, counted, run_detectors, sensor_entries
from ioc.errors import StackError
from ioc.models import Finding, FindingBatch
from ioc.settings import load_settings
from ioc.stack.children import ChildProcesses
from ioc.stack.stack import running_stack
from ioc.storage.alerts_store import AlertHistory, alert_history
from ioc.storage.db import connect, create_database
from ioc.storage.migrate import migrate
from ioc.storage.sensors_store import upsert_sensors
from sensors_sim.api import publish_simulation
from sensors_sim.engine import Simulation, simulate

TICK_S = TIMER_S  # the worker's silence tick in event time: the in-process timer's period
ALIGN_S = 7 * 86400
SILENCE_RULE = "sensor_silent"


@dataclass
class Agreement:
    """In-process vs e2e, on the findings that count (after the alert rules)."""

    matched: int = 0
    only_inprocess: list[str] = field(default_factory=list)
    only_e2e: list[str] = field(default_factory=list)
    silence_tolerance_s: float = 0.0

    @property
    def agree(self) -> bool:
        return not self.only_inprocess and not self.only_e2e

    def to_json(self) -> dict[str, Any]:
        return {"agree": self.agree, "matched": self.matched, "only_inprocess": self.only_inprocess[:50],
                "only_e2e": self.only_e2e[:50], "silence_tolerance_s": self.silence_tolerance_s}


@dataclass
class E2eResult:
    run: Run
    inprocess: Run
    agreement: Agreement
    incidents: list[AlertHistory]
    offset_s: int
    published: int
    stored: int
    deadlettered: int


def _key(f: Finding) -> tuple[str, str, str | None]:
    return (f.sensor_id, f.rule, f.severity)


def compare(inproc: Sequence[Finding], e2e: Sequence[Finding], silence_tolerance_s: float) -> Agreement:
    """Findings agree when the same (sensor, rule, severity) transition happens at the same time;
    silence transitions may differ by up to ``silence_tolerance_s``.

    >>> from datetime import UTC
    >>> t = datetime(2025, 11, 19, tzinfo=UTC)
    >>> f = Finding("G", "flood_alarm_level", "flood", "water_level_m", t, "warning", 9.0)
    >>> compare([f], [f], 0).agree, compare([f], [], 0).only_inprocess
    (True, ['G flood_alarm_level warning 2025-11-19T00:00:00+00:00'])
    """
    out = Agreement(silence_tolerance_s=silence_tolerance_s)
    pending: dict[tuple[str, str, str | None], list[float]] = {}
    for f in e2e:
        pending.setdefault(_key(f), []).append(f.ts.timestamp())
    for f in inproc:
        cands = pending.get(_key(f), [])
        tol = silence_tolerance_s + 1.0 if f.rule == SILENCE_RULE else 1.0
        t = f.ts.timestamp()
        hit = next((i for i, x in enumerate(cands) if abs(x - t) <= tol), None)
        if hit is None:
            out.only_inprocess.append(f"{f.sensor_id} {f.rule} {f.severity} {f.ts.isoformat()}")
        else:
            cands.pop(hit)
            out.matched += 1
    for (sid, rule, sev), left in sorted(pending.items(), key=lambda kv: kv[0][:2]):
        out.only_e2e += [f"{sid} {rule} {sev} {datetime.fromtimestamp(x).astimezone().isoformat()}" for x in left]
    return out


def _shift(f: Finding, offset: timedelta) -> Finding:
    return msgspec.structs.replace(
        f, ts=f.ts - offset,
        predicted_crossing_at=None if f.predicted_crossing_at is None else f.predicted_crossing_at - offset)


async def read_findings(kafka_url: str, topic: str, idle_s: float, done: Callable[[], bool],
                         timeout_s: float) -> list[list[Finding]]:
    """Every findings batch on the topic, per partition in order, once ``done()`` and idle for ``idle_s``."""
    from aiokafka import AIOKafkaConsumer

    from streams.topics import bootstrap_servers

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers(kafka_url), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    per: dict[int, list[Finding]] = {}
    last = time.monotonic()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in got.items():
                for rec in records:
                    batch = msgspec.json.decode(rec.value, type=FindingBatch)
                    per.setdefault(tp.partition, []).extend(batch.findings)
                last = time.monotonic()
            if not got and done() and time.monotonic() - last >= idle_s:
                break
        else:
            raise StackError(f"findings did not settle within {timeout_s:.0f} s")
    finally:
        await consumer.stop()
    return [per[p] for p in sorted(per)]


def run_e2e(name: str, *, seconds: float = 120.0, seed: int | None = None,
            progress: Callable[[str], None] | None = None,
            during: Callable[[ChildProcesses], None] | None = None) -> E2eResult:
    """``during`` runs in a thread while the scenario is published (fault injection: kill and
    restart the worker, say); the result must still agree with the in-process run."""
    say = progress or (lambda _msg: None)
    sim: Simulation = simulate(name, seed)
    say(f"{name}: {len(sim.series)} sensors; in-process run")
    inprocess = run_detectors(sim)
    settings = load_settings()
    began = time.perf_counter()
    with running_stack(settings.data_dir / "stack") as stack:
        tag = f"{time.strftime('%Y%m%d%H%M%S')}{os.getpid()}"
        urls = dict(stack.urls)
        db = create_database(urls["IOC_DATABASE_URL"], f"ioc_score_{tag}")
        migrate(db)
        with connect(db) as conn:
            upsert_sensors(conn, [s.spec for s in sim.series])
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")} | urls | {
            "IOC_DATABASE_URL": db, "IOC_TOPIC_PREFIX": f"score-{tag}", "IOC_APP_ID": f"score-worker-{tag}",
            "IOC_BRIDGE_ID": f"score-bridge-{tag}", "IOC_SHARE_GROUP": f"s{tag}",
            "IOC_BRIDGE_RETIRE_ON_EXIT": "true",  # a run must not leave a session that queues every reading
            "IOC_SILENCE_CHECK_S": str(TICK_S), "IOC_DATA_DIR": str(settings.data_dir),
            # the rebase is aligned to a week (hour-of-week baselines decide as in-process), so
            # readings can be up to a week plus the scenario older than now
            "IOC_LATE_BOUND_S": str(ALIGN_S + 8 * 86400),
        }
        workdir = settings.data_dir / "score" / tag
        procs = ChildProcesses(env, workdir)
        ready = workdir / "bridge.ready"
        try:
            procs.start_pipeline(ready)
            say(f"{name}: publishing over MQTT in about {seconds:.0f} s")
            fault = threading.Thread(target=during, args=(procs,), name="fault", daemon=True) if during else None
            if fault is not None:
                fault.start()
            pub = publish_simulation(sim, urls["IOC_MQTT_URL"], fit_seconds=seconds, align_s=ALIGN_S)
            if fault is not None:
                fault.join()
            say(f"{name}: {pub.published} published; waiting for the pipeline to drain")
            from ioc.composition.demo import db_counts

            def drained() -> bool:
                procs.check()
                c = db_counts(db)
                return c.stored + c.deadlettered >= pub.published

            batches = asyncio.run(read_findings(urls["IOC_KAFKA_URL"], f"score-{tag}.findings",
                                                 idle_s=10.0, done=drained,
                                                 timeout_s=600))
            counts = db_counts(db)
            time.sleep(2.0)  # the alerts stage applies the last findings batch
            with connect(db) as conn:
                incidents = alert_history(conn)
        finally:
            procs.stop_all()
    offset = timedelta(seconds=pub.offset_s)
    merged = list(heapq.merge(*batches, key=lambda f: f.ts))  # each partition keeps its own order
    end = datetime.fromtimestamp(sim.scenario.t1, UTC)
    # The in-process timer stops at the scenario's end; the live worker's keeps going while the run
    # drains, and would call every sensor silent after the last reading. Those are not events.
    findings = [g for f in merged if not ((g := _shift(f, offset)).rule == SILENCE_RULE and g.ts > end)]
    run = Run(sim, sensor_entries(sim), findings, counts.stored, counts.deadlettered, time.perf_counter() - began)
    agreement = compare(counted(inprocess.findings), counted(findings), silence_tolerance_s=2 * TICK_S)
    return E2eResult(run, inprocess, agreement, incidents, pub.offset_s, pub.published, counts.stored,
                     counts.deadlettered)


def incident_lines(incidents: Sequence[AlertHistory], offset_s: int) -> list[tuple[str, str, str, str, str]]:
    """(alert, kind, members, peak, timeline) rows: each transition at its scenario time."""
    shift = timedelta(seconds=offset_s)
    rows = []
    for a in incidents:
        steps = []
        for _at, event, detail in a.events:
            ts = detail.get("ts")
            when = (datetime.fromisoformat(ts) - shift).strftime("%d/%m %H:%M") if isinstance(ts, str) else ""
            sev = detail.get("to") or detail.get("severity") or ""
            steps.append(f"{when} {event}{' ' + sev if sev else ''}".strip())
        rows.append((str(a.alert_id), a.kind, ", ".join(a.members), a.peak_severity, " → ".join(steps)))
    return rows


def count_events(incidents: Sequence[AlertHistory]) -> Counter[str]:
    return Counter(e[1] for a in incidents for e in a.events)
